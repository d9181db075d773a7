//! `portsentry check-config [PATH]`: validate a config file and print the effective
//! configuration, serialized from the same types the parser fills (every key shown).

use std::{path::PathBuf, process::ExitCode};

use super::VerbResult;
use crate::{cli::GlobalArgs, config, daemon};

pub fn run(global: &GlobalArgs, path: Option<PathBuf>) -> VerbResult {
    let mut sources = global.sources();
    if path.is_some() {
        sources.config = path;
    }
    let (s, source) = sources.load()?;
    daemon::resources::check(&s)?;
    eprintln!("portsentry: {source}: configuration is valid; effective configuration:");
    print!("{}", config::render(&s));
    Ok(ExitCode::SUCCESS)
}
