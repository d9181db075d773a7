use super::*;
use crate::detect::events::Protocol;

/// The fixture ban of 10.0.0.2 ([`ProbeEvent::example`]).
fn ev() -> ProbeEvent {
    ProbeEvent::example("10.0.0.2")
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
        scan_line(&ev(), 1, None),
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

/// The lines the hooks and the prefix bans hand facts for: byte for byte as before they
/// were worded here (fail2ban and logcheck match the `attackalert:` prefix and wording).
#[test]
fn network_and_response_lines_are_byte_exact() {
    let prefix: Cidr = "2001:db8:1::/64".parse().unwrap();
    let blocked = |cause| {
        network_blocked_line(&NetworkBlocked {
            prefix,
            iface: "eth0",
            cause,
            folded: 3,
        })
    };
    assert_eq!(
        blocked(PrefixCause::Bans(4)),
        "attackalert: Network 2001:db8:1::/64 has been blocked via XDP drop on interface: \"eth0\" \
         (3 of its addresses were banned; their bans are folded into it)"
    );
    assert!(blocked(PrefixCause::Probes(9)).ends_with(
        "(9 probes from its addresses within the window; 3 address ban(s) folded into it)"
    ));
    assert!(blocked(PrefixCause::Prefixes(2))
        .ends_with("(2 of its narrower prefixes held bans; 3 ban(s) folded into it)"));
    assert_eq!(
        prefix_refused_line(
            PrefixCause::Bans(4),
            &prefix,
            "it holds allowlisted 2001:db8:1::1"
        ),
        "portsentry: 4 addresses of 2001:db8:1::/64 banned; the prefix itself is not banned: \
         it holds allowlisted 2001:db8:1::1"
    );
    let target: IpAddr = "192.0.2.7".parse().unwrap();
    let command = "/sbin/route add -host 192.0.2.7 reject";
    assert_eq!(
        response_line(&Response::DroppedRoute { target, command }),
        "attackalert: Host 192.0.2.7 has been blocked via dropped route using command: \
         \"/sbin/route add -host 192.0.2.7 reject\""
    );
    assert_eq!(
        response_line(&Response::ExternalCommand {
            target,
            command: "/bin/true"
        }),
        "attackalert: External command run for host: 192.0.2.7 using command: \"/bin/true\""
    );
    let wrappers = |already_present| {
        response_line(&Response::Wrappers {
            target,
            entry: "ALL: 192.0.2.7",
            already_present,
        })
    };
    assert_eq!(
        wrappers(false),
        "attackalert: Host 192.0.2.7 has been blocked via wrappers with string: \"ALL: 192.0.2.7\""
    );
    assert_eq!(
        wrappers(true),
        "attackalert: Host 192.0.2.7 has been blocked via wrappers with string: \"ALL: 192.0.2.7\" \
         (already present)"
    );
}
