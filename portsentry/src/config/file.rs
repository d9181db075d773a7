//! The TOML file: reading it into [`Settings`] with errors that name the file, line, column and
//! key, and writing settings back as TOML (`portsentry check-config`).
//!
//! The keys are the fields of `StartupSettings` and `LiveSettings` (and of the `[hooks]` and
//! `[crowdsec]` tables), taken from their serde derives: nothing here lists keys by hand. The
//! document is parsed once with spans (toml_edit), its top-level keys are dealt to the two
//! structs, and each is deserialized from the same spanned items, so a bad value's error
//! points at the value. Unknown keys are errors with a "did you mean" (a typo must not
//! silently leave a port unguarded).

use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, Visitor};
use toml_edit::{DocumentMut, ImDocument, Item, Table, TableLike};

use super::{
    error::{unknown_key_message, Fault},
    ignore,
    settings::{LiveSettings, Settings, StartupSettings},
    sources::Overlay,
    tables::{CrowdsecSettings, HookSettings, NotifySettings},
    ConfigError,
};

/// The documented example config; it parses to `Settings::default()` (tested).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../dist/portsentry.toml");

/// Parses config text (`path` only names it in errors). Does not read the ignore file.
pub fn parse_str(text: &str, path: &Path) -> Result<Settings, ConfigError> {
    parse_with(text, path, &Overlay::default())
}

/// [`parse_str`] with the command line's keys over the text's.
pub(super) fn parse_with(
    text: &str,
    path: &Path,
    overlay: &Overlay,
) -> Result<Settings, ConfigError> {
    read(text, overlay)
        .map(|(s, _)| s)
        .map_err(|f| f.place(text, path))
}

/// Reads and parses a config file, then its `ignore_file` (whose entries join `allow`).
/// Relative paths in the file are relative to the file's directory.
pub fn load_file(path: &Path) -> Result<Settings, ConfigError> {
    load_file_with(path, &Overlay::default())
}

/// [`load_file`] with the command line's keys over the file's (their paths are left as given).
pub(super) fn load_file_with(path: &Path, overlay: &Overlay) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_owned(),
        line: 0,
        column: 0,
        key: None,
        message: format!("cannot read the configuration file: {e}"),
    })?;
    let (mut settings, doc) = read(&text, overlay).map_err(|f| f.place(&text, path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        rebase_paths(&mut settings, dir, overlay);
    }
    if let Some(file) = &settings.live.ignore_file {
        let entries = ignore::load(file).map_err(|e| {
            let span = doc.get("ignore_file").and_then(Item::span);
            Fault::new(span, "ignore_file", e.to_string()).place(&text, path)
        })?;
        for c in entries {
            if !settings.live.allow.contains(&c) {
                settings.live.allow.push(c);
            }
        }
    }
    Ok(settings)
}

/// The settings as a config file that parses back to the same settings. Every key of the
/// types appears (unset paths as "", unset hooks as []), secrets as "(hidden)".
pub fn render(s: &Settings) -> String {
    let tables = toml::Table::try_from(&s.live).and_then(|mut all| {
        all.extend(toml::Table::try_from(&s.startup)?);
        toml::to_string(&all)
    });
    tables.unwrap_or_else(|e| format!("# the settings cannot be shown as TOML: {e}\n"))
}

/// The key lists of the file, from the types.
fn top_level_keys() -> Vec<&'static str> {
    [
        field_names::<StartupSettings>(),
        field_names::<LiveSettings>(),
    ]
    .concat()
}

fn nested_tables() -> [(&'static str, &'static [&'static str]); 3] {
    [
        ("hooks", field_names::<HookSettings>()),
        ("notify", field_names::<NotifySettings>()),
        ("crowdsec", field_names::<CrowdsecSettings>()),
    ]
}

/// The document, checked and deserialized; the first fault in document order is returned.
fn read(text: &str, overlay: &Overlay) -> Result<(Settings, ImDocument<String>), Fault> {
    let doc = ImDocument::parse(text.to_owned()).map_err(|e| {
        let msg = e.message().trim().replace('\n', "; ");
        Fault::new(e.span(), "", format!("not valid TOML: {msg}"))
    })?;
    let root: &Table = &doc;
    let mut faults = Vec::new();
    check_keys(root, "", &top_level_keys(), &mut faults);
    for (name, fields) in nested_tables() {
        let Some((key, item)) = root.get_key_value(name) else {
            continue;
        };
        match item.as_table_like() {
            Some(table) => check_keys(table, name, fields, &mut faults),
            None => faults.push(Fault::new(
                item.span().or_else(|| key.span()),
                name,
                format!("must be a table: write `[{name}]` on its own line"),
            )),
        }
    }
    let mut merged = root.clone();
    overlay.apply(&mut merged);
    let startup = part::<StartupSettings>(&merged, field_names::<StartupSettings>());
    let live = part::<LiveSettings>(&merged, field_names::<LiveSettings>());
    let settings = match (startup, live) {
        (Ok(startup), Ok(live)) if faults.is_empty() => Settings { startup, live },
        (startup, live) => {
            faults.extend(startup.err());
            faults.extend(live.err());
            return Err(first_in_document(faults));
        }
    };
    if let Some(c) = &settings.startup.crowdsec {
        c.check().map_err(|(key, message)| {
            let span = span_of(root, key).or_else(|| span_of(root, "crowdsec"));
            Fault::new(span, key, message)
        })?;
    }
    settings.live.notify.check().map_err(|(key, message)| {
        let span = span_of(root, key).or_else(|| span_of(root, "notify"));
        Fault::new(span, key, message)
    })?;
    Ok((settings, doc))
}

/// The earliest fault; on a tie the first found (a table-shape fault before serde's).
fn first_in_document(faults: Vec<Fault>) -> Fault {
    let mut faults = faults.into_iter();
    let first = faults
        .next()
        .unwrap_or_else(|| Fault::new(None, "", "invalid configuration"));
    faults.fold(first, |best, f| {
        if f.position() < best.position() {
            f
        } else {
            best
        }
    })
}

fn check_keys(table: &dyn TableLike, prefix: &str, known: &[&str], faults: &mut Vec<Fault>) {
    let dotted = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}.")
    };
    for (key, _) in table.iter() {
        if !known.contains(&key) {
            let span = table.get_key_value(key).and_then(|(k, _)| k.span());
            faults.push(Fault::new(
                span,
                &format!("{dotted}{key}"),
                unknown_key_message(key, known, &dotted),
            ));
        }
    }
}

/// Deserializes `T` from the top-level items it owns. The items keep their spans, so
/// toml_edit's errors still point into the original text.
pub(super) fn part<T: DeserializeOwned>(root: &Table, keys: &[&str]) -> Result<T, Fault> {
    let mut mine = Table::new();
    for (key, item) in root.iter() {
        if keys.contains(&key) {
            mine.insert(key, item.clone());
        }
    }
    toml_edit::de::from_document::<T>(DocumentMut::from(mine)).map_err(|e| {
        let span = e.span();
        let key = span
            .as_ref()
            .and_then(|s| key_at(root, "", s.start))
            .unwrap_or_default();
        Fault::new(span, &key, e.message().trim())
    })
}

/// The dotted key whose value (or key) contains byte `pos`, looking into nested tables.
fn key_at(table: &dyn TableLike, prefix: &str, pos: usize) -> Option<String> {
    for (key, item) in table.iter() {
        let full = if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        };
        if let Some(inner) = item.as_table_like() {
            if let Some(found) = key_at(inner, &full, pos) {
                return Some(found);
            }
        }
        let key_span = table.get_key_value(key).and_then(|(k, _)| k.span());
        if [item.span(), key_span]
            .into_iter()
            .flatten()
            .any(|s| s.contains(&pos))
        {
            return Some(full);
        }
    }
    None
}

/// The span of a dotted key's value, if the document has it.
fn span_of(root: &Table, dotted: &str) -> Option<std::ops::Range<usize>> {
    let mut item: &Item = root.get(dotted.split('.').next()?)?;
    for part in dotted.split('.').skip(1) {
        item = item.as_table_like()?.get(part)?;
    }
    item.span()
}

/// Makes the file's relative paths relative to its directory; a path the command line set is
/// the command line's (relative to the working directory).
fn rebase_paths(s: &mut Settings, dir: &Path, overlay: &Overlay) {
    let rebase = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    };
    let from_file = |key: &str| !overlay.sets(key);
    s.live.ignore_file.as_mut().map(rebase);
    if from_file("history_file") {
        s.live.history_file.as_mut().map(rebase);
    }
    if from_file("pin_dir") {
        s.startup.pin_dir.as_mut().map(rebase);
    }
    if from_file("state_dir") {
        rebase(&mut s.startup.state_dir);
    }
    rebase(&mut s.live.hooks.hosts_deny_file);
    let n = &mut s.live.notify;
    for p in [
        &mut n.smtp_password_file,
        &mut n.smtp_ca_cert_path,
        &mut n.webhook_token_file,
    ] {
        p.as_mut().map(rebase);
    }
    if let Some(c) = s.startup.crowdsec.as_mut() {
        c.api_key_file.as_mut().map(rebase);
        c.credentials_file.as_mut().map(rebase);
        c.ca_cert_path.as_mut().map(rebase);
        c.cert_path.as_mut().map(rebase);
        c.key_path.as_mut().map(rebase);
    }
}

/// The field names a derived `Deserialize` asks for: serde hands them to
/// `deserialize_struct`, so a deserializer that only records them lists a struct's keys.
pub(super) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Recorder<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Recorder<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only structs are recorded"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Recorder(&mut fields));
    fields
}
