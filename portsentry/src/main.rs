//! The `portsentry` binary: parse the command line, run the verb, print its failure and exit
//! with the code its type decides (0 ok, 1 runtime failure, 2 usage or configuration error;
//! `cli::verbs::failure`, the README's "Exit codes").

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
