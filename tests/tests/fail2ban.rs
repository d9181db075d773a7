//! The history file against fail2ban, as users deploy it: fail2ban's stock `[portsentry]` jail
//! (filter for PortSentry 1.2's history) and PortSentry 2.x's own filter, run through the real
//! `fail2ban-regex` from Debian's package.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use portsentry::config::settings::{HistoryFormat, Settings};
use portsentry_tests::{
    case::{self, TRAP as TCP_TRAP},
    fail2ban::{self, RegexResult},
    lab::{sock, Daemon, Lab, TempDir},
};

const UDP_TRAP: u16 = 31337;

/// Scanner 0 probes the TCP trap (banned), scanner 1 probes the UDP trap three times with
/// `block_udp = false` (triggers, never banned).
fn scan(lab: &Lab, daemon: &mut Daemon) -> (IpAddr, IpAddr) {
    let (tcp, udp) = (lab.scanner_v4[0], lab.scanner_v4[1]);
    let short = Duration::from_millis(300);
    let _ = lab
        .scanner
        .tcp_connect(tcp, sock(lab.protected_v4, TCP_TRAP), short);
    for _ in 0..3 {
        lab.scanner.udp_send(udp, sock(lab.protected_v4, UDP_TRAP));
        std::thread::sleep(Duration::from_millis(100));
    }
    for src in [tcp, udp] {
        let prefix = format!("Scan from: [{src}]");
        daemon.expect_line(&format!("{src}'s probe logged"), |l| l.starts_with(&prefix));
    }
    std::thread::sleep(Duration::from_millis(300));
    (tcp, udp)
}

/// The case's settings plus the UDP trap (reported, never blocked) and a history file in
/// `format`.
fn history_settings(lab: &Lab, dir: &TempDir, history: &Path, format: HistoryFormat) -> Settings {
    let mut s = case::settings(lab, dir);
    s.live.udp_ports = case::ports(&UDP_TRAP.to_string());
    s.live.block_udp = false;
    s.live.history_file = Some(history.to_owned());
    s.live.history_format = format;
    s
}

/// A history in `format`, written by a daemon that saw [`scan`] and stopped cleanly.
struct History {
    dir: TempDir,
    path: PathBuf,
    text: String,
    /// The TCP and the UDP scanner.
    tcp: IpAddr,
    udp: IpAddr,
}

impl History {
    fn of_a_scan(tag: &str, format: HistoryFormat) -> Self {
        let lab = Lab::new(2).expect("lab");
        let dir = TempDir::new(tag).expect("dir");
        let path = dir.path.join("portsentry.history");
        let s = history_settings(&lab, &dir, &path, format);
        let mut daemon = case::start(&lab, &dir, &s);
        let (tcp, udp) = scan(&lab, &mut daemon);
        daemon.stop_cleanly();
        let text = std::fs::read_to_string(&path).expect("history");
        Self {
            dir,
            path,
            text,
            tcp,
            udp,
        }
    }
}

fn regex(history: &Path, filter: &Path) -> RegexResult {
    fail2ban::fail2ban_regex(history, filter).expect("fail2ban-regex")
}

/// `history_format = "portsentry1"`: one 1.2 line per source when it triggers (banned or not),
/// every line matched by fail2ban's stock filter, at the stock jail's path in our unit's
/// StateDirectory.
#[test]
fn portsentry1_history_matches_fail2bans_stock_jail() {
    let h = History::of_a_scan("f2b-1", HistoryFormat::Portsentry1);
    let (history, text, tcp, udp) = (&h.path, &h.text, h.tcp, h.udp);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per source:\n{text}");
    for (src, port, proto) in [(tcp, TCP_TRAP, "TCP"), (udp, UDP_TRAP, "UDP")] {
        let tail = format!(" Host: {src}/{src} Port: {port} {proto} Blocked");
        let line = lines
            .iter()
            .find(|l| l.ends_with(&tail))
            .unwrap_or_else(|| panic!("no `{tail}` in:\n{text}"));
        // `<epoch> - MM/DD/YYYY HH:MM:SS`, as 1.2's WriteBlocked.
        let stamp = line.strip_suffix(&tail).unwrap();
        let (epoch, date) = stamp.split_once(" - ").expect("epoch - date");
        assert!(epoch.parse::<u64>().is_ok(), "epoch seconds: {line}");
        assert_eq!(date.len(), "11/25/2026 16:00:00".len(), "{line}");
        assert_eq!(&date[2..3], "/", "{line}");
    }

    let result = regex(history, &fail2ban::stock_filter().unwrap());
    assert_eq!(
        (result.lines, result.matched, result.missed),
        (2, 2, 0),
        "{}",
        result.output
    );
    for src in [tcp, udp] {
        assert!(
            result.output.contains(&format!("/{src} Port:")),
            "{src} matched:\n{}",
            result.output
        );
    }
    assert_eq!(
        fail2ban::stock_jail_logpath().unwrap(),
        "/var/lib/portsentry/portsentry.history",
        "the README recipe puts the 1.2 history where the stock jail reads it"
    );
}

/// The default 2.x history: PortSentry 2.x's filter matches every `Scan from:` line (and only
/// those), with fail2ban's default date detection reading our timestamps; fail2ban's stock
/// (1.2) filter matches none of them, which is why `portsentry1` exists.
#[test]
fn portsentry2_history_matches_portsentry2s_filter() {
    let h = History::of_a_scan("f2b-2", HistoryFormat::Portsentry2);
    let (history, text, tcp, udp) = (&h.path, &h.text, h.tcp, h.udp);
    let scans = text.lines().filter(|l| l.contains(" Scan from: [")).count() as u64;
    assert!(scans >= 4, "one TCP and three UDP probes:\n{text}");
    let filter = h
        .dir
        .write("portsentry2.conf", fail2ban::PORTSENTRY2_FILTER);
    let result = regex(history, Path::new(&filter));
    assert_eq!(result.matched, scans, "{}", result.output);
    for src in [tcp, udp] {
        assert!(
            result.output.contains(&format!("Scan from: [{src}]")),
            "{src} matched:\n{}",
            result.output
        );
    }
    let stock = regex(history, &fail2ban::stock_filter().unwrap());
    assert_eq!(stock.matched, 0, "{}", stock.output);
}
