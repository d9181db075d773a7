//! The hosts_deny hook (PortSentry's KILL_HOSTS_DENY): appends one expanded line to the TCP
//! wrappers file, once, never splitting it into more lines than the admin wrote.

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Write},
    path::Path,
    sync::{Arc, Mutex},
};

use super::{
    lock,
    template::{expand, Placeholders},
    HookOutcome,
};
use crate::{
    bans::BanNotice,
    detect::{
        lines::{self, Response},
        logging::LogFn,
    },
};

/// Serialises the check-then-append of every response of one runner, so two responses cannot
/// both miss a line and both write it.
#[derive(Clone, Default)]
pub struct HostsDenyLock(Arc<Mutex<()>>);

/// Expands `template` for `ban` and appends it to `file` unless present; logs the result. An
/// IPv6 target is written in brackets (`ALL: [2001:db8::1]`), as TCP wrappers expect it.
pub async fn append_hosts_deny(
    log: &LogFn,
    file_lock: &HostsDenyLock,
    template: &str,
    file: &Path,
    ban: &BanNotice,
) -> HookOutcome {
    let target = ban.source;
    let line = expand(template, &Placeholders::for_hosts_deny(ban));
    let fail = |what: String| {
        log(format!(
            "portsentry: error: hook hosts_deny for host {target}: {what}"
        ));
        HookOutcome::Failed
    };
    // A line break would let a value add lines of its own to the access-control file.
    if line.contains(['\n', '\r', '\0']) {
        return fail(format!(
            "refusing to write {line:?}: it contains a line break or NUL"
        ));
    }
    let (file_lock, path, owned) = (file_lock.clone(), file.to_owned(), line.clone());
    // File I/O blocks; the event loop's runtime must not.
    let result = tokio::task::spawn_blocking(move || {
        let _guard = lock(&file_lock.0);
        append_line(&path, &owned)
    })
    .await;
    match result {
        Ok(Ok(written)) => {
            log(lines::response_line(&Response::Wrappers {
                target,
                entry: &line,
                already_present: !written,
            }));
            HookOutcome::Succeeded
        }
        Ok(Err(e)) => fail(format!("cannot append to {}: {e}", file.display())),
        Err(e) => fail(format!("cannot append to {}: {e}", file.display())),
    }
}

/// Appends `line` to `path` unless it already is a line there (PortSentry did not duplicate
/// either); false if it was present.
fn append_line(path: &Path, line: &str) -> std::io::Result<bool> {
    let mut glue = "";
    match std::fs::read(path) {
        Ok(bytes) => {
            if String::from_utf8_lossy(&bytes).lines().any(|l| l == line) {
                return Ok(false);
            }
            // Otherwise our line would be glued onto an unterminated last line.
            if bytes.last().is_some_and(|b| *b != b'\n') {
                glue = "\n";
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = OpenOptions::new().append(true).create(true).open(path)?;
    f.write_all(format!("{glue}{line}\n").as_bytes())?;
    Ok(true)
}

// Driven through the runner, as the daemon drives the hook, so counters and log lines count.
#[cfg(test)]
mod tests {
    use std::fs;

    use crate::{
        bans::BanNotice,
        config::settings::HookSettings,
        hooks::{
            lock,
            tests::{ban, hooks, runner, settle, Scratch},
        },
    };

    #[tokio::test]
    async fn hosts_deny_line_is_written_once() {
        let dir = Scratch::new();
        let file = dir.path("hosts.deny");
        fs::write(&file, "# local rules\nALL: 198.51.100.1").unwrap();
        let s = HookSettings {
            hosts_deny: Some("ALL: $TARGET$ : {proto}".to_owned()),
            hosts_deny_file: file.clone(),
            ..hooks(None)
        };
        let (r, lines) = runner(s);
        for _ in 0..3 {
            r.on_ban(&ban("SYN"));
            settle(&r).await;
        }
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "# local rules\nALL: 198.51.100.1\nALL: 192.0.2.7 : TCP\n"
        );
        assert_eq!(r.stats().succeeded, 3);
        assert_eq!(
            lock(&lines)
                .iter()
                .filter(|l| l.ends_with("(already present)"))
                .count(),
            2
        );
    }

    #[tokio::test]
    async fn hosts_deny_refuses_line_breaks() {
        let dir = Scratch::new();
        let file = dir.path("hosts.deny");
        let s = HookSettings {
            hosts_deny: Some("ALL: {target} # {scan}".to_owned()),
            hosts_deny_file: file.clone(),
            ..hooks(None)
        };
        let (r, lines) = runner(s);
        r.on_ban(&ban("x\nALL: ALL"));
        settle(&r).await;
        assert!(!file.exists());
        assert_eq!(r.stats().failed, 1);
        assert!(lock(&lines)[0]
            .starts_with("portsentry: error: hook hosts_deny for host 192.0.2.7: refusing"));
    }

    /// hosts_access(5) matches an IPv6 client only as `[addr]`; a bare address never matches.
    #[tokio::test]
    async fn hosts_deny_writes_ipv6_targets_in_brackets() {
        let dir = Scratch::new();
        let file = dir.path("hosts.deny");
        let s = HookSettings {
            hosts_deny: Some("ALL: $TARGET$".to_owned()),
            hosts_deny_file: file.clone(),
            ..hooks(None)
        };
        let (r, lines) = runner(s);
        r.on_ban(&BanNotice {
            source: "2001:db8::1".parse().unwrap(),
            ..ban("SYN")
        });
        settle(&r).await;
        assert_eq!(fs::read_to_string(&file).unwrap(), "ALL: [2001:db8::1]\n");
        assert_eq!(
            lock(&lines)[0],
            "attackalert: Host 2001:db8::1 has been blocked via wrappers with string: \"ALL: [2001:db8::1]\""
        );
    }
}
