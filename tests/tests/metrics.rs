//! The metrics endpoint (`metrics_listen`) of a real daemon in the lab, scraped from inside the
//! protected namespace while real scans run: the series move as the scan proceeds, the
//! exposition passes `promtool check metrics` (Debian's, staged under target/test-tools by
//! `cargo xtask test`), `portsentry status` reads the same numbers, and the listener stays
//! bounded (methods, bodies, request size, connections) without stalling the event loop.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use portsentry_tests::{
    case,
    lab::{portsentry, run_in, sock, DaemonArgs, Lab, Netns, TempDir},
};

/// Inside the protected namespace: its loopback (the address an operator would use).
const LISTEN: &str = "127.0.0.1:9650";
const TRAPS: &str = "1,11,79,111,143";

fn listen() -> SocketAddr {
    LISTEN.parse().unwrap()
}

/// One HTTP exchange from inside `ns`: (status code, head, body). `None`: the server closed
/// the connection without an answer.
fn http(ns: &Netns, request: String) -> Option<(u16, String, String)> {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&listen(), Duration::from_secs(3)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        // The server may answer and close before it has read everything.
        let _ = s.write_all(request.as_bytes());
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        Some((code, head.to_owned(), body.to_owned()))
    })
}

fn get(ns: &Netns, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    http(
        ns,
        format!("GET {path} HTTP/1.1\r\nHost: {LISTEN}\r\n{accept}Connection: close\r\n\r\n"),
    )
    .unwrap_or_else(|| panic!("no answer to GET {path}"))
}

/// A scrape in the classic text format.
fn scrape(lab: &Lab) -> String {
    let (code, head, body) = get(&lab.protected, "/metrics", None);
    assert_eq!(code, 200, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// The value of one sample (`name` or `name{labels}` exactly as exposed); 0 if absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

fn probes(text: &str, scan: &str, proto: &str) -> f64 {
    value(
        text,
        &format!("portsentry_probes_total{{scan_type=\"{scan}\",protocol=\"{proto}\"}}"),
    )
}

fn nmap(lab: &Lab, src: IpAddr, scan: &str, ports: &str, extra: &[&str]) -> String {
    let src = src.to_string();
    let tgt = lab.protected_v4.to_string();
    let mut args = vec![
        scan,
        "-Pn",
        "-n",
        "-p",
        ports,
        "-S",
        &src,
        "-e",
        &lab.scanner_iface,
        "--max-retries",
        "1",
        "--max-rtt-timeout",
        "300ms",
    ];
    args.extend_from_slice(extra);
    args.push(&tgt);
    let (code, out) = run_in(&lab.scanner, "nmap", &args, Duration::from_secs(120));
    assert_eq!(code, 0, "nmap {args:?}: {out}");
    out
}

fn promtool() -> String {
    std::env::var("PORTSENTRY_PROMTOOL")
        .expect("PORTSENTRY_PROMTOOL is not set: run the metrics tests with `cargo xtask test`")
}

/// `promtool check metrics` on `text`: (exit code, what it said).
fn promtool_check(text: &str) -> (i32, String) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The case's daemon guarding [`TRAPS`] and UDP 54321, serving metrics on [`LISTEN`] (given as
/// the flag).
fn metrics_args(lab: &Lab, dir: &TempDir) -> DaemonArgs {
    let mut s = case::settings(lab, dir);
    s.live.tcp_ports = case::ports(TRAPS);
    s.live.udp_ports = case::ports("54321");
    case::args(lab, dir, &s).args(["--metrics-listen", LISTEN])
}

#[test]
fn the_series_follow_a_real_scan_and_status_reads_the_same_numbers() {
    let lab = Lab::new(4).unwrap();
    let dir = TempDir::new("metrics").unwrap();
    let mut d = metrics_args(&lab, &dir).start().expect("daemon");
    assert!(
        d.output()
            .contains(&format!("metrics at http://{LISTEN}/metrics")),
        "{}",
        d.output()
    );

    let before = scrape(&lab);
    assert_eq!(probes(&before, "syn", "tcp"), 0.0, "{before}");
    assert_eq!(
        value(&before, "portsentry_bans_active{origin=\"detected\"}"),
        0.0
    );
    assert_eq!(value(&before, "portsentry_packets_dropped_total"), 0.0);
    assert!(
        before.contains("portsentry_table_capacity{table=\"bans\"} 65536"),
        "{before}"
    );
    let (code, out) = promtool_check(&before);
    assert_eq!(code, 0, "promtool check metrics: {out}\n{before}");

    // A SYN scan: the first trap probe bans, the rest of the scan is dropped.
    let a = lab.scanner_v4[0];
    nmap(&lab, a, "-sS", &format!("{TRAPS},8000-8100"), &[]);
    let after_syn = scrape(&lab);
    assert!(probes(&after_syn, "syn", "tcp") >= 1.0, "{after_syn}");
    assert_eq!(
        value(&after_syn, "portsentry_bans_active{origin=\"detected\"}"),
        1.0,
        "{after_syn}"
    );
    assert_eq!(
        value(
            &after_syn,
            "portsentry_bans_made_total{origin=\"detected\"}"
        ),
        1.0
    );
    assert_eq!(value(&after_syn, "portsentry_kernel_bans_total"), 1.0);
    let dropped_syn = value(&after_syn, "portsentry_packets_dropped_total");
    assert!(
        dropped_syn >= 50.0,
        "the rest of the scan is dropped: {after_syn}"
    );
    let drops_a = format!("portsentry_ban_drops_total{{target=\"{a}\",origin=\"detected\"}}");
    assert!(
        value(&after_syn, &drops_a) >= 50.0,
        "{drops_a} in {after_syn}"
    );
    assert_eq!(
        value(&after_syn, "portsentry_table_entries{table=\"bans\"}"),
        1.0
    );

    // A FIN scan from a second source, then a UDP probe from a third.
    nmap(&lab, lab.scanner_v4[1], "-sF", TRAPS, &[]);
    assert!(lab
        .scanner
        .udp_send(lab.scanner_v4[2], sock(lab.protected_v4, 54321)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after_fin = scrape(&lab);
    while value(&after_fin, "portsentry_bans_active{origin=\"detected\"}") < 3.0
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(300));
        after_fin = scrape(&lab);
    }
    assert!(probes(&after_fin, "fin", "tcp") >= 1.0, "{after_fin}");
    assert!(probes(&after_fin, "udp", "udp") >= 1.0, "{after_fin}");
    assert_eq!(
        value(&after_fin, "portsentry_bans_active{origin=\"detected\"}"),
        3.0,
        "{after_fin}"
    );
    assert!(value(&after_fin, "portsentry_packets_dropped_total") > dropped_syn);

    // During a longer scan from a banned source, each scrape sees more drops than the last.
    let scanner_lab_src = lab.scanner_v4[0];
    let (ns, iface, tgt) = (
        lab.scanner.clone(),
        lab.scanner_iface.clone(),
        lab.protected_v4.to_string(),
    );
    let scan = thread::spawn(move || {
        let src = scanner_lab_src.to_string();
        run_in(
            &ns,
            "nmap",
            &[
                "-sS",
                "-Pn",
                "-n",
                "-p",
                "1-30000",
                "-S",
                &src,
                "-e",
                &iface,
                "--max-retries",
                "0",
                "--min-rate",
                "5000",
                "--max-rate",
                "5000",
                &tgt,
            ],
            Duration::from_secs(60),
        )
    });
    let mut seen = vec![value(&scrape(&lab), "portsentry_packets_dropped_total")];
    while !scan.is_finished() {
        thread::sleep(Duration::from_millis(1200));
        seen.push(value(&scrape(&lab), "portsentry_packets_dropped_total"));
    }
    let (code, out) = scan.join().unwrap();
    assert_eq!(code, 0, "{out}");
    seen.push(value(&scrape(&lab), "portsentry_packets_dropped_total"));
    assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
    eprintln!("packets dropped, scrape by scrape during the scan: {seen:?}");
    let rising = seen.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(rising >= 2, "drops rise while the scan runs: {seen:?}");
    assert!(
        seen[seen.len() - 1] - seen[0] >= 20_000.0,
        "the scan was dropped: {seen:?}"
    );

    // The final exposition is valid, in both formats.
    let last = scrape(&lab);
    let (code, out) = promtool_check(&last);
    assert_eq!(code, 0, "promtool check metrics: {out}\n{last}");
    let (code, head, om) = get(
        &lab.protected,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("# TYPE portsentry_packets_dropped counter"),
        "{om}"
    );

    // `status` reads the same numbers (traffic has stopped; counters hold still).
    let state = dir.path.display().to_string();
    let (code, st, err) = portsentry(&["status", "--json", "--state-dir", &state]);
    assert_eq!(code, 0, "status: {err}");
    let st: serde_json::Value = serde_json::from_str(&st).expect("status --json");
    let metrics = scrape(&lab);
    for (json, series) in [
        (
            &st["counters"]["dropped"],
            "portsentry_packets_dropped_total",
        ),
        (&st["counters"]["passed"], "portsentry_packets_passed_total"),
        (
            &st["counters"]["probes_syn"],
            "portsentry_probes_total{scan_type=\"syn\",protocol=\"tcp\"}",
        ),
        (
            &st["counters"]["events_lost"],
            "portsentry_events_lost_total",
        ),
        (
            &st["counters"]["events_suppressed"],
            "portsentry_events_suppressed_total",
        ),
        (
            &st["bans_active"]["detected"],
            "portsentry_bans_active{origin=\"detected\"}",
        ),
        (
            &st["bans_made"]["detected"],
            "portsentry_bans_made_total{origin=\"detected\"}",
        ),
        (
            &st["hooks"]["started"],
            "portsentry_hook_responses_started_total",
        ),
    ] {
        assert_eq!(
            json.as_f64(),
            Some(value(&metrics, series)),
            "{series}: status {st} vs\n{metrics}"
        );
    }
    d.stop_cleanly();
}

#[test]
fn the_listener_is_bounded_and_never_stalls_the_event_loop() {
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("metrics-bounds").unwrap();
    let mut d = metrics_args(&lab, &dir).start().expect("daemon");
    let ns = &lab.protected;

    assert_eq!(get(ns, "/nothing", None).0, 404);
    let post = http(
        ns,
        format!("POST /metrics HTTP/1.1\r\nHost: {LISTEN}\r\nContent-Length: 0\r\n\r\n"),
    );
    assert_eq!(post.map(|p| p.0), Some(405));
    let with_body = http(
        ns,
        format!("GET /metrics HTTP/1.1\r\nHost: {LISTEN}\r\nContent-Length: 5\r\n\r\nhello"),
    );
    assert_eq!(with_body.map(|p| p.0), Some(413));
    // A request head beyond 8 KiB is refused, never read to the end.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: {LISTEN}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = http(ns, huge);
    assert!(
        answer.as_ref().is_none_or(|a| a.0 == 431),
        "oversized head: {answer:?}"
    );

    // Eight idle connections take every slot: the ninth is closed at once, and meanwhile the
    // daemon still detects and bans (the loop is not waiting on the listener).
    let idle: Vec<TcpStream> = ns.run(|| {
        (0..8)
            .map(|_| TcpStream::connect_timeout(&listen(), Duration::from_secs(3)).unwrap())
            .collect()
    });
    thread::sleep(Duration::from_millis(300));
    let ninth = http(
        ns,
        format!("GET /metrics HTTP/1.1\r\nHost: {LISTEN}\r\n\r\n"),
    );
    assert!(ninth.is_none(), "a ninth connection is closed: {ninth:?}");
    let b = lab.scanner_v4[1];
    assert!(!lab
        .scanner
        .tcp_connect(b, sock(lab.protected_v4, 111), Duration::from_millis(300)));
    let line = format!(
        "attackalert: Host {b} has been blocked via XDP drop on interface: \"{}\"",
        lab.iface
    );
    d.expect_line_within(
        "bans go on while the listener is full",
        Duration::from_secs(3),
        |l| l == line,
    );
    // Idle connections are closed by the header timeout (5 s); then scrapes work again.
    let started = Instant::now();
    let still_open = ns.run(move || {
        let mut still_open = 0;
        for mut s in idle {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut buf = [0u8; 512];
            // End of stream (or an error answer): the server closed it.
            if s.read(&mut buf).is_err() {
                still_open += 1;
            }
        }
        still_open
    });
    assert_eq!(
        still_open, 0,
        "the idle connections are closed by the server"
    );
    // Closed by the header timeout, at the latest by the connection timeout (15 s).
    assert!(
        started.elapsed() < Duration::from_secs(17),
        "{:?}",
        started.elapsed()
    );
    let text = scrape(&lab);
    assert_eq!(
        value(&text, "portsentry_bans_active{origin=\"detected\"}"),
        1.0,
        "{text}"
    );
    d.stop_cleanly();
}

#[test]
fn a_taken_metrics_address_is_a_startup_error_naming_the_key() {
    let lab = Lab::new(1).unwrap();
    let dir = TempDir::new("metrics-taken").unwrap();
    let _taken = lab.protected.tcp_service(listen());
    let err = metrics_args(&lab, &dir)
        .start()
        .err()
        .map(|e| format!("{e:#}"))
        .expect("the daemon must not start");
    eprintln!("{err}");
    assert!(
        err.contains(&format!(
            "metrics_listen = \"{LISTEN}\": cannot listen there"
        )) && err.contains("in use"),
        "{err}"
    );
    assert!(!lab.xdp_attached().unwrap(), "nothing stays attached");
}
