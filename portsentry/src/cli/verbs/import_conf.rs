//! `portsentry import-conf FILE`: a classic portsentry.conf as portsentry.toml on stdout.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use thiserror::Error;

use super::VerbResult;
use crate::config::classic::{self, ClassicMode, ImportError};

pub fn run(path: &Path, modes: &[ClassicMode]) -> VerbResult {
    let text = std::fs::read_to_string(path).map_err(|error| ImportConfError::Unreadable {
        path: path.to_owned(),
        error,
    })?;
    let toml = classic::import(&text, path, modes).map_err(ImportConfError::Convert)?;
    print!("{toml}");
    Ok(ExitCode::SUCCESS)
}

/// Why a classic config was not converted.
#[derive(Debug, Error)]
pub enum ImportConfError {
    #[error("{}: {error}", path.display())]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// `PATH:LINE: message`.
    #[error(transparent)]
    Convert(ImportError),
}
