//! Log lines in PortSentry 2.x's exact wording, so existing parsers (fail2ban's portsentry
//! filter, logwatch scripts) keep working; the history file in 2.x's or 1.2's format.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use portsentry_common::{
    tcp_flags::{ACK, FIN, PSH, RST, SYN, URG},
    ScanType,
};
use serde_json::json;

use crate::{
    clock,
    config::settings::{HistoryFormat, LogFormat},
    detect::events::{EventKind, ProbeEvent},
    report::{ReportGate, REPORT_INTERVAL},
};

/// Where worker threads and hook tasks send log lines; the event loop writes them.
pub type LogFn = std::sync::Arc<dyn Fn(String) + Send + Sync>;

/// `Scan from: [...] (...) protocol: [...] ...`, PortSentry 2.x's per-probe line. Below the
/// trigger `noblock` and `blocked` are `[unset]`, as 2.x prints them until a probe triggers.
pub fn scan_line(ev: &ProbeEvent, trigger: u64, resolved: Option<&str>) -> String {
    let addr = ev.src.to_string();
    let ip_opts = match ev.ip_options {
        Some(true) => "set",
        Some(false) => "not set",
        None => "unknown",
    };
    // An ignored (allowlisted) source's probe stops before the trigger is looked at: 2.x
    // prints `ignored: [true] triggered: [unset] noblock: [unset] blocked: [unset]`.
    let ignored = ev.kind == EventKind::Ignored;
    let triggered = !ignored && ev.count >= trigger.max(1);
    let unset = || "unset".to_owned();
    let (triggered_text, noblock, blocked) = if ignored {
        (unset(), unset(), unset())
    } else if triggered {
        (
            "true".to_owned(),
            ev.noblock.to_string(),
            is_blocked(ev).to_string(),
        )
    } else {
        ("false".to_owned(), unset(), unset())
    };
    format!(
        "Scan from: [{addr}] ({}) protocol: [{}] port: [{}] type: [{}] IP opts: [{ip_opts}] \
         ignored: [{ignored}] triggered: [{triggered_text}] noblock: [{noblock}] blocked: [{blocked}]",
        resolved.unwrap_or(&addr),
        ev.protocol.name(),
        ev.dst_port,
        scan_type_text(ev),
    )
}

/// True when this event banned its source and the ban is enforced.
pub fn is_blocked(ev: &ProbeEvent) -> bool {
    ev.kind == EventKind::Ban && !ev.noblock
}

/// The ban line: PortSentry's `attackalert: Host <ip> has been blocked via ...` wording, naming
/// the mechanism (an in-kernel XDP drop) instead of a route command.
pub fn ban_line(ev: &ProbeEvent, iface: &str) -> String {
    format!(
        "attackalert: Host {} has been blocked via XDP drop on interface: \"{iface}\"",
        ev.src
    )
}

/// The line for a ban the kernel could not store.
pub fn ban_table_full_line(ev: &ProbeEvent) -> String {
    format!(
        "attackalert: Host {} could not be blocked: the ban table is full (raise max_bans)",
        ev.src
    )
}

/// The line for an event that never bans on its own (a forged-looking, bogus or learned
/// peer's probe). PortSentry had no such events, so these lines are ours; they never use the
/// `Scan from:` or `attackalert:` prefixes parsers match on.
pub fn refused_line(ev: &ProbeEvent, iface: &str) -> Option<String> {
    let what = format!(
        "{} {} port {} on {iface}",
        scan_type_text(ev),
        ev.protocol.name(),
        ev.dst_port
    );
    let why = match ev.kind {
        EventKind::Spoofed => {
            "spoofed: it did not arrive the way this host routes back to its source; not banned"
        }
        EventKind::Contested => {
            "contested: its neighbour's MAC changed moments ago (ARP/ND poisoning or a replaced host); not banned"
        }
        EventKind::Bogus => "bogus source (cannot be a real peer); not counted",
        EventKind::PeerProbe if ev.protocol == portsentry_common::IpProto::Udp => {
            "learned peer: reported, not banned by a UDP probe"
        }
        EventKind::PeerProbe if ev.scan == ScanType::TcpSyn && ev.cookie_withheld => {
            "learned peer: no SYN cookie (no resolved neighbour on the route back through this \
             interface, or XDP_TX cannot deliver here); passed to the stack, not banned"
        }
        EventKind::PeerProbe if ev.scan == ScanType::TcpSyn => {
            "learned peer: answered with a SYN cookie; banned only if it completes the handshake"
        }
        // FIN, NULL, XMAS and other flag sets get no SYN-ACK: only a handshake can ban a peer.
        EventKind::PeerProbe => {
            "learned peer: reported, not banned (only a handshake completed on a SYN cookie bans it)"
        }
        EventKind::Probe
        | EventKind::Ban
        | EventKind::BanTableFull
        | EventKind::Ignored
        | EventKind::PrefixTrigger => return None,
    };
    Some(format!("portsentry: probe from {} ({what}): {why}", ev.src))
}

/// PortSentry 1.2's history line for a source that reached the trigger: `<epoch> - MM/DD/YYYY
/// HH:MM:SS Host: <name>/<ip> Port: <port> TCP|UDP Blocked`. 1.2 wrote it once per source,
/// whether BLOCK_* blocked or not; fail2ban's stock `[portsentry]` filter matches it.
pub fn classic_history_line(ev: &ProbeEvent, unix_ms: u64) -> String {
    format!(
        "{} Host: {src}/{src} Port: {} {} Blocked",
        clock::classic_local(unix_ms),
        ev.dst_port,
        ev.protocol.name(),
        src = ev.src,
    )
}

/// The event as one JSON object (`log_format = "json"`).
pub fn json_line(ev: &ProbeEvent, trigger: u64, iface: &str, unix_ms: u64) -> String {
    json!({
        "time": clock::iso_local_ms(unix_ms),
        "event": ev.kind.name(),
        "src": ev.src.to_string(),
        "protocol": ev.protocol.name(),
        "port": ev.dst_port,
        "scan": scan_type_text(ev),
        "tcp_flags": ev.tcp_flags,
        "ip_options": match ev.ip_options { Some(true) => "set", Some(false) => "not set", None => "unknown" },
        "count": ev.count,
        "triggered": ev.count >= trigger.max(1),
        "noblock": ev.noblock,
        "blocked": is_blocked(ev),
        "dropped": ev.dropped,
        "unverified": ev.unverified,
        "link_local": ev.link_local,
        "confirmed": ev.confirmed,
        "interface": iface,
    })
    .to_string()
}

/// Where event lines go: stdout (the journal under systemd) and the history file, which is
/// appended to, never truncated. In 2.x format the history holds every line, each prefixed by a
/// local ISO-8601 timestamp; in 1.2 format only the `Host: … Blocked` lines.
pub struct LogSink {
    format: LogFormat,
    history_format: HistoryFormat,
    history_path: Option<PathBuf>,
    history: Option<File>,
    /// A failing history file is retried on every line but reported once per interval.
    history_error_report: ReportGate,
    /// History writes that failed since the last report.
    failed_writes: u64,
}

impl LogSink {
    pub fn new(
        format: LogFormat,
        history_path: Option<&Path>,
        history_format: HistoryFormat,
    ) -> Self {
        let mut sink = Self {
            format,
            history_format,
            history_path: history_path.map(Path::to_path_buf),
            history: None,
            history_error_report: ReportGate::new(REPORT_INTERVAL),
            failed_writes: 0,
        };
        if sink.history_path.is_some() {
            if let Err(e) = sink.open_history() {
                sink.report_history_error(&e);
            }
        }
        sink
    }

    fn open_history(&mut self) -> std::io::Result<()> {
        if let Some(path) = &self.history_path {
            let f = OpenOptions::new().create(true).append(true).open(path)?;
            self.history = Some(f);
        }
        Ok(())
    }

    /// Logs one event: the scan line, plus the ban line when it banned.
    pub fn event(&mut self, ev: &ProbeEvent, trigger: u64, iface: &str) {
        let now = clock::unix_ms();
        match self.format {
            LogFormat::Json => self.line_at(&json_line(ev, trigger, iface, now), now),
            LogFormat::Portsentry => {
                if let Some(line) = refused_line(ev, iface) {
                    self.line_at(&line, now);
                    return;
                }
                self.line_at(&scan_line(ev, trigger, None), now);
                match ev.kind {
                    EventKind::Ban if is_blocked(ev) => self.line_at(&ban_line(ev, iface), now),
                    EventKind::BanTableFull => self.line_at(&ban_table_full_line(ev), now),
                    _ => {}
                }
            }
        }
    }

    /// Logs a line that is not an event (hooks, start-up), to stdout and history.
    pub fn line(&mut self, text: &str) {
        self.line_at(text, clock::unix_ms());
    }

    /// A source reached the trigger for the first time in its ban period: PortSentry 1.2's
    /// history line, when the history is in that format (the caller decides "first").
    pub fn first_trigger(&mut self, ev: &ProbeEvent) {
        if self.history_format == HistoryFormat::Portsentry1 {
            let line = classic_history_line(ev, clock::unix_ms());
            self.append_history(&format!("{line}\n"));
        }
    }

    pub fn history_format(&self) -> HistoryFormat {
        self.history_format
    }

    fn line_at(&mut self, text: &str, unix_ms: u64) {
        crate::detect::journal::stdout_line(text);
        if self.history_format == HistoryFormat::Portsentry2 {
            self.append_history(&format!("{} {text}\n", clock::iso_local_ms(unix_ms)));
        }
    }

    fn append_history(&mut self, stamped: &str) {
        if self.history_path.is_none() {
            return;
        }
        if self.history.is_none() {
            // Retry: the disk may have been fixed or the directory created since.
            let _ = self.open_history();
        }
        let result = match self.history.as_mut() {
            Some(f) => f.write_all(stamped.as_bytes()),
            None => Err(std::io::Error::other("history file is not open")),
        };
        if let Err(e) = result {
            self.history = None;
            self.failed_writes += 1;
            self.report_history_error(&e);
        }
    }

    fn report_history_error(&mut self, e: &std::io::Error) {
        if self.history_error_report.try_report().is_some() {
            let path = self.history_path.as_deref().map(Path::display);
            crate::errln!(
                "portsentry: error: cannot write history file {}: {e} ({} line(s) not written since the last report; enforcement continues)",
                path.map(|p| p.to_string()).unwrap_or_default(),
                self.failed_writes
            );
            self.failed_writes = 0;
        }
    }
}

fn scan_type_text(ev: &ProbeEvent) -> String {
    match ev.scan {
        ScanType::TcpOther => {
            let f = ev.tcp_flags;
            let bit = |b: u8| u8::from(f & b != 0);
            format!(
                "Unknown Type: TCP Packet Flags: SYN: {} FIN: {} ACK: {} PSH: {} URG: {} RST: {}",
                bit(SYN),
                bit(FIN),
                bit(ACK),
                bit(PSH),
                bit(URG),
                bit(RST)
            )
        }
        other => other.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::events::Protocol;

    fn ev() -> ProbeEvent {
        ProbeEvent {
            kind: EventKind::Ban,
            src: "10.0.0.2".parse().unwrap(),
            dst_port: 111,
            protocol: Protocol::Tcp,
            scan: ScanType::TcpSyn,
            tcp_flags: SYN,
            count: 1,
            ifindex: 2,
            ip_options: Some(false),
            dropped: true,
            noblock: false,
            unverified: false,
            link_local: false,
            confirmed: false,
            cookie_withheld: false,
            prefix_len: 0,
            timestamp_ns: 0,
        }
    }

    #[test]
    fn classic_history_line_is_portsentry_1_2s_blocked_line() {
        let line = classic_history_line(&ev(), 1_700_000_000_071);
        let (stamp, rest) = line.split_once(" Host: ").unwrap();
        assert_eq!(rest, "10.0.0.2/10.0.0.2 Port: 111 TCP Blocked");
        let (epoch, date) = stamp.split_once(" - ").unwrap();
        assert_eq!(epoch, "1700000000");
        // MM/DD/YYYY HH:MM:SS in local time: only the shape is fixed across time zones.
        let shape: String = date
            .chars()
            .map(|c| if c.is_ascii_digit() { 'n' } else { c })
            .collect();
        assert_eq!(shape, "nn/nn/nnnn nn:nn:nn");
    }

    #[test]
    fn scan_line_is_portsentry_2x_byte_exact() {
        assert_eq!(
            scan_line(&ev(), 0, None),
            "Scan from: [10.0.0.2] (10.0.0.2) protocol: [TCP] port: [111] type: [TCP SYN/Normal scan] \
             IP opts: [not set] ignored: [false] triggered: [true] noblock: [false] blocked: [true]"
        );
    }

    #[test]
    fn below_trigger_ipv6_and_unknown_flags() {
        let mut e = ev();
        e.kind = EventKind::Probe;
        e.src = "2001:db8::2".parse().unwrap();
        e.ip_options = None;
        e.scan = ScanType::TcpOther;
        e.tcp_flags = SYN | FIN;
        e.noblock = true;
        assert_eq!(
            scan_line(&e, 3, None),
            "Scan from: [2001:db8::2] (2001:db8::2) protocol: [TCP] port: [111] type: [Unknown Type: \
             TCP Packet Flags: SYN: 1 FIN: 1 ACK: 0 PSH: 0 URG: 0 RST: 0] IP opts: [unknown] \
             ignored: [false] triggered: [false] noblock: [unset] blocked: [unset]"
        );
    }

    #[test]
    fn learned_peer_lines_say_what_happened_to_each_probe() {
        let mut e = ev();
        e.kind = EventKind::PeerProbe;
        e.dropped = false;
        let line = |e: &ProbeEvent| refused_line(e, "eth0").unwrap();
        assert_eq!(
            line(&e),
            "portsentry: probe from 10.0.0.2 (TCP SYN/Normal scan TCP port 111 on eth0): learned \
             peer: answered with a SYN cookie; banned only if it completes the handshake"
        );
        e.scan = ScanType::TcpFin;
        assert!(
            line(&e).ends_with("learned peer: reported, not banned (only a handshake completed on a SYN cookie bans it)"),
            "{}",
            line(&e)
        );
        e.protocol = Protocol::Udp;
        e.scan = ScanType::Udp;
        assert!(line(&e).ends_with("learned peer: reported, not banned by a UDP probe"));
    }

    #[test]
    fn ban_line_keeps_the_attackalert_prefix() {
        assert_eq!(
            ban_line(&ev(), "eth0"),
            "attackalert: Host 10.0.0.2 has been blocked via XDP drop on interface: \"eth0\""
        );
    }
}
