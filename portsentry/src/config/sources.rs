//! The effective settings: config file (or embedded defaults), then command-line overrides.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{
    cli::{GlobalArgs, LogFormatArg, ModeArg, RunArgs, XdpModeArg},
    config,
    config::settings::{LogFormat, Mode, Settings, DEFAULT_CONFIG_PATH},
    dataplane::AttachMode,
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
        s.state_dir = dir.clone();
    }
    if let Some(dir) = &global.pin_dir {
        s.pin_dir = Some(dir.clone());
    }
}

/// `portsentry run` flags on top of the file's settings.
pub fn apply_run(s: &mut Settings, args: &RunArgs) -> Result<()> {
    if !args.interfaces.is_empty() {
        s.interfaces = args.interfaces.clone();
    }
    if let Some(list) = &args.tcp_ports {
        s.tcp_ports = PortSet::parse(list).with_context(|| format!("--tcp-ports {list:?}"))?;
    }
    if let Some(list) = &args.udp_ports {
        s.udp_ports = PortSet::parse(list).with_context(|| format!("--udp-ports {list:?}"))?;
    }
    if let Some(n) = args.scan_trigger {
        s.scan_trigger = n;
    }
    if let Some(w) = args.window {
        s.window = w.0;
    }
    if let Some(t) = args.ban_ttl {
        s.ban_ttl = t.0;
    }
    if let Some(m) = args.mode {
        s.mode = match m {
            ModeArg::Block => Mode::Block,
            ModeArg::Detect => Mode::Detect,
        };
    }
    s.allow.extend(args.allow.iter().copied());
    if args.no_auto_allow {
        s.auto_allow = false;
    }
    if let Some(x) = args.xdp_mode {
        s.xdp_mode = match x {
            XdpModeArg::Auto => AttachMode::Auto,
            XdpModeArg::Native => AttachMode::Native,
            XdpModeArg::Generic => AttachMode::Generic,
        };
    }
    if args.no_pin {
        s.pin_dir = None;
    }
    if args.max_bans.is_some() {
        s.max_bans = args.max_bans;
    }
    if args.max_ban_networks.is_some() {
        s.max_ban_networks = args.max_ban_networks;
    }
    if let Some(h) = &args.history_file {
        s.history_file = Some(h.clone());
    }
    if let Some(f) = args.log_format {
        s.log_format = match f {
            LogFormatArg::Portsentry => LogFormat::Portsentry,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    s.validate()?;
    Ok(())
}
