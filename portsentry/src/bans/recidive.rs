//! Repeat offenders: a source the kernel bans again within `recidive_window` of its last ban's
//! end gets `ban_ttl × ban_ttl_factor^(n−1)` for its n-th ban, at most `ban_ttl_max` (never less
//! than `ban_ttl`). fail2ban's `bantime.increment` with its default formula (×1, 2, 4, 8, …,
//! `bantime.maxtime`), without the random part or the multiplier list.
//!
//! Owns: the TTL arithmetic, the per-source history (ban count, last ban, its end) kept in the
//! book and saved with it in `bans.json`, bounded to [`MAX_HISTORY`] sources (the one banned
//! longest ago is forgotten first). Only enforced detected bans count: manual and fleet bans
//! carry their own durations, shadow bans are not enforced.
//!
//! Must not: log (the daemon words `portsentry: repeat offender …`).

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{BanBook, Origin, Result};
use crate::{
    clock::duration_ms as ms,
    clock::Now,
    config::{settings::LiveSettings, values::MAX_DURATION},
    dataplane::Maps,
    net::cidr::Cidr,
};

/// Sources remembered at most; the one banned longest ago is forgotten first.
pub const MAX_HISTORY: usize = 16_384;

/// `recidive_window`, `ban_ttl_factor`, `ban_ttl_max` as the book applies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecidivePolicy {
    /// After a ban ends, a new ban within this long is a repeat; `None`: always.
    pub window: Option<Duration>,
    /// 1: no escalation (and no history kept).
    pub factor: u32,
    /// `None`: at most 100 years.
    pub max: Option<Duration>,
}

impl From<&LiveSettings> for RecidivePolicy {
    fn from(live: &LiveSettings) -> Self {
        Self {
            window: live.recidive_window,
            factor: live.ban_ttl_factor,
            max: live.ban_ttl_max,
        }
    }
}

impl RecidivePolicy {
    pub const OFF: Self = Self {
        window: None,
        factor: 1,
        max: None,
    };

    pub fn is_on(&self) -> bool {
        self.factor > 1
    }

    /// The TTL of a source's `n`-th ban in a row (1 = first) when `base` is `ban_ttl`:
    /// `base × factor^(n−1)`, capped by `max` (and 100 years), never below `base`. "Never"
    /// stays never; nothing overflows.
    pub fn ttl(&self, base: Option<Duration>, n: u32) -> Option<Duration> {
        let base = base?;
        if n <= 1 || !self.is_on() {
            return Some(base);
        }
        let cap = self.max.unwrap_or(MAX_DURATION).min(MAX_DURATION).max(base);
        let scaled = u64::from(self.factor)
            .checked_pow(n - 1)
            .and_then(|m| u32::try_from(m).ok())
            .and_then(|m| base.checked_mul(m));
        Some(scaled.map_or(cap, |t| t.min(cap)))
    }

    /// Whether a ban at `now_ms` repeats `prev`.
    fn repeats(&self, prev: &Offence, now_ms: u64) -> bool {
        let Some(ended) = prev.until_ms else {
            return true;
        };
        match self.window {
            None => true,
            Some(w) => now_ms <= ended.saturating_add(ms(w)),
        }
    }
}

/// One source's history, as the state file stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offence {
    pub target: Cidr,
    /// Bans in a row, each within the window of the one before (1 = first).
    pub bans: u32,
    /// Wall clock (Unix ms) the last ban began.
    pub last_ms: u64,
    /// When the last ban ends (ended); `None`: never.
    pub until_ms: Option<u64>,
}

/// What [`BanBook::note_offence`] found: the source's `bans`-th ban in a row, now with `ttl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repeat {
    pub bans: u32,
    pub ttl: Option<Duration>,
}

/// The history: by source, and by age for forgetting.
#[derive(Debug, Default)]
pub struct History {
    by_target: HashMap<Cidr, Offence>,
    by_age: BTreeSet<(u64, Cidr)>,
}

impl History {
    pub fn from_saved(saved: Vec<Offence>) -> Self {
        let mut h = Self::default();
        for o in saved {
            h.put(o);
        }
        h
    }

    pub fn len(&self) -> usize {
        self.by_target.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_target.is_empty()
    }

    pub fn get(&self, target: &Cidr) -> Option<&Offence> {
        self.by_target.get(target)
    }

    /// Oldest first, for the state file.
    pub fn to_saved(&self) -> Vec<Offence> {
        self.by_age
            .iter()
            .filter_map(|(_, t)| self.by_target.get(t).cloned())
            .collect()
    }

    fn put(&mut self, o: Offence) {
        if let Some(old) = self.by_target.remove(&o.target) {
            self.by_age.remove(&(old.last_ms, old.target));
        }
        self.by_age.insert((o.last_ms, o.target));
        self.by_target.insert(o.target, o);
        while self.by_target.len() > MAX_HISTORY {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.by_target.remove(&oldest);
        }
    }

    /// Forgets sources whose last ban ended more than `window` ago; returns how many.
    pub fn forget_older(&mut self, window: Option<Duration>, now_ms: u64) -> usize {
        let Some(w) = window else {
            return 0;
        };
        let old: Vec<Cidr> = self
            .by_target
            .values()
            .filter(|o| o.until_ms.is_some_and(|u| u.saturating_add(ms(w)) < now_ms))
            .map(|o| o.target)
            .collect();
        for t in &old {
            if let Some(o) = self.by_target.remove(t) {
                self.by_age.remove(&(o.last_ms, o.target));
            }
        }
        old.len()
    }
}

impl BanBook {
    /// After the ban of `target` (just made by the kernel, or by the book when the table was
    /// full): counts it in the source's history and, for a repeat offender, extends the ban to
    /// its escalated TTL in the record and the kernel. `base` is `ban_ttl`, the TTL the ban was
    /// made with. Returns the repeat, if it is one. A ban counted already (the same start) is
    /// not counted again.
    pub fn note_offence(
        &mut self,
        maps: Option<&mut Maps>,
        target: &Cidr,
        policy: &RecidivePolicy,
        base: Option<Duration>,
        now: &Now,
    ) -> Result<Option<Repeat>> {
        if !policy.is_on() {
            return Ok(None);
        }
        let Some(r) = self.records.get(target) else {
            return Ok(None);
        };
        // An unverified ban may be a forger's work (the path check could not decide): it
        // never escalates, or a LAN forger could get a neighbour banned for 28 days.
        if r.origin != Origin::Detected || r.shadow || r.unverified {
            return Ok(None);
        }
        let since = r.since_ms;
        let prev = self.history.get(target);
        if prev.is_some_and(|p| p.last_ms == since) {
            return Ok(None);
        }
        let bans = match prev {
            Some(p) if policy.repeats(p, now.unix_ms) => p.bans.saturating_add(1),
            _ => 1,
        };
        let ttl = policy.ttl(base, bans);
        let mut until = r.expires_ms;
        if bans > 1 {
            if let Some(t) = ttl {
                let escalated = since.saturating_add(ms(t));
                if until.is_some_and(|u| u < escalated) {
                    until = Some(escalated);
                    if let Some(rec) = self.records.get_mut(target) {
                        rec.expires_ms = until;
                    }
                    if let Some(m) = maps {
                        self.write_host(m, target, now)?;
                    }
                }
            }
        }
        self.history.put(Offence {
            target: *target,
            bans,
            last_ms: since,
            until_ms: until,
        });
        self.dirty = true;
        Ok((bans > 1).then_some(Repeat { bans, ttl }))
    }

    /// Forgets the history of sources whose last ban ended more than `recidive_window` ago.
    pub fn forget_offences(&mut self, policy: &RecidivePolicy, now_ms: u64) {
        if self.history.forget_older(policy.window, now_ms) > 0 {
            self.dirty = true;
        }
    }

    /// The history of `target`, if the book remembers one.
    pub fn offence(&self, target: &Cidr) -> Option<&Offence> {
        self.history.get(target)
    }
}

#[cfg(test)]
mod tests {
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
        let (mut b, _) =
            BanBook::open(store.clone(), Saved::default(), None, None, true, &t0).unwrap();
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
}
