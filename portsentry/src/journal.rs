//! How the daemon's lines reach stdout and stderr, and under systemd the journal with a
//! priority, so `journalctl -u portsentry -p warning` shows bans and problems only.
//!
//! [`priority`] is the one place that decides a line's syslog priority, from the line's kind
//! (its fixed prefix: `attackalert:`, `Scan from:`, `portsentry: error:`, …; the table is in
//! docs/CONFIG.md, "Logs and the journal"). A line gets sd-daemon(3)'s `<N>` prefix only while
//! its stream is connected to the journal: systemd sets `JOURNAL_STREAM=DEV:INO` to the
//! device and inode of that connection (systemd.exec(5)), and a stream whose `fstat` differs
//! (a terminal, a pipe, a file, a test) gets the line byte for byte as PortSentry 2.x wrote it.
//!
//! Every daemon line goes through [`outln!`](crate::outln) (events: stdout) or
//! [`errln!`](crate::errln) (diagnostics: stderr); the daemon's modules deny `println!` and
//! `eprintln!` (clippy `print_stdout`/`print_stderr`, in lib.rs) so none bypasses this.

use std::{
    borrow::Cow,
    ffi::OsStr,
    io::Write,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    sync::OnceLock,
};

/// The syslog priorities the daemon uses (sd-daemon(3)'s `SD_ERR` … `SD_INFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Something failed: a write, a hook, a ban that could not be stored.
    Err = 3,
    /// A source was blocked, or the daemon runs degraded.
    Warning = 4,
    /// A probe that triggered; a `run_cmd` without a block.
    Notice = 5,
    /// Probes below the trigger, ignored or refused probes, start-up and state lines.
    Info = 6,
    /// The XDP program's diagnostics (`log_level`): `portsentry: kernel debug|trace: …`.
    Debug = 7,
}

/// The priority of one daemon line, by its kind. Lines without a known prefix are `Info`, the
/// priority journald gives a stream's unprefixed lines anyway.
pub fn priority(line: &str) -> Priority {
    if let Some(rest) = line.strip_prefix("attackalert: ") {
        return if rest.contains(" could not be blocked") {
            Priority::Err
        } else if rest.starts_with("External command run") {
            Priority::Notice
        } else {
            Priority::Warning
        };
    }
    if line.starts_with("Scan from: ") {
        return if line.contains(" triggered: [true] ") {
            Priority::Notice
        } else {
            Priority::Info
        };
    }
    if line.starts_with('{') {
        return json_priority(line);
    }
    let Some(rest) = line.strip_prefix("portsentry: ") else {
        return Priority::Info;
    };
    if rest.starts_with("error: ") {
        Priority::Err
    } else if rest.starts_with("warning: ") || rest.starts_with("hooks: skipped ") {
        Priority::Warning
    } else if rest.starts_with("kernel debug: ") || rest.starts_with("kernel trace: ") {
        Priority::Debug
    } else {
        Priority::Info
    }
}

/// `log_format = "json"` events, by their `event` and `triggered` fields, as their text twins.
fn json_priority(line: &str) -> Priority {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return Priority::Info;
    };
    match v.get("event").and_then(|e| e.as_str()) {
        Some("ban_table_full") => Priority::Err,
        Some("ban") if v.get("blocked") == Some(&serde_json::Value::Bool(true)) => {
            Priority::Warning
        }
        Some("ban" | "probe") if v.get("triggered") == Some(&serde_json::Value::Bool(true)) => {
            Priority::Notice
        }
        _ => Priority::Info,
    }
}

/// True when `fd` is the journal connection `journal_stream` (`$JOURNAL_STREAM`, "DEV:INO" in
/// decimal) names.
pub fn connected_to_journal(fd: BorrowedFd<'_>, journal_stream: Option<&OsStr>) -> bool {
    let Some((dev, ino)) = journal_stream
        .and_then(OsStr::to_str)
        .and_then(|s| s.split_once(':'))
        .and_then(|(d, i)| {
            Some((
                d.parse::<libc::dev_t>().ok()?,
                i.parse::<libc::ino_t>().ok()?,
            ))
        })
    else {
        return false;
    };
    match nix::sys::stat::fstat(fd.as_raw_fd()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// `text` as written to a stream: with `<N>` in front of each of its lines when the stream is
/// the journal, else unchanged.
pub fn render(text: &str, journal: bool) -> Cow<'_, str> {
    if !journal {
        return Cow::Borrowed(text);
    }
    let tag = format!("<{}>", priority(text) as u8);
    let mut out = String::with_capacity(text.len() + tag.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&tag);
        out.push_str(line);
    }
    Cow::Owned(out)
}

fn journal_env() -> Option<std::ffi::OsString> {
    std::env::var_os("JOURNAL_STREAM")
}

/// Writes one line (plus newline) to stdout. A write error is ignored: a daemon whose stdout
/// went away keeps enforcing (the history file and the maps do not depend on it).
pub fn stdout_line(text: &str) {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    let out = std::io::stdout();
    let journal =
        *JOURNAL.get_or_init(|| connected_to_journal(out.as_fd(), journal_env().as_deref()));
    let mut line = render(text, journal).into_owned();
    line.push('\n');
    let _ = out.lock().write_all(line.as_bytes());
}

/// Writes one line (plus newline) to stderr; see [`stdout_line`].
pub fn stderr_line(text: &str) {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    let err = std::io::stderr();
    let journal =
        *JOURNAL.get_or_init(|| connected_to_journal(err.as_fd(), journal_env().as_deref()));
    let mut line = render(text, journal).into_owned();
    line.push('\n');
    let _ = err.lock().write_all(line.as_bytes());
}

/// `println!` for daemon lines: stdout, with a journal priority when stdout is the journal.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::journal::stdout_line(&format!($($arg)*))
    };
}

/// `eprintln!` for daemon lines: stderr, with a journal priority when stderr is the journal.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::journal::stderr_line(&format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use std::{ffi::OsString, os::unix::fs::MetadataExt};

    use super::*;

    #[test]
    fn each_kind_of_line_has_its_priority() {
        use Priority::*;
        let cases = [
            ("attackalert: Host 10.0.0.2 has been blocked via XDP drop on interface: \"eth0\"", Warning),
            ("attackalert: Host 10.0.0.2 has been blocked via wrappers with string: \"ALL: 10.0.0.2\"", Warning),
            ("attackalert: Host 10.0.0.2 could not be blocked: the ban table is full (raise max_bans)", Err),
            ("attackalert: External command run for host: 10.0.0.2 using command: \"/bin/true\"", Notice),
            ("Scan from: [10.0.0.2] (10.0.0.2) protocol: [TCP] port: [111] type: [TCP SYN/Normal scan] IP opts: [not set] ignored: [false] triggered: [true] noblock: [false] blocked: [true]", Notice),
            ("Scan from: [10.0.0.2] (10.0.0.2) protocol: [TCP] port: [111] type: [TCP SYN/Normal scan] IP opts: [not set] ignored: [false] triggered: [false] noblock: [unset] blocked: [unset]", Info),
            ("Scan from: [10.0.0.2] (10.0.0.2) protocol: [TCP] port: [111] type: [TCP SYN/Normal scan] IP opts: [not set] ignored: [true] triggered: [unset] noblock: [unset] blocked: [unset]", Info),
            ("portsentry: probe from 10.0.0.2 (TCP SYN/Normal scan TCP port 111 on eth0): spoofed: …", Info),
            ("portsentry: error: cannot write history file /x: No space left on device", Err),
            ("portsentry: warning: eth0 has no native XDP support; using generic XDP (slower)", Warning),
            ("portsentry: hooks: skipped 3 ban response(s) since the last report (…)", Warning),
            ("portsentry: attached to eth0 (native XDP)", Info),
            ("portsentry: kernel debug: bogus source ::ffff:127.0.0.5 (no real peer has it) probed port 111: not counted", Debug),
            ("Portsentry is now active and listening.", Info),
            (r#"{"event":"ban","blocked":true,"triggered":true}"#, Warning),
            (r#"{"event":"ban","blocked":false,"triggered":true}"#, Notice),
            (r#"{"event":"probe","blocked":false,"triggered":false}"#, Info),
            (r#"{"event":"ban_table_full","blocked":false,"triggered":true}"#, Err),
        ];
        for (line, want) in cases {
            assert_eq!(priority(line), want, "{line}");
        }
    }

    #[test]
    fn prefixed_only_for_the_journal_and_on_every_line() {
        let line =
            "attackalert: Host 10.0.0.2 has been blocked via XDP drop on interface: \"eth0\"";
        assert_eq!(render(line, false), line);
        assert_eq!(render(line, true), format!("<4>{line}"));
        assert_eq!(
            render("portsentry: error: a\nb", true),
            "<3>portsentry: error: a\n<3>b"
        );
    }

    #[test]
    fn journal_stream_must_name_this_very_descriptor() {
        let path = std::env::temp_dir().join(format!("ps-journal-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        let m = f.metadata().unwrap();
        let env = |s: String| Some(OsString::from(s));
        let fd = f.as_fd();
        assert!(connected_to_journal(
            fd,
            env(format!("{}:{}", m.dev(), m.ino())).as_deref()
        ));
        assert!(!connected_to_journal(fd, None));
        assert!(!connected_to_journal(
            fd,
            env(format!("{}:{}", m.dev(), m.ino() + 1)).as_deref()
        ));
        assert!(!connected_to_journal(fd, env("garbage".into()).as_deref()));
        assert!(!connected_to_journal(
            fd,
            env(format!("{}", m.dev())).as_deref()
        ));
        let _ = std::fs::remove_file(&path);
    }
}
