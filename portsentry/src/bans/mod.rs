//! The ban book: the one owner of every ban (addresses and networks, every origin), and the
//! only code that writes PS_BANS, PS_BAN_CIDRS, the banned-network count in PS_CONFIG and
//! `bans.json`. The daemon, the CLI verbs (without a daemon) and fleet mode all go through it.
//!
//! Precedence, in this order, written here once:
//! 1. **Allowlist**: an allow entry lifts every ban it covers and refuses new ones; a fleet
//!    decision that merely overlaps it is refused too (the fleet must not cut this host off).
//!    A local network ban may contain allowlisted addresses: the XDP program exempts them.
//! 2. **Operator's unban**: a fleet decision for a target the operator unbanned is refused
//!    until the lifted ban would have ended (at least a day). New local detections still ban.
//! 3. **Local bans** (detected, restored, manual) are never replaced or lifted by the fleet.
//! 4. **Fleet** decisions fill in the rest.
//!
//! Detect mode makes *shadow* bans: recorded, listed and persisted, never dropped, in any mode,
//! until `promote-shadow`. Under table pressure, expired entries are reclaimed first, then the
//! detected ban that expires soonest makes room; manual and fleet bans are never displaced.
//!
//! Must not touch: the allowlist trie and guarded ports (daemon), hooks, logging.

mod fleet;
pub mod record;
pub mod store;

use std::collections::{BTreeMap, HashSet};

pub use fleet::FleetApplied;
pub use record::{BanRecord, FleetNote, Origin, OriginRules, Trigger};
pub use store::{Saved, StateError, StateStore, Unbanned};

use crate::{
    clock::Now,
    dataplane::{DataplaneError, Maps, Migrated},
    net::cidr::Cidr,
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
}

/// What `ban` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanOutcome {
    Banned,
    /// The target was banned already; the record now carries the new expiry.
    Renewed,
    /// Refused: this allow entry covers (or, for the fleet, overlaps) the target.
    Allowlisted(Cidr),
    /// Refused for the fleet: a local ban of the target stands.
    KeptLocal,
    /// Refused for the fleet: the operator unbanned this target.
    OperatorUnbanned,
    /// Refused: no room in the kernel table, even after reclaiming.
    TableFull,
}

/// What opening the book found.
#[derive(Debug, Default)]
pub struct Opened {
    pub from_file: usize,
    pub expired: usize,
    /// Entries found only in the (pinned or migrated) kernel maps.
    pub adopted: usize,
    /// Entries the (pinned or migrated) kernel maps held.
    pub in_kernel: usize,
}

/// What a table-full event led to.
#[derive(Debug, PartialEq, Eq)]
pub enum MadeRoom {
    /// Expired entries were reclaimed.
    Reclaimed(usize),
    /// This detected ban was lifted early.
    Displaced(Cidr),
    /// Everything left is manual or fleet: nothing may be displaced.
    NoRoom,
}

type Result<T> = std::result::Result<T, DataplaneError>;

pub struct BanBook {
    records: BTreeMap<Cidr, BanRecord>,
    /// Operator's unbans: target → until (Unix ms).
    unbanned: BTreeMap<Cidr, u64>,
    allow: Vec<Cidr>,
    store: StateStore,
    dirty: bool,
}

impl BanBook {
    /// The book from `saved` (already read from `store`) and whatever the kernel maps hold.
    /// Kernel entries win over the file for the same target (they are newer); `restoring`
    /// marks the file's detected bans as restored (a daemon start).
    pub fn open(
        store: StateStore,
        saved: Saved,
        kernel: Option<&Maps>,
        migrated: Option<&Migrated>,
        restoring: bool,
        now: &Now,
    ) -> Result<(Self, Opened)> {
        let mut book = Self {
            records: BTreeMap::new(),
            unbanned: saved
                .unbanned
                .into_iter()
                .filter(|u| u.until_ms > now.unix_ms)
                .map(|u| (u.target, u.until_ms))
                .collect(),
            allow: Vec::new(),
            store,
            dirty: false,
        };
        let mut opened = Opened::default();
        for mut r in saved.bans {
            if r.is_expired(now.unix_ms) {
                opened.expired += 1;
                continue;
            }
            if restoring && r.origin == Origin::Detected {
                r.origin = Origin::Restored;
            }
            opened.from_file += 1;
            book.records.insert(r.target, r);
        }
        let mut hosts = Vec::new();
        let mut networks = Vec::new();
        if let Some(maps) = kernel {
            hosts.extend(maps.bans()?);
            networks.extend(maps.ban_cidrs()?.into_iter().map(|(c, _)| c));
        }
        if let Some(m) = migrated {
            hosts.extend(m.bans.iter().copied());
            networks.extend(m.networks.iter().copied());
        }
        opened.in_kernel = hosts.len() + networks.len();
        for (addr, entry) in hosts {
            let r = BanRecord::from_entry(Cidr::host(addr), &entry, now);
            if r.is_expired(now.unix_ms) {
                continue;
            }
            match book.records.get_mut(&r.target) {
                Some(known) => {
                    let note = known.fleet.take();
                    *known = BanRecord { fleet: note, ..r };
                }
                None => {
                    opened.adopted += 1;
                    book.records.insert(r.target, r);
                }
            }
        }
        for target in networks {
            // Only a hand-edited trie has networks the file does not know: manual, forever.
            if let std::collections::btree_map::Entry::Vacant(v) = book.records.entry(target) {
                opened.adopted += 1;
                v.insert(BanRecord::untracked(target, Origin::Manual, now.unix_ms));
            }
        }
        book.dirty = opened.expired > 0 || opened.adopted > 0;
        Ok((book, opened))
    }

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

    /// Makes the kernel hold every record: addresses missing from the ban table are written,
    /// the network trie is set. Returns the targets the kernel had no room for (they stay
    /// recorded and are retried by the next sweep).
    pub fn install(&mut self, maps: &mut Maps, now: &Now) -> Result<Vec<Cidr>> {
        let mut refused = Vec::new();
        let hosts: Vec<Cidr> = self
            .records
            .keys()
            .filter(|t| t.is_host())
            .copied()
            .collect();
        for t in hosts {
            if maps.ban(t.addr)?.is_none() && !self.write_host(maps, &t, now)? {
                refused.push(t);
            }
        }
        refused.extend(self.sync_networks(maps, now)?);
        Ok(refused)
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
        if let Some(a) = self.allow_conflict(&new.target, new.origin) {
            return Ok(BanOutcome::Allowlisted(a));
        }
        let existing = self.records.get(&new.target);
        if new.origin == Origin::Fleet {
            if self
                .unbanned
                .get(&new.target)
                .is_some_and(|until| *until > now.unix_ms)
            {
                return Ok(BanOutcome::OperatorUnbanned);
            }
            if existing.is_some_and(|r| r.origin.is_local()) {
                return Ok(BanOutcome::KeptLocal);
            }
        }
        if new.origin == Origin::Manual {
            self.unbanned.remove(&new.target);
        }
        let renewed = existing.is_some();
        let record = BanRecord {
            target: new.target,
            origin: new.origin,
            shadow: new.shadow,
            since_ms: existing.map_or(now.unix_ms, |r| r.since_ms),
            expires_ms: new.expires_ms,
            trigger: new.trigger,
            fleet: new.fleet,
            drops: existing.map_or(0, |r| r.drops),
        };
        let previous = self.records.insert(record.target, record);
        self.dirty = true;
        if let Some(maps) = maps {
            let stored = if new.target.is_host() {
                self.write_host_making_room(maps, &new.target, now)?
            } else if sync_networks {
                !self.sync_networks(maps, now)?.contains(&new.target)
            } else {
                true
            };
            if !stored {
                self.restore_previous(new.target, previous);
                return Ok(BanOutcome::TableFull);
            }
        }
        Ok(if renewed {
            BanOutcome::Renewed
        } else {
            BanOutcome::Banned
        })
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

    /// Records a ban the XDP program just made (a `Ban` event), as the kernel stored it.
    pub fn on_kernel_ban(&mut self, maps: &Maps, target: &Cidr, now: &Now) -> Result<()> {
        if let Some(entry) = maps.ban(target.addr)? {
            let mut r = BanRecord::from_entry(*target, &entry, now);
            if let Some(old) = self.records.get(target) {
                r.fleet = old.fleet.clone().filter(|_| r.origin == Origin::Fleet);
            }
            self.records.insert(*target, r);
            self.dirty = true;
        }
        Ok(())
    }

    /// The ban table is full: reclaim expired entries, else displace the detected ban that
    /// expires soonest. Never displaces manual or fleet bans.
    pub fn make_room(&mut self, maps: &mut Maps, now: &Now) -> Result<MadeRoom> {
        // From the records, not a scan of the kernel table: this runs per table-full event.
        let expired: Vec<Cidr> = self
            .records
            .values()
            .filter(|r| r.target.is_host() && r.is_expired(now.unix_ms))
            .map(|r| r.target)
            .collect();
        let reclaimed = expired.len();
        for t in &expired {
            self.lift(Some(maps), t, now, false)?;
        }
        if reclaimed > 0 {
            self.dirty = true;
            return Ok(MadeRoom::Reclaimed(reclaimed));
        }
        let victim = self
            .records
            .values()
            .filter(|r| r.target.is_host() && r.origin.is_displaceable())
            .min_by_key(|r| (r.expires_ms.unwrap_or(u64::MAX), r.since_ms))
            .map(|r| r.target);
        match victim {
            Some(v) => {
                self.lift(Some(maps), &v, now, false)?;
                Ok(MadeRoom::Displaced(v))
            }
            None => Ok(MadeRoom::NoRoom),
        }
    }

    /// Writes an address record into the ban table, making room if the table is full.
    fn write_host_making_room(
        &mut self,
        maps: &mut Maps,
        target: &Cidr,
        now: &Now,
    ) -> Result<bool> {
        if self.write_host(maps, target, now)? {
            return Ok(true);
        }
        match self.make_room(maps, now)? {
            MadeRoom::NoRoom => Ok(false),
            _ => self.write_host(maps, target, now),
        }
    }

    /// Writes one address record into the ban table; false if the table is full.
    fn write_host(&self, maps: &mut Maps, target: &Cidr, now: &Now) -> Result<bool> {
        let Some(r) = self.records.get(target) else {
            return Ok(true);
        };
        let drops = maps.ban(target.addr)?.map_or(r.drops, |e| e.drops);
        match maps.insert_ban(target.addr, &r.to_entry(now, drops)) {
            Ok(()) => Ok(true),
            Err(DataplaneError::TableFull(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Makes the network trie hold the unexpired network records and writes their count into
    /// the config. Returns the networks the trie had no room for (kept in the book, retried).
    fn sync_networks(&mut self, maps: &mut Maps, now: &Now) -> Result<Vec<Cidr>> {
        let wanted: Vec<Cidr> = self
            .records
            .values()
            .filter(|r| !r.target.is_host() && !r.is_expired(now.unix_ms))
            .map(|r| r.target)
            .collect();
        let written = maps.set_ban_cidrs(&wanted)?;
        let mut config = maps.config()?;
        if config.ban_cidr_count != written.count {
            config.ban_cidr_count = written.count;
            maps.set_config(&config)?;
        }
        Ok(written.refused)
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

    /// Drops expired records (kernel too), forgets old unbans, adopts kernel bans the book
    /// missed (lost events), refreshes drop counters and retries what the kernel refused.
    /// Returns how many bans expired.
    pub fn sweep(&mut self, maps: &mut Maps, now: &Now) -> Result<usize> {
        let expired: Vec<Cidr> = self
            .records
            .values()
            .filter(|r| r.is_expired(now.unix_ms))
            .map(|r| r.target)
            .collect();
        let any_network = expired.iter().any(|t| !t.is_host());
        for t in &expired {
            self.lift(Some(maps), t, now, false)?;
        }
        let before = self.unbanned.len();
        self.unbanned.retain(|_, until| *until > now.unix_ms);
        self.dirty |= before != self.unbanned.len();
        let mut in_kernel = HashSet::new();
        for (addr, e) in maps.bans()? {
            let target = Cidr::host(addr);
            if e.expires_at_ns != 0 && e.expires_at_ns <= now.boot_ns {
                maps.remove_ban(addr)?;
                continue;
            }
            in_kernel.insert(target);
            match self.records.get_mut(&target) {
                Some(r) => r.drops = e.drops,
                None => {
                    self.records
                        .insert(target, BanRecord::from_entry(target, &e, now));
                    self.dirty = true;
                }
            }
        }
        let missing: Vec<Cidr> = self
            .records
            .keys()
            .filter(|t| t.is_host() && !in_kernel.contains(t))
            .copied()
            .collect();
        for t in missing {
            self.write_host(maps, &t, now)?;
        }
        for (c, drops) in maps.ban_cidrs()? {
            if let Some(r) = self.records.get_mut(&c) {
                r.drops = drops;
            }
        }
        if any_network || self.records.values().any(|r| !r.target.is_host()) {
            self.sync_networks(maps, now)?;
        }
        Ok(expired.len())
    }

    /// Drop counters from the kernel, for `list`.
    pub fn refresh_drops(&mut self, maps: &Maps) -> Result<()> {
        for (addr, e) in maps.bans()? {
            if let Some(r) = self.records.get_mut(&Cidr::host(addr)) {
                r.drops = e.drops;
            }
        }
        for (c, drops) in maps.ban_cidrs()? {
            if let Some(r) = self.records.get_mut(&c) {
                r.drops = drops;
            }
        }
        Ok(())
    }

    /// Writes the book to `bans.json`.
    pub fn save(&mut self) -> std::result::Result<(), StateError> {
        let saved = Saved {
            bans: self.records.values().cloned().collect(),
            unbanned: self
                .unbanned
                .iter()
                .map(|(t, until)| Unbanned {
                    target: *t,
                    until_ms: *until,
                })
                .collect(),
        };
        self.store.save(&saved)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
