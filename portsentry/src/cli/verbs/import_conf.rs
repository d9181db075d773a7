//! `portsentry import-conf FILE`: a classic portsentry.conf as portsentry.toml on stdout.

use std::{path::Path, process::ExitCode};

use super::{Failure, VerbResult};
use crate::config::classic::{self, ClassicMode};

pub fn run(path: &Path, modes: &[ClassicMode]) -> VerbResult {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(anyhow::anyhow!("{}: {e}", path.display())))?;
    let toml = classic::import(&text, path, modes).map_err(|e| Failure::Usage(e.into()))?;
    print!("{toml}");
    Ok(ExitCode::SUCCESS)
}
