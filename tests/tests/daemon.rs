//! End-to-end tests of the daemon and CLI (issue: config, logs, persistent bans, hooks, verbs).

use std::{
    os::unix::fs::PermissionsExt,
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use portsentry::config::{
    settings::{Settings, StartupSettings},
    CrowdsecSettings,
};
use portsentry_tests::{
    case::{self, attackalert, ports, SERVICE, TRAP},
    lab::{portsentry, sock, Lab, PinDir, TempDir},
};

fn is_timestamped_scan_line(line: &str, src: &str) -> bool {
    // 2026-11-25T00:21:22.071+0000 Scan from: [10.77.0.2] ...
    let Some((stamp, rest)) = line.split_once(' ') else {
        return false;
    };
    let b = stamp.as_bytes();
    stamp.len() == 28
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && (b[23] == b'+' || b[23] == b'-')
        && rest.starts_with(&format!(
            "Scan from: [{src}] ({src}) protocol: [TCP] port: [111]"
        ))
}

#[test]
fn history_is_appended_across_restarts_and_bans_survive_a_restart() {
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("history").unwrap();
    let history = dir.join("history.log").display().to_string();
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    // `b` uses the service before its trap probe, which would make it a learned peer (its SYN
    // then gets a SYN cookie, tests/tests/peers.rs); here a SYN must ban on its own.
    let args = case::cli_args(&lab, &dir)
        .no_pin()
        .history_file(&history)
        .arg("--no-learn-peers");
    let (a, b) = (lab.scanner_v4[0], lab.scanner_v4[1]);

    let mut d = args.start().unwrap();
    assert!(!case::connects(&lab, a, TRAP));
    d.expect_line("the ban", attackalert(a));
    d.stop_cleanly();

    // No pins: the new process starts with empty maps and must restore the ban from state_dir.
    let mut d = args.start().unwrap();
    assert!(
        d.has_line(|l| l.starts_with("portsentry: restored 1 ban(s)")),
        "{}",
        d.output()
    );
    assert!(
        !case::connects(&lab, a, SERVICE),
        "still banned after restart"
    );
    assert!(case::connects(&lab, b, SERVICE));
    assert!(!case::connects(&lab, b, TRAP));
    d.expect_line("the ban", attackalert(b));
    d.stop().unwrap();

    let text = std::fs::read_to_string(&history).unwrap();
    let scans: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" Scan from: "))
        .collect();
    assert!(
        scans.len() >= 2,
        "both runs' probes are in the history:\n{text}"
    );
    assert!(
        is_timestamped_scan_line(scans[0], &a.to_string()),
        "{}",
        scans[0]
    );
    assert!(
        scans
            .iter()
            .any(|l| is_timestamped_scan_line(l, &b.to_string())),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.ends_with("Portsentry is now active and listening."))
            .count()
            == 2,
        "{text}"
    );
}

#[test]
fn bans_expire_on_time_and_expired_bans_are_not_restored() {
    let lab = Lab::new(1).unwrap();
    let dir = TempDir::new("expiry").unwrap();
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    // Long enough that a stop and a start on a loaded 2-core machine fit inside it.
    let args = case::cli_args(&lab, &dir)
        .no_pin()
        .args(["--ban-ttl", "6s"]);
    let a = lab.scanner_v4[0];

    let mut d = args.start().unwrap();
    let banned_at = Instant::now();
    assert!(!case::connects(&lab, a, TRAP));
    assert!(!case::connects(&lab, a, SERVICE), "banned");
    d.stop().unwrap();
    let mut d = args.start().unwrap();
    assert!(
        d.has_line(|l| l.starts_with("portsentry: restored 1 ban(s)")),
        "{}",
        d.output()
    );
    while banned_at.elapsed() < Duration::from_millis(6300) {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(case::connects(&lab, a, SERVICE), "ban expired after 6 s");
    // A clean stop would save without the expired ban; a crash leaves it in the file.
    d.kill9();
    let d = args.start().unwrap();
    assert!(
        d.has_line(|l| l.starts_with("portsentry: restored 0 ban(s)") && l.contains("(1 expired")),
        "{}",
        d.output()
    );
}

#[test]
fn ban_and_unban_from_the_cli_take_effect_on_live_traffic() {
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("cli").unwrap();
    let pins = PinDir::new().unwrap();
    let state = dir.path.display().to_string();
    let pin = pins.path.join("ps").display().to_string();
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let mut d = case::cli_args(&lab, &dir)
        .pin_dir(Some(std::path::Path::new(&pin)))
        .start()
        .unwrap();
    let (a, b) = (lab.scanner_v4[0], lab.scanner_v4[1]);
    let ctl = |verb: &[&str]| {
        let mut v = verb.to_vec();
        v.extend(["--state-dir", &state, "--pin-dir", &pin]);
        portsentry(&v)
    };

    assert!(case::connects(&lab, a, SERVICE));
    let (code, out, err) = ctl(&["ban", &a.to_string(), "--ttl", "1h"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!case::connects(&lab, a, SERVICE), "manual ban drops");

    let (code, out, _) = ctl(&["list", "--json"]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == a.to_string())
        .expect("listed");
    assert_eq!(
        (row["origin"].as_str(), row["trigger"].as_str()),
        (Some("manual"), Some("manual"))
    );
    assert!(row["drops"].as_u64().unwrap() >= 1, "{row}");
    assert!(row["expires"].is_string());

    // A network ban: the whole /24 of the scanner namespace (b included).
    let (code, out, err) = ctl(&["ban", "10.77.0.0/24"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!case::connects(&lab, b, SERVICE), "network ban drops");
    assert_eq!(ctl(&["unban", "10.77.0.0/24"]).0, 0);
    assert!(case::connects(&lab, b, SERVICE));

    let (code, out, _) = ctl(&["unban", &a.to_string()]);
    assert_eq!((code, out.trim()), (0, format!("unbanned {a}").as_str()));
    assert!(
        case::connects(&lab, a, SERVICE),
        "unban lets traffic through"
    );
    assert_eq!(
        ctl(&["unban", &a.to_string()]).0,
        1,
        "unbanning what is not banned fails"
    );

    let (code, out, _) = ctl(&["status", "--json"]);
    assert_eq!(code, 0);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["interfaces"][0]["name"], lab.iface.as_str());
    assert_eq!(st["mode"], "block");
    assert!(st["counters"]["dropped"].as_u64().unwrap() >= 2, "{st}");
    d.stop().unwrap();

    // Without a daemon the verbs still work on the state file, and a restart applies them.
    let (code, out, _) = ctl(&["ban", &b.to_string()]);
    assert_eq!(code, 0, "{out}");
    let (_, out, _) = ctl(&["list"]);
    assert!(out.contains(&b.to_string()), "{out}");
}

#[test]
fn hooks_run_with_the_right_argv_and_the_pinned_program_survives_sighup() {
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("hooks").unwrap();
    let marks = TempDir::new("marks").unwrap();
    let mut s = case::settings(&lab, &dir);
    s.live.hooks.run_cmd = Some(vec![
        "/usr/bin/touch".to_owned(),
        format!("{}/$TARGET$-$PORT$-{{proto}}", marks.path.display()),
    ]);
    let mut d = case::start(&lab, &dir, &s);
    let (a, b) = (lab.scanner_v4[0], lab.scanner_v4[1]);
    assert!(!case::connects(&lab, a, TRAP));
    let mark = marks.join(&format!("{a}-111-TCP"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !mark.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        mark.exists(),
        "hook ran with placeholders expanded; output:\n{}",
        d.output()
    );
    d.expect_line(
        "attackalert: External command run for host: … using command: /usr/bin/touch",
        |l| {
            l.starts_with(&format!(
                "attackalert: External command run for host: {a} using command: \"/usr/bin/touch"
            ))
        },
    );

    // SIGHUP with a new trap port: it is guarded at once and the earlier ban is kept.
    s.live.tcp_ports = ports("111,2222");
    case::write_config(&dir, &s);
    d.signal(Signal::SIGHUP);
    d.expect_line("the reload", |l| {
        l.starts_with("portsentry: reloaded configuration")
    });
    assert!(!case::connects(&lab, a, SERVICE), "ban kept across reload");
    assert!(!case::connects(&lab, b, 2222));
    d.expect_line("the scan line", |l| {
        l.contains(&format!("Scan from: [{b}]")) && l.contains("port: [2222]")
    });
}

/// Advanced mode alone: every TCP port below 1024 without a listener is a trap, no listed ones.
fn advanced(lab: &Lab, dir: &TempDir) -> Settings {
    let mut s = case::settings(lab, dir);
    s.live.tcp_ports = ports("");
    s.live.advanced_tcp_below = Some(1024);
    s
}

#[test]
fn advanced_mode_guards_unused_ports_and_a_new_service_stops_being_a_trap() {
    let lab = Lab::new(3).unwrap();
    let dir = TempDir::new("advanced").unwrap();
    let _d = case::start(&lab, &dir, &advanced(&lab, &dir));
    let (a, b, c) = (lab.scanner_v4[0], lab.scanner_v4[1], lab.scanner_v4[2]);
    assert!(
        !case::connects(&lab, a, 23),
        "unused port below 1024 is a trap"
    );
    assert!(!case::connects(&lab, a, 1500), "a is banned now");
    // A service that starts later stops being a trap within a second.
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, 25));
    thread::sleep(Duration::from_millis(1000));
    assert!(case::connects(&lab, b, 25), "port 25 now has a service");
    assert!(case::connects(&lab, b, 25), "and b was not banned");
    // Excluded by default (ident): never a trap.
    assert!(case::connects(&lab, c, 25));
    assert!(!case::connects(&lab, c, 113), "nothing listens on 113");
    assert!(
        case::connects(&lab, c, 25),
        "probing an excluded port bans nobody"
    );
}

/// Advanced mode never bans a service's own clients: a port that had a listener stays a service
/// port while its service restarts, also across a daemon restart (`service_port_memory`,
/// `state_dir/service_ports.json`); a port that never had one is still a trap.
#[test]
fn advanced_mode_does_not_ban_a_client_while_its_service_restarts() {
    let lab = Lab::new(3).unwrap();
    let dir = TempDir::new("service-ports").unwrap();
    let args = case::args(&lab, &dir, &advanced(&lab, &dir));
    let mut d = args.start().unwrap();
    // Above the advanced range: tells a banned source from one that is not.
    let _web = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let (a, b, c) = (lab.scanner_v4[0], lab.scanner_v4[1], lab.scanner_v4[2]);
    let sshd = lab.protected.tcp_service(sock(lab.protected_v4, 22));
    thread::sleep(Duration::from_millis(1200)); // the daemon looks every 0.5 s
    drop(sshd); // sshd restarts...
    thread::sleep(Duration::from_millis(1200)); // ...and the daemon has seen its socket gone
    assert!(
        !case::connects(&lab, a, 22),
        "nothing listens on 22 right now"
    );
    assert!(
        case::connects(&lab, a, SERVICE),
        "a client of the restarting sshd is not banned; output:\n{}",
        d.output()
    );
    // A port that never had a listener is a trap as before.
    assert!(!case::connects(&lab, b, 23));
    d.expect_line("the ban", attackalert(b));
    assert!(!case::connects(&lab, b, SERVICE));
    assert!(
        !d.has_line(|l| l.contains(&format!("[{a}]"))),
        "no probe from {a} logged:\n{}",
        d.output()
    );

    // Remembered across a restart.
    d.stop_cleanly();
    let saved = std::fs::read_to_string(dir.join("service_ports.json")).unwrap();
    assert!(saved.contains("\"22\""), "{saved}");
    let d = args.start().unwrap();
    assert!(!case::connects(&lab, c, 22));
    assert!(
        case::connects(&lab, c, SERVICE),
        "22 is still a service port after the restart; output:\n{}",
        d.output()
    );
}

#[test]
fn json_log_format_gives_one_object_per_event() {
    let lab = Lab::new(1).unwrap();
    let dir = TempDir::new("json").unwrap();
    let mut d = case::cli_args(&lab, &dir)
        .no_pin()
        .args(["--log-format", "json"])
        .start()
        .unwrap();
    let a = lab.scanner_v4[0];
    assert!(!case::connects(&lab, a, TRAP));
    d.expect_line("the JSON ban event", |l| {
        l.starts_with('{') && l.contains("\"ban\"")
    });
    let line = d.lines_matching(|l| l.starts_with('{')).remove(0);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "ban");
    assert_eq!(v["src"], a.to_string());
    assert_eq!(
        (v["port"].as_u64(), v["protocol"].as_str()),
        (Some(111), Some("TCP"))
    );
    assert_eq!(v["scan"], "TCP SYN/Normal scan");
    assert_eq!(
        (v["blocked"].as_bool(), v["interface"].as_str()),
        (Some(true), Some(lab.iface.as_str()))
    );
}

#[test]
fn bad_config_and_bad_ignore_file_exit_2_naming_file_and_line() {
    let dir = TempDir::new("badconf").unwrap();
    let bad = dir.write(
        "bad.toml",
        "# comment\nscan_trigger = 2\ntcp_ports = \"1,70000\"\n",
    );
    let (code, _, err) = portsentry(&["check-config", &bad]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{bad}:3")) && err.contains("tcp_ports"),
        "{err}"
    );
    let (code, _, err) = portsentry(&["run", "--config", &bad]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{bad}:3")), "{err}");

    let typo = dir.write("typo.toml", "tcp_port = \"1\"\n");
    let (code, _, err) = portsentry(&["check-config", &typo]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("{typo}:1")) && err.contains("tcp_port"),
        "unknown keys are errors: {err}"
    );

    let ignore = dir.write("portsentry.ignore", "127.0.0.1\n10.0.0.1/8\n");
    let conf = dir.write("conf.toml", &format!("ignore_file = \"{ignore}\"\n"));
    let (code, _, err) = portsentry(&["check-config", &conf]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{ignore}:2")),
        "ignore file error names its line: {err}"
    );

    let good = dir.write("good.toml", "scan_trigger = 3\nban_ttl = \"2h\"\n");
    let (code, out, err) = portsentry(&["check-config", &good]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("scan_trigger = 3"), "{out}");
    let (code, _, _) = portsentry(&["run", "--tcp-ports", "x"]);
    assert_eq!(code, 2, "bad flag value is a usage error");
}

#[test]
fn import_conf_converts_real_classic_configs() {
    let dir = TempDir::new("import").unwrap();
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../portsentry/tests/fixtures");
    let mut n = 0;
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("conf") {
            continue;
        }
        n += 1;
        let (code, toml, err) = portsentry(&["import-conf", &path.display().to_string()]);
        assert_eq!(code, 0, "{}: {err}", path.display());
        assert!(toml.contains("tcp_ports"), "{toml}");
        let out = dir.write(
            "imported.toml",
            &toml
                .replace("ignore_file", "# ignore_file")
                .replace("history_file", "# history_file"),
        );
        let (code, _, err) = portsentry(&["check-config", &out]);
        assert_eq!(
            code,
            0,
            "{}: imported config does not validate: {err}\n{toml}",
            path.display()
        );
    }
    assert!(
        n >= 2,
        "a 1.2 and a 2.x config are in {}",
        fixtures.display()
    );
}

#[test]
fn the_systemd_units_capability_set_is_enough() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/portsentry.service"
    ))
    .unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("unit has a CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let bounding = format!("--bounding-set=-all,{}", caps.join(","));
    let lab = Lab::new(1).unwrap();
    let dir = TempDir::new("caps").unwrap();
    let d = case::cli_args(&lab, &dir)
        .no_pin()
        .wrapped_in("setpriv", &["--inh-caps=-all", &bounding])
        .start()
        .unwrap();
    assert!(!case::connects(&lab, lab.scanner_v4[0], TRAP));
    let a = lab.scanner_v4[0];
    let mut d = d;
    d.expect_line("the ban", attackalert(a));
}

/// Like ssh with a private key: a CrowdSec secret that group or others can read is refused at
/// start (and by check-config) with exit 2, naming the key, the file and its mode.
#[test]
fn crowdsec_secrets_others_can_read_are_refused() {
    let dir = TempDir::new("secrets").unwrap();
    let key = dir.write("bouncer.key", "abc123\n");
    let creds = dir.write_secret("machine.yaml", "login: m\npassword: p\n");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let conf = case::write_config(
        &dir,
        &Settings {
            startup: StartupSettings {
                state_dir: dir.path.clone(),
                pin_dir: None,
                crowdsec: Some(CrowdsecSettings {
                    lapi_url: "http://127.0.0.1:1".to_owned(),
                    api_key_file: Some(key.clone().into()),
                    credentials_file: Some(creds.clone().into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let refused = format!(
        "key `crowdsec.api_key_file`: {key} has mode 0644: group or others can access this \
         secret; make it private: chmod 600 {key}"
    );
    for verb in [&["check-config", &conf][..], &["run", "--config", &conf]] {
        let (code, _, err) = portsentry(verb);
        assert_eq!(code, 2, "{verb:?}: {err}");
        assert!(err.contains(&refused), "{verb:?}: {err}");
    }
    portsentry_tests::lab::fixtures::private(std::path::Path::new(&key));
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, _, err) = portsentry(&["check-config", &conf]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "key `crowdsec.credentials_file`: {creds} has mode 0640"
        )),
        "{err}"
    );
    portsentry_tests::lab::fixtures::private(std::path::Path::new(&creds));
    let (code, _, err) = portsentry(&["check-config", &conf]);
    assert_eq!(code, 0, "0600 secrets are accepted: {err}");
}

/// Under systemd, stdout is the journal: `JOURNAL_STREAM` names its device and inode, and each
/// line carries its sd-daemon `<N>` priority, so `journalctl -p warning` shows the bans. Here
/// the variable is set, as systemd does, to the real dev:ino of the daemon's stdout (a pipe):
/// stdout lines are prefixed, stderr (another pipe) is not. Without the variable the lines are
/// PortSentry's, byte for byte.
#[test]
fn lines_carry_a_journal_priority_only_when_stdout_is_the_journal() {
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("journal").unwrap();
    let iface = lab.iface.clone();
    let expected = |a: std::net::IpAddr| {
        (
            format!(
                "Scan from: [{a}] ({a}) protocol: [TCP] port: [{TRAP}] type: [TCP SYN/Normal scan] \
                 IP opts: [not set] ignored: [false] triggered: [true] noblock: [false] blocked: [true]"
            ),
            format!("attackalert: Host {a} has been blocked via XDP drop on interface: \"{iface}\""),
        )
    };

    // `sh` sets JOURNAL_STREAM from its own stdout, which portsentry inherits through exec.
    let mut d = case::cli_args(&lab, &dir)
        .no_pin()
        .wrapped_in(
            "sh",
            &[
                "-c",
                "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/$$/fd/1) && export JOURNAL_STREAM && exec \"$@\"",
                "sh",
            ],
        )
        .start()
        .unwrap();
    let a = lab.scanner_v4[0];
    assert!(!case::connects(&lab, a, TRAP));
    let (scan, ban) = expected(a);
    d.expect_line("the ban line at warning", |l| l == format!("<4>{ban}"));
    assert!(d.has_line(|l| l == format!("<5>{scan}")), "{}", d.output());
    assert!(
        d.has_line(|l| l == "<6>Portsentry is now active and listening."),
        "{}",
        d.output()
    );
    assert!(
        d.has_line(|l| l.starts_with("portsentry: attached to ")),
        "stderr is not the journal stream: no prefix; output:\n{}",
        d.output()
    );
    d.stop().unwrap();

    let mut d = case::cli_args(&lab, &dir).no_pin().start().unwrap();
    let b = lab.scanner_v4[1];
    assert!(!case::connects(&lab, b, TRAP));
    let (scan, ban) = expected(b);
    d.expect_line("the ban", |l| l == ban);
    assert!(d.has_line(|l| l == scan), "{}", d.output());
    assert!(!d.has_line(|l| l.starts_with('<')), "{}", d.output());
}

/// Under a unit with WatchdogSec, systemd sets WATCHDOG_USEC: the event loop sends WATCHDOG=1
/// every half of it. Without the variable it sends none.
#[test]
fn the_event_loop_kicks_the_systemd_watchdog() {
    let lab = Lab::new(1).unwrap();
    let dir = TempDir::new("watchdog").unwrap();
    let kicks = |d: &mut portsentry_tests::lab::Daemon| {
        d.notifications()
            .iter()
            .filter(|n| n.as_str() == "WATCHDOG=1")
            .count()
    };
    let mut d = case::cli_args(&lab, &dir)
        .no_pin()
        .wrapped_in(
            "sh",
            &[
                "-c",
                "WATCHDOG_USEC=400000 && export WATCHDOG_USEC && exec \"$@\"",
                "sh",
            ],
        )
        .start()
        .unwrap();
    thread::sleep(Duration::from_millis(1100));
    let n = kicks(&mut d);
    // Every 200 ms (the first at once): about 6 in 1.1 s; a busy machine may delay some.
    assert!((4..=15).contains(&n), "{n} kicks: {:?}", d.notifications());
    d.stop().unwrap();

    let mut d = case::cli_args(&lab, &dir).no_pin().start().unwrap();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(kicks(&mut d), 0, "{:?}", d.notifications());
}
