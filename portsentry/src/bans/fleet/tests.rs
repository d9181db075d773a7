use std::{net::IpAddr, time::Duration};

use super::*;
use crate::net::bogus;

/// `a/p` with host bits cleared; an IPv4-mapped network becomes the IPv4 one.
fn net(s: &str) -> Cidr {
    let (a, p) = s.split_once('/').unwrap_or((s, ""));
    let addr: IpAddr = a.parse().unwrap();
    let p = p.parse().unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
    Cidr::masked(addr, p).unwrap()
}

/// The refusal checks compare precomputed key ranges; they must refuse exactly what
/// `Cidr::overlaps` does, in the same order (first allow entry, then first bogus range).
#[test]
fn range_refusals_match_the_overlap_rule() {
    let store = super::super::StateStore::new(std::path::Path::new("/nonexistent"));
    let (mut book, _) = BanBook::open(
        store,
        super::super::Saved::default(),
        None,
        None,
        false,
        &Now::read(),
    )
    .unwrap();
    let allow = [
        net("192.0.2.0/24"),
        net("198.51.100.7"),
        net("2001:db8::/48"),
        net("::ffff:203.0.113.0/120"),
    ];
    book.set_allowlist(None, &allow, &Now::read()).unwrap();
    let targets = [
        "192.0.2.9",
        "192.0.0.0/16",
        "192.0.3.0/24",
        "198.51.100.7",
        "198.51.100.0/31",
        "198.51.100.8",
        "203.0.113.200",
        "2001:db8::1",
        "2001:db8:1::/48",
        "2001:db8::/32",
        "::ffff:0:0/96",
        "0.0.0.0/0",
        "::/0",
        "127.0.0.1",
        "126.0.0.0/7",
        "224.1.2.3",
        "::1",
        "::/96",
        "::2",
        "ff02::1",
        "8.8.8.8",
        "2a00::1",
    ];
    let bans: Vec<FleetBan> = targets
        .iter()
        .map(|t| FleetBan {
            target: net(t),
            remaining: Duration::from_secs(60),
            origin: "t".into(),
            scenario: "t".into(),
        })
        .collect();
    let got = book.fleet_refusals(&bans, &mut Vec::new()).unwrap();
    for (ban, got) in bans.iter().zip(got) {
        let t = &ban.target;
        let want = allow
            .iter()
            .find(|a| a.overlaps(t))
            .map(|a| Refusal::Allowlisted(*a))
            .or_else(|| bogus::overlapping(t).map(Refusal::Bogus));
        assert_eq!(got, want, "{t}");
    }
}
