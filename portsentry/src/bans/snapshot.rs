//! Copies of the book for a writer on another thread: what `bans.json` holds at one moment,
//! taken a bounded number of records per call so that copying a million records never holds up
//! the caller (the daemon's event loop) for long.
//!
//! A record changed after its part was copied is not in the copy, but the change marks the book
//! dirty again, so the next save has it: the file is never behind the book for longer than one
//! save. Writes nothing itself (the store does, [`super::StateStore::save`]).

use std::ops::Bound;

use super::{BanBook, Saved};
use crate::net::cidr::Cidr;

/// A copy of the book being taken ([`BanBook::begin_snapshot`], [`BanBook::snapshot_step`]).
#[derive(Debug)]
pub struct Snapshot {
    saved: Saved,
    /// The last target copied; `None` before the first step.
    after: Option<Cidr>,
}

impl BanBook {
    /// Starts a copy for a save; the book counts as saved from here on (a failed write must be
    /// followed by another copy).
    pub fn begin_snapshot(&mut self) -> Snapshot {
        self.dirty = false;
        Snapshot {
            saved: Saved {
                bans: Vec::with_capacity(self.records.len()),
                ..Saved::default()
            },
            after: None,
        }
    }

    /// Copies up to `max` more records into `s`; once every record is copied, adds the unbans
    /// and the repeat offenders' history and returns the finished copy.
    pub fn snapshot_step(&self, s: &mut Snapshot, max: usize) -> Option<Saved> {
        let lower = s.after.map_or(Bound::Unbounded, Bound::Excluded);
        let before = s.saved.bans.len();
        s.saved.bans.extend(
            self.records
                .range((lower, Bound::Unbounded))
                .take(max)
                .map(|(_, r)| r.clone()),
        );
        if s.saved.bans.len() - before == max {
            s.after = s.saved.bans.last().map(|r| r.target);
            return None;
        }
        let mut saved = std::mem::take(&mut s.saved);
        saved.unbanned = self.unbanned_list();
        saved.history = self.history.to_saved();
        Some(saved)
    }

    /// The whole copy at once (at stop, when nothing else waits).
    pub fn snapshot(&mut self) -> Saved {
        let mut s = self.begin_snapshot();
        loop {
            if let Some(saved) = self.snapshot_step(&mut s, usize::MAX) {
                return saved;
            }
        }
    }
}
