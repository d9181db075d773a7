use super::*;

/// A window closing at `end_ms` on host `h`: no totals, no bans, an alert cap of 20.
fn closing(end_ms: u64) -> Closing<'static> {
    fn no_ban(_: IpAddr) -> Option<BanFacts> {
        None
    }
    Closing {
        host: "h",
        end_ms,
        totals: Totals::default(),
        ban_of: &no_ban,
        other_bans: Vec::new(),
        alert_cap: 20,
    }
}

/// Issue 25, item 10: a neighbour flip reaches the administrator with the digest.
#[test]
fn a_neighbour_flip_makes_and_appears_in_a_digest() {
    let mut w = Window::new(0);
    assert!(w.is_empty());
    let line = "portsentry: neighbour flip: 10.77.0.3 on eth0 moved from 02:00:00:00:00:03 to 02:00:00:00:00:66; contested for 5m";
    w.record_flip(line);
    assert!(!w.is_empty(), "a flip alone is worth a digest");
    let (_, text, json) = render(&w, &closing(60_000));
    assert!(text.contains(&format!("  {line}\n")), "{text}");
    assert_eq!(json["neighbour_flips"][0], line);
}

#[test]
fn ports_are_ranges() {
    let s: BTreeSet<u16> = [1, 2, 3, 5, 111, 112, 65535].into_iter().collect();
    assert_eq!(port_ranges(&s), "1-3,5,111-112,65535");
    assert_eq!(port_ranges(&BTreeSet::new()), "");
}

/// The fixture event ([`ProbeEvent::example`]) as a `kind` from 192.0.2.`last`.
fn event(kind: EventKind, last: u8) -> ProbeEvent {
    ProbeEvent {
        kind,
        ..ProbeEvent::example(&format!("192.0.2.{last}"))
    }
}

/// Refusals (spoofed, contested neighbour, bogus) are totals, never sources or probes: the
/// refused address is not the sender's, so naming it would accuse a bystander.
#[test]
fn refusals_are_counted_not_listed() {
    let mut w = Window::new(0);
    w.record(&event(EventKind::Spoofed, 1), 1);
    w.record(&event(EventKind::Contested, 2), 2);
    w.record(&event(EventKind::Contested, 3), 3);
    w.record(&event(EventKind::Bogus, 4), 4);
    assert_eq!((w.spoofed, w.contested, w.bogus, w.probes), (1, 2, 1, 0));
    assert!(w.sources.is_empty() && !w.is_empty());
    let (subject, text, body) = render(&w, &closing(10));
    assert!(
        subject.contains("0 source(s) seen, none blocked"),
        "{subject}"
    );
    assert!(
        text.contains("1 spoofed, 2 contested and 1 bogus probe(s) refused"),
        "{text}"
    );
    assert_eq!(body["totals"]["contested_refused"], 2);
    assert_eq!(body["totals"]["spoofed_refused"], 1);

    // A source whose own probe is listed, then whose would-be ban is refused: marked.
    let mut w = Window::new(0);
    w.record(&event(EventKind::Probe, 5), 1);
    w.record(&event(EventKind::Spoofed, 5), 2);
    assert_eq!(
        w.sources[&IpAddr::from([192, 0, 2, 5])].refused,
        Some("spoofed")
    );
    let (_, text, body) = render(&w, &closing(10));
    assert!(text.contains("192.0.2.5: not blocked\n"), "{text}");
    assert!(text.contains("  ban refused: spoofed ("), "{text}");
    assert_eq!(body["sources"][0]["ban_refused"], "spoofed");
}
