use std::process::ExitCode;

use clap::Parser;
use portsentry::{
    classic,
    cli::{Cli, Command},
    config, control, daemon, options,
    settings::Settings,
};

/// Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
enum Failure {
    Usage(anyhow::Error),
    Runtime(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 on usage errors
    match dispatch(cli) {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            eprintln!("portsentry: error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("portsentry: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn settings(cli: &Cli) -> Result<Settings, Failure> {
    options::load(&cli.global)
        .map(|(s, _)| s)
        .map_err(|e| Failure::Usage(e.into()))
}

fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    let runtime = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS).map_err(Failure::Runtime);
    match &cli.command {
        Command::Run(args) => {
            let mut s = settings(&cli)?;
            options::apply_run(&mut s, args).map_err(Failure::Usage)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::Runtime(e.into()))?;
            let Command::Run(args) = cli.command else {
                unreachable!("matched above")
            };
            runtime(rt.block_on(daemon::run(cli.global, args, s)))
        }
        Command::Status { json } => runtime(control::status(&settings(&cli)?, *json)),
        Command::List { json } => runtime(control::list(&settings(&cli)?, *json)),
        Command::Ban { target, ttl } => {
            let s = settings(&cli)?;
            let ttl = ttl.map(|l| l.0).unwrap_or(s.ban_ttl);
            runtime(control::ban(&s, *target, ttl))
        }
        Command::Unban { targets, all } => {
            let s = settings(&cli)?;
            match control::unban(&s, targets, *all) {
                Ok(true) => Ok(ExitCode::SUCCESS),
                Ok(false) => Ok(ExitCode::from(1)),
                Err(e) => Err(Failure::Runtime(e)),
            }
        }
        Command::CheckConfig { path } => {
            let path = path.clone().or_else(|| cli.global.config.clone());
            let loaded = match path {
                Some(p) => config::load_file(&p).map(|s| (s, p.display().to_string())),
                None => options::load(&cli.global).map(|(s, src)| (s, src.to_string())),
            };
            let (mut s, source) = loaded.map_err(|e| Failure::Usage(e.into()))?;
            options::apply_global(&mut s, &cli.global);
            s.validate().map_err(Failure::Usage)?;
            eprintln!("portsentry: {source}: configuration is valid; effective configuration:");
            print!("{}", config::render(&s));
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportConf { path } => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(anyhow::anyhow!("{}: {e}", path.display())))?;
            let toml = classic::import(&text, path).map_err(|e| Failure::Usage(e.into()))?;
            print!("{toml}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
