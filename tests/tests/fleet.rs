//! Fleet mode against a real CrowdSec LAPI (Debian's `crowdsec`, started per test in its own
//! namespace): decisions enforced in XDP, detections shared between instances, and an outage
//! that loses nothing.

use std::{
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use portsentry::config::{
    settings::{Settings, StartupSettings},
    CrowdsecSettings,
};
use portsentry_tests::{
    case::{self, SERVICE, TRAP},
    crowdsec::Lapi,
    lab::{portsentry, sock, Daemon, DaemonArgs, Lab, PinDir, Service, TempDir},
};
/// The bound for a decision to take effect (add or delete).
const FLEET_LATENCY: Duration = Duration::from_secs(2);
const PROBE: Duration = Duration::from_millis(250);

/// One protected host in fleet mode.
struct Host {
    lab: Lab,
    /// The LAPI's address as this host reaches it.
    lapi_ip: IpAddr,
    dir: TempDir,
    config: String,
    daemon: Option<Daemon>,
    _services: Vec<Service>,
}

/// How a [`Host`] differs from the plain one.
#[derive(Default)]
struct Setup<'a> {
    /// Scanner addresses (default 3).
    aliases: Option<usize>,
    /// `auto_allow = true` (own addresses, the LAPI host, …); off by default.
    auto_allow: bool,
    /// Pin the maps there (default: no pinning).
    pin_dir: Option<&'a std::path::Path>,
    /// More `[crowdsec]` settings.
    crowdsec: Option<&'a dyn Fn(&mut CrowdsecSettings)>,
    /// Reach a TLS LAPI at http:// (the credentials warning; no request succeeds).
    plain_http: bool,
}

impl Host {
    fn new(lapi: &mut Lapi, name: &str, bouncer: bool, machine: bool) -> Self {
        Self::with(lapi, name, bouncer, machine, &Setup::default())
    }

    fn with(lapi: &mut Lapi, name: &str, bouncer: bool, machine: bool, setup: &Setup) -> Self {
        let lab = Lab::new(setup.aliases.unwrap_or(3)).expect("lab");
        // Only verified bans are shared: this host knows its scanner-side neighbours' MACs.
        lab.protected_knows_scanner().expect("neighbours");
        let mut url = lapi.connect(&lab).expect("management link");
        if setup.plain_http {
            url = url.replacen("https://", "http://", 1);
        }
        let lapi_ip = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .and_then(|h| h.parse().ok())
            .expect("LAPI address in the URL");
        let dir = TempDir::new(name).expect("state dir");
        let mut s = case::fleet_settings(&lab, &dir, &url);
        s.live.auto_allow = setup.auto_allow;
        s.startup.pin_dir = setup.pin_dir.map(ToOwned::to_owned);
        let crowdsec = case::crowdsec(&mut s);
        if let Some(tune) = setup.crowdsec {
            tune(crowdsec);
        }
        if bouncer {
            let key = lapi.add_bouncer(name).expect("bouncer");
            let key_file = dir.write_secret("bouncer.key", &format!("{key}\n"));
            crowdsec.api_key_file = Some(key_file.into());
        }
        if machine {
            let creds = lapi.add_machine(name).expect("machine");
            crowdsec.credentials_file = Some(creds.into());
        }
        let config = case::write_config(&dir, &s);
        let services = vec![
            lab.protected.tcp_service(sock(lab.protected_v4, SERVICE)),
            lab.protected.tcp_service(sock(lab.protected_v6, SERVICE)),
        ];
        let mut host = Host {
            lab,
            lapi_ip,
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

    /// A connect from `src` to the trap port, which gets no answer.
    fn probe_trap(&self, src: IpAddr) {
        assert!(!self
            .lab
            .scanner
            .tcp_connect(src, sock(self.lab.protected_v4, TRAP), PROBE));
    }

    /// [`Host::probe_trap`], and the ban it makes within 2 s.
    fn trap_bans(&mut self, src: IpAddr) {
        self.probe_trap(src);
        wait_for(
            self.daemon(),
            &format!("attackalert: Host {src} has been blocked"),
            Duration::from_secs(2),
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

/// Waits up to `timeout` for a line containing `what`.
fn wait_for(d: &mut Daemon, what: &str, timeout: Duration) {
    d.expect_line_within(&format!("{what:?}"), timeout, |l| l.contains(what));
}

#[test]
fn lapi_decisions_are_dropped_in_xdp_and_deletions_lift_them() {
    let mut lapi = Lapi::start().expect("LAPI");
    // The tests never use or start a crowdsec installed on the host: the LAPI is the staged
    // binary under target/, listening in its own network namespace.
    let pid = lapi.pid().expect("LAPI running");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("LAPI executable");
    assert!(
        exe.components().any(|c| c.as_os_str() == "target")
            && exe.components().any(|c| c.as_os_str() == "test-tools"),
        "the LAPI runs from target/test-tools, not the host: {}",
        exe.display()
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap(),
        "the LAPI listens in its own network namespace, not the host's"
    );
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

    host.daemon().stop_cleanly();
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
    a.trap_bans(scanner);
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

    let alerts = lapi.alerts_json().unwrap();
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
    a.trap_bans(x2);
    wait_for(
        a.daemon(),
        "error: crowdsec: pushing alerts: LAPI at",
        Duration::from_secs(3),
    );
    assert!(!a.reaches_service(x2), "A drops x2 during the outage");

    // A restarts during the outage: the queue and the bans come back from state_dir.
    a.daemon().stop_cleanly();
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
    let alerts = lapi.alerts_json().unwrap();
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
    a.trap_bans(x1);
    // The delivery thread is now stuck sending x1's alert. x2's alert arrives while the
    // delivery thread cannot write the queue file, and the stop follows at once: only the
    // daemon's own writes (1 s after a ban, and at stop) keep it.
    thread::sleep(Duration::from_millis(500));
    a.trap_bans(x2);
    let stopping = Instant::now();
    a.daemon().stop_cleanly();
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
    let alerts = lapi.alerts_json().unwrap();
    for x in [x1, x2] {
        assert!(
            alerts.contains(&format!("\"{x}\"")),
            "{x}'s alert reached LAPI: {alerts}"
        );
    }
}

/// Writes `addr` into the pinned learned-peer table (PS_PEERS) as just seen and contacted by
/// this host (`peer_ways::OUTBOUND`), as the cgroup programs do for a host this one talks to.
fn learn_peer(pins: &std::path::Path, addr: IpAddr) {
    let key: [u8; 16] = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    let mut value = portsentry::clock::boot_ns().to_le_bytes().to_vec();
    value.extend(portsentry_common::peer_ways::OUTBOUND.to_le_bytes());
    value.extend(0u32.to_le_bytes());
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>();
    let map = pins.join("PS_PEERS").display().to_string();
    let mut args = vec![
        "map".to_owned(),
        "update".into(),
        "pinned".into(),
        map,
        "key".into(),
        "hex".into(),
    ];
    args.extend(hex(&key));
    args.extend(["value".into(), "hex".into()]);
    args.extend(hex(&value));
    let out = std::process::Command::new("bpftool")
        .args(&args)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fleet_decisions_for_bogus_ranges_learned_peers_and_the_lapi_host_are_refused() {
    let mut lapi = Lapi::start().expect("LAPI");
    let pins = PinDir::new().expect("bpffs");
    let mut host = Host::with(
        &mut lapi,
        "policy",
        true,
        true,
        &Setup {
            aliases: Some(5),
            auto_allow: true,
            pin_dir: Some(&pins.path),
            crowdsec: Some(&|c| c.max_alerts_per_minute = 1),
            ..Setup::default()
        },
    );
    wait_for(
        host.daemon(),
        "crowdsec: full decision list",
        Duration::from_secs(5),
    );
    // scanner_v4[0] is the protected side's default gateway (allowlisted): not used here.
    let peer = host.lab.scanner_v4[1];
    let stranger = host.lab.scanner_v4[2];
    learn_peer(&pins.path, peer);
    let lapi_ip = host.lapi_ip.to_string();
    for args in [
        ["--range", "224.0.0.0/4"],
        ["--ip", "ff02::1"],
        // All of IPv4, IPv4-mapped: checked as IPv4, so it covers this host's own addresses.
        ["--range", "::ffff:0:0/96"],
        ["--ip", &peer.to_string()],
        ["--ip", &lapi_ip],
        ["--ip", &stranger.to_string()],
    ] {
        let mut cmd = vec!["decisions", "add"];
        cmd.extend(args);
        cmd.extend(["--duration", "1h"]);
        lapi.cscli(&cmd).unwrap();
    }
    for line in [
        "crowdsec: refused the decision to ban 224.0.0.0/4: it reaches into the bogus range 224.0.0.0/4".to_owned(),
        "crowdsec: refused the decision to ban ff02::1: it reaches into the bogus range ff00::/8".to_owned(),
        "crowdsec: refused the decision to ban 0.0.0.0/0: it covers the allowlisted host ".to_owned(),
        format!("crowdsec: refused the decision to ban {peer}: it covers the learned peer {peer}"),
        format!("crowdsec: refused the decision to ban {lapi_ip}: it covers the allowlisted host {lapi_ip}"),
    ] {
        wait_for(host.daemon(), &line, Duration::from_secs(5));
    }
    // The same pull carried a decision for an ordinary address: enforced.
    wait_for(
        host.daemon(),
        &format!("crowdsec: banned {stranger} for "),
        Duration::from_secs(1),
    );
    assert!(!host.reaches_service(stranger), "the stranger is dropped");
    assert!(
        host.reaches_service(peer),
        "the learned peer is not dropped"
    );
    for banned in [
        "224.0.0.0/4",
        "ff02::1",
        "0.0.0.0/0",
        &peer.to_string(),
        &lapi_ip,
    ] {
        assert!(
            !host
                .daemon()
                .has_line(|l| l.contains(&format!("crowdsec: banned {banned} "))),
            "{banned} banned; output:\n{}",
            host.output()
        );
    }
    // A resync (the first pull after LAPI was away is a full one) lists every decision again:
    // nothing refused is logged or counted twice, and the fleet still answers.
    lapi.cscli(&["decisions", "delete", "--ip", &stranger.to_string()])
        .unwrap();
    lapi.stop();
    wait_for(
        host.daemon(),
        "error: crowdsec: pulling decisions",
        Duration::from_secs(3),
    );
    lapi.restart().expect("LAPI restart");
    wait_for(host.daemon(), "answers again", Duration::from_secs(20));
    let resynced = Instant::now();
    while host
        .daemon()
        .lines_matching(|l| l.contains("crowdsec: full decision list"))
        .len()
        < 2
        && resynced.elapsed() < Duration::from_secs(5)
    {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        host.reaches_service(stranger),
        "the deletion reached us after the resync; output:\n{}",
        host.output()
    );
    let refusals = host
        .daemon()
        .lines_matching(|l| l.contains("refused the decision"))
        .len();
    assert_eq!(
        refusals,
        5,
        "each refusal logged once; output:\n{}",
        host.output()
    );

    // The alert cap: one alert a minute; the second local ban is counted and kept here.
    let (x, y) = (host.lab.scanner_v4[3], host.lab.scanner_v4[4]);
    for s in [x, y] {
        host.trap_bans(s);
    }
    wait_for(
        host.daemon(),
        &format!("crowdsec: alert cap reached (crowdsec.max_alerts_per_minute = 1): 1 alert(s) not pushed since the last report (latest: {y})"),
        Duration::from_secs(1),
    );
    wait_for(
        host.daemon(),
        "crowdsec: pushed 1 alert(s) to LAPI (ids ",
        Duration::from_secs(3),
    );
    let alerts = lapi.alerts_json().unwrap();
    assert!(alerts.contains(&format!("\"{x}\"")), "{x} pushed: {alerts}");
    assert!(
        !alerts.contains(&format!("\"{y}\"")),
        "{y} not pushed: {alerts}"
    );

    // `status` tells it all.
    let (code, out, err) = portsentry(&["status", "--json", "--config", &host.config]);
    assert_eq!(code, 0, "status: {err}");
    let st: serde_json::Value = serde_json::from_str(&out).expect("status --json");
    let fleet = &st["fleet"];
    assert_eq!(fleet["refused_bogus"], 2, "{st}");
    assert_eq!(fleet["refused_learned_peer"], 1, "{st}");
    assert_eq!(fleet["refused_allowlisted"], 2, "{st}");
    assert_eq!(fleet["alerts_pushed"], 1, "{st}");
    assert_eq!(fleet["alerts_capped"], 1, "{st}");
    // The pull and push counters of the metrics endpoint, read from the same snapshot.
    assert!(fleet["pulls"].as_u64() >= Some(1), "{st}");
    assert!(fleet["pushes"].as_u64() >= Some(1), "{st}");
    assert!(
        st["fleet_last_pull_age_seconds"]
            .as_f64()
            .is_some_and(|age| age < 10.0),
        "{st}"
    );
    assert!(st["counters"]["learned_peers"].as_u64() >= Some(1), "{st}");
    for stat in [
        "bogus_source",
        "spoofed",
        "unverified",
        "peer_probes",
        "cookies_sent",
        "cookies_confirmed",
    ] {
        assert!(st["counters"][stat].is_u64(), "{stat} in {st}");
    }
    let (code, text, err) = portsentry(&["status", "--config", &host.config]);
    assert_eq!(code, 0, "status: {err}");
    for line in [
        "alerts_capped: 1",
        "refused_learned_peer: 1",
        "refused_bogus: 2",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == line),
            "{line:?} in\n{text}"
        );
    }
    host.daemon().stop_cleanly();
}

/// TLS towards LAPI as CrowdSec's bouncers do it, against one https:// LAPI that also
/// authenticates by client certificate: a CA bundle, a client certificate instead of key and
/// password, no CA (refused, in words), insecure_skip_verify and plain http:// (warnings).
#[test]
fn lapi_over_tls_with_a_ca_bundle_and_client_certificates() {
    let mut lapi = Lapi::start_tls().expect("LAPI");
    let certs = lapi.certs.as_ref().expect("TLS LAPI");
    let (ca, cert, key, ca_key) = (
        certs.ca.clone(),
        certs.client_cert.clone(),
        certs.client_key.clone(),
        certs.ca_key.clone(),
    );

    // A key that does not fit the certificate is a config error naming the key and the file.
    let mismatch = Settings {
        startup: StartupSettings {
            crowdsec: Some(CrowdsecSettings {
                lapi_url: "https://10.88.1.1:8080".to_owned(),
                ca_cert_path: Some(ca.clone().into()),
                cert_path: Some(cert.clone().into()),
                key_path: Some(ca_key.clone().into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let bad = lapi
        .dir
        .write("mismatch.toml", &case::config_text(&mismatch));
    let (code, _, err) = portsentry(&["check-config", &bad]);
    assert_eq!(code, 2, "check-config with a key that does not fit: {err}");
    assert!(
        err.contains(&format!(
            "key `crowdsec.key_path`: {ca_key}: cannot be used with the certificate in {cert}"
        )),
        "{err}"
    );

    let with_ca = |c: &mut CrowdsecSettings| c.ca_cert_path = Some(ca.clone().into());
    let mut verified = Host::with(
        &mut lapi,
        "tls-ca",
        true,
        false,
        &Setup {
            crowdsec: Some(&with_ca),
            ..Setup::default()
        },
    );
    let by_cert = |c: &mut CrowdsecSettings| {
        with_ca(c);
        c.cert_path = Some(cert.clone().into());
        c.key_path = Some(key.clone().into());
    };
    let mut mtls = Host::with(
        &mut lapi,
        "tls-cert",
        false,
        false,
        &Setup {
            crowdsec: Some(&by_cert),
            ..Setup::default()
        },
    );
    let mut untrusting = Host::with(
        &mut lapi,
        "tls-noca",
        true,
        false,
        &Setup {
            aliases: Some(1),
            ..Setup::default()
        },
    );
    let mut insecure = Host::with(
        &mut lapi,
        "tls-insecure",
        true,
        false,
        &Setup {
            aliases: Some(1),
            crowdsec: Some(&|c| c.insecure_skip_verify = true),
            ..Setup::default()
        },
    );
    let mut plain = Host::with(
        &mut lapi,
        "tls-plain",
        true,
        true,
        &Setup {
            aliases: Some(1),
            plain_http: true,
            ..Setup::default()
        },
    );

    // (a) and (c): both pull over https://, by API key and by certificate alone.
    for host in [&mut verified, &mut mtls, &mut insecure] {
        wait_for(
            host.daemon(),
            "crowdsec: full decision list",
            Duration::from_secs(5),
        );
    }
    for host in [&mut verified, &mut mtls] {
        assert!(
            !host.daemon().has_line(|l| l.contains("crowdsec: warning")
                || l.contains("warning: crowdsec")
                || l.contains("error: crowdsec")),
            "no warning or error over verified TLS:\n{}",
            host.output()
        );
    }
    wait_for(
        mtls.daemon(),
        "crowdsec: LAPI https://10.88.2.1:8080: enforcing its decisions and sharing our bans as alerts (authenticated by our client certificate)",
        Duration::from_secs(1),
    );
    // LAPI registered the certificate's bouncer by itself, as `CN@address`.
    let bouncers = lapi.cscli(&["bouncers", "list", "-o", "json"]).unwrap();
    assert!(bouncers.contains("portsentry-mtls@10.88.2.2"), "{bouncers}");

    // A decision added with cscli is dropped on both.
    let x = verified.lab.scanner_v4[0];
    verified.cscli_takes_effect(
        &lapi,
        &[
            "decisions",
            "add",
            "--ip",
            &x.to_string(),
            "--duration",
            "1h",
        ],
        x,
        true,
    );
    let took = mtls.time_until(x, true, Instant::now(), Duration::from_secs(5));
    assert!(
        took.is_some_and(|t| t <= FLEET_LATENCY),
        "the certificate-authenticated host dropped {x} after {took:?}:\n{}",
        mtls.output()
    );

    // (c) The certificate is also the machine's login: a local ban reaches the fleet.
    let scanner = mtls.lab.scanner_v4[1];
    mtls.probe_trap(scanner);
    wait_for(
        mtls.daemon(),
        "crowdsec: pushed 1 alert(s) to LAPI",
        Duration::from_secs(3),
    );
    let machines = lapi.cscli(&["machines", "list", "-o", "json"]).unwrap();
    assert!(machines.contains("portsentry-mtls@10.88.2.2"), "{machines}");
    let took = verified.time_until(scanner, true, Instant::now(), Duration::from_secs(5));
    assert!(
        took.is_some(),
        "the other host drops the scanner the certificate host pushed:\n{}",
        verified.output()
    );

    // (b) Without the CA bundle LAPI's certificate is refused, and the log says why.
    wait_for(
        untrusting.daemon(),
        "error: crowdsec: pulling decisions: LAPI at https://10.88.3.1:8080: TLS: LAPI's certificate is not signed by a CA we trust (invalid peer certificate: UnknownIssuer): set crowdsec.ca_cert_path",
        Duration::from_secs(3),
    );
    // (d) Verification off works, and says so at start.
    wait_for(
        insecure.daemon(),
        "warning: crowdsec: insecure_skip_verify = true: the certificate of LAPI at https://10.88.4.1:8080 is not verified",
        Duration::from_secs(1),
    );
    // (e) Credentials over plain http:// to another host.
    wait_for(
        plain.daemon(),
        "warning: crowdsec: lapi_url http://10.88.5.1:8080 is plain http:// to another host: the bouncer key and the machine password cross the network in clear text",
        Duration::from_secs(1),
    );

    for host in [
        &mut verified,
        &mut mtls,
        &mut untrusting,
        &mut insecure,
        &mut plain,
    ] {
        host.daemon().stop_cleanly();
    }
}
