//! `[notify]` end to end: alert and digest mail to an SMTP sink and a webhook sink in the
//! protected namespace (tests/src/sinks.rs; nothing installed on the host), the hourly alert
//! cap, outages and `kill -9` without loss or repeats, restored bans, STARTTLS that fails
//! closed, and `portsentry notify --test`.

use std::{collections::BTreeSet, thread, time::Duration};

use portsentry::config::settings::{AlertMode, Settings};
use portsentry_tests::{
    case::{self, attackalert, TRAP},
    lab::{portsentry_bin, run_in, sock, Daemon, Lab, LanHost, TempDir},
    sinks::{Sink, SmtpOptions, TestCa},
};

const PROBE: Duration = Duration::from_millis(300);

/// The case's settings guarding TCP 111-113 (ban on the `trigger`-th probe), state in
/// `dir/state` (the outbox beside nothing else).
fn trap_settings(lab: &Lab, dir: &TempDir, trigger: u32) -> Settings {
    let mut s = case::settings(lab, dir);
    s.startup.state_dir = dir.join("state");
    s.live.tcp_ports = case::ports("111-113");
    s.live.scan_trigger = trigger;
    s
}

/// [`trap_settings`] with mail to root@example.org through `smtp_url`.
fn mail_settings(lab: &Lab, dir: &TempDir, trigger: u32, smtp_url: String) -> Settings {
    let mut s = trap_settings(lab, dir, trigger);
    s.live.notify.email_to = vec!["root@example.org".to_owned()];
    s.live.notify.smtp_url = smtp_url;
    s
}

/// [`mail_settings`] with an alert per new ban and no digest.
fn alert_settings(lab: &Lab, dir: &TempDir, smtp_url: String) -> Settings {
    let mut s = mail_settings(lab, dir, 0, smtp_url);
    s.live.notify.alert = AlertMode::NewBan;
    s.live.notify.digest_interval = None;
    s
}

fn probe(lab: &Lab, src: std::net::IpAddr, port: u16) {
    let _ = lab
        .scanner
        .tcp_connect(src, sock(lab.protected_v4, port), PROBE);
}

/// A forger's namespace: a macvlan next to the scanner's interface (its own MAC) that sends
/// probes in other hosts' names with hping3, as in the spoofing suite. Deleted on drop.
struct Forger(LanHost);

impl Forger {
    fn new(lab: &Lab) -> Self {
        Self(
            lab.lan_host("f", "fg0", Some("10.77.0.50/24"))
                .expect("the forger's namespace"),
        )
    }

    /// One TCP SYN from `src` (forged) to `dst:port`.
    fn syn(&self, src: std::net::IpAddr, dst: std::net::IpAddr, port: u16) {
        let (code, out) = case::forged_syn(&self.0.ns, src, dst, port);
        // hping3 exits 1 when nothing answered: the trap probe is not answered.
        assert!(code == 0 || code == 1, "hping3: {code} {out}");
    }

    /// Two SYNs in `forged`'s name (a neighbour `d`'s host knows, from another MAC than its
    /// own) to ports 113 and 111: the first counts, the ban the second would trigger is
    /// refused by the path check as spoofed.
    fn second_probe_refused(&self, lab: &Lab, d: &mut Daemon, forged: std::net::IpAddr) {
        self.syn(forged, lab.protected_v4, 113);
        self.syn(forged, lab.protected_v4, 111);
        d.expect_line(
            "the probe refused as spoofed",
            case::probe_line(forged, "spoofed"),
        );
    }
}

/// `src` probes the trap port and is banned, and within 10 s `sink` holds `mails` mails, the
/// last one the ban's alert (its Subject names `src` as blocked).
fn ban_mailed(lab: &Lab, d: &mut Daemon, sink: &Sink, src: std::net::IpAddr, mails: usize) {
    probe(lab, src, TRAP);
    d.expect_line("the ban", attackalert(src));
    let got = sink.wait_for(mails, Duration::from_secs(10));
    assert_eq!(got.len(), mails, "{got:?}\n{}", d.output());
    let last = &got[mails - 1];
    assert!(
        header(last, "Subject").is_some_and(|s| s.contains(&format!("{src} blocked"))),
        "{last}"
    );
}

fn header<'a>(mail: &'a str, name: &str) -> Option<&'a str> {
    mail.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim())
}

/// The mail's body as text: quoted-printable decoded when the mail says so.
fn body(mail: &str) -> String {
    let (head, body) = mail.split_once("\r\n\r\n").unwrap_or((mail, ""));
    if !head
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: quoted-printable")
    {
        return body.replace("\r\n", "\n");
    }
    let joined = body.replace("=\r\n", "").replace("\r\n", "\n");
    let mut out = Vec::new();
    let b = joined.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Two sources banned, one below the trigger, a forged probe refused by the path check; one
/// alert (cap 1), then one digest holding all of it and "1 more", by mail and webhook alike:
/// the refusal is counted in the totals, and the address it named is not listed as a source.
#[test]
fn alerts_are_capped_and_the_digest_tells_everything() {
    let lab = Lab::new(5).unwrap();
    lab.protected_knows_scanner().unwrap();
    let dir = TempDir::new("notify-digest").unwrap();
    let smtp = Sink::smtp(&lab.protected, 0, 0).unwrap();
    let hook = Sink::webhook(&lab.protected, 0, 0).unwrap();
    let mut s = mail_settings(&lab, &dir, 2, format!("smtp://{}", smtp.addr));
    let n = &mut s.live.notify;
    n.webhook_url = format!("http://{}/hook", hook.addr);
    (n.alert, n.max_alerts_per_hour) = (AlertMode::NewBan, 1);
    n.digest_interval = Some(Duration::from_secs(8));
    let mut d = case::start(&lab, &dir, &s);
    let (a, b, c) = (lab.scanner_v4[1], lab.scanner_v4[2], lab.scanner_v4[3]);
    probe(&lab, a, 111);
    probe(&lab, a, 112);
    d.expect_line("the ban", attackalert(a));
    probe(&lab, b, 111);
    probe(&lab, b, 113);
    d.expect_line("the ban", attackalert(b));
    probe(&lab, c, 112);
    d.expect_line("the scan line", |l| {
        l.contains(&format!("Scan from: [{c}]"))
    });
    // A forger next to the scanner sends two probes in the name of a neighbour this host
    // knows (from another MAC than the neighbour's): the first is counted, the ban the second
    // would trigger is refused by the path check.
    let forged = lab.scanner_v4[4];
    let forger = Forger::new(&lab);
    forger.second_probe_refused(&lab, &mut d, forged);

    // The alert comes at once, before the digest.
    let mails = smtp.wait_for(1, Duration::from_secs(5));
    assert_eq!(mails.len(), 1, "{mails:?}\n{}", d.output());
    let alert = &mails[0];
    let subject = header(alert, "Subject").unwrap_or_default();
    assert!(
        subject.starts_with("[portsentry] ") && subject.contains(&format!("{a} blocked (TCP 112")),
        "{alert}"
    );
    assert_eq!(
        header(alert, "Auto-Submitted"),
        Some("auto-generated"),
        "{alert}"
    );
    assert!(
        header(alert, "Message-ID")
            .is_some_and(|m| m.starts_with('<') && m.contains("portsentry@")),
        "{alert}"
    );
    assert!(header(alert, "Date").is_some(), "{alert}");
    assert!(
        header(alert, "Content-Type").is_some_and(|t| t.starts_with("text/plain")),
        "{alert}"
    );
    assert_eq!(header(alert, "To"), Some("root@example.org"), "{alert}");

    // Then the digest.
    let mails = smtp.wait_for(2, Duration::from_secs(15));
    assert_eq!(mails.len(), 2, "{mails:?}\n{}", d.output());
    let digest = &body(&mails[1]);
    for want in [
        format!("{a}: blocked"),
        format!("{b}: blocked"),
        format!("{c}: not blocked"),
        "ports: TCP 111-112".to_owned(),
        "ports: TCP 111,113".to_owned(),
        "scan types: TCP SYN/Normal scan".to_owned(),
        "source: verified".to_owned(),
        "ban: origin local, expires ".to_owned(),
        "1 more new ban(s) not alerted one by one (max_alerts_per_hour = 1)".to_owned(),
        format!("{forged}: not blocked"),
        "  ban refused: spoofed (".to_owned(),
        "Totals: 6 probe(s), 2 ban(s), 1 spoofed, 0 contested and 0 bogus probe(s) refused"
            .to_owned(),
        "Top trap ports: TCP 111 (2)".to_owned(),
    ] {
        assert!(digest.contains(&want), "missing {want:?} in:\n{digest}");
    }
    let hooks = hook.wait_for(2, Duration::from_secs(5));
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    let (ja, jd) = (json(&hooks[0]), json(&hooks[1]));
    assert_eq!(
        (ja["version"].as_u64(), ja["type"].as_str()),
        (Some(1), Some("alert"))
    );
    assert_eq!(ja["address"], a.to_string());
    assert_eq!(
        (jd["version"].as_u64(), jd["type"].as_str()),
        (Some(1), Some("digest"))
    );
    let subject = jd["subject"].as_str().unwrap();
    assert!(
        subject.contains(": 2 scanners blocked (") && subject.contains('–'),
        "{subject}"
    );
    assert_eq!(jd["totals"]["bans"], 2);
    assert_eq!(jd["totals"]["spoofed_refused"], 1);
    assert_eq!(jd["alerts_folded"], 1);
    let actions: BTreeSet<(String, String)> = jd["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["address"].as_str().unwrap().to_owned(),
                s["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            (a, "blocked"),
            (b, "blocked"),
            (c, "not blocked"),
            (forged, "not blocked")
        ]
        .iter()
        .map(|(x, y)| (x.to_string(), (*y).to_owned()))
        .collect()
    );
    // Nothing happened since: no further digest.
    thread::sleep(Duration::from_secs(9));
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(hook.messages().len(), 2);
}

fn outbox_files(dir: &TempDir) -> usize {
    std::fs::read_dir(dir.join("state").join("notify-outbox"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

fn message_ids(mails: &[String]) -> BTreeSet<String> {
    mails
        .iter()
        .filter_map(|m| header(m, "Message-ID").map(str::to_owned))
        .collect()
}

/// The mail server is down and the webhook fails while two scanners are banned; the daemon is
/// killed with both alerts in the outbox and restarted; then the servers come up: each alert
/// arrives exactly once on each channel.
#[test]
fn an_outage_and_kill_9_lose_nothing_and_repeat_nothing() {
    let lab = Lab::new(3).unwrap();
    let dir = TempDir::new("notify-outage").unwrap();
    let smtp_port = Sink::free_port(&lab.protected);
    let hook = Sink::webhook(&lab.protected, 0, 1_000_000).unwrap();
    let hook_port = hook.addr.port();
    let mut s = alert_settings(&lab, &dir, format!("smtp://127.0.0.1:{smtp_port}"));
    s.live.notify.webhook_url = format!("http://127.0.0.1:{hook_port}/hook");
    let mut d = case::start(&lab, &dir, &s);
    for s in [lab.scanner_v4[1], lab.scanner_v4[2]] {
        probe(&lab, s, TRAP);
        d.expect_line("the ban", attackalert(s));
    }
    d.expect_line("notify: mail delivery failed (connection refused)", |l| {
        l.contains("notify: mail delivery failed (connection refused)")
    });
    assert_eq!(outbox_files(&dir), 2, "both alerts are on disk");
    d.kill9();
    drop(hook);

    let mut d = case::start(&lab, &dir, &s);
    assert!(
        d.has_line(|l| l.contains("notify: 2 undelivered message(s)")),
        "{}",
        d.output()
    );
    let smtp = Sink::smtp(&lab.protected, smtp_port, 0).unwrap();
    let hook = Sink::webhook(&lab.protected, hook_port, 2).unwrap();
    let mails = smtp.wait_for(2, Duration::from_secs(20));
    let hooks = hook.wait_for(2, Duration::from_secs(20));
    thread::sleep(Duration::from_secs(3));
    let (mails2, hooks2) = (smtp.messages(), hook.messages());
    assert_eq!(
        (mails2.len(), hooks2.len()),
        (2, 2),
        "{mails:?} {hooks:?}\n{}",
        d.output()
    );
    assert_eq!(message_ids(&mails2).len(), 2, "two different alerts");
    let ids: BTreeSet<String> = hooks2
        .iter()
        .map(|h| json(h)["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(hook.refused() >= 2, "the webhook failed before it accepted");
    d.expect_line_within(
        "`notify: webhook delivers again`",
        Duration::from_secs(2),
        |l| l.contains("notify: webhook delivers again"),
    );
    assert_eq!(outbox_files(&dir), 0, "delivered messages leave the outbox");
    // A third start sends nothing again.
    d.stop().unwrap();
    let _d = case::start(&lab, &dir, &s);
    thread::sleep(Duration::from_secs(2));
    assert_eq!((smtp.messages().len(), hook.messages().len()), (2, 2));
}

/// 1 000 bans restored from bans.json at start are no news: no alert, no digest.
#[test]
fn restored_bans_are_never_alerted() {
    let lab = Lab::new(1).unwrap();
    let dir = TempDir::new("notify-restore").unwrap();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let bans: Vec<serde_json::Value> = (0..1000u32)
        .map(|i| {
            serde_json::json!({
                "target": std::net::Ipv4Addr::from(0x0b00_0001 + i).to_string(),
                "origin": "detected",
                "since_ms": now_ms - 1000,
                "expires_ms": now_ms + 3_600_000,
                "trigger": {"proto": "tcp", "port": 111, "scan": "syn"},
            })
        })
        .collect();
    std::fs::write(
        dir.join("state").join("bans.json"),
        serde_json::json!({"version": 3, "bans": bans}).to_string(),
    )
    .unwrap();
    let smtp = Sink::smtp(&lab.protected, 0, 0).unwrap();
    let mut s = alert_settings(&lab, &dir, format!("smtp://{}", smtp.addr));
    s.live.notify.digest_interval = Some(Duration::from_secs(3));
    let d = case::start(&lab, &dir, &s);
    assert!(
        d.has_line(|l| l.contains("restored") && l.contains("1000")),
        "{}",
        d.output()
    );
    thread::sleep(Duration::from_secs(5));
    assert!(smtp.messages().is_empty(), "{:?}", smtp.messages());
}

/// `portsentry notify --test` in the protected namespace.
fn notify_test(lab: &Lab, cfg: &str) -> (i32, String) {
    let bin = portsentry_bin().display().to_string();
    run_in(
        &lab.protected,
        &bin,
        &["--config", cfg, "notify", "--test"],
        Duration::from_secs(30),
    )
}

/// `notify --test`: 0 when every transport accepts, 1 naming why one did not (connection
/// refused, TLS, HTTP status), 2 for a configuration error; a STARTTLS-required URL against a
/// server without STARTTLS sends no password.
#[test]
fn notify_test_says_why_and_starttls_fails_closed() {
    let lab = Lab::new(1).unwrap();
    let dir = TempDir::new("notify-test").unwrap();
    let smtp = Sink::smtp(&lab.protected, 0, 0).unwrap();
    let hook = Sink::webhook(&lab.protected, 0, 1).unwrap();
    let token = dir.write_secret("token", "s3cret-token\n");

    let plain = mail_settings(&lab, &dir, 0, format!("smtp://{}", smtp.addr));
    let (code, out) = notify_test(&lab, &case::write_config(&dir, &plain));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("smtp: test message accepted"), "{out}");
    let mails = smtp.wait_for(1, Duration::from_secs(2));
    assert!(mails[0].contains("test message"), "{mails:?}");

    let refused = Sink::free_port(&lab.protected);
    let mut s = mail_settings(&lab, &dir, 0, format!("smtp://127.0.0.1:{refused}"));
    s.live.notify.webhook_url = format!("http://{}/h", hook.addr);
    s.live.notify.webhook_token_file = Some(token.into());
    let cfg = case::write_config(&dir, &s);
    let (code, out) = notify_test(&lab, &cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("smtp: failed (connection refused)"), "{out}");
    assert!(
        out.contains("webhook: failed (rejected)") && out.contains("503"),
        "{out}"
    );
    let (code, out) = notify_test(&lab, &cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("webhook: test message accepted"), "{out}");
    assert_eq!(hook.auth(), ["Bearer s3cret-token"]);

    // STARTTLS required, the server offers none: TLS error, no AUTH.
    let pw = dir.write_secret("pw", "hunter2\n");
    let mut s = mail_settings(
        &lab,
        &dir,
        0,
        format!("smtp://alerts@{}?tls=required", smtp.addr),
    );
    s.live.notify.smtp_password_file = Some(pw.clone().into());
    let cfg = case::write_config(&dir, &s);
    let (code, out) = notify_test(&lab, &cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("smtp: failed (TLS"), "{out}");
    assert!(
        smtp.auth().is_empty(),
        "a password went out: {:?}",
        smtp.auth()
    );
    assert!(!out.contains("hunter2"));

    // Configuration errors: exit 2, naming key and file.
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, out) = notify_test(&lab, &cfg);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("notify.smtp_password_file") && out.contains("0644"),
        "{out}"
    );
    let mut s = mail_settings(&lab, &dir, 0, "smtp://alerts@192.0.2.1:25".to_owned());
    s.live.notify.smtp_password_file = Some("/x".into());
    let cfg = case::write_config(&dir, &s);
    let (code, out) = notify_test(&lab, &cfg);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("notify.smtp_url") && out.contains("clear text"),
        "{out}"
    );
    // check-config shows the table (the config file was rewritten above).
    let ok = case::write_config(&dir, &plain);
    let (code, out, err) = portsentry_tests::lab::portsentry(&["check-config", &ok]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("[notify]") && out.contains("alert = \"off\""),
        "{out}"
    );
}

/// The daemon's lines as a log file holds them: traditional syslog (`Dec  6 …`), the journal
/// as logcheck reads it (`journalctl`'s short format, `Dec 06 …`) and rsyslog's RFC 3339
/// format, each `HOST portsentry[PID]: LINE`.
fn as_syslog(lines: &[String], pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for stamp in [
        "Dec  6 08:57:01",
        "Dec 06 08:57:01",
        "2026-12-06T08:57:01.123456+01:00",
    ] {
        for l in lines {
            out.push(format!(
                "{stamp} lab-host.example.org portsentry[{pid}]: {l}"
            ));
        }
    }
    out
}

/// Debian's logcheck (staged, run unprivileged with `-o -t`) with its database's rules and
/// ours, on the daemon's own lines from a scan in the lab: the scan lines (below and at the
/// trigger) and the block lines are "Security Alerts", an allowlisted host's probe and a forged
/// probe the path check refused "Security Events", and the routine lines (start-up, attach, guarding, restored, reload, stop) appear
/// nowhere in the report.
#[test]
fn logcheck_reports_scans_and_blocks_as_security_alerts() {
    let lab = Lab::new(5).unwrap();
    lab.protected_knows_scanner().unwrap();
    let dir = TempDir::new("notify-logcheck").unwrap();
    let (a, below, allowed) = (lab.scanner_v4[1], lab.scanner_v4[2], lab.scanner_v4[3]);
    let mut s = trap_settings(&lab, &dir, 2);
    s.live.allow = vec![case::cidr(&allowed.to_string())];
    let mut d = case::start(&lab, &dir, &s);
    probe(&lab, below, 111);
    probe(&lab, allowed, 112);
    probe(&lab, a, 111);
    probe(&lab, a, 112);
    d.expect_line("the ban", attackalert(a));
    d.expect_line("the scan line", |l| {
        l.contains(&format!("Scan from: [{allowed}]"))
    });
    // Two forged probes in a known neighbour's name: the ban the second would trigger is
    // refused by the path check.
    let forged = lab.scanner_v4[4];
    let forger = Forger::new(&lab);
    forger.second_probe_refused(&lab, &mut d, forged);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.expect_line("the reload", |l| l.contains("reloaded configuration"));
    d.stop().unwrap();
    let mut log = as_syslog(
        &d.output().lines().map(str::to_owned).collect::<Vec<_>>(),
        d.pid(),
    );
    // A restart restores the ban: routine too.
    let mut d2 = case::start(&lab, &dir, &s);
    assert!(
        d2.has_line(|l| l.contains("restored 1 ban(s)")),
        "{}",
        d2.output()
    );
    d2.stop().unwrap();
    log.extend(as_syslog(
        &d2.output().lines().map(str::to_owned).collect::<Vec<_>>(),
        d2.pid(),
    ));

    let report =
        portsentry_tests::logcheck::run(&log, &portsentry_tests::logcheck::our_rules()).unwrap();
    eprintln!("logcheck's report:\n{}", report.text);
    let alerts = report.lines_under("Security Alerts");
    let events = report.lines_under("Security Events");
    let everywhere = report.all_lines();
    let is_alert = |l: &str| {
        l.contains("]: attackalert: Host ")
            || (l.contains("]: Scan from: [") && l.contains("ignored: [false]"))
    };
    let want_alerts: Vec<&String> = log.iter().filter(|l| is_alert(l)).collect();
    // 3 formats x (the probe below the trigger, a's two probes, a's block line, the forged
    // probe below the trigger: it cannot be told from a real one until a ban is checked).
    assert_eq!(want_alerts.len(), 3 * 5, "{log:#?}");
    for l in &want_alerts {
        assert!(
            alerts.contains(&l.as_str()),
            "not a security alert: {l}\n{}",
            report.text
        );
    }
    let ignored: Vec<&String> = log
        .iter()
        .filter(|l| {
            l.contains(&format!("]: Scan from: [{allowed}]"))
                || l.contains(&format!("]: portsentry: probe from {forged} "))
        })
        .collect();
    assert_eq!(ignored.len(), 3 * 2, "{log:#?}");
    for l in &ignored {
        assert!(
            events.contains(&l.as_str()),
            "not a security event: {l}\n{}",
            report.text
        );
        assert!(
            !alerts.contains(&l.as_str()),
            "an allowlisted host is no alert: {l}"
        );
    }
    let routine = [
        "]: Portsentry is now active and listening.",
        "]: portsentry: attached to ",
        "]: portsentry: guarding TCP ",
        "]: portsentry: restored 1 ban(s) from ",
        "]: portsentry: reloaded configuration from ",
        "]: portsentry: stopped; XDP detached from ",
    ];
    for kind in routine {
        let lines: Vec<&String> = log.iter().filter(|l| l.contains(kind)).collect();
        assert!(
            lines.len() >= 3,
            "the daemon wrote no {kind:?} line:\n{log:#?}"
        );
        for l in lines {
            assert!(
                !everywhere.contains(&l.as_str()),
                "a routine line in the report: {l}\n{}",
                report.text
            );
        }
    }
}

/// TLS success paths with AUTH, against a sink with a throwaway CA (openssl) that requires the
/// credentials: `smtp://USER@…?tls=required` (STARTTLS) with the password from
/// `smtp_password_file` and the CA from `smtp_ca_cert_path` delivers a `notify --test` message
/// and a daemon's alert, and the sink saw AUTH only after TLS, with the file's password;
/// `smtps://` (TLS from the first byte) delivers an alert through AUTH LOGIN. Without the CA the
/// certificate is refused (TLS, no AUTH sent); a wrong password is `authentication`.
#[test]
fn starttls_and_smtps_deliver_with_auth_only_after_tls() {
    let lab = Lab::new(3).unwrap();
    let dir = TempDir::new("notify-tls").unwrap();
    let ca = TestCa::new().unwrap();
    let password = "correct horse battery";
    let creds = Some(("alerts".to_owned(), password.to_owned()));
    let starttls = Sink::smtp_with(
        &lab.protected,
        0,
        0,
        SmtpOptions {
            starttls: Some(ca.server_config()),
            credentials: creds.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let pw = dir.write_secret("pw", &format!("{password}\n"));
    // Mail to `url` as alerts@ with the password in `password_file`, trusting the test CA if
    // `trust`; `alerts`: an alert per new ban and no digest.
    let tls = |url: String, password_file: &str, trust: bool, alerts: bool| {
        let mut s = if alerts {
            alert_settings(&lab, &dir, url)
        } else {
            mail_settings(&lab, &dir, 0, url)
        };
        s.live.notify.smtp_password_file = Some(password_file.into());
        if trust {
            s.live.notify.smtp_ca_cert_path = Some(ca.ca_pem.clone().into());
        }
        s
    };
    let starttls_url = format!("smtp://alerts@{}?tls=required", starttls.addr);
    let s = tls(starttls_url.clone(), &pw, true, true);
    let (code, out) = notify_test(&lab, &case::write_config(&dir, &s));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("smtp: test message accepted"), "{out}");
    assert!(!out.contains(password), "{out}");
    let mails = starttls.wait_for(1, Duration::from_secs(5));
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("test message"), "{mails:?}");
    let logins = starttls.logins();
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert!(
        logins[0].over_tls && logins[0].accepted,
        "AUTH before TLS or refused: {logins:?}"
    );
    assert_eq!(
        (logins[0].user.as_str(), logins[0].password.as_str()),
        ("alerts", password)
    );

    // The daemon's own alert over the same transport.
    let mut d = case::start(&lab, &dir, &s);
    ban_mailed(&lab, &mut d, &starttls, lab.scanner_v4[1], 2);
    assert!(starttls.logins().iter().all(|l| l.over_tls && l.accepted));
    assert!(!d.output().contains(password));
    d.stop().unwrap();

    // No CA: the sink's certificate is refused before anything is sent.
    let no_ca = tls(starttls_url.clone(), &pw, false, false);
    let (code, out) = notify_test(&lab, &case::write_config(&dir, &no_ca));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("smtp: failed (TLS"), "{out}");
    assert_eq!(
        starttls.logins().len(),
        2,
        "no AUTH without a trusted certificate"
    );
    // A wrong password: authentication, named.
    let wrong = dir.write_secret("pw-wrong", "nope\n");
    let wrong_password = tls(starttls_url, &wrong, true, false);
    let (code, out) = notify_test(&lab, &case::write_config(&dir, &wrong_password));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("smtp: failed (authentication"), "{out}");
    assert_eq!(starttls.messages().len(), 2);

    // smtps:// (implicit TLS), AUTH LOGIN the only mechanism offered.
    let smtps = Sink::smtp_with(
        &lab.protected,
        0,
        0,
        SmtpOptions {
            implicit_tls: Some(ca.server_config()),
            mechanisms: Some("LOGIN"),
            credentials: creds,
            ..Default::default()
        },
    )
    .unwrap();
    let smtps_url = format!("smtps://alerts@{}", smtps.addr);
    let mut d = case::start(&lab, &dir, &tls(smtps_url, &pw, true, true));
    ban_mailed(&lab, &mut d, &smtps, lab.scanner_v4[2], 1);
    let logins = smtps.logins();
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(
        (
            logins[0].mechanism.as_str(),
            logins[0].over_tls,
            logins[0].accepted,
            logins[0].password.as_str()
        ),
        ("LOGIN", true, true, password)
    );
}

/// SIGHUP with a changed `[notify]` takes effect: alerts go to the newly configured server,
/// not the old one; then `alert = "off"` stops them.
#[test]
fn a_reload_changes_where_alerts_go() {
    let lab = Lab::new(4).unwrap();
    let dir = TempDir::new("notify-reload").unwrap();
    let old = Sink::smtp(&lab.protected, 0, 0).unwrap();
    let new = Sink::smtp(&lab.protected, 0, 0).unwrap();
    let notify = |sink: &Sink, alert: AlertMode| {
        let mut s = alert_settings(&lab, &dir, format!("smtp://{}", sink.addr));
        s.live.notify.alert = alert;
        s
    };
    let mut d = case::start(&lab, &dir, &notify(&old, AlertMode::NewBan));
    let ban = |d: &mut portsentry_tests::lab::Daemon, src: std::net::IpAddr| {
        probe(&lab, src, TRAP);
        d.expect_line("the ban", attackalert(src));
    };
    let subjects = |sink: &Sink| -> Vec<String> {
        sink.messages()
            .iter()
            .filter_map(|m| header(m, "Subject").map(str::to_owned))
            .collect()
    };
    let (a, b, c) = (lab.scanner_v4[1], lab.scanner_v4[2], lab.scanner_v4[3]);
    ban(&mut d, a);
    assert_eq!(old.wait_for(1, Duration::from_secs(5)).len(), 1);

    let reloads = |d: &portsentry_tests::lab::Daemon| {
        d.lines_matching(|l| l.contains("reloaded configuration"))
            .len()
    };
    case::write_config(&dir, &notify(&new, AlertMode::NewBan));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.expect_line("the reload", |l| l.contains("reloaded configuration"));
    ban(&mut d, b);
    let got = new.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{}", d.output());
    assert!(
        subjects(&new)[0].contains(&format!("{b} blocked")),
        "{:?}",
        subjects(&new)
    );
    assert_eq!(old.messages().len(), 1, "the old server got nothing more");

    case::write_config(&dir, &notify(&new, AlertMode::Off));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while reloads(&d) < 2 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(reloads(&d), 2, "{}", d.output());
    ban(&mut d, c);
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        (old.messages().len(), new.messages().len()),
        (1, 1),
        "alert = \"off\" after the reload: no alert for {c}"
    );
}

/// A message undelivered past `max_age` is dropped with a line naming it and its Message-ID,
/// leaves the outbox, and is not sent when the server comes back.
#[test]
fn max_age_drops_an_undeliverable_message_with_a_line() {
    let lab = Lab::new(2).unwrap();
    let dir = TempDir::new("notify-max-age").unwrap();
    let port = Sink::free_port(&lab.protected);
    let mut s = alert_settings(&lab, &dir, format!("smtp://127.0.0.1:{port}"));
    s.live.notify.max_age = Duration::from_secs(3);
    let mut d = case::start(&lab, &dir, &s);
    let src = lab.scanner_v4[1];
    probe(&lab, src, TRAP);
    d.expect_line("the ban", attackalert(src));
    d.expect_line("notify: mail delivery failed (connection refused)", |l| {
        l.contains("notify: mail delivery failed (connection refused)")
    });
    assert_eq!(outbox_files(&dir), 1);
    let dropped = |l: &str| {
        l.starts_with("portsentry: notify: dropped alert \"[portsentry] ")
            && l.contains(&format!("{src} blocked"))
            && l.contains("(Message-ID <")
            && l.ends_with("for mail: undelivered after 3s (`notify.max_age`)")
    };
    d.expect_line_within("the dropped alert", Duration::from_secs(30), dropped);
    assert_eq!(outbox_files(&dir), 0, "the dropped message left the outbox");
    let sink = Sink::smtp(&lab.protected, port, 0).unwrap();
    thread::sleep(Duration::from_secs(4));
    assert!(sink.messages().is_empty(), "{:?}", sink.messages());
    assert_eq!(d.lines_matching(dropped).len(), 1, "{}", d.output());
}

/// The README's "try it" block, run as a new user would paste it (`sudo` a no-op here, as the
/// tests run as root; `portsentry` the binary under test; the namespace and file names made
/// unique to this run): the test mail and the alert reach the recipe's mail sink, and what the
/// README says they should see is there.
#[test]
fn the_readme_try_it_recipe_delivers_the_alert() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Try it in five minutes"))
        .expect("the README has its try-it section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a sh block in the try-it section");
    let dir = TempDir::new("readme").unwrap();
    let tag = format!("{}", std::process::id());
    let block = block
        .replace("ps-host", &format!("psh{tag}"))
        .replace("ps-scan", &format!("pss{tag}"))
        .replace("/tmp/ps-", &format!("{}/ps-", dir.path.display()));
    let bin_dir = portsentry_bin()
        .parent()
        .expect("the binary's directory")
        .display()
        .to_string();
    let script = format!(
        "set -m\nsudo() {{ \"$@\"; }}\nexport PATH={bin_dir}:$PATH\ncd {dir}\n{block}\n\
         for i in $(seq 1 100); do grep -q '^Subject: .* blocked (TCP 111' {dir}/out && break; sleep 0.2; done\n\
         kill %1 %2; wait\nip netns del psh{tag}; ip netns del pss{tag}\n",
        dir = dir.path.display()
    );
    let script_path = dir.write("try-it.sh", &script);
    let out = std::fs::File::create(dir.join("out")).unwrap();
    let status = std::process::Command::new("timeout")
        .args(["-s", "KILL", "120", "bash", &script_path])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap();
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &format!("psh{tag}")])
        .status();
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &format!("pss{tag}")])
        .status();
    let text = std::fs::read_to_string(dir.join("out")).unwrap();
    assert!(status.code().is_some(), "the recipe hung:\n{text}");
    for want in [
        "portsentry: notify: smtp: test message accepted",
        ": test message",
        "Portsentry is now active and listening.",
        "111/tcp filtered",
        "triggered: [true] noblock: [false] blocked: [true]",
        "attackalert: Host 10.99.0.2 has been blocked via XDP drop on interface: \"ps0\"",
        "Auto-Submitted: auto-generated",
        "action: blocked",
        "source verified: yes",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with("Subject: [portsentry] ")
            && l.ends_with(": 10.99.0.2 blocked (TCP 111, TCP SYN/Normal scan)")),
        "no alert mail in the sink's output:\n{text}"
    );
}
