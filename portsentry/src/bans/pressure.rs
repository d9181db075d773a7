//! Table pressure: what gives way when the kernel's address ban table is full.
//!
//! Only address records compete for room here; networks the trie refuses stay in the book and
//! are retried by the sweep. Must not displace manual or fleet bans.

use super::record::OriginRules;
use super::{BanBook, Result};
use crate::{clock::Now, dataplane::Maps, net::cidr::Cidr};

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

impl BanBook {
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
    pub(super) fn write_host_making_room(
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
}
