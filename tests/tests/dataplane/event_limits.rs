//! Kernel event limits (`portsentry-ebpf/src/limit.rs`): counted, never silent.

use portsentry::detect::events::EventKind;

use super::*;

/// Beyond its trigger (and the EVENTS_BEYOND_TRIGGER after it) a source's probe events go
/// out only at powers of two of its count; the rest are counted as suppressed.
#[test]
fn beyond_the_trigger_only_powers_of_two_go_out() {
    let mut s = settings("111", "");
    s.scan_trigger = 3;
    s.block_tcp = false; // every probe is only reported, never banned
    let mut x = TestXdp::load(&s);
    for _ in 0..20 {
        assert_eq!(x.run(&Packet::tcp("10.30.0.1", 111, SYN).build()), XDP_PASS);
    }
    let counts: Vec<u64> = x.events().iter().map(|e| e.count).collect();
    assert_eq!(counts, [1, 2, 3, 4, 5, 6, 7, 8, 16]);
    let st = x.stats();
    assert_eq!(st.get(Stat::EventsSuppressed), 11);
    assert_eq!(st.get(Stat::ProbesSyn), 20, "every probe still counted");
    assert_eq!(st.get(Stat::EventsLost), 0);
}

/// A flood of one-probe sources: at most the bucket's burst (plus what refills meanwhile)
/// goes out, the rest is counted; a ban's event always goes out.
#[test]
fn a_flood_of_sources_is_capped_per_cpu_and_bans_still_report() {
    let mut s = settings("111", "");
    s.scan_trigger = 2;
    let mut x = TestXdp::load(&s);
    let flood = 2_000u32;
    for i in 0..flood {
        let src = format!("10.31.{}.{}", i >> 8, i & 255);
        assert_eq!(x.run(&Packet::tcp(&src, 111, SYN).build()), XDP_PASS);
    }
    let delivered = x.events().len() as u64;
    let st = x.stats();
    let suppressed = st.get(Stat::EventsSuppressed);
    assert_eq!(
        delivered + suppressed,
        u64::from(flood),
        "each counted once"
    );
    assert!(
        delivered >= u64::from(portsentry_common::EVENT_BURST) && suppressed > 0,
        "{delivered} delivered, {suppressed} suppressed"
    );
    assert_eq!(st.get(Stat::EventsLost), 0);
    // The bucket is empty; a real scanner's ban event still goes out.
    x.run(&Packet::tcp("10.32.0.1", 111, SYN).build());
    assert_eq!(x.run(&Packet::tcp("10.32.0.1", 111, SYN).build()), XDP_DROP);
    let bans = x.events_of(EventKind::Ban);
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].src.to_string(), "10.32.0.1");
}

/// Issue 25, item 8: with the global bucket emptied by a flood and the ban table full, a
/// real scanner's table-full event still goes out (the daemon makes room and bans it);
/// before, it waited in the bucket with the flood's and was held back.
#[test]
fn a_table_full_event_passes_an_empty_bucket() {
    let mut s = settings("111", "");
    s.scan_trigger = 2;
    let mut x = TestXdp::load_with(&s, &[], &[], Some(4));
    for i in 1..=4 {
        let src = format!("10.33.0.{i}");
        x.run(&Packet::tcp(&src, 111, SYN).build());
        assert_eq!(x.run(&Packet::tcp(&src, 111, SYN).build()), XDP_DROP);
    }
    for i in 0..2_000u32 {
        let src = format!("10.34.{}.{}", i >> 8, i & 255);
        x.run(&Packet::tcp(&src, 111, SYN).build());
    }
    assert!(
        x.stats().get(Stat::EventsSuppressed) > 0,
        "the bucket is empty"
    );
    x.run(&Packet::tcp("10.35.0.1", 111, SYN).build());
    assert_eq!(x.run(&Packet::tcp("10.35.0.1", 111, SYN).build()), XDP_DROP);
    let full = x.events_of(EventKind::BanTableFull);
    assert_eq!(full.len(), 1, "{full:?}");
    assert_eq!(full[0].src.to_string(), "10.35.0.1");
}
