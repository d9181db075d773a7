use super::*;

const H: Duration = Duration::from_secs(3600);

fn policy(factor: u32, max: Option<Duration>) -> RecidivePolicy {
    RecidivePolicy {
        window: Some(7 * 24 * H),
        factor,
        max,
    }
}

#[test]
fn ttl_doubles_per_repeat_up_to_the_cap() {
    let p = policy(2, Some(28 * 24 * H));
    let day = Some(24 * H);
    let got: Vec<u64> = (1..=7)
        .map(|n| p.ttl(day, n).unwrap().as_secs() / 3600)
        .collect();
    assert_eq!(got, [24, 48, 96, 192, 384, 672, 672]);
    assert_eq!(p.ttl(day, 0), day, "0 reads as a first ban");
}

#[test]
fn never_stays_never_and_factor_one_is_off() {
    assert_eq!(policy(2, Some(H)).ttl(None, 5), None);
    assert_eq!(policy(1, Some(100 * H)).ttl(Some(H), 5), Some(H));
    assert!(!policy(1, None).is_on());
}

#[test]
fn the_cap_never_shortens_below_ban_ttl() {
    assert_eq!(policy(3, Some(H)).ttl(Some(2 * H), 4), Some(2 * H));
}

#[test]
fn huge_repeats_and_factors_saturate_at_the_cap_or_100_years() {
    let p = policy(1000, None);
    assert_eq!(p.ttl(Some(H), u32::MAX), Some(MAX_DURATION));
    assert_eq!(p.ttl(Some(MAX_DURATION), 2), Some(MAX_DURATION));
    let capped = policy(u32::MAX, Some(48 * H));
    assert_eq!(capped.ttl(Some(H), 3), Some(48 * H));
    assert_eq!(capped.ttl(Some(H), 2), Some(48 * H));
    assert_eq!(
        policy(2, Some(MAX_DURATION + H)).ttl(Some(H), 64),
        Some(MAX_DURATION),
        "a cap beyond 100 years is 100 years"
    );
}

#[test]
fn a_repeat_is_a_ban_within_the_window_after_the_last_one_ended() {
    let p = policy(2, None);
    let prev = Offence {
        target: "192.0.2.1".parse().unwrap(),
        bans: 1,
        last_ms: 0,
        until_ms: Some(1_000),
    };
    let week = 7 * 24 * 3600 * 1000;
    assert!(p.repeats(&prev, 1_000 + week));
    assert!(!p.repeats(&prev, 1_001 + week));
    assert!(p.repeats(
        &Offence {
            until_ms: None,
            ..prev.clone()
        },
        u64::MAX
    ));
    let forever = RecidivePolicy { window: None, ..p };
    assert!(forever.repeats(&prev, u64::MAX));
}

fn at(unix_ms: u64) -> Now {
    Now {
        boot_ns: 10_000_000_000,
        unix_ms,
    }
}

fn detected(target: &str, now: &Now, ttl: Duration, shadow: bool) -> super::super::NewBan {
    super::super::NewBan {
        target: target.parse().unwrap(),
        origin: Origin::Detected,
        shadow,
        expires_ms: Some(now.unix_ms + ms(ttl)),
        trigger: None,
        fleet: None,
        unverified: false,
    }
}

/// The book end to end without a kernel: first ban, expiry, a second ban within the
/// window is extended to twice the TTL, a duplicate event is not a third, and the history
/// survives a save and a reopen (a restart).
#[test]
fn a_second_ban_within_the_window_doubles_and_the_history_survives_reopening() {
    use super::super::{BanBook, Saved, StateStore};
    let dir = std::env::temp_dir().join(format!("ps-recidive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = StateStore::new(&dir);
    let t0 = at(1_700_000_000_000);
    let (mut b, _) = BanBook::open(store.clone(), Saved::default(), None, None, true, &t0).unwrap();
    let p = policy(2, Some(24 * H));
    let src: Cidr = "192.0.2.9".parse().unwrap();
    let ttl = Duration::from_secs(2);
    b.ban(None, detected("192.0.2.9", &t0, ttl, false), &t0)
        .unwrap();
    assert_eq!(
        b.note_offence(None, &src, &p, Some(ttl), &t0).unwrap(),
        None
    );
    assert_eq!(b.offence(&src).unwrap().bans, 1);
    // Expired and swept (the kernel has no such entry: lifted from the book).
    let t1 = at(t0.unix_ms + 5_000);
    b.unban(None, &src, false, &t1).unwrap();
    b.ban(None, detected("192.0.2.9", &t1, ttl, false), &t1)
        .unwrap();
    let r = b.note_offence(None, &src, &p, Some(ttl), &t1).unwrap();
    assert_eq!(
        r,
        Some(Repeat {
            bans: 2,
            ttl: Some(2 * ttl)
        })
    );
    assert_eq!(b.get(&src).unwrap().expires_ms, Some(t1.unix_ms + 4_000));
    assert_eq!(
        b.note_offence(None, &src, &p, Some(ttl), &t1).unwrap(),
        None,
        "the same ban again is not a repeat"
    );
    // Manual and shadow bans are not counted.
    let manual: Cidr = "192.0.2.10".parse().unwrap();
    b.ban(
        None,
        super::super::NewBan {
            origin: Origin::Manual,
            ..detected("192.0.2.10", &t1, ttl, false)
        },
        &t1,
    )
    .unwrap();
    assert_eq!(
        b.note_offence(None, &manual, &p, Some(ttl), &t1).unwrap(),
        None
    );
    b.ban(None, detected("192.0.2.11", &t1, ttl, true), &t1)
        .unwrap();
    let shadow: Cidr = "192.0.2.11".parse().unwrap();
    assert_eq!(
        b.note_offence(None, &shadow, &p, Some(ttl), &t1).unwrap(),
        None
    );
    assert!(b.offence(&manual).is_none() && b.offence(&shadow).is_none());
    // Nor unverified ones, however often (issue 25, item 9).
    let forged: Cidr = "192.0.2.12".parse().unwrap();
    for i in 0..3 {
        let t = at(t1.unix_ms + i * 5_000);
        b.unban(None, &forged, false, &t).unwrap();
        let new = super::super::NewBan {
            unverified: true,
            ..detected("192.0.2.12", &t, ttl, false)
        };
        b.ban(None, new, &t).unwrap();
        assert_eq!(
            b.note_offence(None, &forged, &p, Some(ttl), &t).unwrap(),
            None
        );
    }
    assert!(b.offence(&forged).is_none());
    assert_eq!(
        b.get(&forged).unwrap().expires_ms,
        Some(t1.unix_ms + 10_000 + 2_000)
    );

    b.save().unwrap();
    let (mut b, _) =
        BanBook::open(store.clone(), store.load().unwrap(), None, None, true, &t1).unwrap();
    assert_eq!(b.offence(&src).unwrap().bans, 2);
    // Past the window after the second ban's end: a fresh start.
    let t2 = at(t1.unix_ms + 4_000 + ms(7 * 24 * H) + 1);
    b.unban(None, &src, false, &t2).unwrap();
    b.ban(None, detected("192.0.2.9", &t2, ttl, false), &t2)
        .unwrap();
    assert_eq!(
        b.note_offence(None, &src, &p, Some(ttl), &t2).unwrap(),
        None
    );
    assert_eq!(b.offence(&src).unwrap().bans, 1);
    // Off: nothing is counted.
    assert_eq!(
        b.note_offence(None, &src, &RecidivePolicy::OFF, Some(ttl), &t2)
            .unwrap(),
        None
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn history_is_bounded_and_forgets_the_oldest_first() {
    let mut h = History::default();
    for i in 0..(MAX_HISTORY as u64 + 10) {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
        h.put(Offence {
            target: Cidr::host(ip.into()),
            bans: 1,
            last_ms: 1_000 + i,
            until_ms: Some(2_000 + i),
        });
    }
    assert_eq!(h.len(), MAX_HISTORY);
    let saved = h.to_saved();
    assert_eq!(saved[0].last_ms, 1_010, "the ten oldest are gone");
    assert_eq!(h.forget_older(Some(Duration::from_millis(10)), 2_030), 10);
    assert_eq!(h.forget_older(None, u64::MAX), 0);
}
