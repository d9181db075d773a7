//! Keeping the kernel in step with the book: address records in PS_BANS, the network trie
//! PS_BAN_CIDRS and its count in PS_CONFIG, the periodic sweep (a bounded part at a time, so
//! that a million bans never hold up the daemon's loop), and drop counters read back.
//!
//! Decides nothing about who may be banned (the precedence rules are in `mod.rs`) and never
//! writes `bans.json`.

use std::{collections::HashSet, ops::Bound};

use portsentry_common::{AddrKey, BanEntry};

use super::{BanBook, BanRecord, Origin, Result};
use crate::{
    clock::Now,
    dataplane::{DataplaneError, Maps},
    net::cidr::{self, Cidr},
};

/// Restored bans written per batch call ([`BanBook::install`]): 64 k entries (3 MiB of keys
/// and values) bound the copies made for one call.
const RESTORE_BATCH: usize = 65_536;

/// A sweep under way ([`BanBook::sweep_step`]); a new one starts from `default()`.
#[derive(Debug, Default)]
pub struct Sweep {
    phase: Phase,
    expired: usize,
    /// A network record expired or stands: the trie is rewritten at the end.
    any_network: bool,
    kernel_seen: usize,
}

#[derive(Debug, Default)]
enum Phase {
    #[default]
    Start,
    /// The book's records after this target.
    Records(Option<Cidr>),
    /// The kernel's table from this address.
    Kernel(Option<std::net::IpAddr>),
    Networks,
}

impl BanBook {
    /// Makes the kernel hold every record: addresses missing from the ban table are written,
    /// the network trie is set. Returns the targets the kernel had no room for (they stay
    /// recorded and are retried by the next sweep).
    ///
    /// An address the kernel holds already (pinned or migrated maps) keeps its entry and drop
    /// counter. The rest are written [`RESTORE_BATCH`] per `bpf(2)` call where the kernel has
    /// batch operations ([`Maps::insert_bans`]): a million restored bans at start cost a few
    /// dozen calls, not a million.
    pub fn install(&mut self, maps: &mut Maps, now: &Now) -> Result<Vec<Cidr>> {
        let mut refused = Vec::new();
        // The prefilter first, one write per word, so the entries below cost no filter write.
        let hosts: Vec<_> = self
            .records
            .keys()
            .filter(|t| t.is_host())
            .map(|t| cidr::addr_key(t.addr))
            .collect();
        maps.set_filter_bits(&hosts)?;
        // Nothing is attached yet, so what the kernel holds now is what it holds at the write.
        let held: HashSet<AddrKey> = maps.ban_keys()?.into_iter().collect();
        let missing: Vec<&BanRecord> = self
            .records
            .values()
            .filter(|r| r.target.is_host() && !held.contains(&cidr::addr_key(r.target.addr)))
            .collect();
        for part in missing.chunks(RESTORE_BATCH) {
            let keys: Vec<AddrKey> = part.iter().map(|r| cidr::addr_key(r.target.addr)).collect();
            let entries: Vec<BanEntry> = part.iter().map(|r| r.to_entry(now, r.drops)).collect();
            let mut next = 0;
            while next < part.len() {
                next += maps.insert_bans(&keys[next..], &entries[next..])?;
                // The table was full at this one: refused, and the rest tried (each refused
                // in one call while the table stays full, as one at a time did).
                if let Some(r) = part.get(next) {
                    refused.push(r.target);
                    next += 1;
                }
            }
        }
        refused.extend(self.sync_networks(maps, now)?);
        Ok(refused)
    }

    /// Records a ban the XDP program just made (a `Ban` event), as the kernel stored it.
    pub fn on_kernel_ban(&mut self, maps: &Maps, target: &Cidr, now: &Now) -> Result<()> {
        if let Some(entry) = maps.ban(target.addr)? {
            let mut r = BanRecord::from_entry(*target, &entry, now);
            if let Some(old) = self.records.get(target) {
                r.fleet = old.fleet.clone().filter(|_| r.origin == Origin::Fleet);
            }
            let origin = r.origin;
            self.pressure.note(&r, now.unix_ms);
            if self.records.insert(*target, r).is_none() {
                self.count_made(origin);
            }
            self.dirty = true;
        }
        Ok(())
    }

    /// Writes one address record into the ban table; false if the table is full.
    pub(super) fn write_host(&self, maps: &mut Maps, target: &Cidr, now: &Now) -> Result<bool> {
        let Some(r) = self.records.get(target) else {
            return Ok(true);
        };
        // Most writes are fresh bans (a fleet's full list): one syscall. An address the kernel
        // already holds keeps its drop counter.
        match maps.insert_new_ban(target.addr, &r.to_entry(now, r.drops)) {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(DataplaneError::TableFull(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
        let drops = maps.ban(target.addr)?.map_or(r.drops, |e| e.drops);
        match maps.insert_ban(target.addr, &r.to_entry(now, drops)) {
            Ok(()) => Ok(true),
            Err(DataplaneError::TableFull(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Makes the network trie hold the unexpired network records and writes their count into
    /// the config. Returns the networks the trie had no room for (kept in the book, retried).
    pub(super) fn sync_networks(&mut self, maps: &mut Maps, now: &Now) -> Result<Vec<Cidr>> {
        let wanted: Vec<Cidr> = self
            .records
            .values()
            .filter(|r| !r.target.is_host() && !r.is_expired(now.unix_ms))
            .map(|r| r.target)
            .collect();
        let written = maps.set_ban_cidrs(&wanted)?;
        maps.set_ban_cidr_count(written.count)?;
        Ok(written.refused)
    }

    /// Drops expired records (kernel too), forgets old unbans, adopts kernel bans the book
    /// missed (lost events), refreshes drop counters and retries what the kernel refused.
    /// Returns how many bans expired. All at once: [`BanBook::sweep_step`] for a part at a
    /// time.
    pub fn sweep(&mut self, maps: &mut Maps, now: &Now) -> Result<usize> {
        let mut s = Sweep::default();
        loop {
            if let Some(n) = self.sweep_step(maps, now, &mut s, usize::MAX)? {
                return Ok(n);
            }
        }
    }

    /// The next part of a sweep: at most `max` book records or kernel entries. Returns how
    /// many bans expired once the sweep is done. The book is walked in order from where the
    /// last part ended, then the kernel's table (for bans the book missed), then the networks.
    pub fn sweep_step(
        &mut self,
        maps: &mut Maps,
        now: &Now,
        s: &mut Sweep,
        max: usize,
    ) -> Result<Option<usize>> {
        match s.phase {
            Phase::Start => {
                let before = self.unbanned.len();
                self.unbanned.retain(|_, until| *until > now.unix_ms);
                self.dirty |= before != self.unbanned.len();
                s.phase = Phase::Records(None);
                self.sweep_step(maps, now, s, max)
            }
            Phase::Records(after) => {
                let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
                let part: Vec<Cidr> = self
                    .records
                    .range((lower, Bound::Unbounded))
                    .take(max)
                    .map(|(t, _)| *t)
                    .collect();
                s.phase = match part.last() {
                    Some(last) if part.len() == max => Phase::Records(Some(*last)),
                    _ => Phase::Kernel(None),
                };
                for t in part {
                    let Some(r) = self.records.get_mut(&t) else {
                        continue;
                    };
                    if r.is_expired(now.unix_ms) {
                        s.any_network |= !t.is_host();
                        s.expired += 1;
                        self.lift(Some(maps), &t, now, false)?;
                    } else if !t.is_host() {
                        s.any_network = true;
                    } else if let Some(e) = maps.ban(t.addr)? {
                        r.drops = e.drops;
                    } else {
                        // Refused earlier (a full table) or removed behind the book's back.
                        self.write_host(maps, &t, now)?;
                    }
                }
                Ok(None)
            }
            Phase::Kernel(from) => {
                let (part, next) = maps.ban_addrs_from(from, max)?;
                s.kernel_seen += part.len();
                // A walk restarted by removals elsewhere ends after twice the table.
                let bound = 2 * maps.ban_capacity() as usize;
                s.phase = match next {
                    Some(a) if s.kernel_seen < bound => Phase::Kernel(Some(a)),
                    _ => Phase::Networks,
                };
                for addr in part {
                    let target = Cidr::host(addr);
                    if self.records.contains_key(&target) {
                        continue;
                    }
                    let Some(e) = maps.ban(addr)? else {
                        continue;
                    };
                    if e.expires_at_ns != 0 && e.expires_at_ns <= now.boot_ns {
                        maps.remove_ban(addr)?;
                    } else {
                        self.records
                            .insert(target, BanRecord::from_entry(target, &e, now));
                        self.dirty = true;
                    }
                }
                Ok(None)
            }
            Phase::Networks => {
                for (c, drops) in maps.ban_cidrs()? {
                    if let Some(r) = self.records.get_mut(&c) {
                        r.drops = drops;
                    }
                }
                if s.any_network {
                    self.sync_networks(maps, now)?;
                }
                let expired = s.expired;
                *s = Sweep::default();
                Ok(Some(expired))
            }
        }
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
}
