//! The command line: what each verb accepts (clap derives) and, in `verbs/`, one file per verb
//! that does it. Verbs talk to a running daemon through the control socket, or work on the
//! ban book and pins without one; the daemon never calls code from here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{
    config::{
        settings::{AttachMode, HistoryFormat, LogFormat, LogLevel, Mode},
        values::parse_duration,
        Overlay, Sources,
    },
    net::cidr::Cidr,
};

pub mod docs;
pub mod verbs;

/// A duration or "never" (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub Option<std::time::Duration>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    parse_duration(s).map(Limit)
}

/// A duration or "never", kept as written (the config key's reader reads it).
fn duration_text(s: &str) -> Result<String, String> {
    parse_duration(s).map(|_| s.to_owned())
}

/// An `address:port` to listen on, or "" (off), kept as written.
fn listen_text(s: &str) -> Result<String, String> {
    if s.is_empty() || s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(s.to_owned());
    }
    Err(format!(
        "{s:?} is not an address:port (e.g. 127.0.0.1:9650 or [::1]:9650)"
    ))
}

#[derive(Parser, Debug)]
#[command(
    name = "portsentry",
    version,
    about = "Detect port scans and block scanners in the kernel (XDP)",
    long_about = "portsentry guards trap ports: ports no legitimate client connects to. A source that \
probes them (SYN, FIN, NULL, XMAS or UDP) is banned by the XDP program itself and its very next \
packet is dropped before the network stack sees it.\n\n\
Examples:\n  \
portsentry run                          protect the default-route interface (config or embedded defaults)\n  \
portsentry run -i eth1 --tcp-ports 1,11,111,6000-6063 --ban-ttl 1h\n  \
portsentry list                         show bans (works with or without a running daemon)\n  \
portsentry ban 198.51.100.0/24 --ttl 7d\n  \
portsentry unban 192.0.2.7\n  \
portsentry import-conf /etc/portsentry/portsentry.conf > portsentry.toml\n\n\
Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.",
    after_help = "Inspect live state with bpftool: bpftool map dump pinned /sys/fs/bpf/portsentry/PS_BANS"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every verb accepts; they override the config file.
#[derive(Args, Debug, Default, Clone)]
pub struct GlobalArgs {
    /// Config file [default: /etc/portsentry/portsentry.toml, or the embedded defaults if it
    /// does not exist].
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Where bans are persisted [default: /var/lib/portsentry].
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where maps are pinned on bpffs [default: /sys/fs/bpf/portsentry].
    #[arg(long, global = true, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
}

impl GlobalArgs {
    /// The config file and these overrides, as the settings' sources.
    pub fn sources(&self) -> Sources {
        let mut overlay = Overlay::default();
        if let Some(dir) = &self.state_dir {
            overlay.set("--state-dir", "state_dir", dir.to_string_lossy().as_ref());
        }
        if let Some(dir) = &self.pin_dir {
            overlay.set("--pin-dir", "pin_dir", dir.to_string_lossy().as_ref());
        }
        Sources {
            config: self.config.clone(),
            overlay,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load the XDP program, attach it and log probes and bans until SIGINT/SIGTERM
    /// (SIGHUP reloads the config without losing bans).
    Run(RunArgs),
    /// Show whether the daemon runs, where, in which mode, and its counters.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List bans: address, since, expires, trigger, origin and dropped packets.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Ban an address or a network now (works with or without a running daemon).
    Ban {
        /// Address or network, e.g. 192.0.2.7 or 198.51.100.0/24.
        target: Cidr,
        /// How long ("1h", "7d", "never") [default: the config's ban_ttl].
        #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
        ttl: Option<Limit>,
    },
    /// Lift bans on addresses or networks, or all of them.
    Unban {
        /// Addresses or networks exactly as banned.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        targets: Vec<Cidr>,
        /// Lift every ban.
        #[arg(long)]
        all: bool,
    },
    /// Enforce the shadow bans detect mode recorded (block mode drops none of them until then).
    PromoteShadow,
    /// Check the `[notify]` transports: `--test` sends a test message through each and says
    /// why one failed (exit 1), or that the configuration is wrong (exit 2).
    Notify {
        /// Send a test message through every configured transport now.
        #[arg(long)]
        test: bool,
    },
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        /// Config file [default: --config, else /etc/portsentry/portsentry.toml].
        path: Option<PathBuf>,
    },
    /// Convert a classic PortSentry portsentry.conf (1.2 or 2.x) to portsentry.toml on stdout.
    ImportConf {
        /// The classic config file.
        path: PathBuf,
        /// The mode the classic daemon was started in (repeat for several, e.g. `--mode atcp
        /// --mode sudp`): protocols no mode names are not monitored, atcp/audp turn on advanced
        /// mode with ADVANCED_PORTS_TCP/UDP as the bound. Without it, the file decides.
        #[arg(long = "mode", value_enum, value_name = "MODE")]
        modes: Vec<crate::config::classic::ClassicMode>,
    },
    /// Write the man pages and shell completions to DIR (for `cargo xtask man` and `install`).
    #[command(hide = true)]
    GenerateDocs {
        /// Output directory: DIR/man8/*.8 and DIR/completions/.
        dir: PathBuf,
    },
}

/// `portsentry run`'s flags: config keys on the command line, each read by its key's reader in
/// `config::values` ([`RunArgs::add_to`] names the key of each). They take precedence over
/// the file; the daemon gets them as a [`Overlay`], never as these types.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Interface to protect (repeat for several) [default: the config's `interfaces`, else the
    /// interface of the default route].
    #[arg(long = "iface", short = 'i', value_name = "IF")]
    pub interfaces: Vec<String>,
    /// Guarded TCP ports: a list with ranges, e.g. "1,11,111,6000-6063". An empty string guards
    /// no TCP port.
    #[arg(long, value_name = "LIST")]
    pub tcp_ports: Option<String>,
    /// Guarded UDP ports, same syntax.
    #[arg(long, value_name = "LIST")]
    pub udp_ports: Option<String>,
    /// Ban on the N-th probe from a source (0 and 1: the first, as PortSentry's SCAN_TRIGGER).
    #[arg(long = "scan-trigger", value_name = "N")]
    pub scan_trigger: Option<u32>,
    /// Probes older than this stop counting ("90s", "1h"; "never" = PortSentry's no decay).
    #[arg(long, value_name = "DURATION", value_parser = duration_text)]
    pub window: Option<String>,
    /// How long a ban lasts ("24h", "7d"; "never" = forever).
    #[arg(long, value_name = "DURATION", value_parser = duration_text)]
    pub ban_ttl: Option<String>,
    /// block: drop banned sources; detect: only count and log.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Never count or ban this address or network (repeatable), e.g. 192.0.2.0/24.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<Cidr>,
    /// Do not allowlist this host's own addresses, default gateways and resolvers.
    #[arg(long)]
    pub no_auto_allow: bool,
    /// XDP attach mode: auto tries native and falls back to generic.
    #[arg(long, value_enum)]
    pub xdp_mode: Option<AttachMode>,
    /// Do not pin maps: state lives only as long as the process (bans still persist in
    /// the state directory).
    #[arg(long)]
    pub no_pin: bool,
    /// Do not learn the hosts this one talks to (no cgroup programs): a trap probe from any
    /// source counts as before, learned peer or not.
    #[arg(long)]
    pub no_learn_peers: bool,
    /// Ban table capacity [default: 65536]. Pinned maps of another size are migrated.
    #[arg(long, value_name = "N")]
    pub max_bans: Option<u32>,
    /// Banned-network trie capacity [default: 16384]. Pinned maps of another size are migrated.
    #[arg(long, value_name = "N")]
    pub max_ban_networks: Option<u32>,
    /// Serve Prometheus metrics on ADDR:PORT, e.g. 127.0.0.1:9650 ("" = off) [default: the
    /// config's `metrics_listen`].
    #[arg(long, value_name = "ADDR:PORT", value_parser = listen_text)]
    pub metrics_listen: Option<String>,
    /// Append every event, timestamped, to this file (PortSentry's HISTORY_FILE).
    #[arg(long, value_name = "PATH")]
    pub history_file: Option<PathBuf>,
    /// What the history file holds: PortSentry 2.x's lines, or 1.2's `Host: … Blocked` lines
    /// (for fail2ban's stock `[portsentry]` jail).
    #[arg(long, value_enum)]
    pub history_format: Option<HistoryFormat>,
    /// Event log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Kernel-side diagnostics in the log: why packets counted as malformed, bogus or spoofed,
    /// full tables, lost events (debug); every counted probe (trace). Off costs nothing.
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,
}

impl RunArgs {
    /// The flags given, as config keys over the file's.
    pub fn add_to(&self, o: &mut Overlay) {
        if !self.interfaces.is_empty() {
            let names = toml_edit::Array::from_iter(self.interfaces.iter().map(String::as_str));
            o.set("--iface", "interfaces", names);
        }
        let text = [
            ("--tcp-ports", "tcp_ports", &self.tcp_ports),
            ("--udp-ports", "udp_ports", &self.udp_ports),
            ("--window", "window", &self.window),
            ("--ban-ttl", "ban_ttl", &self.ban_ttl),
            ("--metrics-listen", "metrics_listen", &self.metrics_listen),
        ];
        let named = [
            ("--mode", "mode", self.mode.map(|v| v.to_string())),
            (
                "--xdp-mode",
                "xdp_mode",
                self.xdp_mode.map(|v| v.to_string()),
            ),
            (
                "--history-file",
                "history_file",
                self.history_file
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
            ),
            (
                "--history-format",
                "history_format",
                self.history_format.map(|v| v.to_string()),
            ),
            (
                "--log-format",
                "log_format",
                self.log_format.map(|v| v.to_string()),
            ),
            (
                "--log-level",
                "log_level",
                self.log_level.map(|v| v.to_string()),
            ),
        ];
        for (flag, key, value) in text {
            if let Some(v) = value {
                o.set(flag, key, v.as_str());
            }
        }
        for (flag, key, value) in named {
            if let Some(v) = value {
                o.set(flag, key, v);
            }
        }
        let numbers = [
            ("--scan-trigger", "scan_trigger", self.scan_trigger),
            ("--max-bans", "max_bans", self.max_bans),
            (
                "--max-ban-networks",
                "max_ban_networks",
                self.max_ban_networks,
            ),
        ];
        for (flag, key, value) in numbers {
            if let Some(n) = value {
                o.set(flag, key, i64::from(n));
            }
        }
        for c in &self.allow {
            o.extend("--allow", "allow", c.to_string());
        }
        let switches = [
            ("--no-auto-allow", "auto_allow", self.no_auto_allow),
            ("--no-learn-peers", "learn_peers", self.no_learn_peers),
        ];
        for (flag, key, off) in switches {
            if off {
                o.set(flag, key, false);
            }
        }
        if self.no_pin {
            o.set("--no-pin", "pin_dir", "");
        }
    }
}
