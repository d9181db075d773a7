use std::process::ExitCode;

use clap::Parser;
use portsentry::{
    cli::{Cli, Command},
    daemon,
};

/// Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 on usage errors
    match cli.command {
        Command::Run(args) => {
            let settings = match daemon::settings_from_args(&args) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("portsentry: error: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("portsentry: error: starting the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(daemon::run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portsentry: error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
