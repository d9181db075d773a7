//! Debian's logcheck (1.4.x; the `logcheck`, `logcheck-database` and `logtail` packages staged
//! under target/ by `cargo xtask test`, never installed) run as an unprivileged user, the way
//! its cron job runs it, on log lines this test supplies: `-l LOG` instead of the journal and
//! /etc/logcheck/logcheck.logfiles, `-r RULES` instead of /etc/logcheck, `-o` to print the
//! report instead of mailing it, `-t` to leave the offsets alone. The rules are the database's
//! with ours (dist/logcheck) added, as `cargo xtask install` leaves them.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{lab::TempDir, staged};

/// Set by `cargo xtask test`: the directory holding the three staged packages.
const LOGCHECK_ENV: &str = "PORTSENTRY_LOGCHECK_TOOLS";

/// The unprivileged user logcheck runs as here (it refuses root): `nobody`/`nogroup`.
const UNPRIVILEGED: &str = "65534";

/// The staged packages' directory. Refuses one outside a `target/` directory.
pub fn staged_tools() -> Result<PathBuf> {
    staged::dir(LOGCHECK_ENV)
}

/// Our rules in the source tree.
pub fn our_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/logcheck")
}

/// One section of a logcheck report: its heading ("Security Alerts for portsentry", "System
/// Events", …) and its lines.
#[derive(Debug, Clone)]
pub struct Section {
    pub heading: String,
    pub lines: Vec<String>,
}

/// What logcheck printed, split into sections.
#[derive(Debug)]
pub struct Report {
    pub sections: Vec<Section>,
    pub text: String,
}

impl Report {
    /// The sections whose heading starts with `prefix` ("Security Alerts", "Security Events",
    /// "System Events").
    pub fn lines_under(&self, prefix: &str) -> Vec<&str> {
        self.sections
            .iter()
            .filter(|s| s.heading.starts_with(prefix))
            .flat_map(|s| s.lines.iter().map(String::as_str))
            .collect()
    }

    /// Every reported line, in any section.
    pub fn all_lines(&self) -> Vec<&str> {
        self.sections
            .iter()
            .flat_map(|s| s.lines.iter().map(String::as_str))
            .collect()
    }
}

/// `mode` on `path` (the run is unprivileged: it must read the log and rules, write its lock).
fn chmod(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Runs the staged logcheck (server level) on `log` (whole syslog lines) with the database's
/// rules plus `ours` (a directory shaped like /etc/logcheck: cracking.d, ignore.d.server, …).
pub fn run(log: &[String], ours: &Path) -> Result<Report> {
    let tools = staged_tools()?;
    let script = tools.join("logcheck/usr/sbin/logcheck");
    let logtail = tools.join("logtail/usr/sbin/logtail2");
    let database = tools.join("logcheck-database/etc/logcheck");
    for p in [&script, &logtail, &database] {
        if !p.exists() {
            bail!(
                "{} is missing: run `cargo xtask test` to stage it",
                p.display()
            );
        }
    }
    let work = TempDir::new("logcheck")?;
    chmod(&work.path, 0o755)?;
    let rules = work.join("rules");
    let copy = |from: &Path, to: &Path| -> Result<()> {
        let status = Command::new("cp")
            .arg("-rT")
            .arg(from)
            .arg(to)
            .status()
            .context("running cp")?;
        if !status.success() {
            bail!("cp -rT {} {} failed", from.display(), to.display());
        }
        Ok(())
    };
    copy(&database, &rules)?;
    copy(ours, &rules)?;
    // Readable by the unprivileged user, as the packages install them (0644 files).
    let status = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&rules)
        .status()?;
    if !status.success() {
        bail!("chmod -R a+rX {} failed", rules.display());
    }
    let state = work.join("state");
    let lock = work.join("lock");
    for d in [&state, &lock] {
        std::fs::create_dir(d)?;
        chmod(d, 0o1777)?;
    }
    let logfile = work.join("syslog");
    std::fs::write(&logfile, log.join("\n") + "\n")?;
    chmod(&logfile, 0o644)?;
    let conf = work.join("logcheck.conf");
    std::fs::write(
        &conf,
        format!(
            "REPORTLEVEL=\"server\"\nINTRO=0\nLOGTAIL=\"{}\"\nLOCKDIR=\"{}\"\nLOCKFILE=\"{}/logcheck\"\n",
            logtail.display(),
            lock.display(),
            lock.display()
        ),
    )?;
    chmod(&conf, 0o644)?;
    let text = staged::stdout_of(
        Command::new("setpriv")
            .args([
                &format!("--reuid={UNPRIVILEGED}"),
                &format!("--regid={UNPRIVILEGED}"),
                "--clear-groups",
                "--",
                "/bin/bash",
            ])
            .arg(&script)
            .arg("-c")
            .arg(&conf)
            .arg("-r")
            .arg(&rules)
            .arg("-S")
            .arg(&state)
            .arg("-l")
            .arg(&logfile)
            .args(["-o", "-t"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("TMP", "/tmp"),
        "logcheck",
    )?;
    Ok(Report {
        sections: sections(&text),
        text,
    })
}

/// Splits a report: a heading, a line of `=-=-…`, the lines, a blank line.
fn sections(text: &str) -> Vec<Section> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Section> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if i + 1 < lines.len()
            && !lines[i].is_empty()
            && lines[i + 1].starts_with("=-=-")
            && lines[i + 1].chars().all(|c| c == '=' || c == '-')
        {
            out.push(Section {
                heading: lines[i].to_owned(),
                lines: Vec::new(),
            });
            i += 2;
            continue;
        }
        if let Some(s) = out.last_mut() {
            if !lines[i].is_empty() {
                s.lines.push(lines[i].to_owned());
            }
        }
        i += 1;
    }
    out
}
