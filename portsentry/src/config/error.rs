//! Configuration errors: those that name the file, line, column and key, with "did you mean"
//! ([`ConfigError`]), and those of the settings as a whole ([`ValidationError`]).

use std::{fmt, ops::Range, path::PathBuf};

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

/// Settings whose values are each fine but do not hold together (`Settings::validate`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("no guarded ports: set at least one TCP or UDP port")]
    NoGuardedPorts,
    #[error("ipv6_wider_prefixes: /{wider} is not wider than ipv6_prefix = {prefix}")]
    WiderPrefixNotWider { wider: u8, prefix: u8 },
}

/// An error found while reading, before it is placed in a file: the byte span it concerns
/// (if known), the dotted key, the message. Kept so the first fault in document order wins.
#[derive(Debug)]
pub(super) struct Fault {
    pub span: Option<Range<usize>>,
    pub key: String,
    pub message: String,
}

impl Fault {
    pub fn new(span: Option<Range<usize>>, key: &str, message: impl Into<String>) -> Self {
        Self {
            span,
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// Where it sorts: faults without a span go last.
    pub fn position(&self) -> usize {
        self.span.as_ref().map_or(usize::MAX, |s| s.start)
    }

    pub fn place(self, text: &str, path: &std::path::Path) -> ConfigError {
        let (line, column) = self.span.map_or((1, 1), |s| line_col(text, s.start));
        ConfigError {
            path: path.to_owned(),
            line,
            column,
            key: (!self.key.is_empty()).then_some(self.key),
            message: self.message,
        }
    }
}

/// The message for an unknown key, with the closest known key when it is a likely typo.
pub(super) fn unknown_key_message(key: &str, known: &[&str], prefix: &str) -> String {
    let hint = known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| format!(" (did you mean `{prefix}{k}`?)"))
        .unwrap_or_default();
    format!("unknown key{hint}; see dist/portsentry.toml for every key")
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
