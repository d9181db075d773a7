//! fail2ban's own `fail2ban-regex` (Debian's package, staged under target/ by `cargo xtask
//! test`, never installed) run against our history files, with the filters users deploy.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::staged;

/// Set by `cargo xtask test`: the root of the fail2ban package unpacked under target/.
const FAIL2BAN_ENV: &str = "PORTSENTRY_FAIL2BAN_ROOT";

/// PortSentry 2.x's own filter (its repository's `fail2ban/portsentry.conf`), which matches
/// the 2.x history lines. fail2ban's stock filter (for 1.2's lines) is read from the package.
pub const PORTSENTRY2_FILTER: &str = "[Definition]\nfailregex = ^[^ ]* Scan from: \\[<HOST>\\]\n";

/// The unpacked fail2ban package. Refuses one outside a `target/` directory.
pub fn staged_root() -> Result<PathBuf> {
    staged::dir(FAIL2BAN_ENV)
}

/// fail2ban's stock `filter.d/portsentry.conf`.
pub fn stock_filter() -> Result<PathBuf> {
    Ok(staged_root()?.join("etc/fail2ban/filter.d/portsentry.conf"))
}

/// The `logpath` of the stock `[portsentry]` jail in `jail.conf`.
pub fn stock_jail_logpath() -> Result<String> {
    let jail = std::fs::read_to_string(staged_root()?.join("etc/fail2ban/jail.conf"))?;
    let section = jail
        .split("\n[")
        .find(|s| s.starts_with("portsentry]"))
        .context("jail.conf has no [portsentry] jail")?;
    section
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "logpath").then(|| v.trim().to_owned())
        })
        .context("[portsentry] has no logpath")
}

/// What `fail2ban-regex` reported for a log file and a filter.
#[derive(Debug, PartialEq, Eq)]
pub struct RegexResult {
    pub lines: u64,
    pub matched: u64,
    pub missed: u64,
    /// `--print-all-matched`'s lines, as fail2ban printed them.
    pub output: String,
}

/// Runs the staged `fail2ban-regex LOG FILTER` with the system's python3.
pub fn fail2ban_regex(log: &Path, filter: &Path) -> Result<RegexResult> {
    let root = staged_root()?;
    let python = if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let text = staged::stdout_of(
        Command::new(python)
            .arg(root.join("usr/bin/fail2ban-regex"))
            .arg("--print-all-matched")
            .arg(log)
            .arg(filter)
            .env("PYTHONPATH", root.join("usr/lib/python3/dist-packages")),
        "fail2ban-regex",
    )?;
    // "Lines: 3 lines, 0 ignored, 2 matched, 1 missed"
    let summary = text
        .lines()
        .find_map(|l| l.strip_prefix("Lines: "))
        .with_context(|| format!("no `Lines:` summary in:\n{text}"))?;
    let number_before = |word: &str| -> Result<u64> {
        summary
            .split(',')
            .find_map(|part| part.trim().strip_suffix(word)?.trim().parse().ok())
            .with_context(|| format!("no `{word}` count in `{summary}`"))
    };
    Ok(RegexResult {
        lines: number_before("lines")?,
        matched: number_before("matched")?,
        missed: number_before("missed")?,
        output: text,
    })
}
