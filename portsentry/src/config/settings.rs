//! The effective settings of a run, declared once: each field is a config key (its name, type,
//! file syntax via `values`, default and doc live here and nowhere else). `check-config` output
//! is these types serialized, and the parser's key lists come from the same derive.
//!
//! [`StartupSettings`] are read once when the daemon starts (a change needs a restart);
//! [`LiveSettings`] are what SIGHUP may change. Reload is `settings.live = new.live` plus a
//! warning for every startup key that differs (see [`StartupSettings::changed_keys`]).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Result};
use portsentry_common::{config_flags, maps, Config, LAYOUT_VERSION};
use serde::{Deserialize, Serialize};

use super::values;
use crate::net::{cidr::Cidr, ports::PortSet};

pub use super::tables::{AlertMode, CrowdsecSettings, HookSettings, NotifySettings};

/// Classic PortSentry trap ports ("aware" set from the stock portsentry.conf): ports where no
/// legitimate client has business, favoured by scanners and old trojans.
pub const CLASSIC_TCP_PORTS: &str = "1,11,15,79,111,119,143,540,635,1080,1524,2000,5742,6667,12345,12346,20034,27665,31337,32771,32772,32773,32774,40421,49724,54320";
pub const CLASSIC_UDP_PORTS: &str = "1,7,9,69,161,162,513,635,640,641,700,37444,34555,31335,32770,32771,32772,32773,32774,31337,54321";

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/portsentry";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/portsentry";
pub const DEFAULT_CONFIG_PATH: &str = "/etc/portsentry/portsentry.toml";
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
pub const DEFAULT_BAN_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_METRICS_TOP_BANS: u32 = 10;
pub const DEFAULT_PEER_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);
/// `neighbour_contest`'s default: long enough to outlast a poisoning attempt's follow-up
/// probes, short enough that a replaced host is bannable again soon.
pub const DEFAULT_NEIGHBOUR_CONTEST: Duration = Duration::from_secs(300);
pub const DEFAULT_RECIDIVE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_BAN_TTL_FACTOR: u32 = 2;
pub const DEFAULT_BAN_TTL_MAX: Duration = Duration::from_secs(28 * 24 * 3600);

/// Implements `Display` with the name clap and serde use, so a value is spelled one way in
/// the file, on the command line and in log lines.
macro_rules! display_as_value_name {
    ($($ty:ty),*) => {$(
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match clap::ValueEnum::to_possible_value(self) {
                    Some(v) => f.write_str(v.get_name()),
                    None => write!(f, "{self:?}"),
                }
            }
        }
    )*};
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Drop banned sources.
    Block,
    /// Count and report only: no source is dropped (fragment and extension-header evasion still
    /// is, docs/DATAPLANE.md).
    Detect,
}

/// Format of per-event log lines (stdout and history file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// PortSentry 2.x's `Scan from: …` and `attackalert: …` lines.
    #[default]
    Portsentry,
    /// One JSON object per event.
    Json,
}

/// What the history file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HistoryFormat {
    /// Every log line, timestamped (`2026-11-25T00:21:22.071+0000 Scan from: …`), as
    /// PortSentry 2.x writes it; its fail2ban filter matches these lines.
    #[default]
    Portsentry2,
    /// PortSentry 1.2's history: one `<epoch> - MM/DD/YYYY HH:MM:SS Host: <name>/<ip> Port: <port>
    /// TCP|UDP Blocked` line per source when it first triggers, which fail2ban's stock
    /// `[portsentry]` jail matches.
    Portsentry1,
}

/// How much the XDP program explains itself (aya-log, forwarded into the daemon's log).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Nothing: the diagnostics are removed by the verifier and cost nothing.
    #[default]
    Off,
    Error,
    Warn,
    Info,
    /// Why packets count as malformed, bogus or spoofed; full tables; lost events.
    Debug,
    /// Also every counted probe, with its count in the window.
    Trace,
}

/// How to attach the XDP program: PortSentry users pick "auto" (native, falling back to generic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic where the driver lacks XDP.
    #[default]
    Auto,
    /// Driver mode only: fails where the driver has no XDP support.
    Native,
    /// Generic (skb) mode: works everywhere, slower.
    Generic,
    /// Through libxdp's multi-program dispatcher, always (native, falling back to generic, when
    /// portsentry makes the dispatcher), so xdp-loader, xdp-filter or bpfman can add programs
    /// beside ours. Needs a kernel that allows freplace programs and libxdp's xdp-dispatcher.o.
    Multi,
}

display_as_value_name!(Mode, LogFormat, HistoryFormat, LogLevel, AttachMode);

/// Keys read once at start: what is attached where, table sizes, where state lives, fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StartupSettings {
    /// Interfaces to protect; empty means the default-route interface.
    #[serde(with = "values::interfaces")]
    pub interfaces: Vec<String>,
    pub xdp_mode: AttachMode,
    /// Pin maps here; `None` ("") disables pinning.
    #[serde(with = "values::optional_path")]
    pub pin_dir: Option<PathBuf>,
    /// Persistent bans and the control socket live here.
    #[serde(with = "values::required_path")]
    pub state_dir: PathBuf,
    /// Ban table capacity; pinned maps of another size are migrated.
    #[serde(deserialize_with = "values::int_in::<_, _, 1, 4294967295>")]
    pub max_bans: u32,
    /// Banned-network trie capacity; pinned maps of another size are migrated.
    #[serde(deserialize_with = "values::int_in::<_, _, 1, 4294967295>")]
    pub max_ban_networks: u32,
    /// Learn the hosts this one talks to (cgroup BPF programs on completed TCP handshakes and
    /// UDP sends), so a forged probe in their name cannot ban them.
    pub learn_peers: bool,
    /// Learned-peer table capacity (least recently seen peer makes room).
    #[serde(deserialize_with = "values::int_in::<_, _, 1, 4294967295>")]
    pub max_peers: u32,
    /// Kernel-side diagnostics in the log (`portsentry: kernel debug: …`); set at load.
    pub log_level: LogLevel,
    /// Serve Prometheus metrics on this `address:port` (`GET /metrics`); `None` ("") = off.
    #[serde(with = "values::optional_listen")]
    pub metrics_listen: Option<SocketAddr>,
    /// The metrics name the N bans with the most drops (one series each); 0 = none.
    #[serde(deserialize_with = "values::int_in::<_, _, 0, 1000>")]
    pub metrics_top_bans: u32,
    /// Fleet mode; `None` without a `[crowdsec]` table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<CrowdsecSettings>,
}

impl Default for StartupSettings {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            xdp_mode: AttachMode::Auto,
            pin_dir: Some(PathBuf::from(DEFAULT_PIN_DIR)),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            max_bans: maps::PS_BANS.capacity.object_entries(),
            max_ban_networks: maps::PS_BAN_CIDRS.capacity.object_entries(),
            learn_peers: true,
            max_peers: maps::PS_PEERS.capacity.object_entries(),
            log_level: LogLevel::Off,
            metrics_listen: None,
            metrics_top_bans: DEFAULT_METRICS_TOP_BANS,
            crowdsec: None,
        }
    }
}

impl StartupSettings {
    /// Keys whose value differs between `self` and `new`, in declaration order: generated
    /// from the serialized form, so a new startup key is covered without a line here.
    pub fn changed_keys(&self, new: &Self) -> Vec<String> {
        let (Ok(old), Ok(new)) = (toml::Table::try_from(self), toml::Table::try_from(new)) else {
            return vec!["(settings)".to_owned()];
        };
        let mut keys: Vec<String> = old.keys().chain(new.keys()).cloned().collect();
        keys.dedup();
        keys.retain(|k| old.get(k) != new.get(k));
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Keys a reload (SIGHUP) applies to the running daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveSettings {
    #[serde(with = "values::ports")]
    pub tcp_ports: PortSet,
    #[serde(with = "values::ports")]
    pub udp_ports: PortSet,
    /// Advanced mode: also guard every TCP port below N that has no listening socket.
    #[serde(with = "values::port_limit")]
    pub advanced_tcp_below: Option<u16>,
    /// Advanced mode for UDP, same meaning.
    #[serde(with = "values::port_limit")]
    pub advanced_udp_below: Option<u16>,
    /// Ports advanced mode never guards.
    #[serde(with = "values::ports")]
    pub advanced_exclude_tcp: PortSet,
    #[serde(with = "values::ports")]
    pub advanced_exclude_udp: PortSet,
    /// Ban on the N-th probe (0 and 1 both mean the first).
    #[serde(deserialize_with = "values::int_in::<_, _, 0, 4294967295>")]
    pub scan_trigger: u32,
    /// Probes older than this stop counting; `None` = never (PortSentry's behaviour).
    #[serde(with = "values::limit")]
    pub window: Option<Duration>,
    pub mode: Mode,
    pub block_tcp: bool,
    pub block_udp: bool,
    /// Ban lifetime; `None` = forever.
    #[serde(with = "values::limit")]
    pub ban_ttl: Option<Duration>,
    /// A source the kernel bans again within this long after its last ban ended is a repeat
    /// offender; "never": always (until the history of 16 384 sources needs room).
    #[serde(with = "values::limit")]
    pub recidive_window: Option<Duration>,
    /// A repeat offender's n-th ban in a row lasts `ban_ttl` × factor^(n−1); 1 = no escalation.
    #[serde(deserialize_with = "values::int_in::<_, _, 1, 1000>")]
    pub ban_ttl_factor: u32,
    /// The longest escalated ban (never shorter than `ban_ttl`); "never" = no cap.
    #[serde(with = "values::limit")]
    pub ban_ttl_max: Option<Duration>,
    /// Prefix-aware bans: an IPv6 scanner owns a whole prefix and can use a new address per
    /// probe. Once `prefix_threshold` addresses of one /N have been banned within `window`, or
    /// its probes reached max(`scan_trigger`, 1) × `prefix_threshold` there (counted in the
    /// kernel), the /N is banned (0 = off).
    #[serde(deserialize_with = "values::int_in::<_, _, 0, 128>")]
    pub ipv6_prefix: u8,
    /// The same for IPv4 (0 = off, the default: IPv4 neighbours in one /24 are often unrelated).
    #[serde(deserialize_with = "values::int_in::<_, _, 0, 32>")]
    pub ipv4_prefix: u8,
    /// Distinct verified address bans in one prefix that ban the prefix.
    #[serde(deserialize_with = "values::int_in::<_, _, 2, 65536>")]
    pub prefix_threshold: u32,
    /// Wider IPv6 prefixes the aggregation goes on to, each wider than the one before and than
    /// `ipv6_prefix` (`[]`: stop at `ipv6_prefix`). Once `wider_prefix_threshold` distinct
    /// narrower prefixes of one wider prefix hold verified bans within `window`, the wider
    /// prefix is banned: a scanner holding a /48 that uses one address per /64 is caught at
    /// /56, then /48.
    #[serde(deserialize_with = "values::wider_prefixes")]
    pub ipv6_wider_prefixes: Vec<u8>,
    /// Distinct narrower prefixes with verified bans that ban a wider prefix.
    #[serde(deserialize_with = "values::int_in::<_, _, 2, 65536>")]
    pub wider_prefix_threshold: u32,
    /// Before a probe bans, check that it arrived the way this host routes back to its source
    /// (interface and, where known, the neighbour's MAC). Turn off only for asymmetric routing.
    pub path_check: bool,
    /// A neighbour whose MAC changed (an ARP or ND frame claimed its address from another MAC,
    /// or rtnetlink reported a new link-layer address: arpwatch's "flip flop") is contested
    /// for this long: its probes do not ban and it gets no SYN cookie; the flip is logged.
    /// "0" turns the watch off (one ARP packet then defeats the path check's MAC comparison).
    #[serde(with = "values::limit")]
    pub neighbour_contest: Option<Duration>,
    /// A learned peer not heard from for this long is a stranger again; "never" keeps peers
    /// until the table needs room.
    #[serde(with = "values::limit")]
    pub peer_memory: Option<Duration>,
    /// Also learn the clients whose TCP connections this host accepts (inbound peers): their
    /// trap SYNs then get SYN cookies instead of bans. Off by default: anyone can become a
    /// client first, and then scan a public service without ever being banned.
    pub learn_inbound: bool,
    /// Advanced mode: a port that had a listening socket within this long stays a service
    /// port (never a trap) even while its service restarts; "never" forgets nothing.
    #[serde(with = "values::limit")]
    pub service_port_memory: Option<Duration>,
    /// Sources never counted or banned.
    #[serde(with = "values::cidrs")]
    pub allow: Vec<Cidr>,
    /// PortSentry-format ignore file: its entries are added to `allow`.
    #[serde(with = "values::optional_path")]
    pub ignore_file: Option<PathBuf>,
    /// Also allow this host's own addresses, default gateways and resolvers.
    pub auto_allow: bool,
    /// Every event, timestamped, appended here (never truncated).
    #[serde(with = "values::optional_path")]
    pub history_file: Option<PathBuf>,
    pub history_format: HistoryFormat,
    pub log_format: LogFormat,
    pub hooks: HookSettings,
    /// Alert and digest mail, webhook (`[notify]`).
    pub notify: NotifySettings,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            tcp_ports: PortSet::parse(CLASSIC_TCP_PORTS).unwrap_or_default(),
            udp_ports: PortSet::parse(CLASSIC_UDP_PORTS).unwrap_or_default(),
            advanced_tcp_below: None,
            advanced_udp_below: None,
            // PortSentry 1.2's defaults: ident, NetBIOS / RIP, NetBIOS, BOOTP.
            advanced_exclude_tcp: PortSet::parse("113,139").unwrap_or_default(),
            advanced_exclude_udp: PortSet::parse("520,138,137,67").unwrap_or_default(),
            scan_trigger: 0,
            window: Some(DEFAULT_WINDOW),
            mode: Mode::Block,
            block_tcp: true,
            block_udp: true,
            ban_ttl: Some(DEFAULT_BAN_TTL),
            recidive_window: Some(DEFAULT_RECIDIVE_WINDOW),
            ban_ttl_factor: DEFAULT_BAN_TTL_FACTOR,
            ban_ttl_max: Some(DEFAULT_BAN_TTL_MAX),
            ipv6_prefix: 64,
            ipv4_prefix: 0,
            prefix_threshold: 4,
            ipv6_wider_prefixes: vec![56, 48],
            wider_prefix_threshold: 4,
            path_check: true,
            neighbour_contest: Some(DEFAULT_NEIGHBOUR_CONTEST),
            peer_memory: Some(DEFAULT_PEER_MEMORY),
            learn_inbound: false,
            service_port_memory: Some(DEFAULT_PEER_MEMORY),
            allow: Vec::new(),
            ignore_file: None,
            auto_allow: true,
            history_file: None,
            history_format: HistoryFormat::Portsentry2,
            log_format: LogFormat::Portsentry,
            hooks: HookSettings::default(),
            notify: NotifySettings::default(),
        }
    }
}

impl LiveSettings {
    /// The trigger as the kernel applies it.
    pub fn effective_trigger(&self) -> u64 {
        u64::from(portsentry_common::effective_trigger(self.scan_trigger))
    }

    /// Probes from one prefix within `window` that make the kernel's prefix trigger: as many
    /// as banning `prefix_threshold` of its addresses takes (trigger × threshold); 0 when
    /// prefix aggregation is off for both families.
    pub fn prefix_hits(&self) -> u32 {
        let on = |len: u8, full: u8| len != 0 && len < full;
        if !on(self.ipv6_prefix, 128) && !on(self.ipv4_prefix, 32) {
            return 0;
        }
        portsentry_common::effective_trigger(self.scan_trigger)
            .saturating_mul(self.prefix_threshold)
    }

    /// `peer_memory` as the kernel applies it (`Config::peer_ttl_ns`, nanoseconds; 0 = forever).
    pub fn peer_ttl_ns(&self) -> u64 {
        nanos(self.peer_memory)
    }

    /// The kernel-side config block's settings part; its two trie counts are zero here (the
    /// maps' config writer keeps the allowlist's and the ban book's).
    pub fn kernel_config(&self) -> Config {
        let mut flags = 0;
        if self.mode == Mode::Block {
            flags |= config_flags::ENFORCE;
        }
        if self.block_tcp {
            flags |= config_flags::BLOCK_TCP;
        }
        if self.block_udp {
            flags |= config_flags::BLOCK_UDP;
        }
        if self.path_check {
            flags |= config_flags::PATH_CHECK;
        }
        if self.learn_inbound {
            flags |= config_flags::LEARN_INBOUND;
        }
        Config {
            layout_version: LAYOUT_VERSION,
            flags,
            scan_trigger: self.scan_trigger,
            window_ns: nanos(self.window),
            ban_ttl_ns: nanos(self.ban_ttl),
            peer_ttl_ns: self.peer_ttl_ns(),
            contest_ns: nanos(self.neighbour_contest),
            prefix_hits: self.prefix_hits(),
            ipv6_prefix: self.ipv6_prefix,
            ipv4_prefix: self.ipv4_prefix,
            event_burst: portsentry_common::EVENT_BURST,
            event_interval_ns: portsentry_common::EVENT_INTERVAL_NS,
            // Padding, and any field the kernel adds later, start as zero.
            ..Config::default()
        }
    }
}

/// A duration as the kernel keeps it: nanoseconds, saturating; `None` (off, forever) is 0.
fn nanos(d: Option<Duration>) -> u64 {
    d.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Everything a run is configured with: the config file's keys, split by when they apply.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub startup: StartupSettings,
    pub live: LiveSettings,
}

impl Settings {
    /// Checks that need the whole picture (the parser checked each value already). The files
    /// the values name (credentials, certificates) are their owners' to read and check
    /// (`daemon::resources`).
    pub fn validate(&self) -> Result<()> {
        let l = &self.live;
        if l.tcp_ports.is_empty()
            && l.udp_ports.is_empty()
            && l.advanced_tcp_below.is_none()
            && l.advanced_udp_below.is_none()
        {
            bail!("no guarded ports: set at least one TCP or UDP port");
        }
        if let Some(w) = l.ipv6_wider_prefixes.first() {
            if l.ipv6_prefix != 0 && *w >= l.ipv6_prefix {
                bail!(
                    "ipv6_wider_prefixes: /{w} is not wider than ipv6_prefix = {}",
                    l.ipv6_prefix
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_classic_lists() {
        let s = Settings::default();
        let listed: Vec<u16> = CLASSIC_TCP_PORTS
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(s.live.tcp_ports.iter().collect::<Vec<_>>(), listed);
        assert!(s.live.tcp_ports.contains(31337) && s.live.udp_ports.contains(54321));
        assert_eq!(s.live.tcp_ports.len(), 26);
        s.validate().unwrap();
    }

    #[test]
    fn kernel_config_flags() {
        let s = LiveSettings {
            mode: Mode::Detect,
            block_udp: false,
            ..Default::default()
        };
        let c = s.kernel_config();
        assert_eq!(c.flags, config_flags::BLOCK_TCP | config_flags::PATH_CHECK);
        assert_eq!(c.ban_ttl_ns, 86_400_000_000_000);
    }

    #[test]
    fn a_trigger_of_0_means_the_first_probe() {
        let at = |scan_trigger| LiveSettings {
            scan_trigger,
            ..Default::default()
        };
        assert_eq!(at(0).effective_trigger(), 1);
        assert_eq!(at(1).effective_trigger(), 1);
        assert_eq!(at(3).effective_trigger(), 3);
        assert_eq!(at(0).prefix_hits(), 4, "1 × prefix_threshold");
        assert_eq!(at(3).prefix_hits(), 12);
    }

    #[test]
    fn changed_startup_keys_come_from_the_types() {
        let old = StartupSettings::default();
        let new = StartupSettings {
            max_bans: 7,
            pin_dir: None,
            ..old.clone()
        };
        assert_eq!(old.changed_keys(&new), ["max_bans", "pin_dir"]);
        assert!(old.changed_keys(&old).is_empty());
    }
}
