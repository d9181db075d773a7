//! The runner's limits: the queue, `max_concurrent`, `max_per_minute`, verified responses
//! ahead of forged bursts, stopping and reloading.

use super::*;

/// `n` bans of 192.0.2.1, 192.0.2.2, …
fn bans(n: u8) -> Vec<BanNotice> {
    (1..=n)
        .map(|i| BanNotice {
            source: format!("192.0.2.{i}").parse().unwrap(),
            ..ban("SYN")
        })
        .collect()
}

/// A runner whose `run_cmd` appends each ban's target to a file, one line a run, then sleeps
/// `sleep` (seconds, as `sleep` takes them), with the given limits; [`TargetLog::ran`] reads the
/// targets back in the order the responses ran.
struct TargetLog {
    _dir: Scratch,
    out: PathBuf,
    runner: HookRunner,
    lines: Lines,
}

impl TargetLog {
    fn new(max_concurrent: usize, queue: usize, max_per_minute: u32, sleep: &str) -> Self {
        let dir = Scratch::new();
        let out = dir.path("ran");
        let script = format!("echo \"$2\" >> \"$1\"; sleep {sleep}");
        let mut run_cmd = sh(&script, &out);
        run_cmd.push("{target}".into());
        let (runner, lines) = runner(HookSettings {
            max_concurrent,
            queue,
            max_per_minute,
            ..hooks(Some(run_cmd))
        });
        Self {
            _dir: dir,
            out,
            runner,
            lines,
        }
    }

    /// The targets the responses got, in the order they ran.
    fn ran(&self) -> Vec<String> {
        fs::read_to_string(&self.out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn a_burst_waits_in_the_queue_and_every_ban_is_answered_in_order() {
    let log = TargetLog::new(2, 16, 0, "0.1");
    let (r, lines) = (&log.runner, &log.lines);
    for b in bans(10) {
        r.on_ban(&b);
    }
    assert_eq!((r.running(), r.queued()), (2, 8));
    assert_eq!(r.stats().started, 2);
    settle(r).await;
    let ran = log.ran();
    let want: Vec<String> = (1..=10).map(|i| format!("192.0.2.{i}")).collect();
    let mut sorted = ran.clone();
    sorted.sort_by_key(|a| a.parse::<std::net::Ipv4Addr>().unwrap());
    assert_eq!(sorted, want, "every ban answered once: {ran:?}");
    // Two slots may swap neighbours as they start, never more.
    for (i, a) in ran.iter().enumerate() {
        let j = want.iter().position(|w| w == a).unwrap();
        assert!(i.abs_diff(j) <= 1, "out of ban order: {ran:?}");
    }
    assert_eq!(
        r.stats(),
        HookStats {
            started: 10,
            succeeded: 10,
            ..HookStats::default()
        }
    );
    r.flush_skip_summary();
    assert!(
        !lock(lines).iter().any(|l| l.contains("skipped")),
        "{:?}",
        lock(lines)
    );
    assert_eq!(r.queued(), 0);
}

/// Issue 25, item 9: a forged (unverified) burst cannot spend what a real scanner's response
/// needs: the verified response waits ahead of the unverified ones, takes the newest one's
/// place in a full queue, and unverified ones get only half of max_per_minute.
#[tokio::test]
async fn verified_responses_go_ahead_of_a_forged_burst() {
    let log = TargetLog::new(1, 3, 8, "0.2");
    let r = &log.runner;
    let mut forged = bans(10);
    for b in &mut forged {
        b.verified = false;
        b.shareable = false;
    }
    for b in &forged {
        r.on_ban(b);
    }
    // Half of 8 for the unverified: one runs, three wait, the rest are over their budget.
    assert_eq!((r.running(), r.queued()), (1, 3));
    assert_eq!(r.stats().skipped_rate, 6);
    let real = BanNotice {
        source: "198.51.100.9".parse().unwrap(),
        ..ban("SYN")
    };
    r.on_ban(&real);
    assert_eq!(
        r.queued(),
        3,
        "the real scanner took a forged response's place"
    );
    assert_eq!(r.stats().skipped_queue_full, 1);
    settle(r).await;
    assert_eq!(
        log.ran(),
        ["192.0.2.1", "198.51.100.9", "192.0.2.2", "192.0.2.3"],
        "the verified response runs next"
    );
}

#[tokio::test]
async fn a_full_queue_skips_and_reports() {
    let s = HookSettings {
        max_concurrent: 2,
        queue: 3,
        ..hooks(Some(argv(&["/bin/sleep", "1"])))
    };
    let (r, lines) = runner(s);
    for _ in 0..10 {
        r.on_ban(&ban("SYN"));
    }
    assert_eq!(
        r.stats(),
        HookStats {
            started: 2,
            skipped_queue_full: 5,
            ..HookStats::default()
        }
    );
    assert_eq!(r.queued(), 3);
    r.flush_skip_summary();
    r.flush_skip_summary();
    assert_eq!(
        *lock(&lines),
        ["portsentry: hooks: skipped 5 ban response(s) since the last report (5 with the queue full (max_concurrent = 2, queue = 3), 0 over max_per_minute = 60); 2 run so far"]
    );
    // A later skip waits for the interval, but is not lost.
    r.on_ban(&ban("SYN"));
    r.flush_skip_summary();
    assert_eq!(lock(&lines).len(), 1);
    r.flush_skip_summary_at(Instant::now() + REPORT_INTERVAL);
    assert!(
        lock(&lines)
            .last()
            .is_some_and(|l| l.contains("skipped 1 ban response(s)")),
        "{:?}",
        lock(&lines)
    );
    assert!(r.idle(Duration::from_secs(10)).await);
    assert_eq!(r.stats().succeeded, 5);
}

#[tokio::test]
async fn queue_zero_skips_when_every_slot_is_busy_and_stop_abandons_the_queue() {
    let (r, lines) = runner(HookSettings {
        max_concurrent: 1,
        queue: 0,
        ..hooks(Some(argv(&["/bin/sleep", "0.3"])))
    });
    r.on_ban(&ban("SYN"));
    r.on_ban(&ban("SYN"));
    assert_eq!(r.stats().skipped_queue_full, 1);
    settle(&r).await;
    r.reload(HookSettings {
        max_concurrent: 1,
        queue: 4,
        ..hooks(Some(argv(&["/bin/sleep", "0.3"])))
    });
    for _ in 0..4 {
        r.on_ban(&ban("SYN"));
    }
    assert_eq!(r.abandon_queue(), 3);
    assert!(lock(&lines)
        .iter()
        .any(|l| l == "portsentry: warning: hooks: 3 queued ban response(s) not run: stopping"));
    settle(&r).await;
    assert_eq!(r.stats().started, 2);
}

#[tokio::test]
async fn a_higher_max_concurrent_starts_queued_responses_at_once() {
    let slow = || hooks(Some(argv(&["/bin/sleep", "0.5"])));
    let (r, _) = runner(HookSettings {
        max_concurrent: 1,
        ..slow()
    });
    for _ in 0..4 {
        r.on_ban(&ban("SYN"));
    }
    assert_eq!((r.running(), r.queued()), (1, 3));
    r.reload(HookSettings {
        max_concurrent: 4,
        ..slow()
    });
    assert_eq!((r.running(), r.queued()), (4, 0));
    settle(&r).await;
    assert_eq!(r.stats().succeeded, 4);
}

#[tokio::test]
async fn rate_limit_skips() {
    let s = HookSettings {
        max_per_minute: 3,
        ..hooks(Some(argv(&["/bin/true"])))
    };
    let (r, lines) = runner(s);
    for _ in 0..10 {
        r.on_ban(&ban("SYN"));
        settle(&r).await;
    }
    assert_eq!(
        r.stats(),
        HookStats {
            started: 3,
            succeeded: 3,
            skipped_rate: 7,
            ..HookStats::default()
        }
    );
    r.flush_skip_summary();
    assert!(lock(&lines).last().is_some_and(|l| l.contains(
        "(0 with the queue full (max_concurrent = 4, queue = 256), 7 over max_per_minute = 3)"
    )));
}

#[tokio::test]
async fn idle_waits_for_running_responses() {
    let (r, _) = runner(hooks(Some(argv(&["/bin/true"]))));
    assert!(r.idle(Duration::ZERO).await);
    r.on_ban(&ban("SYN"));
    settle(&r).await;
    assert_eq!(r.stats().succeeded, 1);
    r.reload(hooks(Some(argv(&["/bin/sleep", "5"]))));
    r.on_ban(&ban("SYN"));
    assert!(!r.idle(Duration::from_millis(100)).await);
}

#[tokio::test]
async fn empty_settings_do_nothing_until_reloaded() {
    let (r, lines) = runner(HookSettings::default());
    r.on_ban(&ban("SYN"));
    r.flush_skip_summary();
    assert!(r.idle(Duration::ZERO).await);
    assert_eq!(r.stats(), HookStats::default());
    assert!(lock(&lines).is_empty());
    r.reload(hooks(Some(argv(&["/bin/true"]))));
    r.on_ban(&ban("SYN"));
    settle(&r).await;
    assert_eq!(
        r.stats(),
        HookStats {
            started: 1,
            succeeded: 1,
            ..HookStats::default()
        }
    );
}
