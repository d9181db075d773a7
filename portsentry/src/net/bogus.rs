//! Bogus ranges (`portsentry_common::bogus`, the XDP program's list) as networks of the ban
//! book's key space: where no real peer can be, so no fleet decision may reach into them and no
//! manual ban may be made for them.
//!
//! One address space: an IPv4-mapped address or range is the IPv4 one (`::ffff:127.0.0.1` is
//! loopback, `::ffff:0:0/96` is all of IPv4 and so overlaps 0/8, 127/8, 224/4 and 240/4). The
//! IPv4-mapped range is bogus only as the source of an IPv6 packet, which the kernel checks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portsentry_common::bogus;

use super::cidr::{self, Cidr};

/// Every bogus range as a key-space network: the IPv4 ones, then the IPv6 ones (without the
/// IPv4-mapped range, which is IPv4 itself here).
pub fn ranges() -> impl Iterator<Item = Cidr> {
    let v4 = bogus::V4.iter().map(|(a, p)| Cidr {
        addr: IpAddr::V4(Ipv4Addr::from(*a)),
        prefix: *p,
    });
    let v6 = bogus::V6.iter().map(|(a, p)| Cidr {
        addr: IpAddr::V6(Ipv6Addr::from(*a)),
        prefix: *p,
    });
    v4.chain(v6)
}

/// An address no real peer can have (an IPv4-mapped address is judged as its IPv4 address).
pub fn is_bogus(addr: IpAddr) -> bool {
    match cidr::canonical(addr) {
        IpAddr::V4(v4) => bogus::is_bogus_v4(&v4.octets()),
        IpAddr::V6(v6) => bogus::is_bogus_v6_source(&v6.octets()),
    }
}

/// The first bogus range that shares an address with `target` (what refuses a fleet decision).
pub fn overlapping(target: &Cidr) -> Option<Cidr> {
    ranges().find(|r| r.overlaps(target))
}

pub fn overlaps_bogus(target: &Cidr) -> bool {
    overlapping(target).is_some()
}

/// The bogus range that holds all of `target` (what refuses a manual ban).
pub fn covering(target: &Cidr) -> Option<Cidr> {
    ranges().find(|r| r.covers(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The shared list, enumerated: both ends of every range are bogus, by the byte matcher the
    /// kernel uses and by the key-space networks the ban book uses.
    #[test]
    fn the_shared_list_is_the_one_both_views_use() {
        let listed: Vec<String> = ranges().map(|r| r.to_string()).collect();
        assert_eq!(
            listed,
            [
                "0.0.0.0/8",
                "127.0.0.0/8",
                "224.0.0.0/4",
                "240.0.0.0/4",
                "::",
                "::1",
                "ff00::/8",
                "::/96"
            ]
        );
        for r in ranges() {
            let (first, last) = r.key_range();
            for k in [first, last] {
                let a = cidr::key_addr(&portsentry_common::AddrKey {
                    addr: k.to_be_bytes(),
                });
                assert!(is_bogus(a), "{a} ({r})");
                assert!(r.contains(a), "{a} in {r}");
            }
        }
        let (mapped, len) = bogus::V6_MAPPED;
        assert_eq!(
            (Ipv6Addr::from(mapped).to_string(), len),
            ("::ffff:0.0.0.0".into(), 96)
        );
    }

    #[test]
    fn addresses_are_judged_in_one_space() {
        for a in [
            "0.1.2.3",
            "127.0.0.1",
            "224.0.0.251",
            "255.255.255.255",
            "::",
            "::1",
            "ff02::1",
            "::10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_bogus(ip(a)), "{a}");
            assert!(ranges().any(|r| r.contains(ip(a))), "{a} in a listed range");
        }
        for a in [
            "10.0.0.1",
            "1.0.0.0",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "fe80::1",
            "2001:db8::1",
            "::fffe:a00:1",
        ] {
            assert!(!is_bogus(ip(a)), "{a}");
            assert!(!ranges().any(|r| r.contains(ip(a))), "{a} in no range");
        }
    }

    #[test]
    fn overlaps_and_covers() {
        assert_eq!(overlapping(&net("224.0.0.0/4")), Some(net("224.0.0.0/4")));
        assert_eq!(overlapping(&net("239.1.0.0/16")), Some(net("224.0.0.0/4")));
        // All of IPv4, however it is spelled, reaches into 0/8.
        let mapped = Cidr::masked(ip("::ffff:0:0"), 96).unwrap();
        assert_eq!(overlapping(&mapped), Some(net("0.0.0.0/8")));
        assert_eq!(overlapping(&net("::/0")), Some(net("0.0.0.0/8")));
        assert_eq!(
            overlapping(&Cidr::masked(ip("::"), 64).unwrap()),
            Some(net("0.0.0.0/8")),
            "::/64 holds the IPv4-mapped space, so all of IPv4"
        );
        assert_eq!(
            overlapping(&Cidr::masked(ip("::"), 120).unwrap()),
            Some(net("::"))
        );
        assert!(!overlaps_bogus(&net("10.0.0.0/8")));
        assert!(!overlaps_bogus(&net("2001:db8::/32")));
        assert!(!overlaps_bogus(&net("fe80::/10")));
        assert!(!overlaps_bogus(&Cidr::host(ip("::ffff:192.0.2.1"))));
        // Covering: a manual ban of a bogus address is refused, one of 0/0 is not.
        assert_eq!(covering(&net("127.0.0.1")), Some(net("127.0.0.0/8")));
        assert_eq!(
            covering(&Cidr::host(ip("::ffff:224.0.0.1"))),
            Some(net("224.0.0.0/4"))
        );
        assert_eq!(covering(&net("ff02::1")), Some(net("ff00::/8")));
        assert_eq!(covering(&net("0.0.0.0/0")), None);
        assert_eq!(covering(&net("192.0.2.0/24")), None);
    }
}
