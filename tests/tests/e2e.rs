//! End-to-end: the real `portsentry` binary protecting a network namespace, probed from another.

use std::time::Duration;

use portsentry::config::settings::Settings;
use portsentry_tests::{
    case::{self, tail, SERVICE as SERVICE_PORT, TRAP as TRAP_PORT},
    lab::{sock, Daemon, Lab, TempDir},
};

#[test]
fn connect_to_trap_port_bans_the_source_and_sigterm_detaches() {
    let lab = Lab::new(2).expect("lab");
    let dir = TempDir::new("e2e").expect("state dir");
    let _service = lab
        .protected
        .tcp_service(sock(lab.protected_v4, SERVICE_PORT));
    let mut daemon = case::cli_args(&lab, &dir).no_pin().start().expect("daemon");
    assert!(lab.xdp_attached().unwrap(), "XDP attached while running");

    let scanner = lab.scanner_v4[0];
    let bystander = lab.scanner_v4[1];
    let short = Duration::from_secs(1);
    // The bystander shows the service works. The scanner's first contact is the trap probe: a
    // source that had used the service would be a learned peer, whose trap SYN gets a SYN
    // cookie instead of a ban on its own (tests/tests/peers.rs).
    assert!(
        lab.scanner
            .tcp_connect(bystander, sock(lab.protected_v4, SERVICE_PORT), short),
        "service reachable before"
    );
    assert!(
        !lab.scanner
            .tcp_connect(scanner, sock(lab.protected_v4, TRAP_PORT), short),
        "trap port times out"
    );
    assert!(
        !lab.scanner
            .tcp_connect(scanner, sock(lab.protected_v4, SERVICE_PORT), short),
        "service dropped after ban"
    );
    assert!(
        lab.scanner
            .tcp_connect(bystander, sock(lab.protected_v4, SERVICE_PORT), short),
        "other sources unaffected"
    );

    let ban_line = format!(
        "attackalert: Host {scanner} has been blocked via XDP drop on interface: \"{}\"",
        lab.iface
    );
    daemon.expect_line("ban line", |l| l == ban_line);
    let scan_line = format!(
        "Scan from: [{scanner}] ({scanner}) protocol: [TCP] port: [{TRAP_PORT}] type: [TCP SYN/Normal scan] \
         IP opts: [not set] ignored: [false] triggered: [true] noblock: [false] blocked: [true]"
    );
    assert!(
        daemon.has_line(|l| l == scan_line),
        "scan line; output:\n{}",
        daemon.output()
    );

    daemon.stop_cleanly();
    let notified = daemon.notifications();
    assert!(
        matches!(notified.as_slice(), [ready, status, stopping]
            if ready == "READY=1" && status.starts_with("STATUS=") && stopping == "STOPPING=1"),
        "READY=1 with a STATUS once active, STOPPING=1 on shutdown: {notified:?}"
    );
    assert!(
        !lab.xdp_attached().unwrap(),
        "no XDP program left on the interface"
    );
    assert!(
        lab.scanner
            .tcp_connect(scanner, sock(lab.protected_v4, SERVICE_PORT), short),
        "unprotected after stop"
    );
}

/// PortSentry 2.x's wording below the trigger: `triggered: [false] noblock: [unset] blocked:
/// [unset]` (its flags stay unset until a probe triggers), then the triggering probe's line.
#[test]
fn lines_below_the_trigger_leave_noblock_and_blocked_unset() {
    let lab = Lab::new(1).expect("lab");
    let dir = TempDir::new("e2e-trigger").expect("state dir");
    let mut daemon = case::cli_args(&lab, &dir)
        .no_pin()
        .arg("--scan-trigger")
        .arg("2")
        .start()
        .expect("daemon");
    let scanner = lab.scanner_v4[0];
    let short = Duration::from_millis(300);
    let line = |triggered: &str, noblock: &str, blocked: &str| {
        format!(
            "Scan from: [{scanner}] ({scanner}) protocol: [TCP] port: [{TRAP_PORT}] type: [TCP \
             SYN/Normal scan] IP opts: [not set] ignored: [false] triggered: [{triggered}] \
             noblock: [{noblock}] blocked: [{blocked}]"
        )
    };
    let _ = lab
        .scanner
        .tcp_connect(scanner, sock(lab.protected_v4, TRAP_PORT), short);
    let first = line("false", "unset", "unset");
    daemon.expect_line("first probe's line", |l| l == first);
    let _ = lab
        .scanner
        .tcp_connect(scanner, sock(lab.protected_v4, TRAP_PORT), short);
    let second = line("true", "false", "true");
    daemon.expect_line("triggering probe's line", |l| l == second);
    daemon.stop_cleanly();
}

/// PortSentry's `BLOCK_TCP = 2` (here `block_tcp = false` with `run_cmd_always`): a source that
/// triggers is not blocked, and `run_cmd` runs for it once per ban period, however often it
/// probes again, with 2.x's `External command run` line.
#[test]
fn a_protocol_that_does_not_block_still_runs_run_cmd_once_per_source() {
    let lab = Lab::new(1).expect("lab");
    let dir = TempDir::new("e2e-block2").expect("state dir");
    let ran = dir.path.join("ran");
    let mut s = case::settings(&lab, &dir);
    s.live.block_tcp = false;
    s.live.hooks.run_cmd = Some(
        [
            "/bin/sh",
            "-c",
            &format!("echo $1 >> {}", ran.display()),
            "sh",
            "$TARGET$",
        ]
        .map(str::to_owned)
        .to_vec(),
    );
    s.live.hooks.run_cmd_always = true;
    let _service = lab
        .protected
        .tcp_service(sock(lab.protected_v4, SERVICE_PORT));
    let mut daemon = case::start(&lab, &dir, &s);
    let scanner = lab.scanner_v4[0];
    let short = Duration::from_millis(300);
    for _ in 0..3 {
        let _ = lab
            .scanner
            .tcp_connect(scanner, sock(lab.protected_v4, TRAP_PORT), short);
    }
    let line = format!("attackalert: External command run for host: {scanner} using command: ");
    daemon.expect_line("run_cmd ran", |l| l.starts_with(&line));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap_or_default(),
        format!("{scanner}\n"),
        "once for three triggering probes; output:\n{}",
        daemon.output()
    );
    assert!(
        lab.scanner
            .tcp_connect(scanner, sock(lab.protected_v4, SERVICE_PORT), short),
        "not blocked"
    );
    assert!(!daemon.has_line(|l| l.contains("has been blocked")));
    daemon.stop_cleanly();
}

/// A probe from an allowlisted ("ignored") source is logged as PortSentry 2.x logs it, at most
/// once a minute per source, and never bans.
#[test]
fn probes_from_ignored_sources_are_logged_once_a_minute_and_never_ban() {
    let lab = Lab::new(2).expect("lab");
    let dir = TempDir::new("e2e-ignored").expect("state dir");
    let ignored = lab.scanner_v4[1];
    let mut daemon = case::cli_args(&lab, &dir)
        .no_pin()
        .arg("--allow")
        .arg(ignored.to_string())
        .start()
        .expect("daemon");
    let short = Duration::from_millis(300);
    for _ in 0..3 {
        let _ = lab
            .scanner
            .tcp_connect(ignored, sock(lab.protected_v4, TRAP_PORT), short);
        std::thread::sleep(Duration::from_millis(150));
    }
    let line = format!(
        "Scan from: [{ignored}] ({ignored}) protocol: [TCP] port: [{TRAP_PORT}] type: [TCP \
         SYN/Normal scan] IP opts: [not set] ignored: [true] triggered: [unset] noblock: [unset] \
         blocked: [unset]"
    );
    daemon.expect_line("ignored line", |l| l == line);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        daemon
            .lines_matching(|l| l.contains(&format!("Scan from: [{ignored}]")))
            .len(),
        1,
        "once a minute per source; output:\n{}",
        daemon.output()
    );
    assert!(!daemon.has_line(|l| l.contains("has been blocked")));
    daemon.stop_cleanly();
}

/// `--log-level debug` forwards the XDP program's own diagnostics into the daemon's log (here:
/// why a probe from a forged 127/8 source was not counted); without it there are none.
#[test]
fn kernel_diagnostics_are_forwarded_only_when_asked() {
    let lab = Lab::new(1).expect("lab");
    let dir = TempDir::new("e2e-diag").expect("state dir");
    let forged_probe = || {
        case::forged_syn(&lab.scanner, "127.0.0.5", lab.protected_v4, TRAP_PORT);
    };
    let start = |extra: &[&str]| {
        case::cli_args(&lab, &dir)
            .no_pin()
            .args(extra.iter().copied())
            .start()
            .expect("daemon")
    };
    let line = format!(
        "portsentry: kernel debug: bogus source ::ffff:127.0.0.5 (no real peer has it) probed port \
         {TRAP_PORT}: not counted"
    );

    let mut daemon = start(&["--log-level", "debug"]);
    forged_probe();
    daemon.expect_line("the kernel's reason", |l| l == line);
    daemon.stop_cleanly();

    let mut quiet = start(&[]);
    forged_probe();
    quiet.expect_line("the bogus probe is still reported", |l| {
        l.starts_with("portsentry: probe from 127.0.0.5")
    });
    quiet.stop_cleanly();
    assert!(
        !quiet.has_line(|l| l.starts_with("portsentry: kernel ")),
        "no diagnostics by default; output:\n{}",
        quiet.output()
    );
}

/// A lab whose scanner owns 2001:db8:1:2::/64 behind the gateway (`n` of its addresses on the
/// scanner's loopback), and a daemon guarding TRAP_PORT with settings changed by `tune`.
fn rotating_prefix_lab(
    n: u32,
    tune: impl FnOnce(&mut Settings),
) -> (Lab, TempDir, Vec<std::net::IpAddr>, Daemon) {
    let rotating: Vec<std::net::IpAddr> = (0..n)
        .map(|i| format!("2001:db8:1:2::{:x}", 0xa + i).parse().unwrap())
        .collect();
    let (lab, dir, daemon) = behind_gateway_lab(&rotating, &["2001:db8:1:2::/64"], tune);
    (lab, dir, rotating, daemon)
}

/// A lab whose scanner holds `addrs` (on its loopback) behind the gateway, the protected side
/// routing each of `routes` via the scanner, and a daemon guarding TRAP_PORT with
/// `prefix_threshold = 3` and settings changed by `tune`.
fn behind_gateway_lab(
    addrs: &[std::net::IpAddr],
    routes: &[&str],
    tune: impl FnOnce(&mut Settings),
) -> (Lab, TempDir, Daemon) {
    use portsentry_tests::lab::ip;

    let lab = Lab::new(3).expect("lab");
    lab.protected_knows_scanner().expect("neighbours");
    let dir = TempDir::new("e2e-prefix").expect("state dir");
    let (s, p) = (lab.scanner.name.clone(), lab.protected.name.clone());
    for a in addrs {
        ip(&[
            "-n",
            &s,
            "addr",
            "add",
            &format!("{a}/128"),
            "dev",
            "lo",
            "nodad",
        ])
        .unwrap();
    }
    let gw = lab.scanner_v6[0].to_string();
    for r in routes {
        ip(&["-n", &p, "-6", "route", "add", r, "via", &gw]).unwrap();
    }
    let mut s = case::settings(&lab, &dir);
    s.live.prefix_threshold = 3;
    tune(&mut s);
    let daemon = case::start(&lab, &dir, &s);
    (lab, dir, daemon)
}

/// The bans in `portsentry list --json`.
fn listed_targets(state: &str) -> Vec<String> {
    let (code, out, err) =
        portsentry_tests::lab::portsentry(&["list", "--json", "--state-dir", state]);
    assert_eq!(code, 0, "{err}");
    let bans: serde_json::Value = serde_json::from_str(&out).expect("list --json");
    bans.as_array()
        .or_else(|| bans["bans"].as_array())
        .expect("a list of bans")
        .iter()
        .filter_map(|b| b["target"].as_str().map(str::to_owned))
        .collect()
}

/// The scanner of [`rotating_prefix_lab`] probes the trap from each of the first `probing` of
/// its addresses (its last one, unused, reaches the service before): then the /64's ban line,
/// saying `why`, is logged, and the unused address is dropped too.
fn the_prefix_is_banned(
    lab: &Lab,
    daemon: &mut Daemon,
    rotating: &[std::net::IpAddr],
    probing: usize,
    why: &str,
) {
    let _service = lab
        .protected
        .tcp_service(sock(lab.protected_v6, SERVICE_PORT));
    let short = Duration::from_millis(300);
    let unused = rotating[rotating.len() - 1];
    assert!(
        lab.scanner
            .tcp_connect(unused, sock(lab.protected_v6, SERVICE_PORT), short),
        "the prefix reaches the service before"
    );
    for a in &rotating[..probing] {
        let _ = lab
            .scanner
            .tcp_connect(*a, sock(lab.protected_v6, TRAP_PORT), short);
    }
    let line = format!(
        "attackalert: Network 2001:db8:1:2::/64 has been blocked via XDP drop on interface: \"{}\" \
         ({why})",
        lab.iface
    );
    daemon.expect_line("prefix ban", |l| l == line);
    assert!(
        !lab.scanner
            .tcp_connect(unused, sock(lab.protected_v6, SERVICE_PORT), short),
        "an address the scanner never used is dropped"
    );
}

/// An IPv6 scanner behind the gateway sends each probe from a new address of its /64: after
/// `prefix_threshold` verified address bans the /64 itself is banned, so an address it never
/// used is dropped too, and the address bans are folded into it. Addresses of this host's own
/// /64 (on-link neighbours) never make a prefix ban.
#[test]
fn rotating_ipv6_addresses_get_their_prefix_banned() {
    let (lab, dir, rotating, mut daemon) = rotating_prefix_lab(5, |_| ());
    let state = dir.path.display().to_string();
    let short = Duration::from_millis(300);
    the_prefix_is_banned(
        &lab,
        &mut daemon,
        &rotating,
        3,
        "3 of its addresses were banned; their bans are folded into it",
    );
    assert_eq!(
        listed_targets(&state),
        ["2001:db8:1:2::/64"],
        "members folded"
    );
    assert_eq!(
        daemon
            .lines_matching(|l| l.starts_with("attackalert: Network "))
            .len(),
        1,
        "the kernel's prefix trigger for the same /64 adds no second line; output:\n{}",
        daemon.output()
    );

    // On-link addresses of this host's own /64: banned one by one, never as a prefix.
    for a in &lab.scanner_v6 {
        let _ = lab
            .scanner
            .tcp_connect(*a, sock(lab.protected_v6, TRAP_PORT), short);
    }
    daemon.expect_line("own prefix refused", |l| l.starts_with("portsentry: 3 addresses of fd77::/64 banned; the prefix itself is not banned: it holds allowlisted fd77::1"));
    daemon.stop_cleanly();
}

/// The same scanner with `scan_trigger = 3`, each address sending ONE probe: no address ever
/// reaches the trigger, but the /64's probes reach trigger × prefix_threshold (9) in the
/// kernel, which sends a prefix trigger after the path check; the daemon bans the /64.
#[test]
fn a_rotating_scanner_below_the_trigger_gets_its_prefix_banned() {
    let (lab, dir, rotating, mut daemon) = rotating_prefix_lab(10, |s| s.live.scan_trigger = 3);
    let state = dir.path.display().to_string();
    the_prefix_is_banned(
        &lab,
        &mut daemon,
        &rotating,
        9,
        "9 probes from its addresses within the window; 0 address ban(s) folded into it",
    );
    assert_eq!(listed_targets(&state), ["2001:db8:1:2::/64"]);
    let c = counters(&dir.path);
    assert_eq!(c["prefix_triggers"].as_u64(), Some(1), "{c}");
    assert_eq!(c["bans"].as_u64(), Some(0), "no address was banned: {c}");
    daemon.stop_cleanly();
}

/// A flood of 20 000 probes from random sources (below the trigger) writes a bounded number of
/// lines and one summary per 10 s, not a line per probe; a real scanner's ban in the middle of
/// it is still logged.
#[test]
fn a_flood_of_forged_probes_writes_bounded_logs_and_the_real_ban_still_appears() {
    let lab = Lab::new(1).expect("lab");
    let dir = TempDir::new("e2e-flood-log").expect("state dir");
    let history = dir.path.join("history.log");
    let mut s = case::settings(&lab, &dir);
    s.live.udp_ports = case::ports("31337");
    s.live.scan_trigger = 2;
    s.live.history_file = Some(history.clone());
    let mut daemon = case::start(&lab, &dir, &s);
    let started = std::time::Instant::now();
    case::random_source_udp(
        &lab.scanner,
        lab.protected_v4,
        31337,
        20000,
        Duration::from_micros(20),
        Duration::from_secs(8),
    );
    let scanner = lab.scanner_v4[0];
    for _ in 0..2 {
        let _ = lab.scanner.tcp_connect(
            scanner,
            sock(lab.protected_v4, TRAP_PORT),
            Duration::from_millis(300),
        );
    }
    let ban = format!("attackalert: Host {scanner} has been blocked");
    assert!(
        daemon.wait_for_line(|l| l.starts_with(&ban), Duration::from_secs(10)),
        "the real scanner's ban; last lines:\n{}",
        tail(&daemon.output())
    );
    // The kernel held most flood events back (its global limit), counted, and lost none.
    let c = counters(&dir.path);
    let suppressed = c["events_suppressed"].as_u64().unwrap_or(0);
    eprintln!("kernel: {suppressed} events suppressed of 20 000 probes");
    assert!(suppressed > 0, "{c}");
    assert_eq!(c["events_lost"].as_u64(), Some(0), "{c}");
    // The interval's summary comes when it ends (10 s after the flood's first line).
    let wait = Duration::from_secs(12).saturating_sub(started.elapsed());
    assert!(
        daemon.wait_for_line(
            |l| l.starts_with("portsentry: flood: ") && l.contains("held back in the kernel"),
            wait + Duration::from_secs(3)
        ),
        "a summary of what was held back, the kernel's share included; last lines:\n{}",
        tail(&daemon.output())
    );
    daemon.stop_cleanly();
    let lines = std::fs::read_to_string(&history)
        .unwrap_or_default()
        .lines()
        .count();
    eprintln!("history: {lines} lines for 20 000 flood probes");
    assert!(
        (100..1_000).contains(&lines),
        "{lines} history lines for 20 000 probes"
    );
}

/// The status counters of a running daemon (`status --json`).
fn counters(state: &std::path::Path) -> serde_json::Value {
    let state = state.display().to_string();
    let (code, out, err) =
        portsentry_tests::lab::portsentry(&["status", "--json", "--state-dir", &state]);
    assert_eq!(code, 0, "status: {err}");
    let st: serde_json::Value = serde_json::from_str(&out).expect("status --json");
    st["counters"].clone()
}

/// Fail open for real traffic: a 3000-byte UDP datagram, fragmented by the sender's own stack
/// at the veth's 1500-byte MTU (as a large DNS answer is), reaches a UDP service through the
/// attached program, on IPv4 and IPv6, and no fragment is dropped.
#[test]
fn a_fragmented_udp_datagram_reaches_a_service() {
    use std::net::{SocketAddr, UdpSocket};

    const SERVICE: u16 = 5300;
    const SIZE: usize = 3000;
    let lab = Lab::new(1).expect("lab");
    let dir = TempDir::new("e2e-frag").expect("state dir");
    let mut daemon = case::cli_args(&lab, &dir)
        .udp_ports("54321")
        .no_pin()
        .start()
        .expect("daemon");
    for (src, dst) in [
        (lab.scanner_v4[0], lab.protected_v4),
        (lab.scanner_v6[0], lab.protected_v6),
    ] {
        let service = SocketAddr::new(dst, SERVICE);
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let protected = lab.protected.clone();
        let receiver = std::thread::spawn(move || {
            protected.run(move || {
                let sock = UdpSocket::bind(service).expect("bind the UDP service");
                sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                bound_tx.send(()).unwrap();
                let mut buf = vec![0u8; 65536];
                sock.recv_from(&mut buf).map(|(n, from)| (n, from.ip()))
            })
        });
        bound_rx.recv().expect("service bound");
        let sent = lab.scanner.run(move || {
            let sock = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind");
            sock.send_to(&[0xab; SIZE], service)
        });
        assert_eq!(sent.expect("send"), SIZE, "{src}: sent in one datagram");
        let got = receiver.join().unwrap();
        assert_eq!(
            got.as_ref().ok(),
            Some(&(SIZE, src)),
            "{src} -> {service}: the reassembled datagram arrives ({got:?}); output:\n{}",
            daemon.output()
        );
    }
    let c = counters(&dir.path);
    assert_eq!(
        (c["fragments_dropped"].as_u64(), c["malformed"].as_u64()),
        (Some(0), Some(0)),
        "{c}"
    );
    assert!(c["passed"].as_u64() >= Some(4), "{c}");
    daemon.stop_cleanly();
}

/// The tiny-fragment trick (RFC 1858), as hping3 plays it with an 8-byte "MTU": a SYN to a
/// trap port whose first fragment holds only the ports and whose flags follow at offset 1.
/// Before, both fragments passed as malformed, the stack reassembled the SYN and the trap port
/// answered (RST) with no ban and no log line; now both are dropped and counted, nothing
/// answers, and `--log-level debug` says why.
#[test]
fn the_tiny_fragment_trick_gets_no_answer() {
    use portsentry_tests::lab::run_in;

    let lab = Lab::new(1).expect("lab");
    let dir = TempDir::new("e2e-tiny").expect("state dir");
    let mut daemon = case::cli_args(&lab, &dir)
        .no_pin()
        .args(["--log-level", "debug"])
        .start()
        .expect("daemon");
    let scanner = lab.scanner_v4[0];
    let (_, out) = run_in(
        &lab.scanner,
        "hping3",
        &[
            "-S",
            "-c",
            "2",
            "-i",
            "u300000",
            "--mtu",
            "8",
            "-p",
            &TRAP_PORT.to_string(),
            &lab.protected_v4.to_string(),
        ],
        Duration::from_secs(10),
    );
    assert!(
        !out.contains("flags="),
        "the trap port must not answer a fragmented SYN: {out}"
    );
    let line = format!(
        "portsentry: kernel debug: evasion: IPv4 first fragment from ::ffff:{scanner} too short \
         for its TCP/UDP header (RFC 1858); dropped"
    );
    daemon.expect_line("the kernel's reason", |l| l == line);
    assert!(
        daemon.has_line(|l| l.contains("evasion: IPv4 fragment from") && l.contains("offset 1"))
    );
    let c = counters(&dir.path);
    // Two SYNs, each a first fragment (8 bytes) and one at offset 1 (8 bytes); the last 4
    // bytes (offset 2) pass and wait in the reassembly queue until it times out.
    assert_eq!(c["fragments_dropped"].as_u64(), Some(4), "{c}");
    daemon.stop_cleanly();
}

/// Issue 25, item 7: prefix bans never cover a peer this host talks to, never aggregate inside
/// a translator range (NAT64's 64:ff9b::/96 holds every IPv4 client of a translator), and go on
/// upward for a scanner that rotates /64s. Before: the peer's /64 was banned (cutting it off),
/// 64:ff9b::/64 was banned, and one address per /64 was never aggregated.
#[test]
fn prefix_bans_spare_peers_and_translators_and_climb_for_rotating_64s() {
    let addr = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
    let peer = addr("2001:db8:1:2::a");
    let peer_prefix = ["2001:db8:1:2::b", "2001:db8:1:2::c", "2001:db8:1:2::d"].map(addr);
    let nat64 = [
        "64:ff9b::c000:205",
        "64:ff9b::c000:206",
        "64:ff9b::c000:207",
    ]
    .map(addr);
    // One address in each of four /64s of 2001:db8:5::/56.
    let rotating = [
        "2001:db8:5:1::1",
        "2001:db8:5:2::1",
        "2001:db8:5:3::1",
        "2001:db8:5:4::1",
    ]
    .map(addr);
    let all: Vec<std::net::IpAddr> = std::iter::once(peer)
        .chain(peer_prefix)
        .chain(nat64)
        .chain(rotating)
        .collect();
    let (lab, dir, mut daemon) = behind_gateway_lab(
        &all,
        &["2001:db8:1:2::/64", "64:ff9b::/96", "2001:db8:5::/48"],
        |s| {
            s.live.ipv6_wider_prefixes = vec![56, 48];
            s.live.wider_prefix_threshold = 3;
        },
    );
    let state = dir.path.display().to_string();
    let short = Duration::from_millis(300);
    const WAIT: Duration = Duration::from_secs(5);
    // The protected host talks to the peer: an outbound TCP connection to its service.
    let _peer_service = lab.scanner.tcp_service(sock(peer, SERVICE_PORT));
    assert!(
        lab.protected
            .tcp_connect(lab.protected_v6, sock(peer, SERVICE_PORT), WAIT),
        "the protected host reaches its peer"
    );
    let _service = lab
        .protected
        .tcp_service(sock(lab.protected_v6, SERVICE_PORT));
    for a in peer_prefix.iter().chain(&nat64).chain(&rotating[..3]) {
        let _ = lab
            .scanner
            .tcp_connect(*a, sock(lab.protected_v6, TRAP_PORT), short);
    }
    let rotating_line = format!(
        "attackalert: Network 2001:db8:5::/56 has been blocked via XDP drop on interface: \"{}\" \
         (3 of its narrower prefixes held bans; 3 ban(s) folded into it)",
        lab.iface
    );
    daemon.expect_line("the /56 of a scanner rotating /64s", |l| l == rotating_line);
    assert!(
        !lab.scanner
            .tcp_connect(rotating[3], sock(lab.protected_v6, SERVICE_PORT), short),
        "a /64 of that /56 the scanner never used is dropped"
    );
    assert!(
        daemon.has_line(|l| l
            == "portsentry: 3 addresses of 2001:db8:1:2::/64 banned; the prefix itself is not banned: it holds 2001:db8:1:2::a, a peer this host talks to"),
        "the peer's /64 is refused; output:\n{}",
        daemon.output()
    );
    assert!(
        lab.scanner
            .tcp_connect(peer, sock(lab.protected_v6, SERVICE_PORT), short),
        "the peer still reaches the service"
    );
    let listed = listed_targets(&state);
    for t in ["2001:db8:1:2::/64", "64:ff9b::/64", "64:ff9b::/96"] {
        assert!(!listed.iter().any(|l| l == t), "{t} banned: {listed:?}");
    }
    for a in nat64 {
        assert!(
            listed.contains(&a.to_string()),
            "NAT64 sources are banned one by one: {listed:?}"
        );
    }
    assert!(listed.iter().any(|l| l == "2001:db8:5::/56"), "{listed:?}");
    daemon.stop_cleanly();
}
