//! One file per verb. Each turns its arguments into work for the layer that owns it: the
//! daemon (`run`), the control socket or the ban book on pins (`status`, `list`, `ban`,
//! `unban`, `promote-shadow`), the config parser (`check-config`, `import-conf`). They fail
//! with their layers' typed errors; `failure` classes each type as exit 1 or 2.

use std::process::ExitCode;

use super::{Cli, Command};
use crate::{
    config::{settings::Settings, LoadError},
    control::{self, Request},
};

mod ban;
mod check_config;
mod failure;
mod import_conf;
mod list;
mod notify;
mod promote_shadow;
mod run;
mod status;
mod unban;

pub use failure::{Classified, ExitClass, Failure};

pub type VerbResult = Result<ExitCode, Failure>;

/// Runs the verb the command line names.
pub fn dispatch(cli: Cli) -> VerbResult {
    match cli.command {
        Command::Run(args) => run::run(cli.global, args),
        Command::Status { json } => status::run(&cli.global, json),
        Command::List { json } => list::run(&cli.global, json),
        Command::Ban { target, ttl } => ban::run(&cli.global, target, ttl),
        Command::Unban { targets, all } => unban::run(&cli.global, targets, all),
        Command::PromoteShadow => promote_shadow::run(&cli.global),
        Command::Notify { test } => notify::run(&cli.global, test),
        Command::CheckConfig { path } => check_config::run(&cli.global, path),
        Command::ImportConf { path, modes } => import_conf::run(&path, &modes),
        Command::GenerateDocs { dir } => {
            for file in super::docs::generate(&dir)? {
                println!("{}", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The settings from `--config` (or the default path, or the embedded default) and the
/// global overrides.
fn settings(global: &super::GlobalArgs) -> Result<Settings, LoadError> {
    global.sources().load().map(|(s, _)| s)
}

/// Sends `req` to the daemon's control socket, or without a daemon does it on the pins and
/// the state file.
fn control_request(global: &super::GlobalArgs, req: Request) -> VerbResult {
    let s = settings(global)?;
    Ok(ExitCode::from(control::run(&s, &req)?))
}
