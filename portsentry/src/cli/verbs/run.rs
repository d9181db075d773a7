//! `portsentry run`: the daemon, on a single-threaded tokio runtime. The flags become the
//! settings' overlay here; the daemon keeps that (for SIGHUP), not the command line.

use std::process::ExitCode;

use super::{Failure, VerbResult};
use crate::{
    cli::{GlobalArgs, RunArgs},
    daemon,
};

pub fn run(global: GlobalArgs, args: RunArgs) -> VerbResult {
    let mut sources = global.sources();
    args.add_to(&mut sources.overlay);
    let (s, _) = sources.load().map_err(|e| Failure::Usage(e.into()))?;
    daemon::resources::check(&s).map_err(Failure::Usage)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    rt.block_on(daemon::run(sources, s))
        .map(|()| ExitCode::SUCCESS)
        .map_err(Failure::Runtime)
}
