//! Reading a classic `portsentry.conf`: its `KEY="value"` lines (quotes, trailing comments,
//! blank and `#` lines skipped) and the error naming `PATH:LINE` that every step of the import
//! reports with.

use std::{
    fmt,
    path::{Path, PathBuf},
};

/// `PATH:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

impl std::error::Error for ImportError {}

/// One `KEY="value"` line.
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) value: String,
    pub(super) line: usize,
}

/// Reads `KEY="value"` lines; blank lines and `#` comments are skipped.
pub(super) fn read_entries(text: &str, path: &Path) -> Result<Vec<Entry>, ImportError> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let err = |message: String| ImportError {
            path: path.to_owned(),
            line,
            message,
        };
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((key, rest)) = l.split_once('=') else {
            return Err(err(format!(
                "expected KEY=\"value\", found `{}`",
                shorten(l)
            )));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(err(format!(
                "`{}` is not a PortSentry key (KEY=\"value\" with an upper-case KEY)",
                shorten(key)
            )));
        }
        let rest = rest.trim();
        let value = match rest.strip_prefix('"') {
            Some(inner) => {
                // The value runs to the last quote; anything after it must be a comment.
                let Some(end) = inner.rfind('"') else {
                    return Err(err(format!("{key}: the value's closing quote is missing")));
                };
                let tail = inner[end + 1..].trim();
                if !tail.is_empty() && !tail.starts_with('#') {
                    return Err(err(format!(
                        "{key}: unexpected text after the closing quote: `{}`",
                        shorten(tail)
                    )));
                }
                inner[..end].to_owned()
            }
            None => rest.split('#').next().unwrap_or("").trim().to_owned(),
        };
        out.push(Entry {
            key: key.to_owned(),
            value,
            line,
        });
    }
    Ok(out)
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_owned()
    }
}
