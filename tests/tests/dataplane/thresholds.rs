//! Triggers and windows: when a source's probes ban it, and how ban lifetimes end in the kernel.

use std::{thread, time::Duration};

use portsentry::{config::settings::LiveSettings, detect::events::EventKind};

use super::*;

fn with(f: impl FnOnce(&mut LiveSettings)) -> LiveSettings {
    let mut s = settings("111,112,113", "");
    f(&mut s);
    s
}

#[test]
fn trigger_0_and_1_fire_on_the_first_probe_3_on_the_third() {
    for trigger in [0, 1] {
        let x = TestXdp::load(&with(|s| s.scan_trigger = trigger));
        assert_eq!(
            x.run(&Packet::tcp("10.1.0.1", 111, SYN).build()),
            XDP_DROP,
            "trigger {trigger}"
        );
    }
    let mut x = TestXdp::load(&with(|s| s.scan_trigger = 3));
    let src = "10.1.0.3";
    assert_eq!(x.run(&Packet::tcp(src, 111, SYN).build()), XDP_PASS);
    assert_eq!(x.run(&Packet::tcp(src, 112, SYN).build()), XDP_PASS);
    assert!(!x.is_banned(src));
    assert_eq!(x.dp.hits(src.parse().unwrap()).unwrap().unwrap().count, 2);
    assert_eq!(x.run(&Packet::tcp(src, 113, SYN).build()), XDP_DROP);
    assert!(x.is_banned(src));
    let ev = x.events();
    let kinds: Vec<(EventKind, u64)> = ev.iter().map(|e| (e.kind, e.count)).collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Probe, 1),
            (EventKind::Probe, 2),
            (EventKind::Ban, 3)
        ]
    );
}

#[test]
fn probes_older_than_the_window_stop_counting() {
    let x = TestXdp::load(&with(|s| {
        s.scan_trigger = 2;
        s.window = Some(Duration::from_millis(200));
    }));
    let src = "2001:db8:2::1";
    assert_eq!(x.run(&Packet::tcp(src, 111, SYN).build()), XDP_PASS);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        x.run(&Packet::tcp(src, 112, SYN).build()),
        XDP_PASS,
        "first probe expired: count restarts"
    );
    assert_eq!(x.dp.hits(src.parse().unwrap()).unwrap().unwrap().count, 1);
    assert_eq!(
        x.run(&Packet::tcp(src, 113, SYN).build()),
        XDP_DROP,
        "two probes within the window"
    );
}

#[test]
fn without_a_window_the_count_never_decays() {
    let x = TestXdp::load(&with(|s| {
        s.scan_trigger = 2;
        s.window = None;
    }));
    assert_eq!(x.run(&Packet::tcp("10.1.1.1", 111, SYN).build()), XDP_PASS);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(x.run(&Packet::tcp("10.1.1.1", 111, SYN).build()), XDP_DROP);
}

#[test]
fn an_expired_ban_stops_dropping_in_the_kernel_and_a_new_probe_bans_again() {
    let mut x = TestXdp::load(&with(|s| s.ban_ttl = Some(Duration::from_millis(200))));
    let src = "10.1.2.1";
    assert_eq!(x.run(&Packet::tcp(src, 111, SYN).build()), XDP_DROP);
    assert_eq!(x.run(&Packet::tcp(src, 22, SYN).build()), XDP_DROP);
    thread::sleep(Duration::from_millis(300));
    // No daemon is involved: the program itself honours expires_at.
    assert_eq!(
        x.run(&Packet::tcp(src, 22, SYN).build()),
        XDP_PASS,
        "expired ban no longer drops"
    );
    assert_eq!(
        x.run(&Packet::tcp(src, 111, SYN).build()),
        XDP_DROP,
        "re-banned"
    );
    let ban = x.dp.ban(src.parse().unwrap()).unwrap().unwrap();
    assert_eq!(ban.drops, 0, "the new ban replaced the expired entry");
    assert_eq!(x.events_of(EventKind::Ban).len(), 2);
}

#[test]
fn a_ban_without_ttl_never_expires() {
    let x = TestXdp::load(&with(|s| s.ban_ttl = None));
    assert_eq!(x.run(&Packet::tcp("10.1.3.1", 111, SYN).build()), XDP_DROP);
    assert_eq!(
        x.dp.ban("10.1.3.1".parse().unwrap())
            .unwrap()
            .unwrap()
            .expires_at_ns,
        0
    );
}
