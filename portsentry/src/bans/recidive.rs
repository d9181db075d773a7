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
mod tests;
