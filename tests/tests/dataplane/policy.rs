//! Policy: the allowlist and its prefilter, network bans, detect mode and shadow bans, the
//! per-protocol block switches and a full ban table.

use portsentry::{
    config::settings::Mode, daemon::guard, detect::events::EventKind, net::cidr::Cidr,
};
use portsentry_common::ban_flags;

use super::*;

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

#[test]
fn allowlisted_sources_are_never_counted_or_banned() {
    let allow = cidrs(&["10.2.0.0/16", "2001:db8:a::/48"]);
    let mut x = TestXdp::load_with(&settings("111", "54321"), &allow, &[], None);
    for src in ["10.2.9.9", "2001:db8:a::5"] {
        assert_eq!(
            x.run(&Packet::tcp(src, 111, SYN).build()),
            XDP_PASS,
            "{src}"
        );
        assert_eq!(x.run(&Packet::udp(src, 54321).build()), XDP_PASS, "{src}");
        assert!(!x.is_banned(src));
        assert!(
            x.dp.hits(src.parse().unwrap()).unwrap().is_none(),
            "not even counted"
        );
    }
    assert_eq!(x.stats().get(Stat::Allowlisted), 4);
    // Reported as ignored (PortSentry's `ignored: [true]` line), throttled: one event for
    // four probes in the same 100 ms, and never a probe or ban event.
    let events = x.events();
    assert!(
        !events.is_empty() && events.iter().all(|e| e.kind == EventKind::Ignored),
        "{events:?}"
    );
    assert!(events.len() < 4, "throttled: {}", events.len());
    // Just outside the allowed networks: banned.
    assert_eq!(x.run(&Packet::tcp("10.3.0.1", 111, SYN).build()), XDP_DROP);
    assert_eq!(
        x.run(&Packet::tcp("2001:db8:b::1", 111, SYN).build()),
        XDP_DROP
    );
}

/// The allowlist prefilter (PS_ALLOW_FILTER) never hides a covered source: every prefix
/// length class of both families, an IPv4-mapped entry, and /0.
#[test]
fn the_allowlist_prefilter_never_hides_a_covered_source() {
    let allow = cidrs(&[
        "192.0.2.7/32",
        "198.51.100.0/24",
        "172.16.0.0/12",
        "::ffff:203.0.113.9",
        "2001:db8:1::7/128",
        "2001:db8:2:3::/64",
        "2002::/16",
    ]);
    let mut x = TestXdp::load_with(&settings("111", ""), &allow, &[], None);
    let covered = [
        "192.0.2.7",
        "198.51.100.200",
        "172.16.0.1",
        "172.31.255.254",
        "172.20.9.9",
        "203.0.113.9",
        "2001:db8:1::7",
        "2001:db8:2:3::abcd",
        "2002:ffff::1",
    ];
    for (i, src) in covered.iter().enumerate() {
        assert_eq!(
            x.run(&Packet::tcp(src, 111, SYN).build()),
            XDP_PASS,
            "{src}"
        );
        assert!(!x.is_banned(src), "{src}");
        assert!(x.dp.hits(src.parse().unwrap()).unwrap().is_none(), "{src}");
        assert_eq!(x.stats().get(Stat::Allowlisted), i as u64 + 1, "{src}");
    }
    let events = x.events();
    assert!(
        !events.is_empty() && events.iter().all(|e| e.kind == EventKind::Ignored),
        "{events:?}"
    );
    // Same /16 (IPv4) or /32 (IPv6) but not covered: still probes, banned.
    for src in [
        "192.0.2.8",
        "198.51.101.1",
        "172.32.0.1",
        "203.0.113.10",
        "2001:db8:1::8",
        "2001:db8:2:4::1",
        "2003::1",
    ] {
        assert_eq!(
            x.run(&Packet::tcp(src, 111, SYN).build()),
            XDP_DROP,
            "{src}"
        );
        assert!(x.is_banned(src), "{src}");
    }
    assert_eq!(x.stats().get(Stat::Allowlisted), covered.len() as u64);
    // 0.0.0.0/0 covers every IPv4 source, no IPv6 one.
    let allow = cidrs(&["0.0.0.0/0"]);
    let x = TestXdp::load_with(&settings("111", ""), &allow, &[], None);
    for src in ["8.8.8.8", "10.9.9.9", "223.254.1.1", "1.0.0.1"] {
        assert_eq!(
            x.run(&Packet::tcp(src, 111, SYN).build()),
            XDP_PASS,
            "{src}"
        );
    }
    assert_eq!(x.stats().get(Stat::Allowlisted), 4);
    assert_eq!(
        x.run(&Packet::tcp("2001:db8::1", 111, SYN).build()),
        XDP_DROP
    );
}

/// A probe whose prefilter bit is clear skips the trie: an entry written into the trie
/// without its bits protects nobody (that is how the skip shows), while a configuration
/// reload that adds an entry sets its bits first and protects at once.
#[test]
fn a_clear_allowlist_prefilter_bit_skips_the_trie_and_a_reload_protects_at_once() {
    let allow = cidrs(&["10.2.0.0/16", "2001:db8:a::/48"]);
    let mut x = TestXdp::load_with(&settings("111", ""), &allow, &[], None);
    for net in ["10.77.0.0/16", "2a00:77::/32"] {
        x.dp.insert_allow_trie_only_for_tests(&net.parse().unwrap())
            .unwrap();
    }
    for src in ["10.77.1.1", "2a00:77::1"] {
        assert_eq!(
            x.run(&Packet::tcp(src, 111, SYN).build()),
            XDP_DROP,
            "{src}"
        );
        assert!(x.is_banned(src), "{src}: the trie was not asked");
    }
    assert_eq!(x.stats().get(Stat::Allowlisted), 0);
    let allow = cidrs(&[
        "10.2.0.0/16",
        "2001:db8:a::/48",
        "10.77.0.0/16",
        "2a00:77::/32",
    ]);
    x.configure(&settings("111", ""), &allow, &[]);
    for src in ["10.77.1.2", "2a00:77::2"] {
        assert_eq!(
            x.run(&Packet::tcp(src, 111, SYN).build()),
            XDP_PASS,
            "{src}"
        );
        assert!(!x.is_banned(src), "{src}");
    }
    assert_eq!(x.stats().get(Stat::Allowlisted), 2);
}

#[test]
fn cidr_bans_drop_whole_networks_v4_and_v6() {
    let bans = cidrs(&["198.51.100.0/24", "2001:db8:bad::/48"]);
    let x = TestXdp::load_with(&settings("111", ""), &[], &bans, None);
    for src in ["198.51.100.7", "2001:db8:bad::7"] {
        assert_eq!(
            x.run(&Packet::tcp(src, 443, ACK).build()),
            XDP_DROP,
            "{src}"
        );
        assert_eq!(x.run(&Packet::udp(src, 53).build()), XDP_DROP, "{src}");
    }
    assert_eq!(
        x.run(&Packet::tcp("198.51.101.7", 443, ACK).build()),
        XDP_PASS
    );
    assert_eq!(
        x.run(&Packet::tcp("2001:db8:bae::7", 443, ACK).build()),
        XDP_PASS
    );
    assert_eq!(x.stats().get(Stat::Dropped), 4);
}

/// PS_CONFIG's one writer composes the block: a reconfiguration (a reload) takes the settings'
/// part, the peer memory included, and keeps the ban book's banned-network count; an allowlist
/// refresh changes only the allowlist's count.
#[test]
fn reconfiguring_keeps_the_banned_networks_and_takes_the_settings() {
    let bans = cidrs(&["198.51.100.0/24", "2001:db8:bad::/48"]);
    let mut x = TestXdp::load_with(&settings("111", ""), &[], &bans, None);
    let mut s = settings("111", "");
    s.peer_memory = Some(std::time::Duration::from_secs(90));
    s.scan_trigger = 4;
    x.configure(&s, &cidrs(&["10.2.0.0/16"]), &[]);
    let c = x.dp.config().unwrap();
    assert_eq!((c.ban_cidr_count, c.allow_cidr_count), (2, 1));
    assert_eq!((c.peer_ttl_ns, c.scan_trigger), (s.peer_ttl_ns(), 4));
    assert_eq!(c.peer_ttl_ns, 90_000_000_000);
    let allow = cidrs(&["10.2.0.0/16", "10.3.0.0/16", "2001:db8:a::/48"]);
    let written = guard::write_allowlist(&mut x.dp, &allow).unwrap();
    assert_eq!(written.count, 3);
    let c = x.dp.config().unwrap();
    assert_eq!(
        (c.ban_cidr_count, c.allow_cidr_count),
        (2, 3),
        "the banned networks stay counted"
    );
    assert_eq!((c.peer_ttl_ns, c.scan_trigger), (90_000_000_000, 4));
    assert_eq!(
        x.run(&Packet::tcp("198.51.100.7", 443, ACK).build()),
        XDP_DROP,
        "the network ban still drops"
    );
    assert_eq!(x.run(&Packet::tcp("10.3.0.1", 111, SYN).build()), XDP_PASS);
}

#[test]
fn detect_mode_counts_and_reports_but_never_drops() {
    let mut s = settings("111", "");
    s.mode = Mode::Detect;
    let mut x = TestXdp::load(&s);
    let src = "10.4.0.1";
    assert_eq!(x.run(&Packet::tcp(src, 111, SYN).build()), XDP_PASS);
    assert!(x.is_banned(src), "the would-be ban is recorded");
    assert_eq!(x.run(&Packet::tcp(src, 22, SYN).build()), XDP_PASS);
    assert_eq!(x.run(&Packet::tcp(src, 111, FIN).build()), XDP_PASS);
    let st = x.stats();
    assert_eq!((st.get(Stat::Dropped), st.get(Stat::DroppedWould)), (0, 3));
    let ev = x.events();
    assert_eq!(
        ev.len(),
        2,
        "the ban and the later probe are both reported: {ev:?}"
    );
    assert!(ev.iter().all(|e| e.noblock && !e.dropped));
    assert_eq!((ev[0].kind, ev[1].kind), (EventKind::Ban, EventKind::Probe));
}

#[test]
fn shadow_bans_never_drop_in_block_mode_and_a_new_probe_replaces_them() {
    let mut s = settings("111", "");
    s.mode = Mode::Detect;
    let mut x = TestXdp::load(&s);
    let src = "10.4.0.9";
    assert_eq!(x.run(&Packet::tcp(src, 111, SYN).build()), XDP_PASS);
    let entry = x.dp.ban(src.parse().unwrap()).unwrap().unwrap();
    assert_eq!(
        entry.flags & ban_flags::SHADOW,
        ban_flags::SHADOW,
        "detect mode bans are shadows"
    );
    s.mode = Mode::Block;
    x.configure(&s, &[], &[]);
    assert_eq!(
        x.run(&Packet::tcp(src, 22, SYN).build()),
        XDP_PASS,
        "a shadow ban does not drop in block mode"
    );
    assert_eq!(x.stats().get(Stat::Dropped), 0);
    assert_eq!(x.run(&Packet::tcp(src, 111, SYN).build()), XDP_DROP);
    let entry = x.dp.ban(src.parse().unwrap()).unwrap().unwrap();
    assert_eq!(
        entry.flags & ban_flags::SHADOW,
        0,
        "the new probe made a real ban"
    );
    assert_eq!(x.run(&Packet::tcp(src, 22, SYN).build()), XDP_DROP);
}

#[test]
fn an_allowlisted_address_inside_a_banned_network_passes() {
    let s = settings("111", "");
    let net: Cidr = "198.51.100.0/24".parse().unwrap();
    let gw: Cidr = "198.51.100.1".parse().unwrap();
    let x = TestXdp::load_with(&s, &[gw], &[net], None);
    assert_eq!(
        x.run(&Packet::tcp("198.51.100.1", 443, ACK).build()),
        XDP_PASS
    );
    assert_eq!(
        x.run(&Packet::tcp("198.51.100.2", 443, ACK).build()),
        XDP_DROP
    );
}

#[test]
fn block_tcp_and_block_udp_switch_independently() {
    let mut s = settings("111", "54321");
    s.block_tcp = false;
    let mut x = TestXdp::load(&s);
    assert_eq!(
        x.run(&Packet::tcp("10.5.0.1", 111, SYN).build()),
        XDP_PASS,
        "TCP probes only logged"
    );
    assert!(!x.is_banned("10.5.0.1"));
    let ev = x.events();
    assert_eq!(
        (ev.len(), ev[0].kind, ev[0].noblock),
        (1, EventKind::Probe, true)
    );
    assert_eq!(
        x.run(&Packet::udp("10.5.0.2", 54321).build()),
        XDP_DROP,
        "UDP still blocks"
    );

    let mut s = settings("111", "54321");
    s.block_udp = false;
    let x = TestXdp::load(&s);
    assert_eq!(x.run(&Packet::udp("10.5.0.3", 54321).build()), XDP_PASS);
    assert!(!x.is_banned("10.5.0.3"));
    assert_eq!(x.run(&Packet::tcp("10.5.0.4", 111, SYN).build()), XDP_DROP);
}

#[test]
fn a_full_ban_table_keeps_old_bans_and_reports_new_ones() {
    let mut x = TestXdp::load_with(&settings("111", ""), &[], &[], Some(4));
    for i in 1..=4 {
        assert_eq!(
            x.run(&Packet::tcp(&format!("10.6.0.{i}"), 111, SYN).build()),
            XDP_DROP
        );
    }
    // The fifth trigger cannot be stored, but the probe itself is still dropped and reported.
    assert_eq!(x.run(&Packet::tcp("10.6.0.5", 111, SYN).build()), XDP_DROP);
    assert!(!x.is_banned("10.6.0.5"));
    assert_eq!(x.stats().get(Stat::BanTableFull), 1);
    let ev = x.events();
    assert_eq!(ev.last().map(|e| e.kind), Some(EventKind::BanTableFull));
    for i in 1..=4 {
        assert_eq!(
            x.run(&Packet::tcp(&format!("10.6.0.{i}"), 22, ACK).build()),
            XDP_DROP,
            "old ban {i}"
        );
    }
}
