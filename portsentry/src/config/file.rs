//! The TOML configuration file: strict parsing with errors that name the file, line, column
//! and key, and rendering of the effective settings (`portsentry check-config`).
//!
//! Flat keys at the top level, hooks in a `[hooks]` table; `dist/portsentry.toml` documents
//! every key and is the embedded default. Unknown keys are errors (a typo must not silently
//! leave a port unguarded). Spans come from `toml_edit`, which `toml` already builds on.

use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use toml_edit::{ImDocument, Item, Value};

use crate::{
    config::ignore,
    config::settings::{parse_duration, CrowdsecSettings, HookSettings, LogFormat, Mode, Settings},
    dataplane::AttachMode,
    net::cidr::Cidr,
    net::ports::PortSet,
};

/// The documented example config; it parses to `Settings::default()` (tested).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../dist/portsentry.toml");

/// Top-level keys, for unknown-key suggestions.
const TOP_KEYS: &[&str] = &[
    "interfaces",
    "tcp_ports",
    "udp_ports",
    "advanced_tcp_below",
    "advanced_udp_below",
    "advanced_exclude_tcp",
    "advanced_exclude_udp",
    "scan_trigger",
    "window",
    "block_tcp",
    "block_udp",
    "mode",
    "ban_ttl",
    "max_bans",
    "max_ban_networks",
    "allow",
    "ignore_file",
    "auto_allow",
    "history_file",
    "log_format",
    "xdp_mode",
    "state_dir",
    "pin_dir",
    "hooks",
    "crowdsec",
];
const CROWDSEC_KEYS: &[&str] = &[
    "lapi_url",
    "api_key",
    "api_key_file",
    "update_frequency",
    "login",
    "password",
    "credentials_file",
    "scenario",
    "queue_max",
];
const HOOK_KEYS: &[&str] = &[
    "run_cmd",
    "hosts_deny",
    "hosts_deny_file",
    "kill_route",
    "run_cmd_first",
    "run_cmd_always",
    "timeout",
    "max_concurrent",
    "max_per_minute",
];

/// A configuration error with its location: `PATH:LINE:COL: key `K`: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; 0 when the error is about the file as a whole (unreadable).
    pub line: usize,
    pub column: usize,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Parses config text (`path` only names it in errors). Does not read the ignore file.
pub fn parse_str(text: &str, path: &Path) -> Result<Settings, ConfigError> {
    Parser { text, path }.parse().map(|(s, _)| s)
}

/// Reads and parses a config file, then its `ignore_file` (whose entries join `allow`).
/// Relative paths in the file are relative to the file's directory.
pub fn load_file(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_owned(),
        line: 0,
        column: 0,
        key: None,
        message: format!("cannot read the configuration file: {e}"),
    })?;
    let parser = Parser { text: &text, path };
    let (mut settings, ignore_span) = parser.parse()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        rebase_paths(&mut settings, dir);
    }
    if let Some(file) = &settings.ignore_file {
        let entries = ignore::load(file)
            .map_err(|e| parser.error(ignore_span.clone(), "ignore_file", e.to_string()))?;
        for c in entries {
            if !settings.allow.contains(&c) {
                settings.allow.push(c);
            }
        }
    }
    Ok(settings)
}

fn rebase_paths(s: &mut Settings, dir: &Path) {
    let rebase = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    };
    s.ignore_file.as_mut().map(rebase);
    s.history_file.as_mut().map(rebase);
    s.pin_dir.as_mut().map(rebase);
    rebase(&mut s.state_dir);
    rebase(&mut s.hooks.hosts_deny_file);
    if let Some(c) = s.crowdsec.as_mut() {
        c.api_key_file.as_mut().map(rebase);
        c.credentials_file.as_mut().map(rebase);
    }
}

struct Parser<'a> {
    text: &'a str,
    path: &'a Path,
}

type Res<T> = Result<T, ConfigError>;

impl Parser<'_> {
    fn error(
        &self,
        span: Option<Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = span.map_or((1, 1), |s| line_col(self.text, s.start));
        ConfigError {
            path: self.path.to_owned(),
            line,
            column,
            key: (!key.is_empty()).then(|| key.to_owned()),
            message: message.into(),
        }
    }

    /// Returns the settings and the span of `ignore_file` (for errors in the ignore file).
    fn parse(&self) -> Res<(Settings, Option<Range<usize>>)> {
        let doc = ImDocument::parse(self.text).map_err(|e| {
            let msg = e.message().trim().replace('\n', "; ");
            self.error(e.span(), "", format!("not valid TOML: {msg}"))
        })?;
        let mut s = Settings::default();
        let mut ignore_span = None;
        let root = doc.as_table();
        for (key, item) in root.iter() {
            let key_span = root.get_key_value(key).and_then(|(k, _)| k.span());
            let value = || self.value(key, item);
            match key {
                "interfaces" => s.interfaces = self.strings_or_string(key, value()?)?,
                "tcp_ports" => s.tcp_ports = self.ports(key, value()?)?,
                "udp_ports" => s.udp_ports = self.ports(key, value()?)?,
                "advanced_tcp_below" => s.advanced_tcp_below = self.port_limit(key, value()?)?,
                "advanced_udp_below" => s.advanced_udp_below = self.port_limit(key, value()?)?,
                "advanced_exclude_tcp" => s.advanced_exclude_tcp = self.ports(key, value()?)?,
                "advanced_exclude_udp" => s.advanced_exclude_udp = self.ports(key, value()?)?,
                "scan_trigger" => {
                    s.scan_trigger = self.integer(key, value()?, 0, i64::from(u32::MAX))? as u32
                }
                "window" => s.window = self.duration(key, value()?)?,
                "ban_ttl" => s.ban_ttl = self.duration(key, value()?)?,
                "block_tcp" => s.block_tcp = self.boolean(key, value()?)?,
                "block_udp" => s.block_udp = self.boolean(key, value()?)?,
                "auto_allow" => s.auto_allow = self.boolean(key, value()?)?,
                "mode" => {
                    s.mode = match self.choice(key, value()?, &["block", "detect"])? {
                        "block" => Mode::Block,
                        _ => Mode::Detect,
                    }
                }
                "log_format" => {
                    s.log_format = match self.choice(key, value()?, &["portsentry", "json"])? {
                        "json" => LogFormat::Json,
                        _ => LogFormat::Portsentry,
                    }
                }
                "xdp_mode" => {
                    s.xdp_mode = match self.choice(key, value()?, &["auto", "native", "generic"])? {
                        "native" => AttachMode::Native,
                        "generic" => AttachMode::Generic,
                        _ => AttachMode::Auto,
                    }
                }
                "max_bans" => {
                    s.max_bans = Some(self.integer(key, value()?, 1, i64::from(u32::MAX))? as u32)
                }
                "max_ban_networks" => {
                    s.max_ban_networks =
                        Some(self.integer(key, value()?, 1, i64::from(u32::MAX))? as u32)
                }
                "allow" => s.allow = self.cidrs(key, value()?)?,
                "ignore_file" => {
                    s.ignore_file = self.optional_path(key, value()?)?;
                    ignore_span = value()?.span();
                }
                "history_file" => s.history_file = self.optional_path(key, value()?)?,
                "state_dir" => {
                    s.state_dir = self.optional_path(key, value()?)?.ok_or_else(|| {
                        self.error(value().ok().and_then(Value::span), key, "must not be empty")
                    })?
                }
                "pin_dir" => s.pin_dir = self.optional_path(key, value()?)?,
                "hooks" => s.hooks = self.hooks(item, key_span)?,
                "crowdsec" => s.crowdsec = Some(self.crowdsec(item, key_span)?),
                _ => return Err(self.unknown(key, key_span, TOP_KEYS, "")),
            }
        }
        Ok((s, ignore_span))
    }

    fn hooks(&self, item: &Item, key_span: Option<Range<usize>>) -> Res<HookSettings> {
        let table = item.as_table_like().ok_or_else(|| {
            self.error(
                item.span().or(key_span),
                "hooks",
                "must be a table: write `[hooks]` on its own line",
            )
        })?;
        let mut h = HookSettings::default();
        for (key, item) in table.iter() {
            let full = format!("hooks.{key}");
            let key_span = table.get_key_value(key).and_then(|(k, _)| k.span());
            let value = || self.value(&full, item);
            match key {
                "run_cmd" => h.run_cmd = Some(self.argv(&full, value()?)?),
                "kill_route" => {
                    let argv = self.argv(&full, value()?)?;
                    if !argv.iter().any(|a| has_target(a)) {
                        return Err(self.error(value()?.span(), &full, "must contain $TARGET$ (or {target}): a route for no address blocks nothing"));
                    }
                    h.kill_route = Some(argv);
                }
                "hosts_deny" => {
                    let line = self.string(&full, value()?)?;
                    if !has_target(line) {
                        return Err(self.error(
                            value()?.span(),
                            &full,
                            "must contain $TARGET$ (or {target}), e.g. \"ALL: $TARGET$ : DENY\"",
                        ));
                    }
                    if line.contains('\n') {
                        return Err(self.error(value()?.span(), &full, "must be a single line"));
                    }
                    h.hosts_deny = Some(line.to_owned());
                }
                "hosts_deny_file" => {
                    h.hosts_deny_file = self.optional_path(&full, value()?)?.ok_or_else(|| {
                        self.error(
                            value().ok().and_then(Value::span),
                            &full,
                            "must not be empty",
                        )
                    })?
                }
                "run_cmd_first" => h.run_cmd_first = self.boolean(&full, value()?)?,
                "run_cmd_always" => h.run_cmd_always = self.boolean(&full, value()?)?,
                "timeout" => {
                    h.timeout = self.duration(&full, value()?)?.ok_or_else(|| {
                        self.error(
                        value().ok().and_then(Value::span),
                        &full,
                        "must be a positive duration such as \"10s\": a hook may not run forever",
                    )
                    })?
                }
                "max_concurrent" => {
                    h.max_concurrent = self.integer(&full, value()?, 1, 1024)? as usize
                }
                "max_per_minute" => {
                    h.max_per_minute = self.integer(&full, value()?, 0, i64::from(u32::MAX))? as u32
                }
                _ => return Err(self.unknown(&full, key_span, HOOK_KEYS, "hooks.")),
            }
        }
        Ok(h)
    }

    fn crowdsec(&self, item: &Item, key_span: Option<Range<usize>>) -> Res<CrowdsecSettings> {
        let table = item.as_table_like().ok_or_else(|| {
            self.error(
                item.span().or(key_span.clone()),
                "crowdsec",
                "must be a table: write `[crowdsec]` on its own line",
            )
        })?;
        let mut c = CrowdsecSettings::default();
        let mut url_seen = false;
        for (key, item) in table.iter() {
            let full = format!("crowdsec.{key}");
            let key_span = table.get_key_value(key).and_then(|(k, _)| k.span());
            let value = || self.value(&full, item);
            let non_empty = |v: &Value| -> Res<String> {
                let text = self.string(&full, v)?.trim();
                if text.is_empty() {
                    return Err(self.error(v.span(), &full, "must not be empty"));
                }
                Ok(text.to_owned())
            };
            match key {
                "lapi_url" => {
                    let url = non_empty(value()?)?;
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(self.error(
                            value()?.span(),
                            &full,
                            format!("`{url}` is not an http:// or https:// URL, e.g. \"http://127.0.0.1:8080\""),
                        ));
                    }
                    c.lapi_url = url.trim_end_matches('/').to_owned();
                    url_seen = true;
                }
                "api_key" => c.api_key = Some(non_empty(value()?)?),
                "api_key_file" => c.api_key_file = self.optional_path(&full, value()?)?,
                "update_frequency" => {
                    c.update_frequency = self
                        .duration(&full, value()?)?
                        .filter(|d| *d >= std::time::Duration::from_millis(100))
                        .ok_or_else(|| {
                            self.error(
                                value().ok().and_then(Value::span),
                                &full,
                                "must be a duration of at least 100ms, e.g. \"2s\"",
                            )
                        })?
                }
                "login" => c.login = Some(non_empty(value()?)?),
                "password" => c.password = Some(non_empty(value()?)?),
                "credentials_file" => c.credentials_file = self.optional_path(&full, value()?)?,
                "scenario" => {
                    let name = non_empty(value()?)?;
                    if name.contains(char::is_whitespace) {
                        return Err(self.error(
                            value()?.span(),
                            &full,
                            "must not contain spaces, e.g. \"portsentry/port-scan\"",
                        ));
                    }
                    c.scenario = name;
                }
                "queue_max" => c.queue_max = self.integer(&full, value()?, 1, 1_000_000)? as usize,
                _ => return Err(self.unknown(&full, key_span, CROWDSEC_KEYS, "crowdsec.")),
            }
        }
        let span = item.span().or(key_span);
        let pair = |a: &str, b: &str| {
            format!("`crowdsec.{a}` and `crowdsec.{b}` exclude each other: use one")
        };
        if !url_seen {
            return Err(self.error(
                span,
                "crowdsec.lapi_url",
                "is required in [crowdsec], e.g. lapi_url = \"http://127.0.0.1:8080\"",
            ));
        }
        if c.api_key.is_some() && c.api_key_file.is_some() {
            return Err(self.error(span, "crowdsec", pair("api_key", "api_key_file")));
        }
        if c.credentials_file.is_some() && (c.login.is_some() || c.password.is_some()) {
            return Err(self.error(span, "crowdsec", pair("credentials_file", "login/password")));
        }
        if c.login.is_some() != c.password.is_some() {
            return Err(self.error(span, "crowdsec", "`login` and `password` go together: set both (from `cscli machines add NAME --password P`)"));
        }
        if !c.is_bouncer() && !c.is_machine() {
            return Err(self.error(span, "crowdsec", "nothing to do: set `api_key` (pull decisions, from `cscli bouncers add NAME`) and/or `login`+`password` (push alerts, from `cscli machines add NAME`)"));
        }
        Ok(c)
    }

    fn unknown(
        &self,
        key: &str,
        span: Option<Range<usize>>,
        known: &[&str],
        prefix: &str,
    ) -> ConfigError {
        let bare = key.strip_prefix(prefix).unwrap_or(key);
        let hint = known
            .iter()
            .map(|k| (edit_distance(bare, k), k))
            .filter(|(d, _)| *d <= 3)
            .min()
            .map(|(_, k)| format!(" (did you mean `{prefix}{k}`?)"))
            .unwrap_or_default();
        self.error(
            span,
            key,
            format!("unknown key{hint}; see dist/portsentry.toml for every key"),
        )
    }

    fn value<'i>(&self, key: &str, item: &'i Item) -> Res<&'i Value> {
        item.as_value().ok_or_else(|| {
            self.error(
                item.span(),
                key,
                format!("expected a value, found a {}", item.type_name()),
            )
        })
    }

    fn wrong_type(&self, key: &str, v: &Value, expected: &str) -> ConfigError {
        self.error(
            v.span(),
            key,
            format!("expected {expected}, found {}", describe(v)),
        )
    }

    fn string<'v>(&self, key: &str, v: &'v Value) -> Res<&'v str> {
        v.as_str()
            .ok_or_else(|| self.wrong_type(key, v, "a string"))
    }

    fn boolean(&self, key: &str, v: &Value) -> Res<bool> {
        v.as_bool()
            .ok_or_else(|| self.wrong_type(key, v, "true or false"))
    }

    fn integer(&self, key: &str, v: &Value, min: i64, max: i64) -> Res<i64> {
        let n = v
            .as_integer()
            .ok_or_else(|| self.wrong_type(key, v, "an integer"))?;
        if n < min || n > max {
            return Err(self.error(v.span(), key, format!("{n} is out of range ({min}-{max})")));
        }
        Ok(n)
    }

    fn choice<'v>(&self, key: &str, v: &'v Value, choices: &[&str]) -> Res<&'v str> {
        let s = self.string(key, v)?;
        if choices.contains(&s) {
            Ok(s)
        } else {
            let list: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
            Err(self.error(
                v.span(),
                key,
                format!("`{s}` is not one of {}", list.join(", ")),
            ))
        }
    }

    /// "1,11,6000-6063" or [1, 11, "6000-6063"].
    fn ports(&self, key: &str, v: &Value) -> Res<PortSet> {
        const EXPECTED: &str = "a port list such as \"1,11,6000-6063\" or [1, 11, \"6000-6063\"]";
        match v {
            Value::String(s) => {
                PortSet::parse(s.value()).map_err(|e| self.error(v.span(), key, e.to_string()))
            }
            Value::Array(items) => {
                let mut set = PortSet::default();
                for item in items.iter() {
                    match item {
                        Value::Integer(n) => match u16::try_from(*n.value()) {
                            Ok(p) if p > 0 => set.insert(p),
                            _ => {
                                return Err(self.error(
                                    item.span(),
                                    key,
                                    format!("{} is not a port number (1-65535)", n.value()),
                                ))
                            }
                        },
                        Value::String(s) => set
                            .add_entry(s.value().trim())
                            .map_err(|e| self.error(item.span(), key, e.to_string()))?,
                        other => return Err(self.wrong_type(key, other, EXPECTED)),
                    }
                }
                Ok(set)
            }
            other => Err(self.wrong_type(key, other, EXPECTED)),
        }
    }

    /// 0 = advanced mode off.
    fn port_limit(&self, key: &str, v: &Value) -> Res<Option<u16>> {
        let n = self.integer(key, v, 0, 65535)?;
        Ok((n > 0).then_some(n as u16))
    }

    /// "24h", "90s", "never", "0", or an integer number of seconds.
    fn duration(&self, key: &str, v: &Value) -> Res<Option<Duration>> {
        match v {
            Value::String(s) => parse_duration(s.value()).map_err(|e| self.error(v.span(), key, e)),
            Value::Integer(n) if *n.value() >= 0 => {
                let d = Duration::from_secs(*n.value() as u64);
                crate::config::settings::check_duration(d, &n.value().to_string())
                    .map_err(|e| self.error(v.span(), key, e))
                    .map(|d| (!d.is_zero()).then_some(d))
            }
            other => Err(self.wrong_type(key, other, "a duration such as \"24h\" or \"never\"")),
        }
    }

    fn strings(&self, key: &str, v: &Value, expected: &str) -> Res<Vec<String>> {
        let arr = v
            .as_array()
            .ok_or_else(|| self.wrong_type(key, v, expected))?;
        arr.iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| self.wrong_type(key, item, "a string"))
            })
            .collect()
    }

    fn strings_or_string(&self, key: &str, v: &Value) -> Res<Vec<String>> {
        let list = match v.as_str() {
            Some(one) => vec![one.to_owned()],
            None => self.strings(key, v, "a list of interface names such as [\"eth0\"]")?,
        };
        if let Some(bad) = list
            .iter()
            .find(|n| n.is_empty() || n.len() > 15 || n.contains(['/', ' ', '\0']))
        {
            return Err(self.error(
                v.span(),
                key,
                format!("`{bad}` is not a valid interface name"),
            ));
        }
        Ok(list)
    }

    /// argv: a non-empty list of strings, run without a shell.
    fn argv(&self, key: &str, v: &Value) -> Res<Vec<String>> {
        if v.is_str() {
            return Err(self.error(v.span(), key, "must be a list of strings (argv), e.g. [\"/usr/local/bin/notify\", \"$TARGET$\"]: commands are never run through a shell"));
        }
        let argv = self.strings(key, v, "a list of strings (argv)")?;
        match argv.first() {
            None => Err(self.error(
                v.span(),
                key,
                "must not be empty (leave the key out to disable the hook)",
            )),
            Some(p) if p.trim().is_empty() => Err(self.error(
                v.span(),
                key,
                "the program (first element) must not be empty",
            )),
            Some(_) => Ok(argv),
        }
    }

    fn cidrs(&self, key: &str, v: &Value) -> Res<Vec<Cidr>> {
        let arr = v.as_array().ok_or_else(|| {
            self.wrong_type(
                key,
                v,
                "a list of addresses or networks such as [\"192.0.2.0/24\"]",
            )
        })?;
        let mut out: Vec<Cidr> = Vec::new();
        for item in arr.iter() {
            let s = item
                .as_str()
                .ok_or_else(|| self.wrong_type(key, item, "a string"))?;
            let c: Cidr = s.trim().parse().map_err(|e: crate::net::cidr::CidrError| {
                self.error(item.span(), key, e.to_string())
            })?;
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// A path; "" = unset.
    fn optional_path(&self, key: &str, v: &Value) -> Res<Option<PathBuf>> {
        let s = self.string(key, v)?;
        if s.contains('\0') {
            return Err(self.error(v.span(), key, "a path cannot contain a NUL character"));
        }
        Ok((!s.is_empty()).then(|| PathBuf::from(s)))
    }
}

fn has_target(s: &str) -> bool {
    s.contains("$TARGET$") || s.contains("{target}")
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {:?}", s.value()),
        Value::Integer(n) => format!("the integer {}", n.value()),
        Value::Float(f) => format!("the number {}", f.value()),
        Value::Boolean(b) => format!("{}", b.value()),
        Value::Datetime(_) => "a date".into(),
        Value::Array(_) => "a list".into(),
        Value::InlineTable(_) => "a table".into(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
/// An error at the very end (an unterminated list) points at the last non-blank character.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let end = text.trim_end().len();
    let mut offset = if offset >= end {
        end.saturating_sub(1)
    } else {
        offset
    };
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// "24h", "90s", "7d"; humantime's form ("1h 30m 5s") when no single unit is exact.
fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return humantime::format_duration(d).to_string();
    }
    match secs {
        s if s % 86_400 == 0 && s >= 2 * 86_400 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The settings as a config file that parses back to the same settings.
pub fn render(s: &Settings) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
    let string = |v: &str| Value::from(v).to_string().trim().to_owned();
    let list = |items: Vec<String>| {
        format!(
            "[{}]",
            items
                .iter()
                .map(|i| string(i))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let dur = |d: Option<Duration>| string(&d.map_or("never".to_owned(), format_duration));
    let path = |p: Option<&Path>| string(&p.map(|p| p.display().to_string()).unwrap_or_default());

    line("interfaces", list(s.interfaces.clone()));
    line("tcp_ports", string(&s.tcp_ports.to_string()));
    line("udp_ports", string(&s.udp_ports.to_string()));
    line(
        "advanced_tcp_below",
        s.advanced_tcp_below.unwrap_or(0).to_string(),
    );
    line(
        "advanced_udp_below",
        s.advanced_udp_below.unwrap_or(0).to_string(),
    );
    line(
        "advanced_exclude_tcp",
        string(&s.advanced_exclude_tcp.to_string()),
    );
    line(
        "advanced_exclude_udp",
        string(&s.advanced_exclude_udp.to_string()),
    );
    line("scan_trigger", s.scan_trigger.to_string());
    line("window", dur(s.window));
    line(
        "mode",
        string(if s.mode == Mode::Block {
            "block"
        } else {
            "detect"
        }),
    );
    line("block_tcp", s.block_tcp.to_string());
    line("block_udp", s.block_udp.to_string());
    line("ban_ttl", dur(s.ban_ttl));
    if let Some(n) = s.max_bans {
        line("max_bans", n.to_string());
    }
    if let Some(n) = s.max_ban_networks {
        line("max_ban_networks", n.to_string());
    }
    line("allow", list(s.allow.iter().map(Cidr::to_string).collect()));
    line("ignore_file", path(s.ignore_file.as_deref()));
    line("auto_allow", s.auto_allow.to_string());
    line("history_file", path(s.history_file.as_deref()));
    line(
        "log_format",
        string(if s.log_format == LogFormat::Json {
            "json"
        } else {
            "portsentry"
        }),
    );
    line(
        "xdp_mode",
        string(match s.xdp_mode {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }),
    );
    line("state_dir", path(Some(&s.state_dir)));
    line("pin_dir", path(s.pin_dir.as_deref()));
    out.push_str("\n[hooks]\n");
    let h = &s.hooks;
    let mut hook = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
    if let Some(argv) = &h.run_cmd {
        hook("run_cmd", list(argv.clone()));
    }
    if let Some(l) = &h.hosts_deny {
        hook("hosts_deny", string(l));
    }
    hook("hosts_deny_file", path(Some(&h.hosts_deny_file)));
    if let Some(argv) = &h.kill_route {
        hook("kill_route", list(argv.clone()));
    }
    hook("run_cmd_first", h.run_cmd_first.to_string());
    hook("run_cmd_always", h.run_cmd_always.to_string());
    hook("timeout", dur(Some(h.timeout)));
    hook("max_concurrent", h.max_concurrent.to_string());
    hook("max_per_minute", h.max_per_minute.to_string());
    if let Some(c) = &s.crowdsec {
        out.push_str("\n[crowdsec]\n");
        let mut key = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
        key("lapi_url", string(&c.lapi_url));
        // Secrets are never printed: check-config output ends up in tickets and chat.
        if c.api_key.is_some() {
            key("api_key", string("(hidden)"));
        }
        if let Some(p) = &c.api_key_file {
            key("api_key_file", path(Some(p)));
        }
        key("update_frequency", dur(Some(c.update_frequency)));
        if let Some(l) = &c.login {
            key("login", string(l));
        }
        if c.password.is_some() {
            key("password", string("(hidden)"));
        }
        if let Some(p) = &c.credentials_file {
            key("credentials_file", path(Some(p)));
        }
        key("scenario", string(&c.scenario));
        key("queue_max", c.queue_max.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Res<Settings> {
        parse_str(text, Path::new("test.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("must be rejected").to_string()
    }

    #[test]
    fn the_shipped_example_is_the_default() {
        let s = parse_str(EMBEDDED_DEFAULT, Path::new("dist/portsentry.toml")).unwrap();
        assert_eq!(render(&s), render(&Settings::default()));
    }

    #[test]
    fn render_round_trips() {
        let text = r#"
interfaces = ["veth0", "eth1"]
tcp_ports = [1, 79, "6000-6063"]
udp_ports = "7,9"
advanced_tcp_below = 1024
advanced_exclude_tcp = "113"
scan_trigger = 3
window = "90s"
mode = "detect"
block_udp = false
ban_ttl = "never"
max_bans = 1000
allow = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]
history_file = "/var/log/portsentry.history"
log_format = "json"
xdp_mode = "generic"
pin_dir = ""
[hooks]
run_cmd = ["/usr/local/bin/notify", "$TARGET$ \"quoted\"", "{port}"]
hosts_deny = "ALL: $TARGET$ : DENY"
kill_route = ["/sbin/ip", "route", "add", "blackhole", "$TARGET$"]
run_cmd_first = true
run_cmd_always = true
timeout = "1m 30s"
max_concurrent = 2
max_per_minute = 0
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.interfaces, ["veth0", "eth1"]);
        assert_eq!(s.tcp_ports.len(), 66);
        assert_eq!(s.advanced_tcp_below, Some(1024));
        assert_eq!(s.window, Some(Duration::from_secs(90)));
        assert_eq!(
            (s.mode, s.block_udp, s.ban_ttl),
            (Mode::Detect, false, None)
        );
        assert_eq!(s.pin_dir, None);
        assert_eq!(s.allow.len(), 3);
        assert_eq!(s.hooks.timeout, Duration::from_secs(90));
        assert_eq!(s.hooks.run_cmd.as_ref().unwrap()[1], "$TARGET$ \"quoted\"");
        let rendered = render(&s);
        let again = parse(&rendered).unwrap();
        assert_eq!(render(&again), rendered);
    }

    #[test]
    fn crowdsec_table() {
        let s = parse(
            "[crowdsec]\nlapi_url = \"http://10.0.0.1:8080/\"\napi_key = \"k\"\nupdate_frequency = \"500ms\"\nlogin = \"m\"\npassword = \"p\"\n",
        )
        .unwrap();
        let c = s.crowdsec.as_ref().unwrap();
        assert_eq!(c.lapi_url, "http://10.0.0.1:8080");
        assert_eq!(c.update_frequency, Duration::from_millis(500));
        assert!(c.is_bouncer() && c.is_machine());
        assert_eq!(c.scenario, "portsentry/port-scan");
        let shown = render(&s);
        assert!(
            shown.contains("api_key = \"(hidden)\"") && !shown.contains("= \"k\""),
            "{shown}"
        );
        assert!(!shown.contains("\"p\""), "{shown}");
        assert!(parse("").unwrap().crowdsec.is_none());
    }

    #[test]
    fn crowdsec_errors() {
        assert!(err("[crowdsec]\napi_key = \"k\"").contains("key `crowdsec.lapi_url`: is required"));
        assert!(
            err("[crowdsec]\nlapi_url = \"10.0.0.1:8080\"\napi_key = \"k\"").contains(
                ":2:12: key `crowdsec.lapi_url`: `10.0.0.1:8080` is not an http:// or https:// URL"
            )
        );
        assert!(err("[crowdsec]\nlapi_url = \"http://x\"").contains("nothing to do"));
        assert!(err("[crowdsec]\nlapi_url = \"http://x\"\nlogin = \"m\"")
            .contains("`login` and `password` go together"));
        assert!(
            err("[crowdsec]\nlapi_url = \"http://x\"\napi_key = \"k\"\napi_key_file = \"/k\"")
                .contains("exclude each other")
        );
        assert!(err(
            "[crowdsec]\nlapi_url = \"http://x\"\napi_key = \"k\"\nupdate_frequency = \"1ms\""
        )
        .contains(":4:20: key `crowdsec.update_frequency`: must be a duration of at least 100ms"));
        assert!(
            err("[crowdsec]\nlapi_url = \"http://x\"\napikey = \"k\"").contains(
                ":3:1: key `crowdsec.apikey`: unknown key (did you mean `crowdsec.api_key`?)"
            )
        );
    }

    #[test]
    fn errors_name_file_line_column_and_key() {
        assert_eq!(
            err("scan_trigger = 1\ntcp_ports = \"1,2,x\"\n"),
            "test.toml:2:13: key `tcp_ports`: `x` is not a port number (1-65535)"
        );
        assert_eq!(
            err("\n\n[hooks]\nrun_cmd = \"rm -rf $TARGET$\"\n"),
            "test.toml:4:11: key `hooks.run_cmd`: must be a list of strings (argv), e.g. [\"/usr/local/bin/notify\", \"$TARGET$\"]: commands are never run through a shell"
        );
        assert!(err("scan_triger = 2").starts_with(
            "test.toml:1:1: key `scan_triger`: unknown key (did you mean `scan_trigger`?)"
        ));
        assert!(err("[hooks]\ntimout = \"1s\"")
            .contains(":2:1: key `hooks.timout`: unknown key (did you mean `hooks.timeout`?)"));
        assert!(err("allow = [\"10.0.0.1/8\"]")
            .contains(":1:10: key `allow`: `10.0.0.1/8` has host bits set"));
        assert!(err("mode = \"drop\"")
            .contains("key `mode`: `drop` is not one of \"block\", \"detect\""));
        assert!(err("window = \"soon\"").contains("key `window`: `soon` is not a duration"));
        assert!(err("block_tcp = 1")
            .contains("key `block_tcp`: expected true or false, found the integer 1"));
        assert!(err("scan_trigger = -1").contains("out of range"));
        assert!(err("tcp_ports = [0]").contains("0 is not a port number"));
        assert!(err("a = = 1").starts_with("test.toml:1:"));
        assert!(err("[hooks]\nkill_route = [\"/sbin/route\", \"add\"]")
            .contains("must contain $TARGET$"));
        assert!(err("[hooks]\nrun_cmd = []").contains("must not be empty"));
        assert!(err("[hooks]\ntimeout = \"never\"").contains("positive duration"));
        assert!(err("hooks = 3").contains("key `hooks`: must be a table"));
    }

    #[test]
    fn load_file_reads_the_ignore_file_relative_to_the_config() {
        let dir = std::env::temp_dir().join(format!("ps-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ignore"), "# ours\n192.0.2.0/24\n2001:db8::1\n").unwrap();
        std::fs::write(
            dir.join("a.toml"),
            "allow = [\"192.0.2.0/24\"]\nignore_file = \"ignore\"\n",
        )
        .unwrap();
        let s = load_file(&dir.join("a.toml")).unwrap();
        assert_eq!(
            s.allow.iter().map(Cidr::to_string).collect::<Vec<_>>(),
            ["192.0.2.0/24", "2001:db8::1"]
        );
        assert_eq!(s.ignore_file, Some(dir.join("ignore")));

        std::fs::write(dir.join("ignore"), "192.0.2.0/24\n10.1.2.3/8\n").unwrap();
        let e = load_file(&dir.join("a.toml")).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}:2:15: key `ignore_file`: {}:2: ",
                dir.join("a.toml").display(),
                dir.join("ignore").display()
            )),
            "{e}"
        );

        let e = load_file(&dir.join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml: cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const GOOD: &[(&str, &str)] = &[
        ("tcp_ports", "\"1,2,3-9\""),
        ("udp_ports", "[7, \"9-10\"]"),
        ("scan_trigger", "2"),
        ("window", "\"5m\""),
        ("ban_ttl", "\"never\""),
        ("mode", "\"detect\""),
        ("allow", "[\"10.0.0.0/8\"]"),
        ("block_udp", "false"),
        ("advanced_tcp_below", "1024"),
    ];
    const BAD: &[(&str, &str)] = &[
        ("tcp_ports", "\"1,,2\""),
        ("udp_ports", "[70000]"),
        ("scan_trigger", "\"two\""),
        ("window", "\"5 fortnights\""),
        ("mode", "\"panic\""),
        ("allow", "[\"10.0.0.1/8\"]"),
        ("block_udp", "\"no\""),
        ("advanced_tcp_below", "65536"),
        ("bogus_key", "1"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary text never panics; every rejection names a line.
        #[test]
        fn arbitrary_text_never_panics(text in "(?s).{0,300}") {
            if let Err(e) = parse(&text) {
                prop_assert!(e.line >= 1, "{e}");
                prop_assert!(e.to_string().starts_with("test.toml:"));
            }
        }

        /// Near-valid files: TOML-ish fragments from the real key set.
        #[test]
        fn key_soup_never_panics(lines in prop::collection::vec(
            (prop::sample::select(TOP_KEYS), prop::sample::select(vec![
                "1", "-1", "0", "\"\"", "\"1-\"", "[1,", "[\"a\"]", "true", "1.5", "{a=1}", "\"::/0\"",
                "[\"::ffff:1.2.3.4/120\"]", "\"65535-1\"", "\"never\"", "1979-05-27", "[[]]",
            ])), 0..8)) {
            let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            if let Err(e) = parse(&text) {
                prop_assert!(e.line >= 1 && e.line <= lines.len().max(1), "{e}\n{text}");
            }
        }

        /// The first bad line in document order is the one reported.
        #[test]
        fn the_reported_line_is_the_bad_one(
            good in prop::collection::vec(prop::sample::select(GOOD), 0..6),
            bad in prop::sample::select(BAD),
            at in 0usize..6,
        ) {
            let mut entries: Vec<(&str, &str)> = Vec::new();
            for g in good {
                if g.0 != bad.0 && !entries.iter().any(|e| e.0 == g.0) {
                    entries.push(g);
                }
            }
            let at = at.min(entries.len());
            entries.insert(at, bad);
            let text: String = entries.iter().map(|(k, v)| format!("# comment\n{k} = {v}\n")).collect();
            let e = parse(&text).expect_err("bad value accepted");
            prop_assert_eq!(e.line, 2 * at + 2, "{}\n{}", e, text);
            prop_assert_eq!(e.key.as_deref(), Some(bad.0));
        }
    }
}
