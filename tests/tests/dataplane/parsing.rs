//! Parsing: VLAN tags, IPv4 options, IPv6 extension headers, fragments and their evasions,
//! other protocols, and every truncation of every packet kind.

use portsentry_common::ipv6_ext::MAX_CHAIN;
use portsentry_tests::packets::{Ext, Transport};

use super::*;

#[test]
fn vlan_single_and_double_tagged() {
    let x = TestXdp::load(&settings("111", ""));
    assert_eq!(
        x.run(&Packet::tcp("10.7.0.1", 111, SYN).vlan(VLAN, 10).build()),
        XDP_DROP
    );
    assert_eq!(
        x.run(
            &Packet::tcp("10.7.0.2", 111, SYN)
                .vlan(QINQ, 100)
                .vlan(VLAN, 10)
                .build()
        ),
        XDP_DROP
    );
    assert_eq!(
        x.run(
            &Packet::tcp("2001:db8:7::3", 111, SYN)
                .vlan(VLAN, 10)
                .build()
        ),
        XDP_DROP
    );
    // A third tag is beyond what we parse: it passes as non-IP and nothing is counted.
    let triple = Packet::tcp("10.7.0.4", 111, SYN)
        .vlan(QINQ, 1)
        .vlan(VLAN, 2)
        .vlan(VLAN, 3);
    assert_eq!(x.run(&triple.build()), XDP_PASS);
    assert!(!x.is_banned("10.7.0.4"));
    // A banned source stays dropped behind tags.
    assert_eq!(
        x.run(
            &Packet::tcp("10.7.0.1", 22, ACK)
                .vlan(QINQ, 5)
                .vlan(VLAN, 6)
                .build()
        ),
        XDP_DROP
    );
}

#[test]
fn ipv4_options_are_skipped_and_reported() {
    let mut x = TestXdp::load(&settings("111", ""));
    // Record-route option (7), 39 bytes: the largest IHL (15).
    let mut rr = vec![7u8, 39, 4];
    rr.resize(39, 0);
    assert_eq!(
        x.run(&Packet::tcp("10.8.0.1", 111, SYN).ipv4_options(&rr).build()),
        XDP_DROP
    );
    assert_eq!(
        x.run(
            &Packet::tcp("10.8.0.2", 111, SYN)
                .ipv4_options(&[1, 1, 1, 1])
                .build()
        ),
        XDP_DROP
    );
    let ev = x.events();
    assert_eq!(ev.len(), 2);
    assert!(ev
        .iter()
        .all(|e| e.ip_options == Some(true) && e.dst_port == 111));
}

#[test]
fn ipv6_extension_headers_of_every_kind_are_walked() {
    let kinds = [
        vec![Ext::HopByHop],
        vec![Ext::Routing],
        vec![Ext::DestOpts],
        vec![Ext::Fragment {
            offset: 0,
            more: true,
        }],
        vec![Ext::Ah],
        vec![
            Ext::HopByHop,
            Ext::DestOpts,
            Ext::Routing,
            Ext::Fragment {
                offset: 0,
                more: true,
            },
            Ext::Ah,
        ],
    ];
    for (i, exts) in kinds.iter().enumerate() {
        let mut x = TestXdp::load(&settings("111", "54321"));
        let tcp = exts.iter().fold(
            Packet::tcp(&format!("2001:db8:9::{}", i + 1), 111, FIN),
            |p, e| p.ext(*e),
        );
        assert_eq!(x.run(&tcp.build()), XDP_DROP, "TCP behind {exts:?}");
        assert_eq!(x.events()[0].scan, ScanType::TcpFin, "{exts:?}");
        let udp = exts.iter().fold(
            Packet::udp(&format!("2001:db8:8::{}", i + 1), 54321),
            |p, e| p.ext(*e),
        );
        assert_eq!(x.run(&udp.build()), XDP_DROP, "UDP behind {exts:?}");
    }
    // As many extension headers as we walk: the probe behind them is seen. One more: the
    // packet is dropped and counted, since the stack would walk the chain and answer.
    let mut x = TestXdp::load(&settings("111", ""));
    let chain =
        |src: &str, n: usize| (0..n).fold(Packet::tcp(src, 111, SYN), |p, _| p.ext(Ext::DestOpts));
    assert_eq!(x.run(&chain("2001:db8:9::98", MAX_CHAIN).build()), XDP_DROP);
    assert!(
        x.is_banned("2001:db8:9::98"),
        "a probe behind {MAX_CHAIN} headers"
    );
    x.events();
    assert_eq!(
        x.run(&chain("2001:db8:9::99", MAX_CHAIN + 1).build()),
        XDP_DROP
    );
    let unguarded = (0..MAX_CHAIN + 1).fold(Packet::udp("2001:db8:9::99", 53), |p, _| {
        p.ext(Ext::HopByHop)
    });
    assert_eq!(x.run(&unguarded.build()), XDP_DROP, "to any port");
    assert!(!x.is_banned("2001:db8:9::99"), "dropped, never counted");
    assert!(x.events().is_empty());
    let st = x.stats();
    assert_eq!(
        (st.get(Stat::ExtChainsDropped), st.get(Stat::Malformed)),
        (2, 0)
    );
}

/// RFC 1858/3128/7112 evasion: a first fragment too short for its transport header hides
/// the flags (or the ports) in the next fragment, an IPv4 fragment at offset 1 rewrites them
/// after the check, an IPv6 first fragment may push the transport header out of the first
/// fragment. Each is dropped and counted in every mode, whatever the port, and bans nobody.
#[test]
fn fragment_evasion_is_dropped_and_counted() {
    let tiny4 = |src: &str, port: u16| Packet::tcp(src, port, SYN).ipv4_fragment(0, true).l4_len(8);
    let cases: Vec<(&str, Packet)> = vec![
        (
            "IPv4 first fragment, 8 bytes of TCP",
            tiny4("10.12.0.1", 111),
        ),
        (
            "the same padded to Ethernet's 60 bytes",
            tiny4("10.12.0.2", 111).pad_to(60),
        ),
        ("to an unguarded port", tiny4("10.12.0.3", 22)),
        (
            "IPv4 first fragment, 16 bytes of TCP (hping3 -f)",
            Packet::tcp("10.12.0.4", 111, SYN)
                .ipv4_fragment(0, true)
                .l4_len(16),
        ),
        (
            "IPv4 first fragment, 4 bytes of UDP",
            Packet::udp("10.12.0.5", 54321)
                .ipv4_fragment(0, true)
                .l4_len(4),
        ),
        (
            "IPv4 TCP fragment at offset 1",
            Packet::tcp("10.12.0.6", 111, SYN).ipv4_fragment(1, false),
        ),
        (
            "IPv4 UDP fragment at offset 1",
            Packet::udp("10.12.0.7", 53).ipv4_fragment(1, true),
        ),
        (
            "IPv6 first fragment, 8 bytes of TCP",
            Packet::tcp("2001:db8:12::1", 111, SYN)
                .ext(Ext::Fragment {
                    offset: 0,
                    more: true,
                })
                .l4_len(8),
        ),
        (
            "IPv6 first fragment, header chain cut after it",
            Packet::tcp("2001:db8:12::2", 22, SYN)
                .ext(Ext::Fragment {
                    offset: 0,
                    more: true,
                })
                .ext(Ext::DestOpts)
                .l4_len(0),
        ),
        (
            "IPv6 atomic fragment without its UDP header",
            Packet::udp("2001:db8:12::3", 54321)
                .ext(Ext::HopByHop)
                .ext(Ext::Fragment {
                    offset: 0,
                    more: false,
                })
                .l4_len(6),
        ),
    ];
    for detect in [false, true] {
        let mut s = settings("111", "54321");
        if detect {
            s.mode = portsentry::config::settings::Mode::Detect;
        }
        let mut x = TestXdp::load(&s);
        for (name, p) in &cases {
            assert_eq!(x.run(&p.build()), XDP_DROP, "{name} (detect: {detect})");
            assert!(
                !x.is_banned(&p.src.to_string()),
                "{name}: dropped, never counted"
            );
        }
        assert!(x.events().is_empty());
        let st = x.stats();
        assert_eq!(
            (
                st.get(Stat::FragmentsDropped),
                st.get(Stat::Malformed),
                st.get(Stat::Passed),
                st.get(Stat::Dropped),
            ),
            (cases.len() as u64, 0, 0, 0),
            "detect: {detect}"
        );
        assert_eq!(st.packets(), cases.len() as u64);
    }
}

/// Fail open for real traffic: a 3000-byte UDP datagram fragmented at 1500 (a large DNS
/// answer), a first fragment that holds its whole transport header and later fragments at
/// sane offsets all pass, on IPv4 and IPv6; a first fragment holding a whole probe still
/// counts.
#[test]
fn ordinary_fragmented_traffic_passes() {
    let mut x = TestXdp::load(&settings("111", "54321"));
    let passing = [
        // IPv4: 20 + 1480 = 1500; the rest (1528 bytes) at offset 1480 / 8 = 185. (The
        // builder's UDP part is 12 bytes before the payload.)
        Packet::udp("10.13.0.1", 40053)
            .ipv4_fragment(0, true)
            .payload(1480 - 12),
        Packet::udp("10.13.0.1", 40053)
            .ipv4_fragment(185, false)
            .payload(1516),
        // IPv6: 40 + 8 (fragment header) + 1448 = 1496; the rest (1560 bytes) at 181.
        Packet::udp("2001:db8:13::1", 40053)
            .ext(Ext::Fragment {
                offset: 0,
                more: true,
            })
            .payload(1448 - 12),
        Packet::udp("2001:db8:13::1", 40053)
            .ext(Ext::Fragment {
                offset: 181,
                more: false,
            })
            .payload(1548),
        // A TCP first fragment with its whole header, to a service port.
        Packet::tcp("10.13.0.2", 443, ACK)
            .ipv4_fragment(0, true)
            .payload(1000),
        // The smallest sane later fragment.
        Packet::tcp("10.13.0.3", 111, SYN).ipv4_fragment(2, false),
    ];
    for p in &passing {
        assert_eq!(x.run(&p.build()), XDP_PASS, "{p:?}");
    }
    let st = x.stats();
    assert_eq!(
        (
            st.get(Stat::Passed),
            st.get(Stat::FragmentsDropped),
            st.get(Stat::Malformed)
        ),
        (passing.len() as u64, 0, 0)
    );
    // A first fragment that holds the whole probe is one, on both families.
    for p in [
        Packet::udp("10.13.0.4", 54321)
            .ipv4_fragment(0, true)
            .payload(1000),
        Packet::tcp("2001:db8:13::4", 111, SYN).ext(Ext::Fragment {
            offset: 0,
            more: true,
        }),
    ] {
        assert_eq!(x.run(&p.build()), XDP_DROP);
        assert!(x.is_banned(&p.src.to_string()));
    }
    assert_eq!(x.events().len(), 2);
}

#[test]
fn non_first_fragments_are_never_parsed_as_transport() {
    let x = TestXdp::load(&settings("111", "54321"));
    // Payload bytes that look like a SYN to port 111 must not count.
    let v4 = Packet::tcp("10.9.0.1", 111, SYN).ipv4_fragment(3, false);
    let v6 = Packet::tcp("2001:db8:10::1", 111, SYN).ext(Ext::Fragment {
        offset: 3,
        more: false,
    });
    let udp6 = Packet::udp("2001:db8:10::2", 54321).ext(Ext::Fragment {
        offset: 1,
        more: true,
    });
    for p in [&v4, &v6, &udp6] {
        assert_eq!(x.run(&p.build()), XDP_PASS);
    }
    assert!(
        !x.is_banned("10.9.0.1")
            && !x.is_banned("2001:db8:10::1")
            && !x.is_banned("2001:db8:10::2")
    );
    // A first fragment (offset 0, MF set) does carry the ports.
    assert_eq!(
        x.run(
            &Packet::tcp("10.9.0.3", 111, SYN)
                .ipv4_fragment(0, true)
                .build()
        ),
        XDP_DROP
    );
    // Fragments of a banned source are dropped: the ban check needs only L3.
    assert_eq!(
        x.run(
            &Packet::tcp("10.9.0.3", 80, ACK)
                .ipv4_fragment(9, false)
                .build()
        ),
        XDP_DROP
    );
}

#[test]
fn other_protocols_pass_untouched() {
    let x = TestXdp::load(&settings("111", ""));
    assert_eq!(
        x.run(&Packet::new("10.10.0.1", Transport::Other(1)).build()),
        XDP_PASS
    );
    assert_eq!(
        x.run(&Packet::new("2001:db8::1", Transport::Other(58)).build()),
        XDP_PASS
    );
    let mut arp = Packet::tcp("10.10.0.1", 111, SYN).build();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(x.run(&arp), XDP_PASS);
    let st = x.stats();
    assert_eq!((st.get(Stat::Malformed), st.get(Stat::Passed)), (0, 3));
}

/// Every prefix of every packet kind: no abort; a prefix that cuts into a header passes (fail
/// open, counted as malformed), one that still holds the whole transport header is a probe;
/// and a banned source drops as soon as its source address is complete. A first fragment
/// cut inside its transport header (or, on IPv6, anywhere after its fragment header) is the
/// tiny-fragment trick: dropped, counted as such, never a probe.
#[test]
fn every_truncation_of_every_packet_kind() {
    let first_fragment = Ext::Fragment {
        offset: 0,
        more: true,
    };
    // (name, packet, bytes to know the source, bytes to hold the whole transport header,
    //  for first fragments: from how many bytes a cut is dropped as a tiny fragment)
    let kinds: Vec<(&str, Packet, usize, usize, Option<usize>)> = vec![
        ("tcp4", Packet::tcp("10.11.0.1", 111, SYN), 34, 54, None),
        ("udp4", Packet::udp("10.11.0.1", 111), 34, 42, None),
        (
            "tcp4+opts",
            Packet::tcp("10.11.0.1", 111, SYN).ipv4_options(&[1, 1, 1, 1]),
            34,
            58,
            None,
        ),
        (
            "tcp4+vlan2",
            Packet::tcp("10.11.0.1", 111, SYN)
                .vlan(QINQ, 1)
                .vlan(VLAN, 2),
            42,
            62,
            None,
        ),
        (
            "tcp4 first fragment",
            Packet::tcp("10.11.0.1", 111, SYN).ipv4_fragment(0, true),
            34,
            54,
            Some(34),
        ),
        (
            "tcp6",
            Packet::tcp("2001:db8:11::1", 111, SYN),
            54,
            74,
            None,
        ),
        ("udp6", Packet::udp("2001:db8:11::1", 111), 54, 62, None),
        (
            "tcp6+ext",
            Packet::tcp("2001:db8:11::1", 111, SYN)
                .ext(Ext::HopByHop)
                .ext(Ext::DestOpts)
                .ext(Ext::Ah),
            54,
            54 + 16 + 16 + 16 + 20,
            None,
        ),
        (
            "tcp6+ext first fragment",
            Packet::tcp("2001:db8:11::1", 111, SYN)
                .ext(Ext::HopByHop)
                .ext(first_fragment)
                .ext(Ext::Ah),
            54,
            54 + 16 + 8 + 16 + 20,
            Some(54 + 16 + 8),
        ),
    ];
    for (name, packet, source_len, probe_len, tiny_from) in kinds {
        let bytes = packet.build();
        let src = packet.src;
        let mut fresh = TestXdp::load(&settings("111", "111"));
        let banned = TestXdp::load(&settings("111", "111"));
        assert_eq!(banned.run(&bytes), XDP_DROP, "{name}: full packet bans");
        let mut tiny = 0;
        for len in 0..=bytes.len() {
            let cut = &bytes[..len];
            let is_tiny = len < probe_len && tiny_from.is_some_and(|from| len >= from);
            let want = if len >= probe_len || is_tiny {
                XDP_DROP
            } else {
                XDP_PASS
            };
            match fresh.try_run(cut) {
                Ok(v) => assert_eq!(v, want, "{name} cut to {len}"),
                // The kernel refuses test input shorter than an Ethernet header.
                Err(_) => assert!(len < 14, "{name} cut to {len}: test run failed"),
            }
            if is_tiny {
                tiny += 1;
                assert!(!fresh.is_banned(&src.to_string()), "{name} cut to {len}");
            } else if want == XDP_DROP {
                // Forget the probe so the next prefix starts clean.
                assert!(
                    fresh.dp.remove_ban(src).unwrap(),
                    "{name} cut to {len}: banned"
                );
                fresh.events();
            }
            if len >= source_len {
                assert_eq!(
                    banned.run(cut),
                    XDP_DROP,
                    "{name} cut to {len}: banned source drops"
                );
            } else if len >= 14 {
                assert_eq!(
                    banned.run(cut),
                    XDP_PASS,
                    "{name} cut to {len}: no source yet"
                );
            }
        }
        let st = fresh.stats();
        assert!(
            st.get(Stat::Malformed) > 0,
            "{name}: truncations counted as malformed"
        );
        assert_eq!(st.get(Stat::FragmentsDropped), tiny, "{name}");
    }
}
