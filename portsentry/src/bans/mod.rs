//! The ban book: the one owner of every ban (addresses and networks, every origin), and the
//! only code that writes PS_BANS, PS_BAN_CIDRS, the banned-network count in PS_CONFIG and
//! `bans.json`. The daemon, the CLI verbs (without a daemon) and fleet mode all go through it.
//!
//! Precedence, in this order, written here once:
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
//! Detect mode makes *shadow* bans: recorded, listed and persisted, never dropped, in any mode,
//! until `promote-shadow`. Under table pressure an unverified detected ban gives way first, then
//! the detected ban silent longest (its drop counter still since it was banned: a forged
//! source never sends again, a real scanner keeps hitting the drop); manual and fleet bans are
//! never displaced.
//!
//! Here: the types and the precedence rules (ban, unban, allowlist, promotion, saving). Opening
//! is in `open`, keeping the kernel in step in `kernel`, table pressure in `pressure`, fleet
//! updates in `fleet`, repeat offenders' history and TTLs in `recidive`, the file in `store`,
//! copies of the book for a writer on another thread in `snapshot`.
//!
//! Must not touch: the allowlist trie and guarded ports (daemon), hooks, logging.

mod fleet;
mod kernel;
pub mod notice;
mod open;
mod pressure;
pub mod recidive;
pub mod record;
mod snapshot;
pub mod store;

use std::collections::BTreeMap;

pub use fleet::{
    FleetApplied, FleetBan, FleetBatch, FleetUpdate, KernelPeers, PeerLookup, Refusal, DETAIL_MAX,
};
pub use kernel::Sweep;
pub use notice::BanNotice;
pub use open::Opened;
pub use pressure::MadeRoom;
pub use recidive::{Offence, RecidivePolicy, Repeat};
pub use record::{BanRecord, FleetNote, Origin, OriginRules, Trigger};
pub use snapshot::Snapshot;
pub use store::{Saved, StateError, StateStore, Unbanned};

use crate::{
    clock::Now,
    dataplane::{DataplaneError, Maps},
    net::{
        bogus,
        cidr::{self, Cidr},
    },
};

/// An operator's unban holds off fleet decisions for at least this long.
const UNBAN_MEMORY_MS: u64 = 24 * 3600 * 1000;

/// A ban to make.
#[derive(Clone, Debug)]
pub struct NewBan {
    pub target: Cidr,
    pub origin: Origin,
    pub shadow: bool,
    pub expires_ms: Option<u64>,
    pub trigger: Option<Trigger>,
    pub fleet: Option<FleetNote>,
    /// The path check could not decide (a detected ban only).
    pub unverified: bool,
}

/// What `ban` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanOutcome {
    Banned,
    /// The target was banned already; the record now carries the new expiry.
    Renewed,
    /// Refused: this allow entry covers (or, for the fleet, overlaps) the target.
    Allowlisted(Cidr),
    /// Refused: the target lies in this bogus range (for the fleet: reaches into it).
    Bogus(Cidr),
    /// Refused for the fleet: a local ban of the target stands.
    KeptLocal,
    /// Refused for the fleet: the operator unbanned this target.
    OperatorUnbanned,
    /// Refused: no room in the kernel table, even after reclaiming.
    TableFull,
}

type Result<T> = std::result::Result<T, DataplaneError>;

fn origin_index(origin: Origin) -> usize {
    Origin::ALL.iter().position(|o| *o == origin).unwrap_or(0)
}

pub struct BanBook {
    records: BTreeMap<Cidr, BanRecord>,
    /// Operator's unbans: target → until (Unix ms).
    unbanned: BTreeMap<Cidr, u64>,
    allow: Vec<Cidr>,
    store: StateStore,
    dirty: bool,
    /// Bans made since the book was opened, by origin (indexed by the origin's position in
    /// `Origin::ALL`); renewals are not counted.
    made: [u64; Origin::COUNT],
    /// Repeat offenders: per source, bans in a row and the last one (`recidive`).
    history: recidive::History,
    /// The order address bans give way in when the kernel table is full (`pressure`).
    pressure: pressure::Displacement,
}

impl BanBook {
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    pub fn records(&self) -> impl Iterator<Item = &BanRecord> {
        self.records.values()
    }

    pub fn get(&self, target: &Cidr) -> Option<&BanRecord> {
        self.records.get(target)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn shadow_count(&self) -> usize {
        self.records.values().filter(|r| r.shadow).count()
    }

    /// Bans of `origin` made since the book was opened (renewals not counted).
    pub fn made(&self, origin: Origin) -> u64 {
        self.made[origin_index(origin)]
    }

    /// The single-address bans inside `network` (a range of the ordered book, not a scan).
    pub fn hosts_in<'a>(&'a self, network: &Cidr) -> impl Iterator<Item = &'a BanRecord> + 'a {
        // The network's key range, back in its own family (IPv4 keys are IPv4-mapped).
        let (first, last) = match Cidr::masked(network.addr, network.prefix) {
            Some(n) => n.key_range(),
            None => {
                let k = u128::from_be_bytes(network.key().addr);
                (k, k)
            }
        };
        let addr = |k: u128| {
            cidr::key_addr(&portsentry_common::AddrKey {
                addr: k.to_be_bytes(),
            })
        };
        let (first, last) = (addr(first), addr(last));
        let low = Cidr {
            addr: first,
            prefix: 0,
        };
        let high = Cidr {
            addr: last,
            prefix: u8::MAX,
        };
        let network = *network;
        self.records
            .range(low..=high)
            .map(|(_, r)| r)
            .filter(move |r| r.target.is_host() && network.covers(&r.target))
    }

    /// Entries of the allowlist the book enforces (configured plus automatic).
    pub fn allow_len(&self) -> usize {
        self.allow.len()
    }

    fn count_made(&mut self, origin: Origin) {
        let n = &mut self.made[origin_index(origin)];
        *n = n.saturating_add(1);
    }

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
    fn allow_conflict(&self, target: &Cidr, origin: Origin) -> Option<Cidr> {
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

    fn ban_one(
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
    fn record_ban(
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

    fn restore_previous(&mut self, target: Cidr, previous: Option<BanRecord>) {
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
    fn lift(
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

    /// Writes the book to `bans.json`: one pass over the records, straight into the file.
    pub fn save(&mut self) -> std::result::Result<(), StateError> {
        let unbanned = self.unbanned_list();
        let history = self.history.to_saved();
        self.store
            .save_records(self.records.values(), &unbanned, &history)?;
        self.dirty = false;
        Ok(())
    }

    pub(super) fn unbanned_list(&self) -> Vec<Unbanned> {
        self.unbanned
            .iter()
            .map(|(t, until)| Unbanned {
                target: *t,
                until_ms: *until,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
