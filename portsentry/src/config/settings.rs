//! The effective settings of a run, with the embedded defaults.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Result};
use portsentry_common::{config_flags, Config, LAYOUT_VERSION};

use crate::{dataplane::AttachMode, net::cidr::Cidr, net::ports::PortSet};

/// Classic PortSentry trap ports ("aware" set from the stock portsentry.conf): ports where no
/// legitimate client has business, favoured by scanners and old trojans.
pub const CLASSIC_TCP_PORTS: &str = "1,11,15,79,111,119,143,540,635,1080,1524,2000,5742,6667,12345,12346,20034,27665,31337,32771,32772,32773,32774,40421,49724,54320";
pub const CLASSIC_UDP_PORTS: &str = "1,7,9,69,161,162,513,635,640,641,700,37444,34555,31335,32770,32771,32772,32773,32774,31337,54321";

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/portsentry";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/portsentry";
pub const DEFAULT_CONFIG_PATH: &str = "/etc/portsentry/portsentry.toml";
pub const DEFAULT_HOSTS_DENY: &str = "/etc/hosts.deny";
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
pub const DEFAULT_BAN_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Drop banned sources.
    Block,
    /// Count and report only; nothing is dropped.
    Detect,
}

/// Format of per-event log lines (stdout and history file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// PortSentry 2.x's `Scan from: …` and `attackalert: …` lines.
    #[default]
    Portsentry,
    /// One JSON object per event.
    Json,
}

/// PortSentry's KILL_* response hooks, made safe: argv lists, never a shell.
///
/// Placeholders in every argv element and in `hosts_deny`: `$TARGET$`/`{target}` (source
/// address), `$PORT$`/`{port}` (destination port), `$MODE$`/`{mode}` (`tcp`/`udp`),
/// `{proto}` (`TCP`/`UDP`), `{scan}` (scan type text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookSettings {
    /// KILL_RUN_CMD: run on every ban.
    pub run_cmd: Option<Vec<String>>,
    /// KILL_HOSTS_DENY: this line is appended to `hosts_deny_file` on every ban.
    pub hosts_deny: Option<String>,
    pub hosts_deny_file: PathBuf,
    /// KILL_ROUTE: run on every ban (after hosts_deny).
    pub kill_route: Option<Vec<String>>,
    /// KILL_RUN_CMD_FIRST: run_cmd before hosts_deny and kill_route instead of after.
    pub run_cmd_first: bool,
    /// Also run `run_cmd` for bans that are not enforced (detect mode, `block_tcp`/`block_udp`
    /// off): PortSentry's BLOCK_TCP/BLOCK_UDP = 2. hosts_deny and kill_route block, so they run
    /// only for enforced bans.
    pub run_cmd_always: bool,
    /// Each command is killed after this long and counted as failed.
    pub timeout: Duration,
    /// Ban responses (each a sequence of the hooks above) running at once; more are skipped.
    pub max_concurrent: usize,
    /// Ban responses started per minute at most; more are skipped.
    pub max_per_minute: u32,
}

impl Default for HookSettings {
    fn default() -> Self {
        Self {
            run_cmd: None,
            hosts_deny: None,
            hosts_deny_file: PathBuf::from(DEFAULT_HOSTS_DENY),
            kill_route: None,
            run_cmd_first: false,
            run_cmd_always: false,
            timeout: Duration::from_secs(10),
            max_concurrent: 4,
            max_per_minute: 60,
        }
    }
}

impl HookSettings {
    pub fn is_empty(&self) -> bool {
        self.run_cmd.is_none() && self.hosts_deny.is_none() && self.kill_route.is_none()
    }
}

/// `[crowdsec]`: join a CrowdSec Local API (LAPI) as a bouncer (enforce fleet decisions) and/or
/// as a machine (push our bans as alerts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrowdsecSettings {
    /// e.g. `http://127.0.0.1:8080`; `https://` is verified against the Mozilla root store.
    pub lapi_url: String,
    /// Bouncer API key (`cscli bouncers add`); with `api_key_file`, the file's first line.
    pub api_key: Option<String>,
    pub api_key_file: Option<PathBuf>,
    /// How often the decision stream is pulled.
    pub update_frequency: Duration,
    /// Machine login and password (`cscli machines add`), or `credentials_file`.
    pub login: Option<String>,
    pub password: Option<String>,
    /// cscli's `local_api_credentials.yaml` format: `login:` and `password:` lines.
    pub credentials_file: Option<PathBuf>,
    /// Scenario name of the alerts we push.
    pub scenario: String,
    /// Alerts kept (in memory and in `state_dir`) while LAPI is unreachable; the oldest go first.
    pub queue_max: usize,
}

pub const DEFAULT_CROWDSEC_SCENARIO: &str = "portsentry/port-scan";

impl Default for CrowdsecSettings {
    fn default() -> Self {
        Self {
            lapi_url: String::new(),
            api_key: None,
            api_key_file: None,
            update_frequency: Duration::from_secs(2),
            login: None,
            password: None,
            credentials_file: None,
            scenario: DEFAULT_CROWDSEC_SCENARIO.to_owned(),
            queue_max: 10_000,
        }
    }
}

impl CrowdsecSettings {
    /// Pulls decisions (has a bouncer key).
    pub fn is_bouncer(&self) -> bool {
        self.api_key.is_some() || self.api_key_file.is_some()
    }

    /// Pushes alerts (has machine credentials).
    pub fn is_machine(&self) -> bool {
        self.login.is_some() || self.credentials_file.is_some()
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// Interfaces to protect; empty means the default-route interface.
    pub interfaces: Vec<String>,
    pub tcp_ports: PortSet,
    pub udp_ports: PortSet,
    /// Ban on the N-th probe (0 and 1 both mean the first).
    pub scan_trigger: u32,
    /// Probes older than this stop counting; `None` = never (PortSentry's behaviour).
    pub window: Option<Duration>,
    /// Ban lifetime; `None` = forever.
    pub ban_ttl: Option<Duration>,
    pub mode: Mode,
    pub block_tcp: bool,
    pub block_udp: bool,
    /// Sources never counted or banned.
    pub allow: Vec<Cidr>,
    /// Also allow this host's own addresses, default gateways and resolvers.
    pub auto_allow: bool,
    pub xdp_mode: AttachMode,
    /// Pin maps here; `None` disables pinning.
    pub pin_dir: Option<PathBuf>,
    pub max_bans: Option<u32>,
    /// Banned-network trie capacity; `None` = the default (16 384).
    pub max_ban_networks: Option<u32>,
    /// Advanced mode: also guard every TCP port below N that has no listening socket.
    pub advanced_tcp_below: Option<u16>,
    /// Advanced mode for UDP, same meaning.
    pub advanced_udp_below: Option<u16>,
    /// Ports advanced mode never guards.
    pub advanced_exclude_tcp: PortSet,
    pub advanced_exclude_udp: PortSet,
    /// PortSentry-format ignore file: its entries are added to `allow`.
    pub ignore_file: Option<PathBuf>,
    /// Every event, timestamped, appended here (never truncated).
    pub history_file: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Persistent bans live here.
    pub state_dir: PathBuf,
    pub hooks: HookSettings,
    /// Fleet mode; `None` without a `[crowdsec]` table.
    pub crowdsec: Option<CrowdsecSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            tcp_ports: PortSet::parse(CLASSIC_TCP_PORTS).unwrap_or_default(),
            udp_ports: PortSet::parse(CLASSIC_UDP_PORTS).unwrap_or_default(),
            scan_trigger: 0,
            window: Some(DEFAULT_WINDOW),
            ban_ttl: Some(DEFAULT_BAN_TTL),
            mode: Mode::Block,
            block_tcp: true,
            block_udp: true,
            allow: Vec::new(),
            auto_allow: true,
            xdp_mode: AttachMode::Auto,
            pin_dir: Some(PathBuf::from(DEFAULT_PIN_DIR)),
            max_bans: None,
            max_ban_networks: None,
            advanced_tcp_below: None,
            advanced_udp_below: None,
            // PortSentry 1.2's defaults: ident, NetBIOS / RIP, NetBIOS, BOOTP.
            advanced_exclude_tcp: PortSet::parse("113,139").unwrap_or_default(),
            advanced_exclude_udp: PortSet::parse("520,138,137,67").unwrap_or_default(),
            ignore_file: None,
            history_file: None,
            log_format: LogFormat::Portsentry,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            hooks: HookSettings::default(),
            crowdsec: None,
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Result<()> {
        if self.tcp_ports.is_empty()
            && self.udp_ports.is_empty()
            && self.advanced_tcp_below.is_none()
            && self.advanced_udp_below.is_none()
        {
            bail!("no guarded ports: set at least one TCP or UDP port");
        }
        if let Some(c) = &self.crowdsec {
            crate::fleet::crowdsec::Credentials::resolve(c)?;
        }
        Ok(())
    }

    /// The trigger as the kernel applies it.
    pub fn effective_trigger(&self) -> u64 {
        u64::from(self.scan_trigger.max(1))
    }

    /// The kernel-side config block.
    pub fn kernel_config(&self, allow_count: u32, ban_cidr_count: u32) -> Config {
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
        let ns = |d: Option<Duration>| {
            d.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        };
        Config {
            layout_version: LAYOUT_VERSION,
            flags,
            scan_trigger: self.scan_trigger,
            ban_cidr_count,
            allow_cidr_count: allow_count,
            _pad0: 0,
            window_ns: ns(self.window),
            ban_ttl_ns: ns(self.ban_ttl),
        }
    }
}

/// The longest finite duration accepted anywhere (a ban, a window, a timeout): beyond it dates
/// stop being printable, and "never" says what is meant.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600); // humantime's year: 365.25 days

/// Refuses durations beyond [`MAX_DURATION`].
pub fn check_duration(d: Duration, text: &str) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!(
            "`{text}` is too long: at most 100 years; use \"never\" for no limit"
        ));
    }
    Ok(d)
}

/// Parses "24h", "90s", "1h30m"; "0" and "never" mean no limit (`None`). At most 100 years.
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let t = s.trim();
    if t == "0" || t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    match humantime::parse_duration(t) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) => check_duration(d, s).map(Some),
        Err(e) => Err(format!(
            "`{s}` is not a duration ({e}); use e.g. 90s, 15m, 24h, 7d, or never"
        )),
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
        assert_eq!(s.tcp_ports.iter().collect::<Vec<_>>(), listed);
        assert!(s.tcp_ports.contains(31337) && s.udp_ports.contains(54321));
        assert_eq!(s.tcp_ports.len(), 26);
        s.validate().unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Some(Duration::from_secs(86400))));
        assert_eq!(parse_duration("never"), Ok(None));
        assert_eq!(parse_duration("0"), Ok(None));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("100y").is_ok());
        let huge = parse_duration("600000000y").unwrap_err();
        assert!(huge.contains("100 years"), "{huge}");
    }

    #[test]
    fn kernel_config_flags() {
        let s = Settings {
            mode: Mode::Detect,
            block_udp: false,
            ..Default::default()
        };
        let c = s.kernel_config(3, 0);
        assert_eq!(c.flags, config_flags::BLOCK_TCP);
        assert_eq!(c.allow_cidr_count, 3);
        assert_eq!(c.ban_ttl_ns, 86_400_000_000_000);
    }
}
