//! State files in `state_dir` (`bans.json`, `peers.json`, `service_ports.json`,
//! `crowdsec-alerts.json`, and the notification outbox's messages, which only use the write):
//! the one way they are written, and the one way a file that cannot be used is dealt with at
//! start.
//!
//! Writing is atomic ([`write_atomic`]): a new temporary file in the same directory (created
//! exclusively, so a link planted at its name is not followed), fsync, rename,
//! fsync of the directory, so a crash leaves the old file or the new one, never half of one.
//! Loading never modifies anything ([`StateFile::load`]). At start ([`StateFile::open`]) a file
//! that does not parse, or one a newer portsentry wrote, is kept aside next to it
//! (`NAME.corrupt-<unix ms>`, `NAME.newer-<unix ms>`: never deleted, never overwritten), so the
//! daemon starts and can save again; [`Unusable::line`] words the error line, one wording for
//! every file.
//!
//! Owns the write sequence, the kept-aside names and the line's words. Each file's owner keeps
//! its format (the parser it hands in), the name of its kind ("peers file"), what the daemon
//! starts without, and whether a file that cannot be read at all stops the daemon. Uses
//! nothing of the crate but `clock` (the kept-aside name's time).

use std::{
    fmt::Display,
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StateFileError {
    /// Reading or writing failed: the directory, permissions, a full disk.
    /// The cause is worded in the message, not chained as a source: anyhow's `{:#}` would
    /// print it twice ("…: Is a directory: Is a directory").
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    /// The file does not parse, or has a version this portsentry never wrote.
    #[error("{path}: not a portsentry {kind} ({message})")]
    Corrupt {
        path: PathBuf,
        kind: &'static str,
        message: String,
    },
    /// A newer portsentry wrote it.
    #[error(
        "{path}: {kind} version {found} is newer than this portsentry understands ({supported})"
    )]
    TooNew {
        path: PathBuf,
        kind: &'static str,
        found: u32,
        supported: u32,
    },
}

impl StateFileError {
    /// The kept-aside name's tag for this error; `None`: the file stays where it is (it could
    /// not be read, so nothing is known to be wrong with it).
    fn aside_tag(&self) -> Option<&'static str> {
        match self {
            StateFileError::Io { .. } => None,
            StateFileError::Corrupt { .. } => Some("corrupt"),
            StateFileError::TooNew { .. } => Some("newer"),
        }
    }
}

/// Why a file's text cannot be used, as its owner's parser says.
#[derive(Debug, PartialEq, Eq)]
pub enum Unfit {
    /// Not the owner's format; what is wrong with it.
    Corrupt(String),
    TooNew {
        found: u32,
        supported: u32,
    },
}

impl From<serde_json::Error> for Unfit {
    fn from(e: serde_json::Error) -> Self {
        Unfit::Corrupt(e.to_string())
    }
}

/// The `version` field of a JSON state file, for owners that read versions `oldest` to
/// `current`: a later one is [`Unfit::TooNew`], an earlier one is not a file of theirs.
pub fn json_version(text: &str, oldest: u32, current: u32) -> Result<u32, Unfit> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    match serde_json::from_str::<Version>(text)?.version {
        v if v > current => Err(Unfit::TooNew {
            found: v,
            supported: current,
        }),
        v if v < oldest => Err(Unfit::Corrupt(format!("unknown version {v}"))),
        v => Ok(v),
    }
}

/// One state file: `dir/name`, a `kind` of file (named in errors: "not a portsentry {kind}").
#[derive(Clone, Debug)]
pub struct StateFile {
    dir: PathBuf,
    name: &'static str,
    kind: &'static str,
}

impl StateFile {
    pub fn new(dir: &Path, name: &'static str, kind: &'static str) -> Self {
        Self {
            dir: dir.to_path_buf(),
            name,
            kind,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(self.name)
    }

    /// Reads and parses the file; `None`: there is none. Never modifies anything.
    pub fn load<T>(
        &self,
        parse: impl FnOnce(&str) -> Result<T, Unfit>,
    ) -> Result<Option<T>, StateFileError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(StateFileError::Io { path, error }),
        };
        // Bytes that are not text are a damaged file like any other, not a read error.
        let text = std::str::from_utf8(&bytes).map_err(|e| Unfit::Corrupt(e.to_string()));
        text.and_then(parse).map(Some).map_err(|unfit| match unfit {
            Unfit::Corrupt(message) => StateFileError::Corrupt {
                path,
                kind: self.kind,
                message,
            },
            Unfit::TooNew { found, supported } => StateFileError::TooNew {
                path,
                kind: self.kind,
                found,
                supported,
            },
        })
    }

    /// [`load`](Self::load) at the daemon's start: a file that does not parse or is too new
    /// is kept aside, and the daemon starts without it (and logs [`Unusable::line`]).
    pub fn open<T>(
        &self,
        parse: impl FnOnce(&str) -> Result<T, Unfit>,
    ) -> Result<Option<T>, Unusable> {
        self.load(parse).map_err(|error| {
            let kept = match error.aside_tag() {
                None => Kept::InPlace,
                Some(tag) => match self.keep_aside(tag) {
                    Ok(moved) => Kept::Aside(moved),
                    Err(e) => Kept::NotMoved(e),
                },
            };
            Unusable { error, kept }
        })
    }

    /// Renames the file to `name.TAG-<unix ms>` (`.N` added if that exists) and returns the
    /// new path: kept for the administrator, never deleted or overwritten.
    fn keep_aside(&self, tag: &str) -> io::Result<PathBuf> {
        let stamped = format!("{}.{tag}-{}", self.name, crate::clock::unix_ms());
        let mut moved = self.dir.join(&stamped);
        let mut n = 0;
        while fs::symlink_metadata(&moved).is_ok() {
            n += 1;
            moved = self.dir.join(format!("{stamped}.{n}"));
        }
        fs::rename(self.path(), &moved)?;
        Ok(moved)
    }

    /// Writes `bytes` atomically ([`write_atomic`]), making the directory if needed.
    pub fn write(&self, bytes: &[u8]) -> Result<(), StateFileError> {
        self.write_with(|w| w.write_all(bytes))
    }

    /// [`write`](Self::write), the contents written by `fill` through a buffer.
    pub fn write_with(
        &self,
        fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
    ) -> Result<(), StateFileError> {
        fs::create_dir_all(&self.dir).map_err(|error| StateFileError::Io {
            path: self.dir.clone(),
            error,
        })?;
        write_atomic_with(&self.dir, self.name, fill).map_err(|error| StateFileError::Io {
            path: self.path(),
            error,
        })
    }
}

/// What became of a file the daemon starts without.
#[derive(Debug)]
pub enum Kept {
    /// Left where it is: it could not be read.
    InPlace,
    /// Moved to this path.
    Aside(PathBuf),
    /// The rename failed; the file is still in place.
    NotMoved(io::Error),
}

/// A state file the daemon starts without: why, and where the file is now.
#[derive(Debug)]
pub struct Unusable {
    pub error: StateFileError,
    pub kept: Kept,
}

impl Unusable {
    /// The error line, ending with what the daemon starts without (`without`, e.g. "starting
    /// without saved peers"): `portsentry: error: PATH: WHAT IS WRONG; kept aside as
    /// PATH.corrupt-<ms>; WITHOUT`.
    pub fn line(&self, without: impl Display) -> String {
        let kept = match &self.kept {
            Kept::InPlace => String::new(),
            Kept::Aside(moved) => format!("; kept aside as {}", moved.display()),
            Kept::NotMoved(e) => format!("; could not keep it aside ({e})"),
        };
        format!("portsentry: error: {}{kept}; {without}", self.error)
    }
}

/// Replaces `dir/name` atomically: a temporary file in the same directory, fsync, rename, fsync
/// of the directory. A crash leaves either the old or the new file, never half of one.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(dir, name, |w| w.write_all(bytes))
}

/// [`write_atomic`], the contents written by `fill` through a buffer.
pub fn write_atomic_with(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let path = dir.join(name);
    // A dot name: a directory reader that skips dot files (the outbox) never takes it for one.
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> io::Result<()> {
        // A leftover of a crashed run with this pid goes first; then the file must be new, so a
        // link planted at the temporary name is never followed.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 16, file);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(dir)
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Makes the directory's entries durable (after a rename or a removal in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
