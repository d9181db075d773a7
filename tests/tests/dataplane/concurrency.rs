//! Counting across CPUs and a full ring buffer: exact, and never blocking.

use super::*;

/// Two CPUs counting the same source at once lose no probe: the hit map is shared and
/// updated atomically.
#[test]
fn hit_counts_are_exact_across_cpus() {
    let mut s = settings("111", "");
    s.scan_trigger = u32::MAX;
    let x = std::sync::Arc::new(TestXdp::load(&s));
    let probe = Packet::tcp("10.12.0.1", 111, SYN).build();
    let per_thread = 20_000;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (x, probe) = (x.clone(), probe.clone());
            std::thread::spawn(move || x.run_repeat(&probe, per_thread))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), XDP_PASS);
    }
    let hits = x.dp.hits("10.12.0.1".parse().unwrap()).unwrap().unwrap();
    assert_eq!(hits.count, 2 * u64::from(per_thread));
}

/// Probe events beyond the ring buffer's room are counted as lost; the program never waits.
/// (With the global event limit off: at its 1 000 a second per CPU the ring never fills.)
#[test]
fn a_full_ring_buffer_is_counted_and_never_blocks() {
    let mut s = settings("111", "");
    s.scan_trigger = u32::MAX;
    let mut x = TestXdp::load(&s);
    x.without_event_limit();
    // 1 MiB of 48-byte events (plus 8-byte record headers) holds under 20 000.
    assert_eq!(
        x.run_repeat(&Packet::tcp("10.12.0.2", 111, SYN).build(), 50_000),
        XDP_PASS
    );
    let lost = x.stats().get(Stat::EventsLost);
    let delivered = x.events().len() as u64;
    assert!(lost > 0, "some events were lost");
    assert_eq!(
        lost + delivered,
        50_000,
        "every probe was either delivered or counted as lost"
    );
}
