//! Log lines in PortSentry 2.x's exact wording, so existing parsers (fail2ban's portsentry
//! filter, logwatch scripts) keep working.

use portsentry_common::ScanType;

use crate::events::{EventKind, ProbeEvent};

/// `Scan from: [...] (...) protocol: [...] ...`, PortSentry 2.x's per-probe line.
pub fn scan_line(ev: &ProbeEvent, trigger: u64, resolved: Option<&str>) -> String {
    let addr = ev.src.to_string();
    let ip_opts = match ev.ip_options {
        Some(true) => "set",
        Some(false) => "not set",
        None => "unknown",
    };
    format!(
        "Scan from: [{addr}] ({}) protocol: [{}] port: [{}] type: [{}] IP opts: [{ip_opts}] \
         ignored: [false] triggered: [{}] noblock: [{}] blocked: [{}]",
        resolved.unwrap_or(&addr),
        ev.protocol.name(),
        ev.dst_port,
        scan_type_text(ev),
        ev.count >= trigger.max(1),
        ev.noblock,
        is_blocked(ev),
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

fn scan_type_text(ev: &ProbeEvent) -> String {
    match ev.scan {
        ScanType::TcpOther => {
            let f = ev.tcp_flags;
            let bit = |b: u8| u8::from(f & b != 0);
            format!(
                "Unknown Type: TCP Packet Flags: SYN: {} FIN: {} ACK: {} PSH: {} URG: {} RST: {}",
                bit(0x02),
                bit(0x01),
                bit(0x10),
                bit(0x08),
                bit(0x20),
                bit(0x04)
            )
        }
        other => other.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Protocol;

    fn ev() -> ProbeEvent {
        ProbeEvent {
            kind: EventKind::Ban,
            src: "10.0.0.2".parse().unwrap(),
            dst_port: 111,
            protocol: Protocol::Tcp,
            scan: ScanType::TcpSyn,
            tcp_flags: 0x02,
            count: 1,
            ifindex: 2,
            ip_options: Some(false),
            dropped: true,
            noblock: false,
            timestamp_ns: 0,
        }
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
        e.tcp_flags = 0x03;
        e.noblock = true;
        assert_eq!(
            scan_line(&e, 3, None),
            "Scan from: [2001:db8::2] (2001:db8::2) protocol: [TCP] port: [111] type: [Unknown Type: \
             TCP Packet Flags: SYN: 1 FIN: 1 ACK: 0 PSH: 0 URG: 0 RST: 0] IP opts: [unknown] \
             ignored: [false] triggered: [false] noblock: [true] blocked: [false]"
        );
    }

    #[test]
    fn ban_line_keeps_the_attackalert_prefix() {
        assert_eq!(
            ban_line(&ev(), "eth0"),
            "attackalert: Host 10.0.0.2 has been blocked via XDP drop on interface: \"eth0\""
        );
    }
}
