//! Table pressure: what gives way when the kernel's address ban table is full.
//!
//! A forged flood from behind the gateway passes the path check (it arrives the way the route
//! back leaves) and fills the table with bans of addresses that never send again, while a real
//! scanner keeps hitting its drop. So the ban that gives way is, in this order: an unverified
//! one (the path check could not decide), then the one *silent longest*: the one whose drop
//! counter has not moved for the longest time since it was banned. Manual and fleet bans never
//! give way.
//!
//! Silence is tracked without a scan of the book or of the kernel table per event: an ordered
//! set of candidates keyed by (verified, has dropped, last seen active) is kept beside the
//! records (bans that never dropped a packet, as forged ones, come before those that did); making
//! room looks at its first entries only, reads their kernel drop counters, and gives a
//! candidate whose counter moved a second chance (moved to the back, active now). A forged
//! ban's counter never moves, so it is found at the front at the first look. Under a flood the
//! book may lag the kernel (ban events lost or still queued); when none of the book's first
//! candidates is silent, a bounded walk of the kernel table (from where the last one stopped)
//! finds an unverified or silent entry; only when everything is active does the least recently
//! active ban give way. The set is lazy:
//! records are added as they are banned or renewed, stale entries are skipped when met, and it
//! is rebuilt from the records when it runs dry or grows past twice the book.
//!
//! Only address records compete for room here; networks the trie refuses stay in the book and
//! are retried by the sweep. Must not displace manual or fleet bans.

use std::collections::{BTreeSet, HashMap};

use super::record::{BanRecord, OriginRules};
use super::{BanBook, Result};
use crate::{clock::Now, dataplane::Maps, net::cidr::Cidr};

/// Candidates of the book's order looked at (one kernel lookup each) per table-full event.
const LOOKS_PER_EVENT: usize = 16;
/// Kernel entries looked at per event when the book has no silent candidate: bounds the cost
/// of a table-full event while the book lags the kernel.
const WALK_PER_EVENT: usize = 64;

/// What a table-full event led to.
#[derive(Debug, PartialEq, Eq)]
pub enum MadeRoom {
    /// This expired ban was reclaimed.
    Reclaimed(Cidr),
    /// This ban was lifted early: unverified, or silent since `silent_ms` (Unix ms).
    Displaced {
        target: Cidr,
        unverified: bool,
        silent_since_ms: u64,
    },
    /// Everything left is manual or fleet: nothing may be displaced.
    NoRoom,
}

/// A candidate's place in the order: (verified, has dropped a packet, last seen active in Unix
/// ms, target). Unverified first; then bans that never dropped a packet since they were made
/// (a forged source never sends again), oldest first; then the rest, silent longest first.
type Place = (bool, bool, u64, Cidr);

/// The order in which displaceable address bans give way (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Displacement {
    order: BTreeSet<Place>,
    /// Per target: its current key's activity time and the drop count seen then.
    seen: HashMap<Cidr, (u64, u64)>,
    /// Where the next bounded walk of the kernel table starts.
    cursor: Option<std::net::IpAddr>,
}

impl Displacement {
    /// A displaceable address ban was made or renewed at `now_ms` (renewal is activity).
    pub(super) fn note(&mut self, r: &BanRecord, now_ms: u64) {
        if !displaceable(r) {
            return;
        }
        let drops = self.seen.get(&r.target).map_or(r.drops, |s| s.1);
        self.seen.insert(r.target, (now_ms, drops));
        self.order
            .insert((!r.unverified, drops > 0, now_ms, r.target));
    }

    fn rebuild(&mut self, records: &std::collections::BTreeMap<Cidr, BanRecord>) {
        let seen = std::mem::take(&mut self.seen);
        self.order.clear();
        for r in records.values().filter(|r| displaceable(r)) {
            let (active, drops) = seen
                .get(&r.target)
                .copied()
                .unwrap_or((r.since_ms, r.drops));
            self.seen.insert(r.target, (active, drops));
            self.order
                .insert((!r.unverified, drops > 0, active, r.target));
        }
    }

    /// The first candidate still valid (its record exists, is displaceable, and this key is
    /// its current one); stale entries met on the way are dropped.
    fn first_valid(
        &mut self,
        records: &std::collections::BTreeMap<Cidr, BanRecord>,
    ) -> Option<Place> {
        while let Some(first) = self.order.first().copied() {
            let (verified, dropped, active, target) = first;
            let valid = records.get(&target).is_some_and(|r| {
                displaceable(r)
                    && r.unverified != verified
                    && self
                        .seen
                        .get(&target)
                        .is_some_and(|s| s.0 == active && (s.1 > 0) == dropped)
            });
            if valid {
                return Some(first);
            }
            self.order.pop_first();
            if !records.contains_key(&target) {
                self.seen.remove(&target);
            }
        }
        None
    }
}

fn displaceable(r: &BanRecord) -> bool {
    r.target.is_host() && r.origin.is_displaceable()
}

impl BanBook {
    /// The ban table is full: reclaim or displace one address ban, in the order of
    /// [`Displacement`], looking at no more than a few candidates. Never displaces manual or
    /// fleet bans.
    pub fn make_room(&mut self, maps: &mut Maps, now: &Now) -> Result<MadeRoom> {
        if self.pressure.order.len() > 2 * self.records.len() + 4096 {
            self.pressure.rebuild(&self.records);
        }
        let outcome = match self.book_candidate(maps, now)? {
            Some(found) => found,
            // The book knows no silent ban: under a flood it may lag the kernel (ban events
            // lost or still queued), so look at the kernel's own entries.
            None => match self.kernel_candidate(maps)? {
                Some(found) => found,
                None => match self.pressure.first_valid(&self.records) {
                    // Every candidate is active: the least recently active gives way.
                    Some((verified, _, active, target)) => MadeRoom::Displaced {
                        target,
                        unverified: !verified,
                        silent_since_ms: active,
                    },
                    None => return Ok(MadeRoom::NoRoom),
                },
            },
        };
        let target = match &outcome {
            MadeRoom::Reclaimed(t) | MadeRoom::Displaced { target: t, .. } => *t,
            MadeRoom::NoRoom => return Ok(MadeRoom::NoRoom),
        };
        self.lift(Some(maps), &target, now, false)?;
        self.dirty = true;
        Ok(outcome)
    }

    /// The first silent (or expired) candidate of the book's order among the first few; a
    /// candidate whose drop counter moved gets a second chance (to the back, not looked at
    /// again in this call).
    fn book_candidate(&mut self, maps: &Maps, now: &Now) -> Result<Option<MadeRoom>> {
        let p = &mut self.pressure;
        let mut rebuilt = false;
        let mut chanced = 0;
        for _ in 0..LOOKS_PER_EVENT {
            let Some((verified, dropped, active, target)) = p.first_valid(&self.records) else {
                if rebuilt {
                    return Ok(None);
                }
                p.rebuild(&self.records);
                rebuilt = true;
                continue;
            };
            if active == now.unix_ms && chanced > 0 {
                // Back at a candidate this call gave a second chance: none is silent.
                return Ok(None);
            }
            if self
                .records
                .get(&target)
                .is_some_and(|r| r.is_expired(now.unix_ms))
            {
                return Ok(Some(MadeRoom::Reclaimed(target)));
            }
            let drops = maps.ban(target.addr)?.map_or(0, |e| e.drops);
            let seen_drops = p.seen.get(&target).map_or(0, |s| s.1);
            if drops <= seen_drops {
                return Ok(Some(MadeRoom::Displaced {
                    target,
                    unverified: !verified,
                    silent_since_ms: active,
                }));
            }
            p.order.remove(&(verified, dropped, active, target));
            p.seen.insert(target, (now.unix_ms, drops));
            p.order.insert((verified, true, now.unix_ms, target));
            chanced += 1;
        }
        Ok(None)
    }

    /// A bounded walk of the kernel table from where the last one stopped: the first
    /// displaceable entry that is unverified, or that never dropped a packet since its ban.
    fn kernel_candidate(&mut self, maps: &Maps) -> Result<Option<MadeRoom>> {
        let (addrs, next) = maps.ban_addrs_from(self.pressure.cursor, WALK_PER_EVENT)?;
        self.pressure.cursor = next;
        let mut silent = None;
        for addr in addrs {
            let target = Cidr::host(addr);
            let Some(e) = maps.ban(addr)? else { continue };
            let displaceable_here = match self.records.get(&target) {
                Some(r) => displaceable(r),
                None => super::Origin::from_code(e.origin).is_displaceable(),
            };
            if !displaceable_here {
                continue;
            }
            let unverified = e.flags & portsentry_common::ban_flags::UNVERIFIED != 0;
            let active = self.pressure.seen.get(&target).map_or_else(
                || self.records.get(&target).map_or(0, |r| r.since_ms),
                |s| s.0,
            );
            let found = MadeRoom::Displaced {
                target,
                unverified,
                silent_since_ms: active,
            };
            if unverified {
                return Ok(Some(found));
            }
            if silent.is_none() && e.drops == 0 {
                silent = Some(found);
            }
        }
        Ok(silent)
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
