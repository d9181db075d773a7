//! The ban book's file: `state_dir/bans.json`, written atomically, names instead of raw codes.
//! Only the ban book reads and writes it. Version 1 files (numeric codes, networks apart) load;
//! version 2 files are version 3 without the repeat offenders' `history`.

mod v1;

use std::{
    borrow::Cow,
    fs::{self, File},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::recidive::Offence;
use super::record::{BanRecord, FleetNote, Origin, Trigger};
use crate::net::cidr::Cidr;

pub const STATE_FILE: &str = "bans.json";
pub const STATE_VERSION: u32 = 3;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a portsentry state file ({message})")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{path}: state version {found} is newer than this portsentry understands ({STATE_VERSION})"
    )]
    TooNew { path: PathBuf, found: u32 },
}

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
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Reads the file; a missing file is an empty book. Never modifies anything.
    pub fn load(&self) -> Result<Saved, StateError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::default()),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        parse(&text).map_err(|e| match e {
            ParseError::TooNew(found) => StateError::TooNew { path, found },
            ParseError::Bad(message) => StateError::Corrupt { path, message },
        })
    }

    /// Moves an unreadable or too-new file aside (kept for the administrator, never deleted);
    /// only the daemon does this, so that it can start and save again.
    pub fn keep_aside(&self, why: &str) -> Result<PathBuf, StateError> {
        let path = self.path();
        keep_aside(&path, why).map_err(|source| StateError::Io { path, source })
    }

    /// Writes the file atomically ([`write_atomic`]).
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
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let file = FileRef {
            version: STATE_VERSION,
            bans: BansRef(bans),
            unbanned,
            history,
        };
        write_atomic_with(&self.dir, STATE_FILE, |w| {
            serde_json::to_writer_pretty(&mut *w, &file).map_err(std::io::Error::other)?;
            w.write_all(b"\n")
        })
        .map_err(io(&self.path()))
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

enum ParseError {
    TooNew(u32),
    Bad(String),
}

fn parse(text: &str) -> Result<Saved, ParseError> {
    // The current layout in one pass: a million bans are ~150 MB of JSON, and the version probe
    // below is a second pass over all of it. Any other file (older, newer, damaged) goes the
    // long way, which words its errors.
    if let Ok(f) = serde_json::from_str::<StoredFile>(text) {
        if matches!(f.version, 2 | STATE_VERSION) {
            return Ok(f.into_saved());
        }
    }
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let v: Version = serde_json::from_str(text).map_err(|e| ParseError::Bad(e.to_string()))?;
    match v.version {
        1 => serde_json::from_str::<v1::File>(text)
            .map(v1::File::into_saved)
            .map_err(|e| ParseError::Bad(e.to_string())),
        // Version 2 is version 3 without `history`, which defaults to empty.
        2 | STATE_VERSION => {
            let f: StoredFile =
                serde_json::from_str(text).map_err(|e| ParseError::Bad(e.to_string()))?;
            Ok(f.into_saved())
        }
        n if n > STATE_VERSION => Err(ParseError::TooNew(n)),
        n => Err(ParseError::Bad(format!("unknown version {n}"))),
    }
}

/// Renames `path` (a `.json` state file) to `path.json.WHY-<unix ms>`, next to it, and returns
/// the new name: an unreadable file is kept for the administrator, never deleted.
pub fn keep_aside(path: &Path, why: &str) -> std::io::Result<PathBuf> {
    let moved = path.with_extension(format!("json.{why}-{}", crate::clock::unix_ms()));
    fs::rename(path, &moved)?;
    Ok(moved)
}

/// Replaces `dir/name` atomically: a temporary file in the same directory, fsync, rename, fsync
/// of the directory. A crash leaves either the old or the new file, never half of one.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(dir, name, |w| w.write_all(bytes))
}

/// [`write_atomic`], the contents written by `fill` through a buffer.
pub fn write_atomic_with(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, File::create(&tmp)?);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests;
