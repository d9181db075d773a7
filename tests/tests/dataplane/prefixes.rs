//! Per-prefix counting (`portsentry-ebpf/src/prefix.rs`): a rotating scanner whose addresses
//! each stay below the trigger makes one prefix trigger event; the kernel bans nothing.

use portsentry::{config::settings::Mode, detect::events::EventKind};

use super::*;

fn rotating(trigger: u32) -> portsentry::config::settings::LiveSettings {
    let mut s = settings("111", "");
    s.scan_trigger = trigger;
    s.prefix_threshold = 3;
    s
}

#[test]
fn a_rotating_ipv6_scanner_makes_one_prefix_trigger() {
    let mut x = TestXdp::load(&rotating(3));
    // scan_trigger 3 × prefix_threshold 3: the 9th probe of the /64.
    for i in 1..=8 {
        let src = format!("2001:db8:5:6::{i:x}");
        assert_eq!(x.run(&Packet::tcp(&src, 111, SYN).build()), XDP_PASS);
    }
    assert!(x.events().iter().all(|e| e.kind == EventKind::Probe));
    // Another /64 does not count toward it.
    x.run(&Packet::tcp("2001:db8:5:7::1", 111, SYN).build());
    x.run(&Packet::tcp("2001:db8:5:6:ffff::9", 111, SYN).build());
    let triggers = x.events_of(EventKind::PrefixTrigger);
    assert_eq!(triggers.len(), 1, "{triggers:?}");
    let t = &triggers[0];
    assert_eq!(
        (t.src.to_string(), t.prefix_len, t.count, t.dst_port),
        ("2001:db8:5:6::".to_owned(), 64, 9, 111)
    );
    assert!(
        !x.is_banned("2001:db8:5:6:ffff::9"),
        "the kernel bans nothing"
    );
    // Once per threshold: the 10th to 17th probes make none, the 18th the next.
    for i in 10..=17 {
        x.run(&Packet::tcp(&format!("2001:db8:5:6::1:{i:x}"), 111, SYN).build());
    }
    let kinds = |x: &mut TestXdp| x.events_of(EventKind::PrefixTrigger).len();
    assert_eq!(kinds(&mut x), 0);
    x.run(&Packet::tcp("2001:db8:5:6::2:1", 111, SYN).build());
    assert_eq!(kinds(&mut x), 1);
    let st = x.stats();
    assert_eq!(st.get(Stat::PrefixTriggers), 2);
    assert_eq!(st.get(Stat::Bans), 0);
}

#[test]
fn ipv4_aggregation_is_off_unless_configured_and_detect_mode_never_triggers() {
    let x = TestXdp::load(&rotating(3));
    for i in 1..=20 {
        x.run(&Packet::tcp(&format!("10.40.0.{i}"), 111, SYN).build());
    }
    assert_eq!(x.stats().get(Stat::PrefixTriggers), 0, "ipv4_prefix = 0");

    let mut s = rotating(3);
    s.ipv4_prefix = 24;
    let mut x = TestXdp::load(&s);
    for i in 1..=9 {
        x.run(&Packet::tcp(&format!("10.40.1.{i}"), 111, SYN).build());
    }
    let t = x.events_of(EventKind::PrefixTrigger);
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].src.to_string(), t[0].prefix_len),
        ("10.40.1.0".into(), 24)
    );

    let mut s = rotating(3);
    s.mode = Mode::Detect;
    let x = TestXdp::load(&s);
    for i in 1..=20 {
        x.run(&Packet::tcp(&format!("2001:db8:5:8::{i:x}"), 111, SYN).build());
    }
    assert_eq!(x.stats().get(Stat::PrefixTriggers), 0, "detect mode");
    // Link-local sources never aggregate.
    let x = TestXdp::load(&rotating(3));
    for i in 1..=20 {
        x.run(&Packet::tcp(&format!("fe80::{i:x}"), 111, SYN).build());
    }
    assert_eq!(x.stats().get(Stat::PrefixTriggers), 0, "link-local");
}
