//! Command-line interface. `main.rs` parses it and hands each verb to its module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{cidr::Cidr, settings::parse_duration};

/// A duration or "never" (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub Option<std::time::Duration>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    parse_duration(s).map(Limit)
}

#[derive(Parser, Debug)]
#[command(
    name = "portsentry",
    version,
    about = "Detect port scans and block scanners in the kernel (XDP)",
    long_about = "portsentry guards trap ports: ports no legitimate client connects to. A source that \
probes them (SYN, FIN, NULL, XMAS or UDP) is banned by the XDP program itself and its very next \
packet is dropped before the network stack sees it.\n\n\
Quick start (inside a network namespace while trying it out):\n  \
portsentry run                          protect the default-route interface, classic trap ports\n  \
portsentry run --iface eth1 --tcp-ports 1,11,111,6000-6063 --ban-ttl 1h"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load the XDP program, attach it and log probes and bans until SIGINT/SIGTERM.
    Run(RunArgs),
}

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Interface to protect (repeat for several). Default: the interface of the default route.
    #[arg(long = "iface", short = 'i', value_name = "IF")]
    pub interfaces: Vec<String>,
    /// Guarded TCP ports: a list with ranges, e.g. "1,11,111,6000-6063" (default: classic
    /// PortSentry list). An empty string guards no TCP port.
    #[arg(long, value_name = "LIST")]
    pub tcp_ports: Option<String>,
    /// Guarded UDP ports, same syntax (default: classic PortSentry list).
    #[arg(long, value_name = "LIST")]
    pub udp_ports: Option<String>,
    /// Ban on the N-th probe from a source (0 and 1: the first, as PortSentry's SCAN_TRIGGER).
    #[arg(long = "scan-trigger", value_name = "N")]
    pub scan_trigger: Option<u32>,
    /// Probes older than this stop counting ("90s", "1h"; "never" = PortSentry's no decay).
    #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
    pub window: Option<Limit>,
    /// How long a ban lasts ("24h", "7d"; "never" = forever). Default 24h.
    #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
    pub ban_ttl: Option<Limit>,
    /// block: drop banned sources; detect: only count and log.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Never count or ban this address or network (repeatable), e.g. 192.0.2.0/24.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<Cidr>,
    /// Do not allowlist this host's own addresses, default gateways and resolvers.
    #[arg(long)]
    pub no_auto_allow: bool,
    /// XDP attach mode: auto tries native and falls back to generic.
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpModeArg>,
    /// Pin maps here (on bpffs, mounted if needed) so state survives restarts and bpftool can
    /// read it. Default /sys/fs/bpf/portsentry.
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Do not pin maps: all state goes away when the daemon stops.
    #[arg(long, conflicts_with = "pin_dir")]
    pub no_pin: bool,
    /// Ban table capacity (default 65536).
    #[arg(long, value_name = "N")]
    pub max_bans: Option<u32>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ModeArg {
    Block,
    Detect,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum XdpModeArg {
    Auto,
    Native,
    Generic,
}
