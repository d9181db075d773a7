//! Fleet decisions through the book: refusals with their reason, TTLs re-asserted on every
//! pull, large updates in bounded steps.

use super::*;

/// An address or network as LAPI may send it (IPv4-mapped spellings included).
fn lenient(s: &str) -> Cidr {
    match s.split_once('/') {
        Some((a, p)) => Cidr::masked(a.parse().unwrap(), p.parse().unwrap()).unwrap(),
        None => Cidr::host(s.parse().unwrap()),
    }
}

fn fleet_update(targets: &[&str]) -> crate::bans::FleetUpdate {
    crate::bans::FleetUpdate {
        bans: targets
            .iter()
            .map(|t| crate::bans::FleetBan {
                target: lenient(t),
                remaining: std::time::Duration::from_secs(3600),
                origin: "cscli".into(),
                scenario: "manual".into(),
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn fleet_decisions_into_bogus_ranges_peers_or_the_allowlist_are_refused_with_the_reason() {
    let mut b = book();
    b.set_allowlist(None, &[net("10.88.1.1")], &now()).unwrap();
    let mut peers: Vec<std::net::IpAddr> = vec!["198.51.100.20".parse().unwrap()];
    let u = fleet_update(&[
        "224.0.0.0/4",
        "::ffff:0:0/96",
        "::ffff:127.0.0.1",
        "ff02::/16",
        "10.88.0.0/16",
        "198.51.100.20",
        "::ffff:198.51.100.0/120",
        "192.0.2.66",
    ]);
    let done = b.apply_fleet_with(None, &mut peers, &u, &now()).unwrap();
    let refused: Vec<String> = done
        .refused
        .iter()
        .map(|(t, why)| format!("{t}: {why}"))
        .collect();
    assert_eq!(
        refused,
        [
            "224.0.0.0/4: bogus range 224.0.0.0/4",
            // All of IPv4 in the mapped spelling: IPv4, so over the LAPI host first.
            "0.0.0.0/0: allowlisted host 10.88.1.1",
            "127.0.0.1: bogus range 127.0.0.0/8",
            "ff02::/16: bogus range ff00::/8",
            "10.88.0.0/16: allowlisted host 10.88.1.1",
            "198.51.100.20: learned peer 198.51.100.20",
            "198.51.100.0/24: learned peer 198.51.100.20",
        ]
    );
    assert_eq!(done.banned.len(), 1, "{:?}", done.banned);
    assert!(b.get(&net("192.0.2.66")).is_some());
    assert_eq!(b.len(), 1, "nothing refused is in the book");
    // Not a peer any more (or never): the same decision bans.
    let done = b
        .apply_fleet_with(
            None,
            &mut Vec::new(),
            &fleet_update(&["198.51.100.20"]),
            &now(),
        )
        .unwrap();
    assert!(done.refused.is_empty());
    // A fleet ban made before the check knew better is lifted when refused.
    let done = b
        .apply_fleet_with(None, &mut peers, &fleet_update(&["198.51.100.20"]), &now())
        .unwrap();
    assert_eq!(done.refused.len(), 1);
    assert!(b.get(&net("198.51.100.20")).is_none(), "lifted");
}

#[test]
fn no_ban_is_made_for_a_bogus_address_and_local_networks_may_contain_bogus_space() {
    let mut b = book();
    for t in [
        "127.0.0.1",
        "224.0.0.0/4",
        "::1",
        "ff02::1",
        "::ffff:240.0.0.1",
    ] {
        let t = lenient(t);
        let mut n = new("192.0.2.1", Origin::Manual);
        n.target = t;
        assert!(
            matches!(b.ban(None, n, &now()).unwrap(), BanOutcome::Bogus(_)),
            "{t}"
        );
    }
    assert_eq!(
        b.ban(None, new("0.0.0.0/0", Origin::Manual), &now())
            .unwrap(),
        BanOutcome::Banned,
        "an operator may ban everything; bogus space inside changes nothing"
    );
    assert_eq!(
        b.ban(None, new("0.0.0.0/0", Origin::Fleet), &now())
            .unwrap(),
        BanOutcome::Bogus(net("0.0.0.0/8"))
    );
}

fn fleet_ban(i: u32, secs: u64) -> crate::bans::FleetBan {
    crate::bans::FleetBan {
        target: Cidr::host(std::net::Ipv4Addr::from(0x0b00_0001 + i).into()),
        remaining: std::time::Duration::from_secs(secs),
        origin: "CAPI".into(),
        scenario: "crowdsecurity/ssh-bf".into(),
    }
}

/// Every pull re-asserts the TTL LAPI gives now: a decision pulled again (a later delta or a
/// resync) carries its new expiry, longer or shorter, so nothing expires here while LAPI
/// still holds it (cs-firewall-bouncer's mass expiry, its issue #509).
#[test]
fn every_pull_reasserts_the_fleet_ttl() {
    use crate::bans::FleetUpdate;
    let mut b = book();
    let t0 = now();
    let first = FleetUpdate {
        startup: true,
        bans: (0..3).map(|i| fleet_ban(i, 60)).collect(),
        ..Default::default()
    };
    b.apply_fleet_with(None, &mut Vec::new(), &first, &t0)
        .unwrap();
    let expiry = |b: &BanBook, i: u32| b.get(&fleet_ban(i, 0).target).unwrap().expires_ms;
    assert_eq!(expiry(&b, 0), Some(t0.unix_ms + 60_000));
    // 50 s later a delta renews decision 0 for 4 h; a resync lists 1 for 2 h and 2 for 20 s.
    let later = Now {
        boot_ns: t0.boot_ns + 50_000_000_000,
        unix_ms: t0.unix_ms + 50_000,
    };
    let delta = FleetUpdate {
        bans: vec![fleet_ban(0, 4 * 3600)],
        ..Default::default()
    };
    let done = b
        .apply_fleet_with(None, &mut Vec::new(), &delta, &later)
        .unwrap();
    assert_eq!((done.banned_count, done.renewed), (0, 1));
    assert_eq!(expiry(&b, 0), Some(later.unix_ms + 4 * 3_600_000));
    let resync = FleetUpdate {
        startup: true,
        bans: vec![
            fleet_ban(0, 4 * 3600 - 1),
            fleet_ban(1, 7200),
            fleet_ban(2, 20),
        ],
        ..Default::default()
    };
    let done = b
        .apply_fleet_with(None, &mut Vec::new(), &resync, &later)
        .unwrap();
    assert_eq!((done.renewed, done.lifted.len()), (3, 0));
    assert_eq!(expiry(&b, 1), Some(later.unix_ms + 7_200_000));
    assert_eq!(expiry(&b, 2), Some(later.unix_ms + 20_000));
    // None of them expires at the first pull's shared TTL.
    let at_first_ttl = t0.unix_ms + 60_000;
    assert!(b.records().all(|r| !r.is_expired(at_first_ttl)));
}

/// A large update is applied in steps of at most STEP_DECISIONS decisions, and gives the same
/// book as applying it at once; a startup update lifts the fleet bans it no longer lists.
#[test]
fn large_updates_are_applied_in_bounded_steps() {
    use crate::bans::fleet::STEP_DECISIONS;
    use crate::bans::FleetUpdate;
    let n = 5 * STEP_DECISIONS as u32 + 7;
    let mut b = book();
    let old = FleetUpdate {
        startup: true,
        bans: (n..n + 10).map(|i| fleet_ban(i, 600)).collect(),
        ..Default::default()
    };
    b.apply_fleet_with(None, &mut Vec::new(), &old, &now())
        .unwrap();
    let update = FleetUpdate {
        startup: true,
        bans: (0..n).map(|i| fleet_ban(i, 600)).collect(),
        ..Default::default()
    };
    let mut batch = FleetBatch::new(update);
    let mut steps = 0;
    let done = loop {
        let before = batch.applied();
        steps += 1;
        let step = b
            .apply_fleet_step(None, PeerSource::Given(&mut Vec::new()), &mut batch, &now())
            .unwrap();
        assert!(batch.applied() - before <= STEP_DECISIONS);
        if let Some(done) = step {
            break done;
        }
    };
    assert!(steps > 5, "{steps} steps");
    assert_eq!(done.banned_count, n as usize);
    assert!(done.banned.len() <= DETAIL_MAX, "detail kept short");
    assert_eq!(done.lifted.len(), 10, "the old list's bans are lifted");
    assert_eq!(b.len(), n as usize);
}
