//! End-to-end tests of the ban book: the daemon's control socket, the allowlist winning over
//! bans, live auto-allow, detect-mode shadow bans, a full ban table, maps resized across a
//! restart, and verbs that refuse bad input without touching files.

use std::{
    net::IpAddr,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use portsentry::config::settings::Mode;
use portsentry_tests::{
    case::{self, attackalert, cidr, SERVICE, SHORT, TRAP, WAIT},
    lab::{portsentry, sock, Lab, PinDir, TempDir},
};

/// Interval (and per-attempt connect timeout) when waiting for a change to reach traffic.
const POLL: Duration = Duration::from_millis(100);
/// How long a change made through the daemon may take to reach traffic.
const PROMPT: Duration = Duration::from_secs(1);

const VIA_DAEMON: &str = "portsentry: via the running daemon (control socket ";
const NO_DAEMON: &str = "portsentry: no daemon is running; ";

/// One probe of the trap port from `src` (refused or dropped: never a connection).
fn probe(lab: &Lab, src: IpAddr) {
    assert!(
        !lab.scanner
            .tcp_connect(src, sock(lab.protected_v4, TRAP), SHORT),
        "nothing listens on the trap port"
    );
}

fn service_open(lab: &Lab, src: IpAddr) -> bool {
    lab.scanner
        .tcp_connect(src, sock(lab.protected_v4, SERVICE), SHORT)
}

/// Polls a service connect from `src` every `POLL` (each attempt with a `POLL` timeout) until it
/// succeeds (`want_open`) or is dropped (`!want_open`). Returns the time since `since`: for an
/// open service when the connect completed, for a drop when the dropped SYN was sent. `None`
/// if that did not happen within `give_up` of `since`.
fn service_becomes(
    lab: &Lab,
    src: IpAddr,
    want_open: bool,
    since: Instant,
    give_up: Duration,
) -> Option<Duration> {
    while since.elapsed() < give_up {
        let sent = since.elapsed();
        let open = lab
            .scanner
            .tcp_connect(src, sock(lab.protected_v4, SERVICE), POLL);
        if open == want_open {
            return Some(if open { since.elapsed() } else { sent });
        }
        if open {
            // A failed attempt already waited POLL; a successful one returns at once.
            thread::sleep(POLL);
        }
    }
    None
}

/// `max_entries` of a pinned map as `bpftool map show pinned` reports it (root namespaces: the
/// PinDir is mounted in the root mount namespace).
fn pinned_max_entries(pin: &str, map: &str) -> u64 {
    let path = format!("{pin}/{map}");
    let out = Command::new("bpftool")
        .args(["map", "show", "pinned", &path])
        .output()
        .expect("running bpftool (it must be installed for this test)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bpftool map show pinned {path}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split_whitespace()
        .skip_while(|w| *w != "max_entries")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max_entries in bpftool output: {text}"))
}

/// B. The allowlist always wins: a SIGHUP whose config allowlists a banned address lifts that
/// ban (and only that one) and its traffic flows again within a second.
#[test]
fn an_allowlist_reload_lifts_a_covered_ban_within_a_second() {
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("bb-allow").unwrap();
    let mut s = case::settings(&lab, &dir);
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let mut d = case::start(&lab, &dir, &s);
    let (a, b) = (lab.scanner_v4[0], lab.scanner_v4[1]);

    for src in [a, b] {
        probe(&lab, src);
        d.expect_line("the ban", attackalert(src));
        assert!(!service_open(&lab, src), "{src} is banned");
    }

    s.live.allow = vec![cidr(&a.to_string())];
    case::write_config(&dir, &s);
    let hup = Instant::now();
    d.signal(Signal::SIGHUP);
    let flowed = service_becomes(&lab, a, true, hup, Duration::from_secs(3));
    assert!(
        flowed.is_some_and(|t| t < PROMPT),
        "{a} flows again within 1 s of the SIGHUP (took {flowed:?}); output:\n{}",
        d.tail()
    );
    d.expect_line("the reload", |l| {
        l.starts_with("portsentry: reloaded configuration")
    });
    d.expect_line("the lifted ban", |l| {
        l.starts_with("portsentry: allowlist: lifted 1 ban(s)")
    });
    assert!(
        !service_open(&lab, b),
        "the ban the new allowlist does not cover stays"
    );
    // Allowlisted now: probing the trap again does not ban it.
    probe(&lab, a);
    assert!(
        service_open(&lab, a),
        "an allowlisted source is never banned"
    );
}

/// C. auto_allow follows the routing table live: a new default gateway is allowlisted as soon
/// as the route changes, while a source that is not a gateway is still banned.
#[test]
fn a_new_default_gateway_is_auto_allowed_live() {
    let lab = Lab::new(3).unwrap();
    let dir = TempDir::new("bb-gateway").unwrap();
    // auto_allow is on by default: portsentry's own default here on purpose.
    let mut s = case::settings(&lab, &dir);
    s.live.auto_allow = portsentry::config::settings::LiveSettings::default().auto_allow;
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let mut d = case::start(&lab, &dir, &s);
    let (gateway, other) = (lab.scanner_v4[1], lab.scanner_v4[2]);
    assert!(service_open(&lab, gateway));

    lab.route_replace_default(gateway).unwrap();
    thread::sleep(Duration::from_millis(300)); // the netlink notification reaches the daemon

    probe(&lab, gateway);
    probe(&lab, other);
    d.expect_line("the control source's ban", attackalert(other));
    assert!(
        !service_open(&lab, other),
        "{other} is not a gateway: banned"
    );
    assert!(
        service_open(&lab, gateway),
        "the new gateway {gateway} was not banned; output:\n{}",
        d.tail()
    );
    d.expect_no_line("a ban of the gateway", attackalert(gateway));
}

/// A + D. Without pinned maps the verbs reach the daemon through its control socket and act on
/// live traffic; what they did survives a restart (an unban is not resurrected, a ban stays).
#[test]
fn verbs_go_through_the_control_socket_without_pins_and_survive_a_restart() {
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("bb-socket").unwrap();
    // 10.77.0.2 is the protected side's gateway: auto_allow would protect it (off in the
    // case's settings).
    let s = case::settings(&lab, &dir);
    let config = case::write_config(&dir, &s);
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let mut d = case::start(&lab, &dir, &s);
    let (a, b) = (lab.scanner_v4[0], lab.scanner_v4[1]);
    let ctl = |verb: &[&str]| {
        let mut v = verb.to_vec();
        v.extend(["--config", config.as_str()]);
        portsentry(&v)
    };

    let meta = std::fs::metadata(dir.join("control.sock")).expect("control.sock in state_dir");
    assert!(meta.file_type().is_socket(), "{meta:?}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{meta:?}");

    assert!(service_open(&lab, a));
    let (code, out, err) = ctl(&["ban", &a.to_string(), "--ttl", "1h"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("banned {a} ")), "{out}");
    assert!(err.lines().any(|l| l.starts_with(VIA_DAEMON)), "{err}");
    let done = Instant::now();
    let dropped = service_becomes(&lab, a, false, done, Duration::from_secs(3));
    assert!(
        dropped.is_some_and(|t| t < PROMPT),
        "the live ban drops within 1 s (took {dropped:?})"
    );
    assert!(!service_open(&lab, a), "and keeps dropping");

    let (code, out, err) = ctl(&["ban", &b.to_string(), "--ttl", "1h"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.lines().any(|l| l.starts_with(VIA_DAEMON)), "{err}");

    let (code, out, err) = ctl(&["unban", &a.to_string()]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("unbanned {a}").as_str()),
        "{err}"
    );
    assert!(err.lines().any(|l| l.starts_with(VIA_DAEMON)), "{err}");
    let done = Instant::now();
    let flowed = service_becomes(&lab, a, true, done, Duration::from_secs(3));
    assert!(
        flowed.is_some_and(|t| t < PROMPT),
        "the live unban lets traffic through within 1 s (took {flowed:?})"
    );
    assert!(!service_open(&lab, b), "{b} banned through the socket");

    let (code, out, err) = ctl(&["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.lines().any(|l| l.starts_with(VIA_DAEMON)), "{err}");
    assert!(
        out.contains(&format!("\"{b}\"")) && !out.contains(&format!("\"{a}\"")),
        "{out}"
    );
    d.stop_cleanly();

    // No daemon: the verbs say so and work on the state file.
    let (code, out, err) = ctl(&["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.lines().any(|l| l.starts_with(NO_DAEMON)), "{err}");
    assert!(
        out.contains(&format!("\"{b}\"")) && !out.contains(&format!("\"{a}\"")),
        "the saved state has the live ban and not the lifted one: {out}"
    );

    let d = case::start(&lab, &dir, &s);
    assert!(
        service_open(&lab, a),
        "the unbanned {a} is not resurrected by the restart; output:\n{}",
        d.tail()
    );
    assert!(
        !service_open(&lab, b),
        "{b}, banned through the socket, is still banned after the restart; output:\n{}",
        d.tail()
    );
}

/// E. A detect-mode trial followed by block mode drops nothing: the trial's shadow bans are
/// reported, not enforced; a new probe in block mode bans, and `promote-shadow` enforces them.
#[test]
fn switching_from_detect_to_block_enforces_no_shadow_ban_until_promoted() {
    let lab = Lab::new(3).unwrap();
    let dir = TempDir::new("bb-shadow").unwrap();
    // 10.77.0.2 is the gateway: auto_allow would keep it from being counted at all. The
    // scanners use the service, which makes them learned peers whose trap SYNs get a SYN
    // cookie instead of counting (the `peers` suite); here a SYN must count on its own.
    let mut s = case::settings(&lab, &dir);
    s.startup.learn_peers = false;
    s.live.mode = Mode::Detect;
    let config = case::write_config(&dir, &s);
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let mut d = case::start(&lab, &dir, &s);
    let (a, c, bystander) = (lab.scanner_v4[0], lab.scanner_v4[1], lab.scanner_v4[2]);

    for src in [a, c] {
        probe(&lab, src);
        let scan = format!("Scan from: [{src}]");
        d.expect_line("the scan line", |l| l.contains(&scan));
        assert!(service_open(&lab, src), "detect mode never drops {src}");
    }

    s.live.mode = Mode::Block;
    case::write_config(&dir, &s);
    d.signal(Signal::SIGHUP);
    d.expect_line("the reload", |l| {
        l.starts_with("portsentry: reloaded configuration")
    });
    d.expect_line("the shadow-ban notice", |l| {
        l.contains("shadow ban(s) from detect mode are not enforced")
    });
    for src in [a, c] {
        assert!(
            service_open(&lab, src),
            "the switch to block drops nothing from {src}; output:\n{}",
            d.tail()
        );
    }

    probe(&lab, a);
    assert!(
        !service_open(&lab, a),
        "a new probe in block mode bans {a}; output:\n{}",
        d.tail()
    );
    assert!(
        service_open(&lab, c),
        "{c}'s shadow ban is still not enforced"
    );

    let (code, out, err) = portsentry(&["promote-shadow", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.lines().any(|l| l.starts_with(VIA_DAEMON)), "{err}");
    let done = Instant::now();
    let dropped = service_becomes(&lab, c, false, done, Duration::from_secs(3));
    assert!(
        dropped.is_some_and(|t| t < PROMPT),
        "the promoted shadow ban drops {c} (took {dropped:?}); output:\n{}",
        d.tail()
    );
    assert!(!service_open(&lab, c), "and keeps dropping");
    assert!(
        service_open(&lab, bystander),
        "promotion bans only what detect mode saw"
    );
}

/// F. A full ban table never stops banning: the next scanner displaces a ban and is dropped.
#[test]
fn a_full_ban_table_still_bans_the_next_scanner() {
    let lab = Lab::new(6).unwrap();
    let dir = TempDir::new("bb-full").unwrap();
    // 10.77.0.2 is the gateway: auto_allow (off in the case's settings) would keep it out.
    let mut s = case::settings(&lab, &dir);
    s.startup.max_bans = 4;
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let mut d = case::start(&lab, &dir, &s);

    for &src in &lab.scanner_v4[0..4] {
        probe(&lab, src);
        d.expect_line("the ban", attackalert(src));
    }
    assert!(!service_open(&lab, lab.scanner_v4[3]), "the 4th ban drops");

    let last = lab.scanner_v4[5];
    probe(&lab, last);
    d.expect_line("the full table", |l| {
        l.starts_with("portsentry: ban table full") && l.contains("displaced")
    });
    assert!(
        !service_open(&lab, last),
        "the 5th scanner is banned although the table was full; output:\n{}",
        d.tail()
    );
    d.expect_line("the ban", attackalert(last));
    d.expect_no_line("could not be blocked", |l| {
        l.contains("could not be blocked")
    });
    assert!(
        service_open(&lab, lab.scanner_v4[4]),
        "a source that never probed still gets through"
    );
}

/// G. Raising max_bans (and max_ban_networks) across a restart resizes the pinned maps: the
/// daemon migrates them and keeps the bans.
#[test]
fn raising_max_bans_across_a_restart_migrates_the_pinned_maps() {
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("bb-resize").unwrap();
    let pins = PinDir::new().unwrap();
    let pin = pins.path.join("ps").display().to_string();
    let mut s = case::settings(&lab, &dir);
    s.startup.pin_dir = Some(pin.clone().into());
    (s.startup.max_bans, s.startup.max_ban_networks) = (64, 16);
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let (a, b) = (lab.scanner_v4[0], lab.scanner_v4[1]);

    let mut d = case::start(&lab, &dir, &s);
    assert_eq!(pinned_max_entries(&pin, "PS_BANS"), 64);
    assert_eq!(pinned_max_entries(&pin, "PS_BAN_CIDRS"), 16);
    probe(&lab, a);
    d.expect_line("the ban", attackalert(a));
    assert!(!service_open(&lab, a));
    d.stop_cleanly();

    (s.startup.max_bans, s.startup.max_ban_networks) = (128, 32);
    let d = case::start(&lab, &dir, &s);
    assert!(
        d.has_line(|l| l.starts_with("portsentry: migrated pinned maps")),
        "{}",
        d.tail()
    );
    assert_eq!(pinned_max_entries(&pin, "PS_BANS"), 128);
    assert_eq!(pinned_max_entries(&pin, "PS_BAN_CIDRS"), 32);
    assert!(
        !service_open(&lab, a),
        "the ban made before the resize still drops; output:\n{}",
        d.tail()
    );
    assert!(service_open(&lab, b));
}

/// H. An absurd TTL is a usage error and bans nothing.
#[test]
fn a_ttl_beyond_100_years_is_refused_and_bans_nothing() {
    let dir = TempDir::new("bb-ttl").unwrap();
    let state = dir.path.display().to_string();
    let nopins = dir.join("nopins").display().to_string();
    let (code, out, err) = portsentry(&[
        "ban",
        "192.0.2.1",
        "--ttl",
        "600000000y",
        "--state-dir",
        &state,
        "--pin-dir",
        &nopins,
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("100 years"), "{err}");
    let saved = std::fs::read_to_string(dir.join("bans.json")).unwrap_or_default();
    assert!(!saved.contains("192.0.2.1"), "{saved}");
}

/// H. A bogus address (loopback, multicast, …) is a usage error for `ban` and bans nothing; a
/// network that merely contains bogus space is an operator's call.
#[test]
fn banning_a_bogus_address_is_refused() {
    let dir = TempDir::new("bb-bogus").unwrap();
    let state = dir.path.display().to_string();
    let nopins = dir.join("nopins").display().to_string();
    for (target, range) in [
        ("127.0.0.1", "127.0.0.0/8"),
        ("::ffff:224.0.0.251", "224.0.0.0/4"),
        ("ff02::1", "ff00::/8"),
    ] {
        let (code, out, err) =
            portsentry(&["ban", target, "--state-dir", &state, "--pin-dir", &nopins]);
        assert_eq!(code, 2, "{target}: {out}{err}");
        assert!(
            err.contains(&format!("is in the bogus range {range}")),
            "{err}"
        );
    }
    let saved = std::fs::read_to_string(dir.join("bans.json")).unwrap_or_default();
    assert!(!saved.contains("\"target\""), "nothing banned: {saved}");
    let (code, out, err) = portsentry(&[
        "ban",
        "0.0.0.0/1",
        "--state-dir",
        &state,
        "--pin-dir",
        &nopins,
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Names and contents of the files in `dir`, sorted.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let content = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), content)
        })
        .collect();
    files.sort();
    files
}

/// H. Read-only verbs never modify files, not even a corrupt state file.
#[test]
fn read_only_verbs_leave_a_corrupt_state_file_alone() {
    let dir = TempDir::new("bb-corrupt").unwrap();
    let state = dir.path.display().to_string();
    let nopins = dir.join("nopins").display().to_string();
    dir.write("bans.json", "{ not json");
    let before = snapshot(&dir.path);

    let (code, out, err) = portsentry(&["list", "--state-dir", &state, "--pin-dir", &nopins]);
    assert_ne!(code, 0, "a corrupt state file is an error: {out}{err}");
    assert_eq!(snapshot(&dir.path), before, "list changed files: {err}");

    let (_, out, err) = portsentry(&[
        "list",
        "--json",
        "--state-dir",
        &state,
        "--pin-dir",
        &nopins,
    ]);
    assert_eq!(
        snapshot(&dir.path),
        before,
        "list --json changed files: {out}{err}"
    );
    let (_, out, err) = portsentry(&["status", "--state-dir", &state, "--pin-dir", &nopins]);
    assert_eq!(
        snapshot(&dir.path),
        before,
        "status changed files: {out}{err}"
    );
}

/// H. State files that cannot be used are kept aside, not fatal: a bans.json from a newer
/// portsentry, a peers.json that is not even text, a service_ports.json from a newer
/// portsentry. Each is kept byte for byte under a name that says why, with the one line of
/// `state_file` naming its kind; the daemon starts and bans.
#[test]
fn unusable_state_files_are_kept_aside_with_one_line_and_the_daemon_still_bans() {
    let lab = Lab::new(1).unwrap();
    let dir = TempDir::new("bb-newer").unwrap();
    // (file, contents, kept-aside tag, what is wrong, what the daemon starts without)
    let files: [(&str, &[u8], &str, &str, &str); 3] = [
        (
            "bans.json",
            b"{\"version\": 99, \"bans\": []}",
            "newer",
            "state file version 99 is newer than this portsentry understands (3)",
            "starting without saved bans",
        ),
        (
            "peers.json",
            b"\xff\xfe{\"version\": 1, \"peers\": []}",
            "corrupt",
            "not a portsentry peers file (invalid utf-8",
            "starting without saved peers",
        ),
        (
            "service_ports.json",
            b"{\"version\": 99, \"tcp\": {}, \"udp\": {}}",
            "newer",
            "service-port memory version 99 is newer than this portsentry understands (1)",
            "advanced mode starts without remembered service ports",
        ),
    ];
    for (name, bytes, ..) in files {
        std::fs::write(dir.path.join(name), bytes).unwrap();
    }
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let mut d = case::start(&lab, &dir, &case::settings(&lab, &dir));
    for (name, bytes, tag, wrong, without) in files {
        let path = dir.path.join(name).display().to_string();
        d.expect_line(name, |l| {
            l.starts_with(&format!("portsentry: error: {path}: {wrong}"))
                && l.contains(&format!("; kept aside as {path}.{tag}-"))
                && l.ends_with(&format!("; {without}"))
        });
        let files = snapshot(&dir.path);
        assert!(
            files
                .iter()
                .any(|(n, content)| n.starts_with(&format!("{name}.{tag}-")) && content == bytes),
            "{name} kept aside byte for byte: {:?}",
            files.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
    }

    let a = lab.scanner_v4[0];
    probe(&lab, a);
    d.expect_line("the ban", attackalert(a));
    assert!(!service_open(&lab, a), "the daemon filters");
}

/// Kernel-level checks of the ban book against real maps (no traffic needed).
mod kernel {
    use std::time::Duration;

    use portsentry::{
        bans::{BanBook, Origin, StateStore},
        clock::Now,
        dataplane::{Dataplane, LoadOptions},
        fleet::crowdsec::decisions::{FleetBan, FleetUpdate},
        net::cidr::Cidr,
    };
    use portsentry_tests::{
        lab::{PinDir, TempDir},
        xdp::open_book,
    };

    fn fleet_ban(target: &str) -> FleetBan {
        FleetBan {
            target: target.parse().unwrap(),
            remaining: Duration::from_secs(3600),
            origin: "cscli".into(),
            scenario: "test".into(),
        }
    }

    /// Issue 25, item 8: a full table gives way in the order unverified, then silent longest;
    /// a ban whose drop counter moved since it was last looked at gets a second chance; a
    /// manual ban never gives way. Real maps, the drop counters written as the XDP program
    /// would (no traffic needed). Before: the detected ban expiring soonest gave way, here the
    /// active one (made first, so expiring first).
    #[test]
    fn a_full_table_displaces_unverified_then_silent_bans_never_an_active_one() {
        use portsentry::bans::{MadeRoom, NewBan};
        let dir = TempDir::new("pressure-order").unwrap();
        let mut dp = Dataplane::load(&LoadOptions {
            max_bans: Some(5),
            ..LoadOptions::default()
        })
        .expect("loading the XDP object (run with `cargo xtask test`)");
        let t0 = Now::read();
        let at = |ms: u64| Now {
            boot_ns: t0.boot_ns + ms * 1_000_000,
            unix_ms: t0.unix_ms + ms,
        };
        let mut book = open_book(StateStore::new(&dir.path), &dp, &t0);
        let ban = |book: &mut BanBook,
                   dp: &mut Dataplane,
                   target: &str,
                   origin,
                   unverified,
                   now: &Now| {
            let new = NewBan {
                target: target.parse().unwrap(),
                origin,
                shadow: false,
                expires_ms: Some(now.unix_ms + 3_600_000),
                trigger: None,
                fleet: None,
                unverified,
            };
            book.ban(Some(dp), new, now).unwrap()
        };
        let addr = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
        ban(
            &mut book,
            &mut dp,
            "192.0.2.1",
            Origin::Detected,
            false,
            &at(1),
        ); // the real scanner
        ban(
            &mut book,
            &mut dp,
            "192.0.2.2",
            Origin::Manual,
            false,
            &at(2),
        );
        ban(
            &mut book,
            &mut dp,
            "192.0.2.3",
            Origin::Detected,
            false,
            &at(3),
        );
        ban(
            &mut book,
            &mut dp,
            "192.0.2.4",
            Origin::Detected,
            true,
            &at(4),
        );
        ban(
            &mut book,
            &mut dp,
            "192.0.2.5",
            Origin::Detected,
            false,
            &at(5),
        );
        // The real scanner keeps hitting its drop.
        let hit = |dp: &mut Dataplane, a: &str, drops: u64| {
            let mut e = dp.ban(addr(a)).unwrap().expect("in the table");
            e.drops = drops;
            dp.insert_ban(addr(a), &e).unwrap();
        };
        hit(&mut dp, "192.0.2.1", 7);

        let room = |book: &mut BanBook, dp: &mut Dataplane, ms| match book
            .make_room(dp, &at(ms))
            .unwrap()
        {
            MadeRoom::Displaced { target, .. } | MadeRoom::Reclaimed(target) => target.to_string(),
            MadeRoom::NoRoom => "none".into(),
        };
        assert_eq!(
            room(&mut book, &mut dp, 10),
            "192.0.2.4",
            "unverified first"
        );
        assert_eq!(
            room(&mut book, &mut dp, 11),
            "192.0.2.3",
            "then the silent one: the active scanner had a second chance"
        );
        hit(&mut dp, "192.0.2.1", 9);
        assert_eq!(room(&mut book, &mut dp, 12), "192.0.2.5");
        // Only the active scanner is left to give way (it had its second chance: a table full
        // of active scanners still bans the next one); the manual ban never gives way.
        assert_eq!(room(&mut book, &mut dp, 13), "192.0.2.1");
        assert_eq!(room(&mut book, &mut dp, 14), "none");
        assert!(dp.ban(addr("192.0.2.2")).unwrap().is_some());
    }

    /// A full trie used to make `replace_trie` fail before it removed anything: a lifted fleet
    /// range was then saved as a manual ban with no expiry while the log said "lifted".
    #[test]
    fn a_full_network_trie_still_lifts_and_never_turns_fleet_bans_manual() {
        let dir = TempDir::new("trie-full").unwrap();
        let mut dp = Dataplane::load(&LoadOptions {
            max_ban_networks: Some(2),
            ..LoadOptions::default()
        })
        .expect("loading the XDP object (run with `cargo xtask test`)");
        let now = Now::read();
        let store = StateStore::new(&dir.path);
        let mut book = open_book(store.clone(), &dp, &now);
        let start = FleetUpdate {
            startup: true,
            bans: vec![fleet_ban("198.51.100.0/24"), fleet_ban("203.0.113.0/24")],
            ..FleetUpdate::default()
        };
        let peer_memory = portsentry::config::settings::LiveSettings::default().peer_ttl_ns();
        let done = book
            .apply_fleet(&mut dp, &start, &now, peer_memory)
            .unwrap();
        assert_eq!((done.banned.len(), done.full), (2, 0), "{done:?}");
        let swap = FleetUpdate {
            lifted: vec!["198.51.100.0/24".parse().unwrap()],
            bans: vec![fleet_ban("192.0.2.0/24")],
            ..FleetUpdate::default()
        };
        let done = book.apply_fleet(&mut dp, &swap, &now, peer_memory).unwrap();
        assert_eq!(done.full, 0, "the lift makes room first: {done:?}");
        let mut in_trie: Vec<String> = dp
            .ban_cidrs()
            .unwrap()
            .into_iter()
            .map(|(c, _)| c.to_string())
            .collect();
        in_trie.sort();
        assert_eq!(in_trie, ["192.0.2.0/24", "203.0.113.0/24"]);
        book.save().unwrap();
        let saved = store.load().unwrap();
        assert_eq!(saved.bans.len(), 2);
        assert!(
            saved
                .bans
                .iter()
                .all(|b| b.origin == Origin::Fleet && b.expires_ms.is_some()),
            "{saved:?}"
        );
        assert!(!saved
            .bans
            .iter()
            .any(|b| b.target == "198.51.100.0/24".parse::<Cidr>().unwrap()));
    }

    /// The sweep in parts (a few records or kernel entries per step, as the daemon's loop
    /// takes it) does what a whole sweep does: an expired ban is lifted from book and kernel,
    /// a kernel ban the book missed (a lost event) is adopted, a book ban missing from the
    /// kernel is written again, and a standing network stays in the trie.
    #[test]
    fn a_sweep_in_parts_expires_adopts_and_rewrites() {
        use portsentry::bans::{NewBan, Sweep};
        let dir = TempDir::new("sweep-parts").unwrap();
        let mut dp = Dataplane::load(&LoadOptions::default())
            .expect("loading the XDP object (run with `cargo xtask test`)");
        let now = Now::read();
        let mut book = open_book(StateStore::new(&dir.path), &dp, &now);
        let ban = |book: &mut BanBook, dp: &mut Dataplane, target: &str, ttl_ms: u64| {
            let new = NewBan {
                target: target.parse().unwrap(),
                origin: Origin::Manual,
                shadow: false,
                expires_ms: Some(now.unix_ms + ttl_ms),
                trigger: None,
                fleet: None,
                unverified: false,
            };
            book.ban(Some(dp), new, &now).unwrap();
        };
        for i in 1..=20 {
            ban(&mut book, &mut dp, &format!("192.0.2.{i}"), 3_600_000);
        }
        ban(&mut book, &mut dp, "198.51.100.0/24", 3_600_000);
        ban(&mut book, &mut dp, "192.0.2.100", 50);
        // Lost event: the kernel holds a ban the book does not know.
        let orphan: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        let entry = portsentry_common::BanEntry {
            origin: portsentry_common::BanOrigin::Detected as u8,
            ..Default::default()
        };
        dp.insert_ban(orphan, &entry).unwrap();
        // And a book ban the kernel lost.
        let lost: std::net::IpAddr = "192.0.2.5".parse().unwrap();
        assert!(dp.remove_ban(lost).unwrap());
        std::thread::sleep(Duration::from_millis(100));

        let later = Now::read();
        let mut s = Sweep::default();
        let mut steps = 0;
        let expired = loop {
            steps += 1;
            if let Some(n) = book.sweep_step(&mut dp, &later, &mut s, 4).unwrap() {
                break n;
            }
        };
        assert_eq!(expired, 1);
        assert!(steps > 6, "in parts: {steps} steps");
        let gone: Cidr = "192.0.2.100".parse().unwrap();
        assert!(book.get(&gone).is_none());
        assert!(dp.ban(gone.addr).unwrap().is_none(), "lifted in the kernel");
        assert!(
            book.get(&Cidr::host(orphan)).is_some(),
            "the kernel's ban is adopted"
        );
        assert!(
            dp.ban(lost).unwrap().is_some(),
            "the lost ban is written again"
        );
        assert_eq!(book.len(), 20 + 1 + 1);
        assert_eq!(
            dp.ban_cidrs().unwrap().len(),
            1,
            "the network stays in the trie"
        );
    }

    /// Userspace reads the pinned config's layout version: pins written by another layout are
    /// migrated (bans copied), never silently reused.
    #[test]
    fn pins_of_another_layout_version_are_migrated_with_their_bans() {
        let pins = PinDir::new().unwrap();
        let opts = LoadOptions {
            pin_dir: Some(pins.path.join("ps")),
            ..LoadOptions::default()
        };
        std::fs::create_dir_all(pins.path.join("ps")).unwrap();
        {
            let mut dp = Dataplane::load(&opts).unwrap();
            assert!(dp.migrated.is_none());
            let entry = portsentry_common::BanEntry {
                origin: portsentry_common::BanOrigin::Manual as u8,
                ..Default::default()
            };
            dp.insert_ban("192.0.2.9".parse().unwrap(), &entry).unwrap();
            let mut config = dp.config().unwrap();
            config.layout_version = portsentry_common::LAYOUT_VERSION - 1;
            dp.configure(&config, config.allow_cidr_count).unwrap();
        }
        let dp = Dataplane::load(&opts).unwrap();
        let m = dp
            .migrated
            .as_ref()
            .expect("another layout version is migrated");
        assert!(
            m.reasons.iter().any(|r| r.contains("layout version")),
            "{:?}",
            m.reasons
        );
        assert!(m.copied);
        assert_eq!(m.bans.len(), 1, "the old ban is carried over");
        assert_eq!(
            dp.bans().unwrap().len(),
            0,
            "fresh maps: the ban book installs it"
        );
    }
}

/// Seconds of the day of a `list --json` time (`2026-11-25T10:00:03+0000`).
fn second_of_day(iso: &str) -> i64 {
    let hms = &iso[11..19];
    let mut it = hms.split(':').map(|n| n.parse::<i64>().expect("HH:MM:SS"));
    let (h, m, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    h * 3600 + m * 60 + s
}

/// The ban of `src` as `portsentry list --json` shows it: its length in whole seconds
/// (`expires` − `since`, each to the second).
fn listed_ttl_secs(state: &str, src: IpAddr) -> Option<i64> {
    let (code, out, err) = portsentry(&["list", "--json", "--state-dir", state]);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).expect(&out);
    let row = rows
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["target"] == src.to_string())?;
    let (since, expires) = (row["since"].as_str()?, row["expires"].as_str()?);
    Some((second_of_day(expires) - second_of_day(since)).rem_euclid(86_400))
}

/// Issue 16, "no escalation": with `ban_ttl = "3s"` a scanner that comes back after its ban
/// expired gets 6 s (dropped past 3 s, free again after 6 s), the daemon says it is a repeat
/// offender, the history is saved in `bans.json` and survives a restart: the third ban is 12 s.
/// (Before: every ban 3 s, no such line, no history.)
/// The recidive cases' settings: 3 s bans, no learned peers (a scanner that used the service
/// would get a SYN cookie instead of a ban), the maps pinned where portsentry pins by default.
fn recidive_settings(lab: &Lab, dir: &TempDir) -> portsentry::config::settings::Settings {
    let mut s = case::settings(lab, dir);
    s.live.ban_ttl = Some(Duration::from_secs(3));
    s.startup.learn_peers = false;
    s.startup.pin_dir = portsentry::config::settings::StartupSettings::default().pin_dir;
    s
}

#[test]
fn a_returning_scanner_gets_a_doubled_ttl_and_the_history_survives_a_restart() {
    let lab = Lab::new(1).unwrap();
    // Only verified bans escalate (issue 25, item 9): the scanner's neighbour entry is known.
    lab.protected_knows_scanner().expect("neighbours");
    let dir = TempDir::new("recidive").unwrap();
    let state = dir.path.display().to_string();
    let s = recidive_settings(&lab, &dir);
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let a = lab.scanner_v4[0];
    let mut d = case::start(&lab, &dir, &s);

    probe(&lab, a);
    d.expect_line("the first ban", attackalert(a));
    let ttl = listed_ttl_secs(&state, a).expect("the first ban is listed");
    assert!((2..=4).contains(&ttl), "first ban ~3 s, listed {ttl} s");
    assert!(
        service_becomes(&lab, a, true, Instant::now(), Duration::from_secs(6)).is_some(),
        "the first ban ends after 3 s"
    );

    let second = Instant::now();
    probe(&lab, a);
    let repeat = format!("portsentry: repeat offender {a}: ban 2, ttl 6s");
    d.expect_line("the second ban", |l| l == repeat);
    let ban_lines = d.lines_matching(attackalert(a));
    assert_eq!(ban_lines.len(), 2, "{ban_lines:?}");
    assert_eq!(ban_lines[0], ban_lines[1], "the ban line is unchanged");
    let ttl = listed_ttl_secs(&state, a).expect("the second ban is listed");
    assert!((5..=7).contains(&ttl), "second ban ~6 s, listed {ttl} s");
    while second.elapsed() < Duration::from_millis(4000) {
        thread::sleep(POLL);
    }
    assert!(
        !service_open(&lab, a),
        "4 s into the second ban the kernel still drops (its entry was extended)"
    );

    // A restart while the second ban holds: the history is in bans.json and comes back.
    d.stop_cleanly();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path.join("bans.json")).unwrap())
            .unwrap();
    assert_eq!(saved["version"], 3, "{saved}");
    assert_eq!(saved["history"][0]["target"], a.to_string(), "{saved}");
    assert_eq!(saved["history"][0]["bans"], 2, "{saved}");
    let mut d = case::start(&lab, &dir, &s);
    let ended = service_becomes(&lab, a, true, second, Duration::from_secs(10));
    assert!(
        ended.is_some_and(|t| t >= Duration::from_millis(5500)),
        "the second ban ends after 6 s, not 3 s ({ended:?})"
    );
    probe(&lab, a);
    let third = format!("portsentry: repeat offender {a}: ban 3, ttl 12s");
    d.expect_line("the third ban", |l| l == third);
    let ttl = listed_ttl_secs(&state, a).expect("the third ban is listed");
    assert!((11..=13).contains(&ttl), "third ban ~12 s, listed {ttl} s");
}

/// Issue 25, item 9: a LAN forger's bans are unverified (no neighbour entry for the address it
/// forges) and never escalate: the same forged address banned again after its ban ended gets
/// `ban_ttl` again, no "repeat offender" line. Before, the forger could get its victim banned
/// twice as long each time, up to 28 days.
#[test]
fn forged_unverified_bans_never_escalate() {
    let lab = Lab::new(1).unwrap();
    let dir = TempDir::new("recidive-forged").unwrap();
    let state = dir.path.display().to_string();
    let mut d = case::start(&lab, &dir, &recidive_settings(&lab, &dir));
    // An address of the LAN nobody has: the protected host has no neighbour entry for it.
    let victim: std::net::IpAddr = "10.77.0.99".parse().unwrap();
    let forge = || case::forged_syn(&lab.scanner, victim, lab.protected_v4, TRAP);
    forge();
    d.expect_line("the forged ban", attackalert(victim));
    thread::sleep(Duration::from_millis(3500));
    forge();
    let deadline = Instant::now() + WAIT;
    while d.lines_matching(attackalert(victim)).len() < 2 && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    assert_eq!(
        d.lines_matching(attackalert(victim)).len(),
        2,
        "banned again:\n{}",
        d.tail()
    );
    d.expect_no_line("an unverified ban escalated", |l| {
        l.starts_with(&format!("portsentry: repeat offender {victim}"))
    });
    let ttl = listed_ttl_secs(&state, victim).expect("the second ban is listed");
    assert!(
        (2..=4).contains(&ttl),
        "second forged ban ~3 s, listed {ttl} s"
    );
}
