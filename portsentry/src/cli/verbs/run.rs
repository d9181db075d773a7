//! `portsentry run`: the daemon, on a single-threaded tokio runtime.

use std::process::ExitCode;

use super::{settings, Failure, VerbResult};
use crate::{
    cli::{GlobalArgs, RunArgs},
    config::sources,
    daemon,
};

pub fn run(global: GlobalArgs, args: RunArgs) -> VerbResult {
    let mut s = settings(&global)?;
    sources::apply_run(&mut s, &args).map_err(Failure::Usage)?;
    daemon::resources::check(&s).map_err(Failure::Usage)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    rt.block_on(daemon::run(global, args, s))
        .map(|()| ExitCode::SUCCESS)
        .map_err(Failure::Runtime)
}
