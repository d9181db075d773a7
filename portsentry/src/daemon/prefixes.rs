//! Prefix-aware bans (issue 16, item 2). An IPv6 scanner owns at least a /64 and can send each
//! probe from a new address: per-address bans never stop it and fill the table. The event loop
//! tells this tracker about every enforced, verified address ban; when `prefix_threshold`
//! distinct addresses of one prefix (`ipv6_prefix`, `ipv4_prefix`) were banned within
//! `window`, the daemon bans the prefix and folds the member bans into it.
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
//! trigger, and the daemon bans the prefix the same way (`Daemon::on_prefix_trigger`).

use std::{collections::HashMap, net::IpAddr};

use crate::net::cidr::Cidr;

/// Prefixes remembered at once; beyond it the stalest are forgotten.
const MAX_PREFIXES: usize = 65_536;

#[derive(Debug, Default)]
pub struct PrefixTracker {
    /// Prefix → its recently banned members (address, Unix ms).
    members: HashMap<Cidr, Vec<(IpAddr, u64)>>,
    /// Prefixes refused for holding an allowlisted address → when that was last logged (Unix
    /// ms), so the refusal is logged once per window, not at each kernel trigger.
    refused: HashMap<Cidr, u64>,
}

/// What the tracker needs of the settings.
#[derive(Clone, Copy, Debug)]
pub struct PrefixRule {
    pub ipv6_prefix: u8,
    pub ipv4_prefix: u8,
    pub threshold: u32,
    /// Members older than this no longer count; `None` = never forget.
    pub window_ms: Option<u64>,
}

impl PrefixRule {
    /// The prefix `addr` belongs to under this rule, if aggregation is on for its family.
    pub fn prefix_of(&self, addr: IpAddr) -> Option<Cidr> {
        let len = match addr {
            IpAddr::V4(_) => self.ipv4_prefix,
            IpAddr::V6(_) => self.ipv6_prefix,
        };
        let full = if addr.is_ipv4() { 32 } else { 128 };
        if len == 0 || len >= full {
            return None;
        }
        Cidr::masked(addr, len)
    }
}

impl PrefixTracker {
    /// Records a verified ban of `addr`; returns the prefix and its members once they reach
    /// the threshold (the members are then forgotten: the prefix ban replaces them).
    pub fn on_ban(
        &mut self,
        addr: IpAddr,
        now_ms: u64,
        rule: &PrefixRule,
    ) -> Option<(Cidr, Vec<IpAddr>)> {
        let prefix = rule.prefix_of(addr)?;
        if !self.members.contains_key(&prefix) && self.members.len() >= MAX_PREFIXES {
            self.forget_stale(now_ms, rule.window_ms);
            if self.members.len() >= MAX_PREFIXES {
                self.forget_oldest();
            }
        }
        let list = self.members.entry(prefix).or_default();
        if let Some(w) = rule.window_ms {
            list.retain(|(_, t)| now_ms.saturating_sub(*t) <= w);
        }
        match list.iter_mut().find(|(a, _)| *a == addr) {
            Some(m) => m.1 = now_ms,
            None => list.push((addr, now_ms)),
        }
        if list.len() < usize::try_from(rule.threshold).unwrap_or(usize::MAX) {
            return None;
        }
        let members = self.members.remove(&prefix)?;
        Some((prefix, members.into_iter().map(|(a, _)| a).collect()))
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
    use super::*;

    fn rule() -> PrefixRule {
        PrefixRule {
            ipv6_prefix: 64,
            ipv4_prefix: 0,
            threshold: 3,
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
        assert!(t.on_ban(ip("2001:db8:1:2::1"), 0, &r).is_none());
        assert!(
            t.on_ban(ip("2001:db8:1:2::1"), 10, &r).is_none(),
            "same address again"
        );
        assert!(
            t.on_ban(ip("2001:db8:1:3::1"), 20, &r).is_none(),
            "another /64"
        );
        assert!(t.on_ban(ip("2001:db8:1:2::2"), 30, &r).is_none());
        let (prefix, members) = t.on_ban(ip("2001:db8:1:2:ffff::9"), 40, &r).unwrap();
        assert_eq!(prefix.to_string(), "2001:db8:1:2::/64");
        assert_eq!(members.len(), 3);
        assert_eq!(t.len(), 1, "the prefix is forgotten, the other /64 stays");
    }

    #[test]
    fn members_older_than_the_window_do_not_count() {
        let mut t = PrefixTracker::default();
        let r = rule();
        t.on_ban(ip("2001:db8::1"), 0, &r);
        t.on_ban(ip("2001:db8::2"), 800, &r);
        assert!(
            t.on_ban(ip("2001:db8::3"), 1_600, &r).is_none(),
            "::1 is stale"
        );
        assert!(t.on_ban(ip("2001:db8::4"), 1_700, &r).is_some());
    }

    #[test]
    fn ipv4_is_off_by_default_and_full_length_prefixes_mean_off() {
        let mut t = PrefixTracker::default();
        let r = rule();
        for i in 1..10 {
            assert!(t.on_ban(ip(&format!("192.0.2.{i}")), i, &r).is_none());
        }
        let on = PrefixRule {
            ipv4_prefix: 24,
            ..r
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
            t.on_ban(a, i, &r);
        }
        assert_eq!(t.len(), MAX_PREFIXES);
    }
}
