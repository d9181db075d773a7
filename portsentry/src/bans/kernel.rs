//! Keeping the kernel in step with the book: address records in PS_BANS, the network trie
//! PS_BAN_CIDRS and its count in PS_CONFIG, the periodic sweep, and drop counters read back.
//!
//! Decides nothing about who may be banned (the precedence rules are in `mod.rs`) and never
//! writes `bans.json`.

use std::collections::HashSet;

use super::{BanBook, BanRecord, Origin, Result};
use crate::{
    clock::Now,
    dataplane::{DataplaneError, Maps},
    net::cidr::Cidr,
};

impl BanBook {
    /// Makes the kernel hold every record: addresses missing from the ban table are written,
    /// the network trie is set. Returns the targets the kernel had no room for (they stay
    /// recorded and are retried by the next sweep).
    pub fn install(&mut self, maps: &mut Maps, now: &Now) -> Result<Vec<Cidr>> {
        let mut refused = Vec::new();
        // The prefilter first, one write per word, so each ban below costs one insert (and no
        // filter write); an address the kernel holds already keeps its entry.
        maps.set_filter_bits(self.records.keys().filter(|t| t.is_host()).map(|t| t.addr))?;
        for r in self.records.values().filter(|r| r.target.is_host()) {
            match maps.insert_new_ban(r.target.addr, &r.to_entry(now, r.drops)) {
                Ok(_) => {}
                Err(DataplaneError::TableFull(_)) => refused.push(r.target),
                Err(e) => return Err(e),
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
        let mut config = maps.config()?;
        if config.ban_cidr_count != written.count {
            config.ban_cidr_count = written.count;
            maps.set_config(&config)?;
        }
        Ok(written.refused)
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
}
