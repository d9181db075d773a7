//! `portsentry run`: the daemon, on a single-threaded tokio runtime. The flags become the
//! settings' overlay here; the daemon keeps that (for SIGHUP), not the command line.

use std::process::ExitCode;

use thiserror::Error;

use super::VerbResult;
use crate::{
    cli::{GlobalArgs, RunArgs},
    daemon,
};

pub fn run(global: GlobalArgs, args: RunArgs) -> VerbResult {
    let mut sources = global.sources();
    args.add_to(&mut sources.overlay);
    let (s, _) = sources.load()?;
    daemon::resources::check(&s)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    rt.block_on(daemon::run(sources, s))
        .map_err(RunError::Daemon)?;
    Ok(ExitCode::SUCCESS)
}

/// Why the daemon did not start or stopped on an error, after its settings were checked.
#[derive(Debug, Error)]
pub enum RunError {
    /// The tokio runtime could not be built.
    #[error(transparent)]
    Runtime(std::io::Error),
    #[error(transparent)]
    Daemon(anyhow::Error),
}
