//! Secret files (the CrowdSec key and credentials, the SMTP password, the webhook token): read
//! only when group and others cannot access them, checked on the open file so the file
//! checked is the file read. One rule for every secret; each caller words its own error.

use std::{io::Read, os::unix::fs::PermissionsExt, path::Path};

/// Why a secret file was not read.
#[derive(Debug)]
pub enum SecretFileError {
    Io(std::io::Error),
    /// Group or others may read or write it (`mode & 077`); the file's permission bits.
    NotPrivate(u32),
}

/// The whole file, if it is private to its owner.
pub fn read_private(path: &Path) -> Result<String, SecretFileError> {
    let mut file = std::fs::File::open(path).map_err(SecretFileError::Io)?;
    let mode = file
        .metadata()
        .map_err(SecretFileError::Io)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::NotPrivate(mode));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(SecretFileError::Io)?;
    Ok(text)
}
