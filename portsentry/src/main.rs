//! The `portsentry` binary: parse the command line, run the verb, map failures to exit codes
//! (0 ok, 1 runtime failure, 2 usage or configuration error).

use std::process::ExitCode;

use clap::Parser;
use portsentry::cli::{verbs, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 on usage errors
    match verbs::dispatch(cli) {
        Ok(code) => code,
        Err(failure) => {
            portsentry::errln!("portsentry: error: {:#}", failure.error());
            failure.exit_code()
        }
    }
}
