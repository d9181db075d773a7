//! The ban book's precedence rules, written here once. In this order:
//! 1. **Allowlist, bogus ranges, learned peers**: an allow entry lifts every ban it covers and
//!    refuses new ones; a fleet decision that merely overlaps it is refused too (the fleet must
//!    not cut this host off). A local network ban may contain allowlisted addresses: the XDP
//!    program exempts them. No ban is made for an address in a bogus range (`net::bogus`: 0/8,
//!    127/8, 224/4, 240/4, ::, ::1, ff00::/8, ::/96; no real peer is there), and a fleet
//!    decision reaching into one is refused. A fleet decision covering a learned peer
//!    (PS_PEERS, seen within `peer_memory`) is refused (`fleet.rs`); local detections still ban.
//! 2. **Operator's unban**: a fleet decision for a target the operator unbanned is refused
//!    until the lifted ban would have ended (at least a day). New local detections still ban.
//! 3. **Local bans** (detected, restored, manual) are never replaced or lifted by the fleet.
//! 4. **Fleet** decisions fill in the rest.
//!
//! Here: banning (`ban`, and `record_ban` for the fleet's steps), unbanning, lifting, the
//! allowlist and promoting shadow bans, each under these rules. The kernel side of a ban is
//! `kernel`'s and `pressure`'s; the fleet's batches are `fleet`'s.

use super::{BanBook, BanOutcome, BanRecord, NewBan, Origin, OriginRules, Result};
use crate::{
    clock::Now,
    dataplane::Maps,
    net::{bogus, cidr::Cidr},
};

/// An operator's unban holds off fleet decisions for at least this long.
const UNBAN_MEMORY_MS: u64 = 24 * 3600 * 1000;

impl BanBook {
    /// Sets the allowlist (configured plus automatic entries) and lifts every ban it covers,
    /// and every fleet ban it overlaps. Returns the lifted targets.
    pub fn set_allowlist(
        &mut self,
        mut maps: Option<&mut Maps>,
        allow: &[Cidr],
        now: &Now,
    ) -> Result<Vec<Cidr>> {
        self.allow = allow.to_vec();
        let lifted: Vec<Cidr> = self
            .records
            .values()
            .filter(|r| self.allow_conflict(&r.target, r.origin).is_some())
            .map(|r| r.target)
            .collect();
        for t in &lifted {
            self.lift(maps.as_deref_mut(), t, now, false)?;
        }
        if lifted.iter().any(|t| !t.is_host()) {
            if let Some(m) = maps {
                self.sync_networks(m, now)?;
            }
        }
        Ok(lifted)
    }

    /// The allow entry that forbids banning `target` for `origin`, if any.
    pub(super) fn allow_conflict(&self, target: &Cidr, origin: Origin) -> Option<Cidr> {
        self.allow
            .iter()
            .find(|a| {
                if origin == Origin::Fleet {
                    a.overlaps(target)
                } else {
                    a.covers(target)
                }
            })
            .copied()
    }

    /// An allow entry overlapping `target` (inside it or covering it), if any.
    pub fn allow_overlap(&self, target: &Cidr) -> Option<Cidr> {
        self.allow_conflict(target, Origin::Fleet)
    }

    /// Bans `new.target`, following the precedence rules.
    pub fn ban(&mut self, maps: Option<&mut Maps>, new: NewBan, now: &Now) -> Result<BanOutcome> {
        self.ban_one(maps, new, now, true)
    }

    pub(super) fn ban_one(
        &mut self,
        maps: Option<&mut Maps>,
        new: NewBan,
        now: &Now,
        sync_networks: bool,
    ) -> Result<BanOutcome> {
        let (target, origin) = (new.target, new.origin);
        let previous = match self.record_ban(new, now, false) {
            Ok(previous) => previous,
            Err(refused) => return Ok(refused),
        };
        let renewed = previous.is_some();
        if let Some(maps) = maps {
            let stored = if target.is_host() {
                self.write_host_making_room(maps, &target, now)?
            } else if sync_networks {
                !self.sync_networks(maps, now)?.contains(&target)
            } else {
                true
            };
            if !stored {
                self.restore_previous(target, previous);
                return Ok(BanOutcome::TableFull);
            }
        }
        Ok(if renewed {
            BanOutcome::Renewed
        } else {
            self.count_made(origin);
            BanOutcome::Banned
        })
    }

    /// The precedence rules and the record of [`Self::ban_one`], without the kernel: the
    /// record it replaced once recorded, the refusal otherwise. `checked`: the caller has just
    /// made the allowlist and bogus-range checks (a fleet step), so they are not made twice.
    pub(super) fn record_ban(
        &mut self,
        new: NewBan,
        now: &Now,
        checked: bool,
    ) -> std::result::Result<Option<BanRecord>, BanOutcome> {
        // A bogus target is named first to the operator (a usage error); for the fleet the
        // allowlist is (the reason that matters most when a decision touches both).
        if !checked {
            if new.origin != Origin::Fleet {
                if let Some(range) = bogus::covering(&new.target) {
                    return Err(BanOutcome::Bogus(range));
                }
            }
            if let Some(a) = self.allow_conflict(&new.target, new.origin) {
                return Err(BanOutcome::Allowlisted(a));
            }
            if new.origin == Origin::Fleet {
                if let Some(range) = bogus::overlapping(&new.target) {
                    return Err(BanOutcome::Bogus(range));
                }
            }
        }
        let existing = self.records.get(&new.target);
        if new.origin == Origin::Fleet {
            if self
                .unbanned
                .get(&new.target)
                .is_some_and(|until| *until > now.unix_ms)
            {
                return Err(BanOutcome::OperatorUnbanned);
            }
            if existing.is_some_and(|r| r.origin.is_local()) {
                return Err(BanOutcome::KeptLocal);
            }
        }
        if new.origin == Origin::Manual {
            self.unbanned.remove(&new.target);
        }
        let record = BanRecord {
            target: new.target,
            origin: new.origin,
            shadow: new.shadow,
            since_ms: existing.map_or(now.unix_ms, |r| r.since_ms),
            expires_ms: new.expires_ms,
            trigger: new.trigger,
            fleet: new.fleet,
            drops: existing.map_or(0, |r| r.drops),
            unverified: new.unverified,
        };
        self.pressure.note(&record, now.unix_ms);
        self.dirty = true;
        Ok(self.records.insert(record.target, record))
    }

    pub(super) fn restore_previous(&mut self, target: Cidr, previous: Option<BanRecord>) {
        match previous {
            Some(p) => self.records.insert(target, p),
            None => self.records.remove(&target),
        };
    }

    /// Lifts a ban. `by_operator` remembers it, so the fleet cannot re-impose it.
    pub fn unban(
        &mut self,
        maps: Option<&mut Maps>,
        target: &Cidr,
        by_operator: bool,
        now: &Now,
    ) -> Result<Option<BanRecord>> {
        let lifted = self.lift(maps, target, now, true)?;
        if by_operator {
            let until = lifted
                .as_ref()
                .and_then(|r| r.expires_ms)
                .unwrap_or(0)
                .max(now.unix_ms.saturating_add(UNBAN_MEMORY_MS));
            self.unbanned.insert(*target, until);
            self.dirty = true;
        }
        Ok(lifted)
    }

    /// Removes `target` from the book and the kernel. Addresses are also removed from the
    /// kernel when the book did not know them (an event the ring buffer lost).
    pub(super) fn lift(
        &mut self,
        maps: Option<&mut Maps>,
        target: &Cidr,
        now: &Now,
        sync_networks: bool,
    ) -> Result<Option<BanRecord>> {
        let removed = self.records.remove(target);
        let mut in_kernel = false;
        if let Some(maps) = maps {
            if target.is_host() {
                in_kernel = maps.remove_ban(target.addr)?;
            } else if sync_networks {
                let before = maps.ban_cidrs()?.iter().any(|(c, _)| c == target);
                self.sync_networks(maps, now)?;
                in_kernel = before;
            }
        }
        if removed.is_some() || in_kernel {
            self.dirty = true;
        }
        Ok(removed.or_else(|| {
            in_kernel.then(|| BanRecord::untracked(*target, Origin::Detected, now.unix_ms))
        }))
    }

    /// Turns every shadow ban into an enforced one; returns how many.
    pub fn promote_shadow(&mut self, mut maps: Option<&mut Maps>, now: &Now) -> Result<usize> {
        let shadows: Vec<Cidr> = self
            .records
            .values()
            .filter(|r| r.shadow)
            .map(|r| r.target)
            .collect();
        for t in &shadows {
            if let Some(r) = self.records.get_mut(t) {
                r.shadow = false;
            }
            if let Some(m) = maps.as_deref_mut() {
                self.write_host(m, t, now)?;
            }
        }
        self.dirty |= !shadows.is_empty();
        Ok(shadows.len())
    }
}
