//! `portsentry check-config [PATH]`: validate a config file and print the effective
//! configuration, serialized from the same types the parser fills (every key shown).

use std::{path::PathBuf, process::ExitCode};

use super::{Failure, VerbResult};
use crate::{
    cli::GlobalArgs,
    config::{self, sources},
    daemon,
};

pub fn run(global: &GlobalArgs, path: Option<PathBuf>) -> VerbResult {
    let path = path.or_else(|| global.config.clone());
    let loaded = match path {
        Some(p) => config::load_file(&p).map(|s| (s, p.display().to_string())),
        None => sources::load(global).map(|(s, src)| (s, src.to_string())),
    };
    let (mut s, source) = loaded.map_err(|e| Failure::Usage(e.into()))?;
    sources::apply_global(&mut s, global);
    daemon::resources::check(&s).map_err(Failure::Usage)?;
    eprintln!("portsentry: {source}: configuration is valid; effective configuration:");
    print!("{}", config::render(&s));
    Ok(ExitCode::SUCCESS)
}
