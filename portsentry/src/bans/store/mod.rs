//! The ban book's file: `state_dir/bans.json`, names instead of raw codes. Only the ban book
//! reads and writes it. Version 1 files (numeric codes, networks apart) load; version 2 files
//! are version 3 without the repeat offenders' `history`.
//!
//! Owns the format; writing it atomically and keeping aside a damaged or newer file at start
//! are `crate::state_file`'s, as for every state file.

mod v1;

use std::{
    borrow::Cow,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::recidive::Offence;
use super::record::{BanRecord, FleetNote, Origin, Trigger};
use crate::{
    net::cidr::Cidr,
    state_file::{json_version, StateFile, StateFileError, Unfit, Unusable},
};

pub const STATE_FILE: &str = "bans.json";
pub const STATE_VERSION: u32 = 3;
/// The file's kind in errors: "not a portsentry state file".
const KIND: &str = "state file";

/// Reading or writing `bans.json` failed.
pub type StateError = StateFileError;

/// One ban as stored: borrowed from the book when written, owned when read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredBan<'a> {
    target: Cidr,
    origin: Origin,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    shadow: bool,
    since_ms: u64,
    /// `null`: never expires.
    expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trigger: Option<Trigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fleet: Option<Cow<'a, FleetNote>>,
    #[serde(default)]
    drops: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    unverified: bool,
}

/// An operator's unban: fleet decisions for the target are refused until `until_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbanned {
    pub target: Cidr,
    pub until_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredFile {
    version: u32,
    bans: Vec<StoredBan<'static>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unbanned: Vec<Unbanned>,
    /// Repeat offenders (version 3), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    history: Vec<Offence>,
}

impl StoredFile {
    fn into_saved(self) -> Saved {
        Saved {
            bans: self.bans.into_iter().map(BanRecord::from).collect(),
            unbanned: self.unbanned,
            history: self.history,
        }
    }
}

/// What the file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub bans: Vec<BanRecord>,
    pub unbanned: Vec<Unbanned>,
    /// Repeat offenders' history, oldest first.
    pub history: Vec<Offence>,
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateStore {
    file: StateFile,
}

impl StateStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            file: StateFile::new(dir, STATE_FILE, KIND),
        }
    }

    pub fn dir(&self) -> &Path {
        self.file.dir()
    }

    pub fn path(&self) -> PathBuf {
        self.file.path()
    }

    /// Reads the file; a missing file is an empty book. Never modifies anything.
    pub fn load(&self) -> Result<Saved, StateError> {
        Ok(self.file.load(parse)?.unwrap_or_default())
    }

    /// [`load`](Self::load) at the daemon's start: a damaged or too-new file is kept aside
    /// (for the administrator, never deleted) so that the daemon can start and save again.
    pub fn open(&self) -> Result<Saved, Unusable> {
        Ok(self.file.open(parse)?.unwrap_or_default())
    }

    /// Writes the file atomically.
    pub fn save(&self, saved: &Saved) -> Result<(), StateError> {
        self.save_records(saved.bans.iter(), &saved.unbanned, &saved.history)
    }

    /// Writes `bans`, `unbanned` and the repeat offenders' `history` atomically, serialized straight into the file: one pass,
    /// no copy of the records (the book may hold a million).
    pub fn save_records<'a>(
        &self,
        bans: impl Iterator<Item = &'a BanRecord> + Clone,
        unbanned: &'a [Unbanned],
        history: &'a [Offence],
    ) -> Result<(), StateError> {
        let file = FileRef {
            version: STATE_VERSION,
            bans: BansRef(bans),
            unbanned,
            history,
        };
        self.file.write_with(|w| {
            serde_json::to_writer_pretty(&mut *w, &file).map_err(std::io::Error::other)?;
            w.write_all(b"\n")
        })
    }
}

/// [`StoredFile`] as written: borrowed from the book.
#[derive(Serialize)]
#[serde(bound = "")]
struct FileRef<'a, I: Iterator<Item = &'a BanRecord> + Clone> {
    version: u32,
    bans: BansRef<I>,
    #[serde(skip_serializing_if = "<[Unbanned]>::is_empty")]
    unbanned: &'a [Unbanned],
    #[serde(skip_serializing_if = "<[Offence]>::is_empty")]
    history: &'a [Offence],
}

struct BansRef<I>(I);

impl<'a, I: Iterator<Item = &'a BanRecord> + Clone> Serialize for BansRef<I> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone().map(StoredBan::from))
    }
}

impl<'a> From<&'a BanRecord> for StoredBan<'a> {
    fn from(r: &'a BanRecord) -> Self {
        Self {
            target: r.target,
            origin: r.origin,
            shadow: r.shadow,
            since_ms: r.since_ms,
            expires_ms: r.expires_ms,
            trigger: r.trigger,
            fleet: r.fleet.as_ref().map(Cow::Borrowed),
            drops: r.drops,
            unverified: r.unverified,
        }
    }
}

impl From<StoredBan<'_>> for BanRecord {
    fn from(b: StoredBan<'_>) -> Self {
        Self {
            target: b.target,
            origin: b.origin,
            shadow: b.shadow,
            since_ms: b.since_ms,
            expires_ms: b.expires_ms,
            trigger: b.trigger,
            fleet: b.fleet.map(Cow::into_owned),
            drops: b.drops,
            unverified: b.unverified,
        }
    }
}

fn parse(text: &str) -> Result<Saved, Unfit> {
    // The current layout in one pass: a million bans are ~150 MB of JSON, and the version probe
    // below is a second pass over all of it. Any other file (older, newer, damaged) goes the
    // long way, which words its errors.
    if let Ok(f) = serde_json::from_str::<StoredFile>(text) {
        if matches!(f.version, 2 | STATE_VERSION) {
            return Ok(f.into_saved());
        }
    }
    match json_version(text, 1, STATE_VERSION)? {
        1 => Ok(serde_json::from_str::<v1::File>(text)?.into_saved()),
        // Version 2 is version 3 without `history`, which defaults to empty.
        _ => Ok(serde_json::from_str::<StoredFile>(text)?.into_saved()),
    }
}

#[cfg(test)]
mod tests;
