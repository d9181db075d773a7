//! Fleet mode against a real CrowdSec LAPI (Debian's `crowdsec`, started per test in its own
//! namespace): decisions enforced in XDP, detections shared between instances, and an outage
//! that loses nothing.

use std::{
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use portsentry_tests::{
    crowdsec::Lapi,
    lab::{portsentry, sock, Daemon, DaemonArgs, Lab, Service, TempDir},
};

const SERVICE: u16 = 8080;
const TRAP: u16 = 111;
/// The bound for a decision to take effect (add or delete).
const FLEET_LATENCY: Duration = Duration::from_secs(2);
const PROBE: Duration = Duration::from_millis(250);

/// One protected host in fleet mode.
struct Host {
    lab: Lab,
    dir: TempDir,
    config: String,
    daemon: Option<Daemon>,
    _services: Vec<Service>,
}

impl Host {
    fn new(lapi: &mut Lapi, name: &str, bouncer: bool, machine: bool) -> Self {
        let lab = Lab::new(3).expect("lab");
        let url = lapi.connect(&lab).expect("management link");
        let dir = TempDir::new(name).expect("state dir");
        let mut crowdsec = format!("[crowdsec]\nlapi_url = \"{url}\"\nupdate_frequency = \"1s\"\n");
        if bouncer {
            let key = lapi.add_bouncer(name).expect("bouncer");
            let key_file = dir.write("bouncer.key", &format!("{key}\n"));
            crowdsec += &format!("api_key_file = \"{key_file}\"\n");
        }
        if machine {
            let creds = lapi.add_machine(name).expect("machine");
            crowdsec += &format!("credentials_file = \"{creds}\"\n");
        }
        let config = dir.write(
            "portsentry.toml",
            &format!(
                "interfaces = [\"{}\"]\ntcp_ports = \"{TRAP}\"\nudp_ports = \"\"\nauto_allow = false\n\
                 pin_dir = \"\"\nstate_dir = \"{}\"\nban_ttl = \"6h\"\n{crowdsec}",
                lab.iface,
                dir.path.display()
            ),
        );
        let services = vec![
            lab.protected.tcp_service(sock(lab.protected_v4, SERVICE)),
            lab.protected.tcp_service(sock(lab.protected_v6, SERVICE)),
        ];
        let mut host = Host {
            lab,
            dir,
            config,
            daemon: None,
            _services: services,
        };
        host.start();
        host
    }

    fn start(&mut self) {
        let d = DaemonArgs::new(&self.lab)
            .config(&self.config)
            .start()
            .expect("daemon");
        self.daemon = Some(d);
    }

    fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("running")
    }

    fn reaches_service(&self, src: IpAddr) -> bool {
        let dst = if src.is_ipv4() {
            self.lab.protected_v4
        } else {
            self.lab.protected_v6
        };
        self.lab.scanner.tcp_connect(src, sock(dst, SERVICE), PROBE)
    }

    /// Time from `since` until `src` is dropped (`want_dropped`) or flows again; the instant is
    /// that of the first connect attempt showing it. `None` after `limit`.
    fn time_until(
        &self,
        src: IpAddr,
        want_dropped: bool,
        since: Instant,
        limit: Duration,
    ) -> Option<Duration> {
        while since.elapsed() < limit {
            let attempt = Instant::now();
            if self.reaches_service(src) != want_dropped {
                let took = attempt - since;
                eprintln!(
                    "fleet: {src} {} after {} ms",
                    if want_dropped {
                        "dropped"
                    } else {
                        "flows again"
                    },
                    took.as_millis()
                );
                return Some(took);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Runs `cscli ARGS` and asserts that within [`FLEET_LATENCY`] `src` is dropped
    /// (`want_dropped`) or flows again.
    fn cscli_takes_effect(&mut self, lapi: &Lapi, args: &[&str], src: IpAddr, want_dropped: bool) {
        let since = Instant::now();
        lapi.cscli(args).unwrap();
        let took = self.time_until(src, want_dropped, since, Duration::from_secs(5));
        assert!(
            took.is_some_and(|t| t <= FLEET_LATENCY),
            "`cscli {}` took effect after {took:?}; output:\n{}",
            args.join(" "),
            self.output()
        );
    }

    fn list_json(&self) -> serde_json::Value {
        let (code, out, err) = portsentry(&["list", "--json", "--config", &self.config]);
        assert_eq!(code, 0, "list: {err}");
        serde_json::from_str(&out).expect("list --json")
    }

    fn output(&mut self) -> String {
        self.daemon().output()
    }
}

fn wait_for(d: &mut Daemon, what: &str, timeout: Duration) {
    assert!(
        d.wait_for_line(|l| l.contains(what), timeout),
        "no line containing {what:?} within {timeout:?}; output:\n{}",
        d.output()
    );
}

#[test]
fn lapi_decisions_are_dropped_in_xdp_and_deletions_lift_them() {
    let mut lapi = Lapi::start().expect("LAPI");
    let mut host = Host::new(&mut lapi, "bouncer", true, false);
    wait_for(
        host.daemon(),
        "crowdsec: full decision list",
        Duration::from_secs(5),
    );
    let x = host.lab.scanner_v4[0];
    let bystander = host.lab.scanner_v4[1];
    assert!(host.reaches_service(x), "reachable before the decision");

    // An Ip decision: dropped in XDP within 2 s.
    let xs = x.to_string();
    host.cscli_takes_effect(
        &lapi,
        &["decisions", "add", "--ip", &xs, "--duration", "1h"],
        x,
        true,
    );
    assert!(host.reaches_service(bystander), "other sources unaffected");
    wait_for(
        host.daemon(),
        &format!("crowdsec: banned {x} for "),
        Duration::from_secs(1),
    );

    // `portsentry list` tells fleet bans from local ones.
    thread::sleep(Duration::from_millis(1500)); // the state file is written within 1 s of a change
    let rows = host.list_json();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == xs)
        .unwrap_or_else(|| panic!("{x} listed: {rows}"));
    assert_eq!(row["origin"], "crowdsec", "{row}");
    assert!(
        row["trigger"].as_str().unwrap().starts_with("cscli: "),
        "{row}"
    );

    // Deleted: flows again within 2 s.
    host.cscli_takes_effect(&lapi, &["decisions", "delete", "--ip", &xs], x, false);
    wait_for(
        host.daemon(),
        &format!("crowdsec: lifted {x} "),
        Duration::from_secs(1),
    );

    // A v6 Range decision, the same both ways. It leaves out fd77::1: this host's own addresses
    // are always allowlisted, and a fleet range over the allowlist is refused whole.
    let v6 = host.lab.scanner_v6[0];
    assert!(host.reaches_service(v6), "v6 reachable before");
    host.cscli_takes_effect(
        &lapi,
        &[
            "decisions",
            "add",
            "--range",
            "fd77::2/127",
            "--duration",
            "1h",
        ],
        v6,
        true,
    );
    assert!(
        host.reaches_service(bystander),
        "v4 unaffected by a v6 range"
    );
    host.cscli_takes_effect(
        &lapi,
        &["decisions", "delete", "--range", "fd77::2/127"],
        v6,
        false,
    );

    // Scopes and types we cannot enforce are counted, not applied.
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        &bystander.to_string(),
        "--type",
        "captcha",
    ])
    .unwrap();
    wait_for(
        host.daemon(),
        "1 ignored (1 captcha/Ip)",
        Duration::from_secs(3),
    );
    assert!(
        host.reaches_service(bystander),
        "a captcha decision drops nothing"
    );

    assert_eq!(host.daemon().stop().unwrap(), Some(0), "clean exit");
}

#[test]
fn a_scan_caught_by_one_instance_is_dropped_by_another() {
    let mut lapi = Lapi::start().expect("LAPI");
    let mut a = Host::new(&mut lapi, "host-a", true, true);
    let mut b = Host::new(&mut lapi, "host-b", true, true);
    wait_for(
        b.daemon(),
        "crowdsec: full decision list",
        Duration::from_secs(5),
    );
    // Both labs use the same addressing: the scanner of A and of B is the same address.
    let scanner = a.lab.scanner_v4[0];
    assert!(b.reaches_service(scanner), "B reachable before the scan");

    let probed = Instant::now();
    assert!(!a
        .lab
        .scanner
        .tcp_connect(scanner, sock(a.lab.protected_v4, TRAP), PROBE));
    wait_for(
        a.daemon(),
        &format!("attackalert: Host {scanner} has been blocked"),
        Duration::from_secs(2),
    );
    let took = b.time_until(scanner, true, probed, Duration::from_secs(6));
    assert!(
        took.is_some_and(|t| t <= FLEET_LATENCY),
        "B dropped A's scanner after {took:?}\nA:\n{}\nB:\n{}",
        a.output(),
        b.output()
    );
    wait_for(
        a.daemon(),
        "crowdsec: pushed 1 alert(s) to LAPI",
        Duration::from_secs(1),
    );
    wait_for(
        b.daemon(),
        &format!("crowdsec: banned {scanner} for 5h 59m"),
        Duration::from_secs(1),
    );
    assert!(
        b.daemon()
            .has_line(|l| l.contains("(portsentry: portsentry/port-scan)")),
        "{}",
        b.output()
    );
    assert!(
        b.reaches_service(b.lab.scanner_v4[1]),
        "B's other sources unaffected"
    );

    let alerts = lapi.cscli(&["alerts", "list", "-a", "-o", "json"]).unwrap();
    let alerts: serde_json::Value = serde_json::from_str(&alerts).expect("alerts json");
    let ours = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|al| {
            al["scenario"] == "portsentry/port-scan" && al["source"]["value"] == scanner.to_string()
        })
        .unwrap_or_else(|| panic!("our alert in `cscli alerts list`: {alerts}"));
    assert_eq!(ours["decisions"][0]["origin"], "portsentry", "{ours}");
    assert_eq!(ours["decisions"][0]["type"], "ban", "{ours}");
    let meta = ours["events"][0]["meta"].to_string();
    assert!(
        meta.contains("\"dst_port\"") && meta.contains("\"111\"") && meta.contains("TCP SYN"),
        "{meta}"
    );

    // A got its own decision back and kept its local ban as it was.
    thread::sleep(Duration::from_millis(1500));
    let row_a = a.list_json();
    assert!(
        row_a.to_string().contains("\"origin\":\"detected\""),
        "{row_a}"
    );
    let row_b = b.list_json();
    assert!(
        row_b
            .to_string()
            .contains("portsentry: portsentry/port-scan"),
        "{row_b}"
    );
}

#[test]
fn a_lapi_outage_loses_no_alert_and_enforcement_goes_on() {
    let mut lapi = Lapi::start().expect("LAPI");
    let mut a = Host::new(&mut lapi, "host-a", true, true);
    let mut b = Host::new(&mut lapi, "host-b", true, true);
    let (x1, x2) = (a.lab.scanner_v4[0], a.lab.scanner_v4[1]);
    wait_for(
        b.daemon(),
        "crowdsec: full decision list",
        Duration::from_secs(5),
    );

    // A fleet ban in force everywhere before the outage.
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        &x1.to_string(),
        "--duration",
        "1h",
    ])
    .unwrap();
    for h in [&mut a, &mut b] {
        let took = h.time_until(x1, true, Instant::now(), Duration::from_secs(4));
        assert!(
            took.is_some(),
            "x1 dropped before the outage; output:\n{}",
            h.output()
        );
    }
    thread::sleep(Duration::from_millis(1500)); // persisted

    lapi.stop();
    // A catches a scanner while LAPI is down: enforced locally at once, the alert queued.
    assert!(!a
        .lab
        .scanner
        .tcp_connect(x2, sock(a.lab.protected_v4, TRAP), PROBE));
    wait_for(
        a.daemon(),
        &format!("attackalert: Host {x2} has been blocked"),
        Duration::from_secs(2),
    );
    wait_for(
        a.daemon(),
        "error: crowdsec: pushing alerts: LAPI at",
        Duration::from_secs(3),
    );
    assert!(!a.reaches_service(x2), "A drops x2 during the outage");

    // A restarts during the outage: the queue and the bans come back from state_dir.
    assert_eq!(
        a.daemon().stop().unwrap(),
        Some(0),
        "A stops cleanly: {}",
        a.output()
    );
    a.start();
    wait_for(
        a.daemon(),
        "1 alert(s) from the last run still to deliver",
        Duration::from_secs(2),
    );
    thread::sleep(Duration::from_secs(4)); // several failed pulls and pushes
    for (name, h) in [("A", &mut a), ("B", &mut b)] {
        assert!(
            !h.reaches_service(x1),
            "{name} still drops the fleet ban of x1 with LAPI down"
        );
        let pull_errors = h
            .daemon()
            .lines_matching(|l| l.contains("error: crowdsec: pulling decisions"))
            .len();
        assert_eq!(
            pull_errors,
            1,
            "{name}: the pull error is logged once per interval; output:\n{}",
            h.output()
        );
    }
    assert!(!a.reaches_service(x2), "A's restored local ban holds");
    assert!(b.reaches_service(x2), "B has not heard of x2 yet");

    // LAPI returns: the queued alert is delivered, B enforces it, x1 stays banned.
    let back = Instant::now();
    lapi.restart().expect("LAPI restart");
    wait_for(
        a.daemon(),
        "crowdsec: pushed 1 alert(s) to LAPI",
        Duration::from_secs(20),
    );
    let took = b.time_until(x2, true, back, Duration::from_secs(25));
    assert!(
        took.is_some(),
        "B drops x2 after LAPI returned; B:\n{}",
        b.output()
    );
    wait_for(b.daemon(), "LAPI at", Duration::from_secs(1));
    assert!(
        b.daemon().has_line(|l| l.contains("answers again")),
        "{}",
        b.output()
    );
    let alerts = lapi.cscli(&["alerts", "list", "-a", "-o", "json"]).unwrap();
    assert!(
        alerts.contains("portsentry/port-scan") && alerts.contains(&format!("\"{x2}\"")),
        "the alert made during the outage reached LAPI: {alerts}"
    );
    assert!(
        !a.dir.join("crowdsec-alerts.json").exists() || {
            thread::sleep(Duration::from_millis(1500));
            !a.dir.join("crowdsec-alerts.json").exists()
        },
        "the delivered queue is cleared"
    );
    assert!(!b.reaches_service(x1), "x1 still banned after the resync");
}

#[test]
fn an_alert_queued_while_lapi_hangs_survives_a_daemon_stop() {
    let mut lapi = Lapi::start().expect("LAPI");
    let mut a = Host::new(&mut lapi, "host-a", false, true);
    let (x1, x2) = (a.lab.scanner_v4[0], a.lab.scanner_v4[1]);
    // Requests to LAPI now hang until their timeout (10 s) instead of failing at once.
    lapi.blackhole(true).expect("blackhole");
    let trap = sock(a.lab.protected_v4, TRAP);
    assert!(!a.lab.scanner.tcp_connect(x1, trap, PROBE));
    wait_for(
        a.daemon(),
        &format!("attackalert: Host {x1} has been blocked"),
        Duration::from_secs(2),
    );
    thread::sleep(Duration::from_millis(500)); // the delivery thread is now stuck sending x1's alert
                                               // x2's alert arrives while the delivery thread cannot write the queue file, and the stop
                                               // follows at once: only the daemon's own writes (1 s after a ban, and at stop) keep it.
    assert!(!a.lab.scanner.tcp_connect(x2, trap, PROBE));
    wait_for(
        a.daemon(),
        &format!("attackalert: Host {x2} has been blocked"),
        Duration::from_secs(2),
    );
    let stopping = Instant::now();
    assert_eq!(
        a.daemon().stop().unwrap(),
        Some(0),
        "clean exit: {}",
        a.output()
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "a hanging LAPI does not hold up the stop"
    );
    let queued = std::fs::read_to_string(a.dir.join("crowdsec-alerts.json"))
        .expect("queue file written at stop");
    for x in [x1, x2] {
        assert!(queued.contains(&format!("\"{x}\"")), "{x} queued: {queued}");
    }

    lapi.blackhole(false).expect("blackhole off");
    a.start();
    wait_for(
        a.daemon(),
        "2 alert(s) from the last run still to deliver",
        Duration::from_secs(2),
    );
    wait_for(
        a.daemon(),
        "crowdsec: pushed 2 alert(s) to LAPI",
        Duration::from_secs(10),
    );
    let alerts = lapi.cscli(&["alerts", "list", "-a", "-o", "json"]).unwrap();
    for x in [x1, x2] {
        assert!(
            alerts.contains(&format!("\"{x}\"")),
            "{x}'s alert reached LAPI: {alerts}"
        );
    }
}
