//! Real scanners (nmap, hping3, masscan) against the real daemon, between network namespaces.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use portsentry::config::settings::{Settings, CLASSIC_TCP_PORTS};
use portsentry_tests::{
    case::{self, attackalert, SERVICE},
    fullscan::{self, port_states},
    lab::{run_in, sock, Lab, TempDir},
};

/// The case's settings guarding `tcp_ports` and UDP 54321.
fn scanner_settings(lab: &Lab, dir: &TempDir, tcp_ports: &str) -> Settings {
    let mut s = case::settings(lab, dir);
    s.live.tcp_ports = case::ports(tcp_ports);
    s.live.udp_ports = case::ports("54321");
    s
}

fn target(lab: &Lab, v6: bool) -> String {
    if v6 {
        lab.protected_v6.to_string()
    } else {
        lab.protected_v4.to_string()
    }
}

/// nmap from `src` (raw scans spoof nothing: `src` is one of the scanner's own addresses).
fn nmap(lab: &Lab, src: IpAddr, scan: &str, ports: &str, v6: bool) -> String {
    let src_s = src.to_string();
    let tgt = target(lab, v6);
    let mut args = vec![
        if scan == "--send-ip" { "-sS" } else { scan },
        "-Pn",
        "-n",
        "-p",
        ports,
        "--max-retries",
        "1",
        "--max-rtt-timeout",
        "300ms",
        "-oG",
        "-",
    ];
    if v6 {
        args.push("-6");
    }
    if scan == "--send-ip" {
        args.push("--send-ip");
    }
    if scan != "-sT" {
        args.extend(["-S", &src_s, "-e", &lab.scanner_iface]);
    }
    args.push(&tgt);
    run_in(&lab.scanner, "nmap", &args, Duration::from_secs(60)).1
}

/// Each nmap scan type, IPv4 and IPv6: the source is banned, the log names the scan type, and a
/// follow-up scan sees every port filtered (the open service included).
#[test]
fn nmap_scan_types_are_detected_named_and_then_see_everything_filtered() {
    let cases = [
        ("-sS", "111", "TCP SYN/Normal scan", "TCP"),
        ("-sT", "111", "TCP SYN/Normal scan", "TCP"),
        ("-sF", "111", "TCP FIN scan", "TCP"),
        ("-sN", "111", "TCP NULL scan", "TCP"),
        ("-sX", "111", "TCP XMAS scan", "TCP"),
        ("-sU", "54321", "UDP", "UDP"),
    ];
    for (scan, port, name, proto) in cases {
        // Connect scans cannot choose their source address: give them only one per family.
        let lab = Lab::new(if scan == "-sT" { 1 } else { 2 }).unwrap();
        let dir = TempDir::new("nmap").unwrap();
        let _svc4 = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
        let _svc6 = lab.protected.tcp_service(sock(lab.protected_v6, SERVICE));
        let mut d = case::start(&lab, &dir, &scanner_settings(&lab, &dir, "111"));
        for v6 in [false, true] {
            let idx = if scan == "-sT" { 0 } else { 1 };
            let src = if v6 {
                lab.scanner_v6[idx]
            } else {
                lab.scanner_v4[idx]
            };
            nmap(&lab, src, scan, port, v6);
            let line = format!(
                "Scan from: [{src}] ({src}) protocol: [{proto}] port: [{port}] type: [{name}]"
            );
            d.expect_line(&format!("{scan} v6={v6}: `{line}`"), |l| {
                l.starts_with(&line)
            });
            assert!(
                d.has_line(|l| l.starts_with(&format!("attackalert: Host {src} has been blocked"))),
                "{scan} v6={v6}"
            );
            // After a ban nmap's own IPv6 neighbour discovery gets no answer (dropped like
            // everything from a banned source); `--send-ip` makes it use the kernel's
            // neighbour table, which the lab filled in.
            let follow_up = if v6 { "--send-ip" } else { "-sS" };
            let raw = nmap(&lab, src, follow_up, &format!("111,{SERVICE},9"), v6);
            let after = port_states(&raw);
            assert_eq!(after.len(), 3, "{scan} v6={v6}: {after:?}\n{raw}");
            assert!(
                after.values().all(|s| s == "filtered"),
                "{scan} v6={v6}: after the ban every port is filtered: {after:?}"
            );
        }
    }
}

/// The product's reason to exist: during `nmap -sS -p- --min-rate 20000` with real services
/// open, no probe sent after the first trap probe gets any answer, and nmap finds only services
/// probed before it. A legitimate client keeps working throughout.
#[test]
fn full_range_fast_scan_gets_no_answer_after_the_first_trap_probe() {
    let lab = Lab::new(3).unwrap();
    let dir = TempDir::new("fullscan").unwrap();
    let services = [22u16, 80, 443, 3306, SERVICE];
    let _svcs: Vec<_> = services
        .iter()
        .map(|p| lab.protected.tcp_service(sock(lab.protected_v4, *p)))
        .collect();
    let s = scanner_settings(&lab, &dir, CLASSIC_TCP_PORTS);
    let mut d = case::start(&lab, &dir, &s);
    let (scanner, client) = (lab.scanner_v4[1], lab.scanner_v4[2]);

    // A legitimate client from another address connects all the time.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let legit = {
        let (stop, ok, failed, ns, dst) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            lab.scanner.clone(),
            sock(lab.protected_v4, SERVICE),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if ns.tcp_connect(client, dst, Duration::from_secs(1)) {
                    &ok
                } else {
                    &failed
                }
                .fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let traps: BTreeSet<u16> = CLASSIC_TCP_PORTS
        .split(',')
        .filter_map(|p| p.parse().ok())
        .collect();
    let r = fullscan::scan(&lab, &dir, scanner, &traps);
    stop.store(true, Ordering::Relaxed);
    legit.join().unwrap();
    let src = scanner.to_string();
    eprintln!(
        "full scan: {} probes, {} answers, first trap probe after {} ports; answers to later probes: {}; nmap open ports: {:?}; legit client {} ok / {} failed",
        r.probes, r.answers, r.probed_before_trigger.len(), r.leaked, r.open, ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed)
    );
    assert!(
        r.probes > 1000 && r.trap_probed,
        "the scan ran and probed a trap: {} probes",
        r.probes
    );
    assert_eq!(
        r.leaked, 0,
        "answers to probes sent after the first trap probe"
    );
    assert!(
        r.open
            .iter()
            .all(|p| r.probed_before_trigger.contains(p) && services.contains(p)),
        "open {:?} must have been probed before the trigger",
        r.open
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "the legitimate client never failed"
    );
    assert!(ok.load(Ordering::Relaxed) > 5);
    assert!(d.wait_for_line(attackalert(src), Duration::from_secs(2)));
}

/// Allowlisted scanners, scans spoofing the protected host's gateway, and packets spoofing its
/// own address never cause a ban (auto_allow on, as by default).
#[test]
fn allowlisted_and_spoofed_sources_are_never_banned() {
    let lab = Lab::new(3).unwrap();
    let dir = TempDir::new("allow").unwrap();
    let allowed = lab.scanner_v4[1].to_string();
    let mut s = scanner_settings(&lab, &dir, "111");
    s.live.auto_allow = true;
    s.live.allow = vec![case::cidr(&allowed)];
    let mut d = case::start(&lab, &dir, &s);
    // scanner_v4[0] is the protected namespace's default gateway.
    let gateway = lab.scanner_v4[0];
    nmap(&lab, gateway, "-sS", "111", false);
    nmap(&lab, lab.scanner_v4[1], "-sS", "111", false);
    // Packets claiming to come from the protected host itself.
    let own = lab.protected_v4;
    case::forged_syns(&lab.scanner, own, own, 111, 3, Duration::from_millis(10));
    // A control: an address that is neither allowed nor infrastructure is banned.
    let other = lab.scanner_v4[2];
    nmap(&lab, other, "-sS", "111", false);
    d.expect_line("the ban", attackalert(other));
    let bans = d.lines_matching(|l| l.starts_with("attackalert: Host "));
    assert_eq!(bans.len(), 1, "only the control was banned: {bans:?}");
}

/// hping3 floods from random sources (SYN, fragments, odd flags) and masscan at full speed: the
/// daemon stays up, its memory stays bounded, the ban table caps at max_bans and says so, an
/// allowlisted range is never banned, and a real scan afterwards is still caught.
#[test]
fn floods_leave_the_daemon_up_bounded_and_correct() {
    let lab = Lab::new(3).unwrap();
    let dir = TempDir::new("flood").unwrap();
    let mut s = scanner_settings(&lab, &dir, "111");
    s.startup.max_bans = 2000;
    s.live.allow = vec![case::cidr("100.64.0.0/10")];
    let mut d = case::start(&lab, &dir, &s);
    let tgt = lab.protected_v4.to_string();
    let rss_before = d.rss_kib().unwrap_or(0);
    for args in [
        vec!["--flood", "--rand-source", "-S", "-p", "111", tgt.as_str()],
        vec![
            "--flood",
            "--rand-source",
            "-f",
            "-S",
            "-p",
            "111",
            "-d",
            "64",
            tgt.as_str(),
        ],
        vec![
            "--flood",
            "--rand-source",
            "-F",
            "-S",
            "-R",
            "-P",
            "-U",
            "-p",
            "111",
            tgt.as_str(),
        ],
        vec![
            "--flood",
            "--rand-source",
            "-2",
            "-p",
            "54321",
            tgt.as_str(),
        ],
    ] {
        run_in(&lab.scanner, "hping3", &args, Duration::from_secs(3));
    }
    let src = lab.scanner_v4[1].to_string();
    run_in(
        &lab.scanner,
        "masscan",
        &[
            "-p1-65535",
            &tgt,
            "--rate",
            "200000",
            "--source-ip",
            &src,
            "--wait",
            "0",
            "-e",
            &lab.scanner_iface,
            "--router-mac",
            "02:00:00:00:00:01",
        ],
        Duration::from_secs(8),
    );
    assert!(
        d.is_running(),
        "daemon survived the floods:\n{}",
        d.output()
    );
    let rss_after = d.rss_kib().unwrap_or(u64::MAX);
    eprintln!("daemon RSS: {rss_before} KiB before, {rss_after} KiB after the floods");
    assert!(
        rss_after < 64 * 1024,
        "RSS stays under 64 MiB: {rss_after} KiB"
    );

    let bans: Vec<String> =
        d.lines_matching(|l| l.starts_with("attackalert: Host ") && l.contains("has been blocked"));
    assert!(!bans.is_empty());
    assert!(
        d.has_line(
            |l| l.contains("could not be blocked: the ban table is full")
                || l.starts_with("portsentry: ban table full (2000 entries): displaced ")
        ),
        "the full table is reported"
    );
    let in_allowed = bans
        .iter()
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
                .is_some_and(|a| a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64)
        })
        .count();
    assert_eq!(in_allowed, 0, "no allowlisted source was banned");

    // Bans stay correct: the clean third address is still caught (the table is full, so it is
    // reported as such, and its probe is dropped).
    let clean = lab.scanner_v4[2];
    // Event lines are bounded per 10 s under a flood (detect::budget): let the daemon work
    // through the floods' backlog (its output stops growing), then let the budget's interval
    // end, so the clean scanner's line is not one of those a flood's interval holds back.
    let mut last = d.output().len();
    let quiet_by = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < quiet_by {
        std::thread::sleep(Duration::from_secs(1));
        let now = d.output().len();
        if now == last {
            break;
        }
        last = now;
    }
    std::thread::sleep(Duration::from_millis(10_500));
    nmap(&lab, clean, "-sS", "111", false);
    assert!(
        d.wait_for_line(
            |l| l.contains(&format!("Scan from: [{clean}]")),
            Duration::from_secs(20)
        ),
        "{}",
        d.output()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
