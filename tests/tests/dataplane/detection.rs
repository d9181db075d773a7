//! Detection end to end in the kernel: a probe of a guarded port bans its source and drops it,
//! what is not a probe passes, every scan type is named, and the ban prefilters never hide a
//! ban.

use super::*;

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
        (111, IpProto::Tcp as u8, ScanType::TcpSyn as u8)
    );
    assert_eq!(ban.origin, BanOrigin::Detected as u8);
    assert!(
        i128::from(ban.expires_at_ns) > i128::from(ban.banned_at_ns),
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

/// The ban prefilters (PS_BAN_FILTER from userspace, PS_BAN_FILTER_KERNEL from the program)
/// let most packets skip the ban table; they must never hide a ban: every address banned from
/// userspace (IPv4 and IPv6, thousands, so many share words) and every ban the program makes
/// drops from the next packet on, and an unbanned neighbour of each still passes.
#[test]
fn the_ban_prefilter_never_hides_a_ban() {
    use std::net::IpAddr;

    use portsentry_common::BanEntry;

    let mut x = TestXdp::load(&settings("111", ""));
    let entry = BanEntry {
        origin: BanOrigin::Manual as u8,
        ..Default::default()
    };
    let banned: Vec<IpAddr> = (0..3000u32)
        .map(|i| {
            if i % 2 == 0 {
                IpAddr::from([10, 20, (i >> 8) as u8, i as u8])
            } else {
                IpAddr::from([0x2001, 0xdb8, 0x20, 0, 0, 0, (i >> 16) as u16, i as u16])
            }
        })
        .collect();
    for addr in &banned {
        x.dp.insert_ban(*addr, &entry).unwrap();
    }
    for addr in &banned {
        let p = Packet::tcp(&addr.to_string(), 443, ACK);
        assert_eq!(x.run(&p.build()), XDP_DROP, "{addr}");
    }
    // A ban the program makes itself (PS_BAN_FILTER_KERNEL) drops the next packet too.
    assert_eq!(x.run(&Packet::tcp("10.21.0.1", 111, SYN).build()), XDP_DROP);
    assert_eq!(x.run(&Packet::tcp("10.21.0.1", 443, ACK).build()), XDP_DROP);
    assert_eq!(
        x.run(&Packet::tcp("2001:db8:21::1", 111, SYN).build()),
        XDP_DROP
    );
    assert_eq!(
        x.run(&Packet::tcp("2001:db8:21::1", 443, ACK).build()),
        XDP_DROP
    );
    // Unbanned sources pass, whether or not their prefilter bit happens to be set.
    for i in 0..200u8 {
        let p = Packet::tcp(&format!("10.22.0.{i}"), 443, ACK);
        assert_eq!(x.run(&p.build()), XDP_PASS);
    }
    // A lifted ban stops dropping although its bit stays set.
    x.dp.remove_ban(banned[0]).unwrap();
    assert_eq!(
        x.run(&Packet::tcp(&banned[0].to_string(), 443, ACK).build()),
        XDP_PASS
    );
}
