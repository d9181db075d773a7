//! The runner end to end: real processes and files in a scratch directory, each test with its
//! own runner, so limits and counters are exact. The fixtures here serve the tests of the
//! other hooks files too.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::AtomicUsize,
};

use super::*;

mod limits;

/// A fresh directory under the system temp dir, removed on drop.
pub(super) struct Scratch(PathBuf);

impl Scratch {
    pub(super) fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("portsentry-hooks-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(super) type Lines = Arc<Mutex<Vec<String>>>;

pub(super) fn runner(settings: HookSettings) -> (HookRunner, Lines) {
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    (
        HookRunner::new(settings, Arc::new(move |l| lock(&sink).push(l))),
        lines,
    )
}

pub(super) fn ban(scan: &str) -> BanNotice {
    BanNotice {
        dst_port: 31337,
        scan: scan.to_owned(),
        ..BanNotice::example("192.0.2.7")
    }
}

pub(super) fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `/bin/sh -c SCRIPT sh FILE`: a fixed admin script with the file path as `$1`.
fn sh(script: &str, file: &Path) -> Vec<String> {
    argv(&["/bin/sh", "-c", script, "sh", &file.display().to_string()])
}

pub(super) fn hooks(run_cmd: Option<Vec<String>>) -> HookSettings {
    HookSettings {
        run_cmd,
        timeout: Duration::from_secs(10),
        ..HookSettings::default()
    }
}

pub(super) async fn settle(r: &HookRunner) {
    assert!(
        r.idle(Duration::from_secs(10)).await,
        "hooks still running after 10 s"
    );
}

#[tokio::test]
async fn hostile_values_never_reach_a_shell() {
    let dir = Scratch::new();
    let out = dir.path("out");
    let marks: Vec<PathBuf> = (1..=3).map(|i| dir.path(&format!("mark{i}"))).collect();
    let hostile = format!(
        "x; touch {} $(touch {}) `touch {}` 'q' \"w\"  end",
        marks[0].display(),
        marks[1].display(),
        marks[2].display()
    );
    let script = format!("printf '%s\\n' \"$@\" > '{}'", out.display());
    let (r, lines) = runner(hooks(Some(argv(&[
        "/bin/sh", "-c", &script, "argv0", "{scan}",
    ]))));
    r.on_ban(&ban(&hostile));
    settle(&r).await;
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        format!("{hostile}\n"),
        "log: {:?}",
        lock(&lines)
    );
    for m in &marks {
        assert!(
            !m.exists(),
            "{} was created: the value ran as shell code",
            m.display()
        );
    }
    assert_eq!(r.stats().succeeded, 1);
}

/// run_cmd, kill_route and hosts_deny all appending to one file, so their order shows in it.
fn all_three_into(file: &std::path::Path) -> HookSettings {
    HookSettings {
        run_cmd: Some(sh("echo cmd >> \"$1\"", file)),
        kill_route: Some(sh("echo route >> \"$1\"", file)),
        hosts_deny: Some("ALL: {target}".to_owned()),
        hosts_deny_file: file.to_owned(),
        ..hooks(None)
    }
}

/// A runner with `settings` that has finished responding to `notice`.
async fn respond_once(settings: HookSettings, notice: BanNotice) -> (HookRunner, Lines) {
    let (r, lines) = runner(settings);
    r.on_ban(&notice);
    settle(&r).await;
    (r, lines)
}

#[tokio::test]
async fn hooks_run_in_portsentry_order() {
    for first in [true, false] {
        let dir = Scratch::new();
        let file = dir.path("order");
        let (r, lines) = respond_once(
            HookSettings {
                run_cmd_first: first,
                ..all_three_into(&file)
            },
            ban("SYN"),
        )
        .await;
        let want = if first {
            "cmd\nALL: 192.0.2.7\nroute\n"
        } else {
            "ALL: 192.0.2.7\nroute\ncmd\n"
        };
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            want,
            "run_cmd_first = {first}"
        );
        let lines = lock(&lines).clone();
        assert_eq!(lines.len(), 3, "{lines:?}");
        let cmd = format!("/bin/sh -c echo cmd >> \"$1\" sh {}", file.display());
        assert!(
            lines.contains(&format!(
                "attackalert: External command run for host: 192.0.2.7 using command: \"{cmd}\""
            )),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.starts_with("attackalert: Host 192.0.2.7 has been blocked via dropped route using command: \"/bin/sh -c echo route")), "{lines:?}");
        assert!(lines.contains(&"attackalert: Host 192.0.2.7 has been blocked via wrappers with string: \"ALL: 192.0.2.7\"".to_owned()), "{lines:?}");
        assert_eq!(
            r.stats(),
            HookStats {
                started: 1,
                succeeded: 3,
                ..HookStats::default()
            }
        );
    }
}

#[tokio::test]
async fn an_unenforced_ban_runs_only_run_cmd_and_only_when_asked() {
    for always in [false, true] {
        let dir = Scratch::new();
        let file = dir.path("order");
        let unenforced = BanNotice {
            enforced: false,
            ..ban("SYN")
        };
        let (r, lines) = respond_once(
            HookSettings {
                run_cmd_always: always,
                ..all_three_into(&file)
            },
            unenforced,
        )
        .await;
        let got = fs::read_to_string(&file).unwrap_or_default();
        let (want, started) = if always { ("cmd\n", 1) } else { ("", 0) };
        assert_eq!(got, want, "run_cmd_always = {always}: {:?}", lock(&lines));
        assert_eq!(
            r.stats(),
            HookStats {
                started,
                succeeded: started,
                ..HookStats::default()
            },
            "not running is not a skip"
        );
    }
}

#[tokio::test]
async fn failures_are_counted_and_logged() {
    let dir = Scratch::new();
    let cases: [(Vec<String>, &str); 3] = [
        (argv(&["/bin/false"]), "portsentry: error: hook run_cmd \"/bin/false\" for host 192.0.2.7 exited with status 1"),
        (argv(&["/bin/sh", "-c", "echo '' >&2; echo '  no route to {target}' >&2; exit 3"]), "exited with status 3: no route to 192.0.2.7"),
        (argv(&["/bin/sh", "-c", "kill -9 $$"]), "was killed by signal 9"),
    ];
    for (cmd, want) in cases {
        let (r, lines) = respond_once(hooks(Some(cmd)), ban("SYN")).await;
        assert_eq!(
            r.stats(),
            HookStats {
                started: 1,
                failed: 1,
                ..HookStats::default()
            }
        );
        let lines = lock(&lines).clone();
        assert!(
            lines.len() == 1
                && lines[0].starts_with("portsentry: error: hook run_cmd")
                && lines[0].ends_with(want),
            "{lines:?}"
        );
    }
    let missing = dir.path("no-such-program");
    let (r, lines) =
        respond_once(hooks(Some(vec![missing.display().to_string()])), ban("SYN")).await;
    assert_eq!(r.stats().failed, 1);
    assert!(
        lock(&lines)[0].contains("could not be started"),
        "{:?}",
        lock(&lines)
    );
}

#[tokio::test]
async fn slow_commands_are_killed() {
    let s = HookSettings {
        timeout: Duration::from_millis(200),
        ..hooks(Some(argv(&["/bin/sleep", "5"])))
    };
    let (r, lines) = runner(s);
    let t0 = Instant::now();
    r.on_ban(&ban("SYN"));
    settle(&r).await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        r.stats(),
        HookStats {
            started: 1,
            failed: 1,
            timed_out: 1,
            ..HookStats::default()
        }
    );
    assert!(
        lock(&lines)[0].ends_with("timed out after 200ms; killed"),
        "{:?}",
        lock(&lines)
    );
}
