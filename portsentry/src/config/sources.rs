//! The effective settings: config file (or embedded defaults), then command-line overrides.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{
    cli::{GlobalArgs, RunArgs},
    config::{
        self,
        settings::{Settings, DEFAULT_CONFIG_PATH},
    },
    net::ports::PortSet,
};

/// Where the settings came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Embedded,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => f.write_str("embedded defaults"),
        }
    }
}

/// Reads `--config`, else the default path if it exists, else the embedded defaults; then the
/// global overrides. Errors are configuration errors (exit 2).
pub fn load(global: &GlobalArgs) -> Result<(Settings, Source), config::ConfigError> {
    let (mut settings, source) = match &global.config {
        Some(path) => (config::load_file(path)?, Source::File(path.clone())),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => (
            config::load_file(Path::new(DEFAULT_CONFIG_PATH))?,
            Source::File(DEFAULT_CONFIG_PATH.into()),
        ),
        None => (Settings::default(), Source::Embedded),
    };
    apply_global(&mut settings, global);
    Ok((settings, source))
}

pub fn apply_global(s: &mut Settings, global: &GlobalArgs) {
    if let Some(dir) = &global.state_dir {
        s.startup.state_dir = dir.clone();
    }
    if let Some(dir) = &global.pin_dir {
        s.startup.pin_dir = Some(dir.clone());
    }
}

/// `portsentry run` flags on top of the file's settings (checked by the caller).
pub fn apply_run(s: &mut Settings, args: &RunArgs) -> Result<()> {
    let (startup, live) = (&mut s.startup, &mut s.live);
    if !args.interfaces.is_empty() {
        startup.interfaces = args.interfaces.clone();
    }
    if let Some(list) = &args.tcp_ports {
        live.tcp_ports = PortSet::parse(list).with_context(|| format!("--tcp-ports {list:?}"))?;
    }
    if let Some(list) = &args.udp_ports {
        live.udp_ports = PortSet::parse(list).with_context(|| format!("--udp-ports {list:?}"))?;
    }
    if let Some(n) = args.scan_trigger {
        live.scan_trigger = n;
    }
    if let Some(w) = args.window {
        live.window = w.0;
    }
    if let Some(t) = args.ban_ttl {
        live.ban_ttl = t.0;
    }
    if let Some(m) = args.mode {
        live.mode = m;
    }
    live.allow.extend(args.allow.iter().copied());
    if args.no_auto_allow {
        live.auto_allow = false;
    }
    if let Some(x) = args.xdp_mode {
        startup.xdp_mode = x;
    }
    if args.no_pin {
        startup.pin_dir = None;
    }
    if args.no_learn_peers {
        startup.learn_peers = false;
    }
    if let Some(n) = args.max_bans {
        startup.max_bans = n;
    }
    if let Some(n) = args.max_ban_networks {
        startup.max_ban_networks = n;
    }
    if let Some(a) = &args.metrics_listen {
        startup.metrics_listen = a.0;
    }
    if let Some(h) = &args.history_file {
        live.history_file = Some(h.clone());
    }
    if let Some(f) = args.history_format {
        live.history_format = f;
    }
    if let Some(f) = args.log_format {
        live.log_format = f;
    }
    if let Some(l) = args.log_level {
        startup.log_level = l;
    }
    Ok(())
}
