//! Where a run's settings come from: the config file (or the embedded defaults when there is
//! none), and over it the command line's [`Overlay`]. Precedence: flag > file > default.
//!
//! The overlay holds config keys in the file's syntax, so a flag's value is read by the same
//! `values` reader as the key in the file, and applied by the same parser (`file.rs`): no key
//! is listed twice. `cli` builds the overlay from the flags once at start; what `run` keeps for
//! SIGHUP is a [`Sources`], never the parsed command line.

use std::path::{Path, PathBuf};

use toml_edit::{Array, Item, Table, Value};

use crate::config::{
    self,
    file::{field_names, part},
    settings::{LiveSettings, Settings, StartupSettings, DEFAULT_CONFIG_PATH},
    ConfigError,
};

/// Where the settings came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Embedded,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => f.write_str("embedded defaults"),
        }
    }
}

/// A flag whose value its key's reader refused: `--tcp-ports "x": <why>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {value:?}: {message}")]
pub struct FlagError {
    pub flag: String,
    pub value: String,
    pub message: String,
}

/// Why the settings could not be read; every kind is a configuration error (exit 2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    File(#[from] ConfigError),
    #[error(transparent)]
    Flag(#[from] FlagError),
}

/// One key set on the command line.
#[derive(Clone, Debug)]
struct Entry {
    /// The flag as given, for errors (`--tcp-ports`).
    flag: String,
    /// The config key it sets.
    key: &'static str,
    value: Value,
    /// Added to the file's list instead of replacing it (`--allow`).
    extends: bool,
}

/// Config keys given on the command line, applied over the file's (the last of a key wins).
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    entries: Vec<Entry>,
}

impl Overlay {
    /// `key = value`, replacing the file's value.
    pub fn set(&mut self, flag: &str, key: &'static str, value: impl Into<Value>) {
        self.push(flag, key, value.into(), false);
    }

    /// `value` added to the list `key` (after the file's entries).
    pub fn extend(&mut self, flag: &str, key: &'static str, value: impl Into<Value>) {
        self.push(flag, key, value.into(), true);
    }

    fn push(&mut self, flag: &str, key: &'static str, value: Value, extends: bool) {
        debug_assert!(
            field_names::<StartupSettings>().contains(&key)
                || field_names::<LiveSettings>().contains(&key),
            "{key} is not a config key"
        );
        self.entries.push(Entry {
            flag: flag.to_owned(),
            key,
            value,
            extends,
        });
    }

    /// Whether the overlay sets `key` (its paths are the command line's, not the file's).
    pub(super) fn sets(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    /// Each entry read alone by its key's reader, so a bad value is named by its flag.
    pub(super) fn check(&self) -> Result<(), FlagError> {
        for e in &self.entries {
            let mut alone = Table::new();
            let value = match &e.value {
                Value::Array(_) => e.value.clone(),
                v if e.extends => Value::Array(Array::from_iter([v.clone()])),
                v => v.clone(),
            };
            alone.insert(e.key, Item::Value(value));
            let read = part::<StartupSettings>(&alone, field_names::<StartupSettings>())
                .and_then(|_| part::<LiveSettings>(&alone, field_names::<LiveSettings>()));
            if let Err(fault) = read {
                return Err(FlagError {
                    flag: e.flag.clone(),
                    value: match &e.value {
                        Value::String(s) => s.value().clone(),
                        v => v.to_string().trim().to_owned(),
                    },
                    message: fault.message,
                });
            }
        }
        Ok(())
    }

    /// The file's top-level `table` with the overlay applied.
    pub(super) fn apply(&self, table: &mut Table) {
        for e in &self.entries {
            if !e.extends {
                table.insert(e.key, Item::Value(e.value.clone()));
                continue;
            }
            let mut list = table
                .get(e.key)
                .and_then(Item::as_array)
                .cloned()
                .unwrap_or_default();
            list.push_formatted(e.value.clone());
            table.insert(e.key, Item::Value(Value::Array(list)));
        }
    }
}

/// The config file to read (`None`: the default path if it exists, else the embedded
/// defaults) and the command line's overlay: all a reload needs.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub config: Option<PathBuf>,
    pub overlay: Overlay,
}

impl Sources {
    /// Reads the file (or the embedded defaults) with the overlay applied. Values are checked;
    /// the whole (`Settings::validate`) is the caller's to check.
    pub fn load(&self) -> Result<(Settings, Source), LoadError> {
        self.overlay.check()?;
        let (settings, source) = match &self.config {
            Some(path) => (
                config::file::load_file_with(path, &self.overlay)?,
                Source::File(path.clone()),
            ),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => (
                config::file::load_file_with(Path::new(DEFAULT_CONFIG_PATH), &self.overlay)?,
                Source::File(DEFAULT_CONFIG_PATH.into()),
            ),
            None => (
                config::file::parse_with("", Path::new("(command line)"), &self.overlay)?,
                Source::Embedded,
            ),
        };
        Ok((settings, source))
    }
}
