//! Prefix-aware bans (issue 16, item 2). An IPv6 scanner owns at least a /64 and can send each
//! probe from a new address: per-address bans never stop it and fill the table. The event loop
//! tells this tracker about every enforced, verified address ban; when `prefix_threshold`
//! distinct addresses of one prefix (`ipv6_prefix`, `ipv4_prefix`) were banned within
//! `window`, the probe pipeline bans the prefix and folds the member bans into it.
//!
//! Only verified bans count: the path check saw them arrive the way this host routes back, so
//! a forger cannot manufacture members (unverified bans — a fresh neighbour, no route — and
//! link-local sources never count). The daemon also refuses a prefix holding an allowlisted
//! address (its own addresses, gateways, resolvers, `allow`), so its own LAN is never banned
//! wholesale (logged once per window). Owns only its memory of recent members and refusals;
//! bans go through the ban book.
//!
//! The XDP program also counts probes per prefix (`portsentry-ebpf/src/prefix.rs`): a scanner
//! whose addresses each stay below `scan_trigger` is never banned address by address, so at
//! `scan_trigger × prefix_threshold` verified probes of one prefix the kernel sends a prefix
//! trigger, and the daemon bans the prefix the same way (`probes::prefix_bans`).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
};

use crate::net::cidr::Cidr;

/// Prefixes remembered at once; beyond it the stalest are forgotten.
const MAX_PREFIXES: usize = 65_536;

/// IPv6 ranges whose addresses stand for many unrelated hosts: a prefix inside them is never
/// aggregated. NAT64 (RFC 6052 well-known prefix, RFC 8215 local use) puts every IPv4 client of
/// a translator in one /96; Teredo (RFC 4380) and 6to4 (RFC 3056) embed IPv4 addresses and
/// relays. Four IPv4 clients arriving through NAT64 would otherwise ban every IPv4 client.
pub const TRANSLATOR_RANGES: [(u128, u8); 4] = [
    (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96),
    (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48),
    (0x2001_0000_0000_0000_0000_0000_0000_0000, 32),
    (0x2002_0000_0000_0000_0000_0000_0000_0000, 16),
];

/// The translator range `addr` lies in, if any.
pub fn translator_range(addr: IpAddr) -> Option<Cidr> {
    let IpAddr::V6(v6) = addr else {
        return None;
    };
    let a = u128::from(v6);
    TRANSLATOR_RANGES
        .iter()
        .find(|(net, len)| a & !(u128::MAX >> len) == *net)
        .map(|(net, len)| Cidr {
            addr: IpAddr::V6(Ipv6Addr::from(*net)),
            prefix: *len,
        })
}

#[derive(Debug, Default)]
pub struct PrefixTracker {
    /// Prefix (of any level) → its recent members: banned addresses for the first level, the
    /// narrower prefixes holding bans for the wider ones (member, Unix ms).
    members: HashMap<Cidr, Vec<(Cidr, u64)>>,
    /// Prefixes refused (allowlisted address, learned peer, translator range) → when that was
    /// last logged (Unix ms), so a refusal is logged once per window, not at each ban.
    refused: HashMap<Cidr, u64>,
}

/// What the tracker needs of the settings.
#[derive(Clone, Debug)]
pub struct PrefixRule {
    pub ipv6_prefix: u8,
    pub ipv4_prefix: u8,
    pub threshold: u32,
    /// Wider IPv6 levels above `ipv6_prefix`, narrowest first (`[56, 48]`).
    pub ipv6_wider: Vec<u8>,
    pub wider_threshold: u32,
    /// Members older than this no longer count; `None` = never forget.
    pub window_ms: Option<u64>,
}

impl PrefixRule {
    /// The prefix `addr` belongs to under this rule, if aggregation is on for its family (and
    /// the address is outside the translator ranges).
    pub fn prefix_of(&self, addr: IpAddr) -> Option<Cidr> {
        self.levels(addr).first().map(|l| l.0)
    }

    /// The levels `addr` aggregates into, narrowest first: (prefix, threshold).
    fn levels(&self, addr: IpAddr) -> Vec<(Cidr, u32)> {
        if translator_range(addr).is_some() {
            return Vec::new();
        }
        let (first, full) = match addr {
            IpAddr::V4(_) => (self.ipv4_prefix, 32),
            IpAddr::V6(_) => (self.ipv6_prefix, 128),
        };
        if first == 0 || first >= full {
            return Vec::new();
        }
        let wider: &[u8] = if addr.is_ipv6() {
            &self.ipv6_wider
        } else {
            &[]
        };
        std::iter::once((first, self.threshold))
            .chain(
                wider
                    .iter()
                    .filter(|w| **w < first)
                    .map(|w| (*w, self.wider_threshold)),
            )
            .filter_map(|(len, t)| Some((Cidr::masked(addr, len)?, t)))
            .collect()
    }
}

impl PrefixTracker {
    /// Records a verified ban of `addr` at every level from `from_level` on (0: the address in
    /// its prefix; 1: its prefix in the next wider one, as when the kernel banned the prefix
    /// itself). Returns the widest prefix that reached its threshold, with its member count
    /// (its members and those of the narrower levels below it are then forgotten).
    pub fn on_ban(
        &mut self,
        addr: IpAddr,
        now_ms: u64,
        rule: &PrefixRule,
        from_level: usize,
    ) -> Option<(Cidr, usize)> {
        let levels = rule.levels(addr);
        let mut triggered = None;
        for i in from_level..levels.len() {
            let (prefix, threshold) = levels[i];
            let member = if i == 0 {
                Cidr::host(addr)
            } else {
                levels[i - 1].0
            };
            let n = self.add(prefix, member, now_ms, rule.window_ms);
            if n >= usize::try_from(threshold).unwrap_or(usize::MAX) {
                triggered = Some((i, prefix, n));
            }
        }
        let (level, prefix, n) = triggered?;
        for (p, _) in &levels[..=level] {
            self.members.remove(p);
        }
        Some((prefix, n))
    }

    /// Adds `member` to `prefix`'s list; returns the list's length.
    fn add(&mut self, prefix: Cidr, member: Cidr, now_ms: u64, window_ms: Option<u64>) -> usize {
        if !self.members.contains_key(&prefix) && self.members.len() >= MAX_PREFIXES {
            self.forget_stale(now_ms, window_ms);
            if self.members.len() >= MAX_PREFIXES {
                self.forget_oldest();
            }
        }
        let list = self.members.entry(prefix).or_default();
        if let Some(w) = window_ms {
            list.retain(|(_, t)| now_ms.saturating_sub(*t) <= w);
        }
        match list.iter_mut().find(|(m, _)| *m == member) {
            Some(m) => m.1 = now_ms,
            None => list.push((member, now_ms)),
        }
        list.len()
    }

    /// Forgets the members of `prefix` (it was banned or refused by another way).
    pub fn forget(&mut self, prefix: &Cidr) {
        self.members.remove(prefix);
    }

    /// Whether a refusal of `prefix` is to be logged now: not if it was logged within the
    /// window (`None`: ever).
    pub fn first_refusal(&mut self, prefix: Cidr, now_ms: u64, window_ms: Option<u64>) -> bool {
        if let Some(t) = self.refused.get(&prefix) {
            if window_ms.is_none_or(|w| now_ms.saturating_sub(*t) <= w) {
                return false;
            }
        }
        if self.refused.len() >= MAX_PREFIXES {
            self.refused.clear();
        }
        self.refused.insert(prefix, now_ms);
        true
    }

    /// Drops members older than the window, and prefixes left empty.
    pub fn forget_stale(&mut self, now_ms: u64, window_ms: Option<u64>) {
        let Some(w) = window_ms else { return };
        self.members.retain(|_, list| {
            list.retain(|(_, t)| now_ms.saturating_sub(*t) <= w);
            !list.is_empty()
        });
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .members
            .iter()
            .map(|(p, list)| (*p, list.iter().map(|(_, t)| *t).max().unwrap_or(0)))
            .min_by_key(|(_, t)| *t)
            .map(|(p, _)| p);
        if let Some(p) = oldest {
            self.members.remove(&p);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::{translator_range, PrefixRule, PrefixTracker, MAX_PREFIXES};
    use crate::net::cidr::Cidr;

    fn rule() -> PrefixRule {
        PrefixRule {
            ipv6_prefix: 64,
            ipv4_prefix: 0,
            threshold: 3,
            ipv6_wider: Vec::new(),
            wider_threshold: 3,
            window_ms: Some(1_000),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_threshold_th_distinct_address_of_a_prefix_bans_it() {
        let mut t = PrefixTracker::default();
        let r = rule();
        assert!(t.on_ban(ip("2001:db8:1:2::1"), 0, &r, 0).is_none());
        assert!(
            t.on_ban(ip("2001:db8:1:2::1"), 10, &r, 0).is_none(),
            "same address again"
        );
        assert!(
            t.on_ban(ip("2001:db8:1:3::1"), 20, &r, 0).is_none(),
            "another /64"
        );
        assert!(t.on_ban(ip("2001:db8:1:2::2"), 30, &r, 0).is_none());
        let (prefix, members) = t.on_ban(ip("2001:db8:1:2:ffff::9"), 40, &r, 0).unwrap();
        assert_eq!(prefix.to_string(), "2001:db8:1:2::/64");
        assert_eq!(members, 3);
        assert_eq!(t.len(), 1, "the prefix is forgotten, the other /64 stays");
    }

    #[test]
    fn members_older_than_the_window_do_not_count() {
        let mut t = PrefixTracker::default();
        let r = rule();
        t.on_ban(ip("2001:db8::1"), 0, &r, 0);
        t.on_ban(ip("2001:db8::2"), 800, &r, 0);
        assert!(
            t.on_ban(ip("2001:db8::3"), 1_600, &r, 0).is_none(),
            "::1 is stale"
        );
        assert!(t.on_ban(ip("2001:db8::4"), 1_700, &r, 0).is_some());
    }

    #[test]
    fn ipv4_is_off_by_default_and_full_length_prefixes_mean_off() {
        let mut t = PrefixTracker::default();
        let r = rule();
        for i in 1..10 {
            assert!(t.on_ban(ip(&format!("192.0.2.{i}")), i, &r, 0).is_none());
        }
        let on = PrefixRule {
            ipv4_prefix: 24,
            ..r.clone()
        };
        assert_eq!(
            on.prefix_of(ip("192.0.2.77")).unwrap().to_string(),
            "192.0.2.0/24"
        );
        let full = PrefixRule {
            ipv6_prefix: 128,
            ..r
        };
        assert!(full.prefix_of(ip("2001:db8::1")).is_none());
    }

    #[test]
    fn a_refused_prefix_is_logged_once_per_window() {
        let mut t = PrefixTracker::default();
        let p: Cidr = "2001:db8::/64".parse().unwrap();
        assert!(t.first_refusal(p, 0, Some(1_000)));
        assert!(!t.first_refusal(p, 900, Some(1_000)), "within the window");
        assert!(t.first_refusal(p, 2_000, Some(1_000)), "a new window");
        let mut never = PrefixTracker::default();
        assert!(never.first_refusal(p, 0, None));
        assert!(!never.first_refusal(p, 1_000_000, None), "no window: once");
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = PrefixTracker::default();
        let r = PrefixRule {
            window_ms: None,
            ..rule()
        };
        for i in 0..(MAX_PREFIXES as u64 + 10) {
            let a = IpAddr::from(std::net::Ipv6Addr::from(
                (0x2001_0db8_u128 << 96) | (u128::from(i) << 64) | 1,
            ));
            t.on_ban(a, i, &r, 0);
        }
        assert_eq!(t.len(), MAX_PREFIXES);
    }

    /// Issue 25, item 7: a scanner holding a /48 that uses one address per /64 is aggregated
    /// upward: /56 once `wider_threshold` of its /64s hold bans, /48 once that many /56s do.
    #[test]
    fn aggregation_goes_on_upward_for_a_scanner_rotating_its_64s() {
        let r = PrefixRule {
            ipv6_wider: vec![56, 48],
            ..rule()
        };
        let mut t = PrefixTracker::default();
        assert!(t.on_ban(ip("2001:db8:1:1::1"), 0, &r, 0).is_none());
        assert!(t.on_ban(ip("2001:db8:1:2::1"), 1, &r, 0).is_none());
        let (p, n) = t.on_ban(ip("2001:db8:1:3::1"), 2, &r, 0).unwrap();
        assert_eq!((p.to_string(), n), ("2001:db8:1::/56".to_owned(), 3));
        // Each /56 of the /48 with a ban: the third makes the /48.
        assert!(t.on_ban(ip("2001:db8:1:100::1"), 3, &r, 0).is_none());
        let (p, _) = t.on_ban(ip("2001:db8:1:200::1"), 4, &r, 0).unwrap();
        assert_eq!(p.to_string(), "2001:db8:1::/48");
        // A prefix banned by the kernel counts as its /56's member from level 1 on.
        let mut k = PrefixTracker::default();
        for (i, a) in ["2001:db8:2:1::9", "2001:db8:2:2::9"].iter().enumerate() {
            assert!(k.on_ban(ip(a), i as u64, &r, 1).is_none());
        }
        assert_eq!(
            k.on_ban(ip("2001:db8:2:3::9"), 9, &r, 1)
                .unwrap()
                .0
                .to_string(),
            "2001:db8:2::/56"
        );
    }

    /// Issue 25, item 7: never inside NAT64, Teredo or 6to4.
    #[test]
    fn translator_ranges_are_never_aggregated() {
        let r = PrefixRule {
            ipv6_wider: vec![56, 48],
            ..rule()
        };
        let mut t = PrefixTracker::default();
        for (i, a) in [
            "64:ff9b::c000:201",
            "64:ff9b::c000:202",
            "64:ff9b::c000:203",
            "64:ff9b:1::1",
            "64:ff9b:1::2",
            "64:ff9b:1::3",
            "2001:0:4136:e378::1",
            "2001:0:4136:e378::2",
            "2001:0:4136:e378::3",
            "2002:c000:201::1",
            "2002:c000:201::2",
            "2002:c000:201::3",
        ]
        .iter()
        .enumerate()
        {
            assert!(t.on_ban(ip(a), i as u64, &r, 0).is_none(), "{a}");
            assert!(translator_range(ip(a)).is_some(), "{a}");
        }
        assert!(translator_range(ip("2001:db8::1")).is_none());
        assert!(translator_range(ip("64:ff9b:2::1")).is_none());
        assert_eq!(t.len(), 0);
    }
}
