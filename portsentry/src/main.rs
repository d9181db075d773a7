use std::process::ExitCode;

use clap::Parser;
use portsentry::{
    cli::{Cli, Command},
    config,
    config::classic,
    config::settings::Settings,
    config::sources,
    control::{self, Request},
    daemon,
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
    sources::load(&cli.global)
        .map(|(s, _)| s)
        .map_err(|e| Failure::Usage(e.into()))
}

/// A control verb: through the daemon's socket, or on pins and state without a daemon.
fn verb(cli: &Cli, req: Request) -> Result<ExitCode, Failure> {
    let s = settings(cli)?;
    control::run(&s, &req)
        .map(ExitCode::from)
        .map_err(Failure::Runtime)
}

fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    let runtime = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS).map_err(Failure::Runtime);
    match &cli.command {
        Command::Run(args) => {
            let mut s = settings(&cli)?;
            sources::apply_run(&mut s, args).map_err(Failure::Usage)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::Runtime(e.into()))?;
            let Command::Run(args) = cli.command else {
                unreachable!("matched above")
            };
            runtime(rt.block_on(daemon::run(cli.global, args, s)))
        }
        Command::Status { json } => verb(&cli, Request::Status { json: *json }),
        Command::List { json } => verb(&cli, Request::List { json: *json }),
        Command::Ban { target, ttl } => {
            let s = settings(&cli)?;
            let ttl = ttl.map(|l| l.0).unwrap_or(s.ban_ttl);
            let ttl_ms = ttl.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            verb(
                &cli,
                Request::Ban {
                    target: *target,
                    ttl_ms,
                },
            )
        }
        Command::Unban { targets, all } => verb(
            &cli,
            Request::Unban {
                targets: targets.clone(),
                all: *all,
            },
        ),
        Command::PromoteShadow => verb(&cli, Request::PromoteShadow),
        Command::CheckConfig { path } => {
            let path = path.clone().or_else(|| cli.global.config.clone());
            let loaded = match path {
                Some(p) => config::load_file(&p).map(|s| (s, p.display().to_string())),
                None => sources::load(&cli.global).map(|(s, src)| (s, src.to_string())),
            };
            let (mut s, source) = loaded.map_err(|e| Failure::Usage(e.into()))?;
            sources::apply_global(&mut s, &cli.global);
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
