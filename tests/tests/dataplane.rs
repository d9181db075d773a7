//! Data-plane tests: the real XDP object under BPF_PROG_TEST_RUN.

use portsentry_common::{ban_origin, ScanType, Stat};
use portsentry_tests::{
    packets::{Packet, ACK, FIN, PSH, RST, SYN, URG},
    xdp::{settings, TestXdp, XDP_DROP, XDP_PASS},
};

#[test]
fn syn_to_guarded_port_bans_and_drops_then_everything_from_it_drops() {
    let mut x = TestXdp::load(&settings("111", ""));
    let scanner = "10.0.0.2";

    assert_eq!(
        x.run(&Packet::tcp(scanner, 111, SYN).build()),
        XDP_DROP,
        "trigger probe is dropped"
    );
    let ban =
        x.dp.ban(scanner.parse().unwrap())
            .unwrap()
            .expect("source is in the ban map");
    assert_eq!(
        (ban.port, ban.proto, ban.scan_type),
        (111, 6, ScanType::TcpSyn as u8)
    );
    assert_eq!(ban.origin, ban_origin::DETECTED);
    assert!(
        ban.expires_at_ns > ban.banned_at_ns,
        "default ban TTL applies"
    );

    // The next packet from it, to any port, even an ACK to an open service, is dropped.
    assert_eq!(x.run(&Packet::tcp(scanner, 22, ACK).build()), XDP_DROP);
    assert_eq!(x.run(&Packet::udp(scanner, 53).build()), XDP_DROP);
    assert_eq!(
        x.dp.ban(scanner.parse().unwrap()).unwrap().unwrap().drops,
        2,
        "per-ban drop counter"
    );

    // Another source passes.
    assert_eq!(x.run(&Packet::tcp("10.0.0.3", 22, SYN).build()), XDP_PASS);

    let events = x.events();
    assert_eq!(
        events.len(),
        1,
        "one event for the ban, none per dropped packet: {events:?}"
    );
    assert_eq!(events[0].src.to_string(), scanner);
    assert!(events[0].dropped);
    let stats = x.stats();
    assert_eq!(
        (
            stats.get(Stat::Bans),
            stats.get(Stat::Dropped),
            stats.get(Stat::Passed)
        ),
        (1, 3, 1)
    );
}

#[test]
fn unguarded_ports_and_non_probes_pass() {
    let mut x = TestXdp::load(&settings("111", "54321"));
    assert_eq!(x.run(&Packet::tcp("10.0.0.2", 22, SYN).build()), XDP_PASS);
    assert_eq!(x.run(&Packet::udp("10.0.0.2", 53).build()), XDP_PASS);
    // ACK or RST never count, as in PortSentry.
    assert_eq!(
        x.run(&Packet::tcp("10.0.0.2", 111, SYN | ACK).build()),
        XDP_PASS
    );
    assert_eq!(x.run(&Packet::tcp("10.0.0.2", 111, RST).build()), XDP_PASS);
    assert!(!x.is_banned("10.0.0.2"));
    assert!(x.events().is_empty());
}

#[test]
fn each_scan_type_is_classified_on_ipv4_and_ipv6() {
    let cases = [
        (SYN, ScanType::TcpSyn),
        (FIN, ScanType::TcpFin),
        (0, ScanType::TcpNull),
        (FIN | PSH | URG, ScanType::TcpXmas),
        (SYN | FIN, ScanType::TcpOther),
    ];
    for (i, (flags, want)) in cases.into_iter().enumerate() {
        for src in [
            format!("10.0.1.{}", i + 1),
            format!("2001:db8:1::{}", i + 1),
        ] {
            let mut x = TestXdp::load(&settings("111", ""));
            assert_eq!(
                x.run(&Packet::tcp(&src, 111, flags).build()),
                XDP_DROP,
                "{src} flags {flags:#x}"
            );
            let ev = x.events();
            assert_eq!(ev.len(), 1);
            assert_eq!(ev[0].scan, want, "{src} flags {flags:#x}");
            assert_eq!(ev[0].src.to_string(), src);
            assert_eq!(
                ev[0].ip_options,
                if src.contains(':') { None } else { Some(false) }
            );
        }
    }
    let mut x = TestXdp::load(&settings("", "54321"));
    assert_eq!(x.run(&Packet::udp("2001:db8::9", 54321).build()), XDP_DROP);
    assert_eq!(x.events()[0].scan, ScanType::Udp);
}
