//! Faults: a killed daemon, a full disk, an interface that goes away and comes back.

use std::{thread, time::Duration};

use portsentry_tests::{
    case::{self, attackalert, cidr, tail, SERVICE, TRAP},
    lab::{portsentry, run_in, sock, Daemon, DaemonArgs, Lab, PinDir, TempDir},
};

/// Documented behaviour: while the daemon is down the XDP program is detached and traffic flows
/// (fail open); no ban is lost, and the restarted daemon drops the scanner again.
#[test]
fn kill_9_loses_no_ban_and_traffic_fails_open_while_down() {
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("kill9").unwrap();
    let pins = PinDir::new().unwrap();
    let (state, pin) = (
        dir.path.display().to_string(),
        pins.path.join("ps").display().to_string(),
    );
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let args = case::cli_args(&lab, &dir).pin_dir(Some(std::path::Path::new(&pin)));
    let a = lab.scanner_v4[0];

    let mut d = args.start().unwrap();
    assert!(!case::connects(&lab, a, TRAP));
    d.expect_line("the ban", attackalert(a));
    d.kill9(); // mid-scan: no chance to save state or detach cleanly

    assert!(
        !lab.xdp_attached().unwrap(),
        "the program goes with the process"
    );
    assert!(case::connects(&lab, a, SERVICE), "fail open while down");
    let (code, out, _) = portsentry(&["list", "--json", "--state-dir", &state, "--pin-dir", &pin]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("\"{a}\"")),
        "the ban is still in the pinned table: {out}"
    );

    let d = args.start().unwrap();
    assert!(
        d.has_line(|l| l.starts_with("portsentry: restored ")
            && l.ends_with("1 ban(s) kept in the pinned maps")),
        "{}",
        d.output()
    );
    assert!(
        !case::connects(&lab, a, SERVICE),
        "dropped again after restart"
    );
    assert!(case::connects(&lab, lab.scanner_v4[1], SERVICE));
}

/// A full disk under state_dir and history_file: enforcement goes on, errors are logged, no panic.
#[test]
fn a_full_disk_is_reported_and_enforcement_continues() {
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("full").unwrap();
    let disk = dir.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &disk,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k"),
    )
    .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(disk.clone());
    let history = disk.join("history.log");
    std::fs::write(&history, "").unwrap();
    // Fill the file system.
    let _ = std::fs::write(disk.join("filler"), vec![0u8; 1 << 20]);
    let mut s = case::settings(&lab, &dir);
    s.startup.state_dir = disk.join("state");
    s.live.history_file = Some(history.clone());
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let mut d = case::start(&lab, &dir, &s);
    let a = lab.scanner_v4[0];
    assert!(!case::connects(&lab, a, TRAP));
    assert!(!case::connects(&lab, a, SERVICE), "still enforcing");
    d.expect_line("cannot write history file", |l| {
        l.contains("cannot write history file")
    });
    d.expect_line("error: saving bans", |l| l.contains("error: saving bans"));
    assert!(d.is_running());
    assert!(!d.has_line(|l| l.contains("panicked")));
    d.stop_cleanly();
}

/// Chosen behaviour: when the protected interface disappears the daemon keeps running, and when
/// an interface of that name comes back it attaches again; bans made before still hold, and
/// probes over IPv4 and IPv6 are caught on the new link.
#[test]
fn an_interface_removed_and_re_added_is_re_attached() {
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("iface").unwrap();
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let _svc6 = lab.protected.tcp_service(sock(lab.protected_v6, SERVICE));
    // `b` checks the new link through the service before its trap probe, which would make it a
    // learned peer (its SYN then gets a SYN cookie, tests/tests/peers.rs); here a SYN must ban
    // on its own.
    let mut s = case::settings(&lab, &dir);
    s.startup.learn_peers = false;
    let mut d = case::start(&lab, &dir, &s);
    let (a, b) = (lab.scanner_v4[0], lab.scanner_v4[1]);
    assert!(!case::connects(&lab, a, TRAP));

    lab.remove_link().unwrap();
    d.expect_line_within(
        "the interface's disappearance",
        Duration::from_secs(3),
        |l| l.contains(&format!("interface {} disappeared", lab.iface)),
    );
    thread::sleep(Duration::from_millis(300));
    assert!(d.is_running());
    lab.recreate_link().unwrap();
    d.expect_line_within("the re-attach", Duration::from_secs(3), |l| {
        l.contains(&format!("interface {} is back; re-attached", lab.iface))
    });
    assert!(lab.xdp_attached().unwrap());
    assert!(!case::connects(&lab, a, SERVICE), "the old ban still holds");
    assert!(lab
        .scanner
        .tcp_connect(b, sock(lab.protected_v4, SERVICE), Duration::from_secs(2)));
    assert!(!case::connects(&lab, b, TRAP));
    assert!(
        d.wait_for_line(attackalert(b), Duration::from_secs(5)),
        "detection works on the new link"
    );
    // The re-created link has its IPv6 addresses too: an IPv6 probe is seen and banned.
    let b6 = lab.scanner_v6[1];
    assert!(
        lab.scanner
            .tcp_connect(b6, sock(lab.protected_v6, SERVICE), Duration::from_secs(2)),
        "IPv6 reaches the service on the new link"
    );
    assert!(!case::connects(&lab, b6, TRAP));
    d.expect_line("IPv6 detection works on the new link", attackalert(b6));
    assert!(
        !case::connects(&lab, b6, SERVICE),
        "the IPv6 source is dropped"
    );
}

/// A ban storm (a random-source SYN flood on a trap port) against a small ban table and a hook
/// rate limit: exactly `max_per_minute` responses run, the rest are counted and reported in one
/// summary line, the table fills and keeps banning by displacing detected bans, a manual ban
/// made before the storm keeps dropping, an
/// allowlisted network is never banned, and the daemon stays up.
#[test]
fn a_ban_storm_fills_the_table_and_runs_hooks_at_most_max_per_minute() {
    const PER_MINUTE: usize = 5;
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("storm").unwrap();
    let ran = dir.join("hook-ran");
    let mut s = case::settings(&lab, &dir);
    s.startup.max_bans = 300;
    s.live.allow = vec![cidr("100.64.0.0/10")];
    s.live.hooks.run_cmd = Some(appending_hook(&ran, ""));
    s.live.hooks.max_concurrent = 64;
    s.live.hooks.max_per_minute = PER_MINUTE as u32;
    let config = case::write_config(&dir, &s);
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let mut d = DaemonArgs::new(&lab).config(&config).start().unwrap();
    let (early, bystander) = (lab.scanner_v4[0], lab.scanner_v4[1]);
    assert!(!case::connects(&lab, early, TRAP));
    d.expect_line("attackalert: External command run for host: …", |l| {
        l.starts_with(&format!(
            "attackalert: External command run for host: {early} "
        ))
    });
    // Under pressure the table displaces detected bans (soonest expiry first), never manual
    // ones: the operator pins the early scanner with a manual ban, through the control socket.
    let (code, out, err) = portsentry(&["ban", &early.to_string(), "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");

    let tgt = lab.protected_v4.to_string();
    let trap = TRAP.to_string();
    run_in(
        &lab.scanner,
        "hping3",
        &["--flood", "--rand-source", "-S", "-p", &trap, &tgt],
        Duration::from_secs(3),
    );
    assert!(
        d.wait_for_line(
            |l| l.starts_with("portsentry: hooks: skipped "),
            Duration::from_secs(5)
        ),
        "the skipped responses are reported:\n{}",
        tail(&d.output())
    );
    thread::sleep(Duration::from_secs(1)); // let the last started hooks finish
    assert!(d.is_running(), "{}", tail(&d.output()));

    let lines: Vec<String> = std::fs::read_to_string(&ran)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines.len(),
        PER_MINUTE,
        "exactly max_per_minute responses ran: {lines:?}"
    );
    assert_eq!(lines[0], early.to_string());
    for l in &lines {
        let a: std::net::Ipv4Addr = l.parse().expect("the hook got one address argument");
        assert!(
            !(a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64),
            "hook ran for allowlisted {a}"
        );
    }
    let summary = d.lines_matching(|l| l.starts_with("portsentry: hooks: skipped "));
    assert!(
        summary[0].contains(&format!("over max_per_minute = {PER_MINUTE}"))
            && summary[0].ends_with(&format!("; {PER_MINUTE} run so far")),
        "{summary:?}"
    );
    assert!(
        d.has_line(|l| l.starts_with("portsentry: ban table full (300 entries): displaced ")),
        "a full table keeps banning by displacing detected bans:\n{}",
        tail(&d.output())
    );
    let banned: Vec<std::net::Ipv4Addr> = d
        .lines_matching(|l| l.starts_with("attackalert: Host ") && l.contains("blocked via XDP"))
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect();
    // Ban lines are bounded under a flood (250 per 10 s, the rest summarised): the ban count
    // comes from the daemon's own counter.
    let (code, out, err) = portsentry(&["status", "--json", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status --json");
    let made = status["bans_made"]["detected"].as_u64().unwrap_or(0);
    assert!(
        made > 300,
        "{made} bans: banning goes on once the 300-entry table is full ({out})"
    );
    assert!(
        banned
            .iter()
            .all(|a| !(a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64)),
        "no allowlisted source was banned"
    );
    assert!(
        !case::connects(&lab, early, SERVICE),
        "the manual ban made before the storm still drops (never displaced)"
    );
    assert!(
        case::connects(&lab, bystander, SERVICE),
        "an innocent source still gets through"
    );
}

/// A `run_cmd` that appends the banned address to `ran`, then runs `then` (shell; "" for
/// nothing).
fn appending_hook(ran: &std::path::Path, then: &str) -> Vec<String> {
    let script = format!("echo \"$1\" >> '{}'{then}", ran.display());
    ["/bin/sh", "-c", &script, "hook", "$TARGET$"]
        .map(str::to_owned)
        .to_vec()
}

/// A daemon guarding UDP TRAP whose `run_cmd` appends the banned address to `ran`, then sleeps
/// `sleep`, with `max_concurrent = 4`, no rate limit and `[hooks] queue = queue`.
fn burst_daemon(
    lab: &Lab,
    dir: &TempDir,
    ran: &std::path::Path,
    sleep: &str,
    queue: usize,
) -> Daemon {
    let mut s = case::settings(lab, dir);
    s.live.tcp_ports = case::ports("");
    s.live.udp_ports = case::ports(&TRAP.to_string());
    let h = &mut s.live.hooks;
    h.run_cmd = Some(appending_hook(ran, &format!("; sleep {sleep}")));
    (h.max_concurrent, h.max_per_minute, h.queue) = (4, 0, queue);
    h.timeout = Duration::from_secs(30);
    case::start(lab, dir, &s)
}

/// One UDP probe from each of the lab's scanner addresses, as fast as the test can send them:
/// a burst of quick bans. Returns when the daemon has logged all of them, in its ban order.
fn burst_of_bans(lab: &Lab, d: &Daemon) -> Vec<String> {
    for a in &lab.scanner_v4 {
        assert!(lab.scanner.udp_send(*a, sock(lab.protected_v4, TRAP)));
    }
    let n = lab.scanner_v4.len();
    let banned = |d: &Daemon| {
        d.lines_matching(|l| l.starts_with("attackalert: Host ") && l.contains("blocked via XDP"))
            .iter()
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while banned(d).len() < n && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let order = banned(d);
    assert_eq!(order.len(), n, "every probe bans:\n{}", tail(&d.output()));
    order
}

fn lines_of(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// [`lines_of`] `path` once it has `n` lines, or as it is after `within`.
fn lines_once_there_are(path: &std::path::Path, n: usize, within: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + within;
    while lines_of(path).len() < n && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    lines_of(path)
}

/// [`BURST`] quick bans ([`burst_of_bans`]) against a [`burst_daemon`]. Fields drop in order:
/// the daemon before its lab.
struct Burst {
    d: Daemon,
    /// The sources in the order the daemon banned them.
    order: Vec<String>,
    /// The hook's file: one line per response run.
    ran: std::path::PathBuf,
    dir: TempDir,
    _lab: Lab,
}

/// How many sources ban in a [`Burst`].
const BURST: usize = 64;

impl Burst {
    /// A daemon whose hook sleeps `sleep` (4 slots, a queue of `queue`), and the burst.
    fn run(tag: &str, sleep: &str, queue: usize) -> Self {
        let lab = Lab::new(BURST).unwrap();
        let dir = TempDir::new(tag).unwrap();
        let ran = dir.join("hook-ran");
        let d = burst_daemon(&lab, &dir, &ran, sleep, queue);
        let order = burst_of_bans(&lab, &d);
        Self {
            d,
            order,
            ran,
            dir,
            _lab: lab,
        }
    }
}

/// Issue 16, "hooks go missing in a burst": 64 quick bans against `max_concurrent = 4` and a
/// slow hook. Every ban's run_cmd runs (the queue holds the rest), in ban order, and nothing is
/// reported skipped. (Before the queue, 60 of the 64 were skipped.)
#[test]
fn a_burst_of_bans_runs_every_hook_in_order_through_the_queue() {
    let mut b = Burst::run("burst", "0.2", 256);
    let (d, order) = (&mut b.d, &b.order);
    // 64 responses of 0.2 s in 4 slots: about 3.2 s.
    let got = lines_once_there_are(&b.ran, BURST, Duration::from_secs(20));
    let mut sorted = got.clone();
    sorted.sort();
    let mut want = order.clone();
    want.sort();
    assert_eq!(
        sorted,
        want,
        "every ban's hook ran exactly once ({} of {BURST}):\n{}",
        got.len(),
        tail(&d.output())
    );
    // Slots start queued responses oldest first; four slots may swap near neighbours.
    for (i, a) in got.iter().enumerate() {
        let j = order.iter().position(|o| o == a).unwrap();
        assert!(
            i.abs_diff(j) < 4,
            "{a} ran {i}th but was banned {j}th:\nran {got:?}\nbanned {order:?}"
        );
    }
    thread::sleep(Duration::from_millis(500));
    assert!(
        !d.has_line(|l| l.starts_with("portsentry: hooks: skipped ")),
        "{}",
        tail(&d.output())
    );
    assert!(d.is_running(), "{}", tail(&d.output()));
}

/// The same burst against a queue of 2: the 4 slots and 2 queue entries run, the other 58 are
/// counted as skipped with the queue full, summarised in one line and shown by `status`.
#[test]
fn a_burst_past_a_tiny_queue_is_counted_and_summarised() {
    let mut b = Burst::run("burstq", "3", 2);
    let (d, order) = (&mut b.d, &b.order);
    let summary = "portsentry: hooks: skipped 58 ban response(s) since the last report (58 with the queue full (max_concurrent = 4, queue = 2), 0 over max_per_minute = 0); 4 run so far";
    d.expect_line("the skipped-hooks summary", |l| l == summary);
    let state = b.dir.path.display().to_string();
    let (code, out, err) = portsentry(&["status", "--json", "--state-dir", &state]);
    assert_eq!(code, 0, "{out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["hooks"]["skipped_queue_full"], 58, "{out}");
    assert_eq!(status["hooks"]["queued"], 2, "{out}");
    assert_eq!(status["hooks"]["running"], 4, "{out}");
    // The first six bans are the ones answered: four at once, two after the first slots free.
    let mut got = lines_once_there_are(&b.ran, 6, Duration::from_secs(15));
    got.sort();
    let mut want = order[..6].to_vec();
    want.sort();
    assert_eq!(got, want, "{}", tail(&d.output()));
}

/// Issue 25, item 8: a forged SYN flood from behind the gateway fills a small table with bans
/// of addresses that never send again. Before, a full table displaced the detected ban that
/// expired soonest (the oldest: the real scanner's) within seconds, and table-full events
/// waited in the global event bucket with the flood's, so a new scanner was neither banned nor
/// logged. Now silent bans give way first (the real scanner keeps hitting its drop), and a new
/// scanner during the flood is banned and logged.
#[test]
fn a_forged_flood_displaces_silent_bans_never_an_active_scanner() {
    let lab = Lab::new(3).unwrap();
    // The scanners' bans must be verified (the neighbour entries known), as a real scanner's
    // from behind a gateway are: unverified bans give way first by design.
    lab.protected_knows_scanner().expect("neighbours");
    let dir = TempDir::new("pressure").unwrap();
    let mut s = case::settings(&lab, &dir);
    s.startup.max_bans = 256;
    let config = case::write_config(&dir, &s);
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let mut d = DaemonArgs::new(&lab).config(&config).start().unwrap();
    let (active, late) = (lab.scanner_v4[0], lab.scanner_v4[1]);
    let blocked = |a: std::net::IpAddr| format!("attackalert: Host {a} has been blocked");
    assert!(!case::connects(&lab, active, TRAP));
    d.expect_line("the ban", |l| l.starts_with(&blocked(active)));

    let tgt = lab.protected_v4.to_string();
    let trap = TRAP.to_string();
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        // The real scanner goes on scanning (every attempt is dropped: its counter moves).
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                lab.scanner.tcp_connect(
                    active,
                    sock(lab.protected_v4, SERVICE),
                    Duration::from_millis(150),
                );
            }
        });
        // It has been hitting its drop for a while when the flood starts.
        thread::sleep(Duration::from_secs(1));
        s.spawn(|| {
            run_in(
                &lab.scanner,
                "hping3",
                &["--flood", "--rand-source", "-S", "-p", &trap, &tgt],
                Duration::from_secs(5),
            );
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        // A new scanner in the middle of the flood, scanning as scanners do (a probe every
        // 50 ms) until a moment after the flood: its table-full events compete with the
        // flood's for the ring buffer (a flood that outruns the daemon loses events there,
        // counted), no longer for the global event bucket.
        thread::sleep(Duration::from_secs(2));
        let probe = || {
            lab.scanner.tcp_connect(
                late,
                sock(lab.protected_v4, TRAP),
                Duration::from_millis(50),
            )
        };
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            probe();
        }
        for _ in 0..20 {
            probe();
        }
    });
    let about = |a: std::net::IpAddr| d.lines_matching(|l| l.contains(&a.to_string())).join("\n");
    assert!(
        d.has_line(|l| l.starts_with("portsentry: ban table full (256 entries): displaced ")),
        "the flood filled the table:\n{}",
        tail(&d.output())
    );
    assert!(
        !d.has_line(|l| l.contains(&format!("displaced {active} "))),
        "the active scanner's ban was displaced:\n{}",
        tail(&d.output())
    );
    assert!(
        !case::connects(&lab, active, SERVICE),
        "the active scanner is still dropped"
    );
    // The daemon may still be working through the flood's backlog in the ring buffer. It keeps
    // scanning meanwhile: past its trigger, its events go out at powers of two of its probe
    // count, each another chance (the flood's overflow may have taken the first). Banned means
    // dropped in the kernel; the book adopts a kernel ban whose event was lost at its next sweep.
    let dropped = || !case::connects(&lab, late, SERVICE);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !dropped() && std::time::Instant::now() < deadline {
        for _ in 0..10 {
            lab.scanner.tcp_connect(
                late,
                sock(lab.protected_v4, TRAP),
                Duration::from_millis(20),
            );
        }
    }
    assert!(
        dropped(),
        "the scanner that came during the flood is dropped:\n{}\n{}\n{}",
        about(late),
        portsentry(&["status", "--json", "--config", &config]).1,
        tail(&d.output())
    );
    let (code, out, err) = portsentry(&["list", "--json", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("\"{active}\"")),
        "{active} is not listed: {out}"
    );
    // Its line: written, or (past the flood's line budget of newly blocked sources) counted in
    // the flood summary, never silently gone.
    assert!(
        d.wait_for_line(
            |l| l.starts_with(&blocked(late)) || l.starts_with("portsentry: flood: "),
            Duration::from_secs(12)
        ),
        "{}",
        tail(&d.output())
    );
}
