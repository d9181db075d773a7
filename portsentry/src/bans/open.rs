//! Opening the book: the records saved in `bans.json` (already read by the store) merged with
//! whatever the pinned or migrated kernel maps hold, kernel entries winning for the same target.
//!
//! Reads the maps and never writes them or the file; installing the result is `kernel.rs`'s job.

use std::collections::BTreeMap;

use super::{BanBook, BanRecord, Origin, Result, Saved, StateStore};
use crate::{
    clock::Now,
    dataplane::{Maps, Migrated},
    net::cidr::Cidr,
};

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
            made: [0; Origin::COUNT],
            history: super::recidive::History::from_saved(saved.history),
            pressure: Default::default(),
        };
        let mut opened = Opened::default();
        let mut from_file = Vec::with_capacity(saved.bans.len());
        for mut r in saved.bans {
            if r.is_expired(now.unix_ms) {
                opened.expired += 1;
                continue;
            }
            if restoring && r.origin == Origin::Detected {
                r.origin = Origin::Restored;
            }
            opened.from_file += 1;
            from_file.push((r.target, r));
        }
        // Built whole: the file is saved in the book's order, so the sort finds one run and the
        // tree is filled leaf by leaf, not searched a million times. The last record of a
        // target wins, as inserting one by one did.
        book.records = from_file.into_iter().collect();
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
}
