//! Secret files (the CrowdSec key and credentials, the SMTP password, the webhook token): read
//! only when group and others cannot access them, checked on the open file so the file
//! checked is the file read. One rule and one wording for every secret; callers prefix the
//! config key it came from.

use std::{
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Why a secret file was not read; says which file, not which key (the caller's error does).
#[derive(Debug, Error)]
pub enum SecretFileError {
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Group or others may read or write it (`mode & 077`); the file's permission bits.
    #[error(
        "{} has mode {mode:04o}: group or others can access this secret; make it private: \
         chmod 600 {}",
        path.display(),
        path.display()
    )]
    NotPrivate { path: PathBuf, mode: u32 },
}

/// The whole file, if it is private to its owner.
pub fn read_private(path: &Path) -> Result<String, SecretFileError> {
    let io = |error| SecretFileError::Io {
        path: path.to_owned(),
        error,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::NotPrivate {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

/// The first line of a secret file's text that is not blank, trimmed: where a key or token
/// file keeps its secret.
pub fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}
