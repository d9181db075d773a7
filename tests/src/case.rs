//! What the end-to-end suites share about one case: the trap and service ports and the waits,
//! a daemon's config file built from portsentry's own typed settings ([`Settings`], never config
//! text written by hand), and starting that daemon in a [`Lab`].
//!
//! A case starts from [`settings`] (the lab's interface, [`TRAP`] as the only trap port, state in
//! the case's directory, no pinning, no automatic allowlist), changes the fields it is about,
//! and starts the daemon with [`start`] (or [`args`], to add flags or start it again later).
//! Cases about the command line itself start from [`cli_args`], the same baseline as flags.
//!
//! ```no_run
//! # use portsentry_tests::{case, lab::{Lab, TempDir}};
//! let lab = Lab::new(2).unwrap();
//! let dir = TempDir::new("doc").unwrap();
//! let mut s = case::settings(&lab, &dir);
//! s.live.scan_trigger = 2;
//! let mut d = case::start(&lab, &dir, &s);
//! d.expect_line("the ban", |l| l.starts_with("attackalert: Host "));
//! ```
//!
//! The file holds only the keys whose value differs from portsentry's defaults ([`config_text`]),
//! so it reads as what the case changed; the daemon fills in the rest exactly as it would for
//! a hand-written file.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use portsentry::{
    config::{settings::Settings, CrowdsecSettings},
    net::{cidr::Cidr, ports::PortSet},
};

use crate::lab::{run_in, Daemon, DaemonArgs, Lab, Netns, TempDir};

/// The trap port most cases guard (TCP; sunrpc, in the classic list).
pub const TRAP: u16 = 111;
/// A port a test service listens on: reachable unless the source is banned.
pub const SERVICE: u16 = 8080;
/// How long a connect that is expected to fail (a trap probe, a banned source) may take.
pub const SHORT: Duration = Duration::from_millis(800);
/// How long a daemon may take to log what a case is waiting for.
pub const WAIT: Duration = Duration::from_secs(5);
/// The file name of a case's config, in its directory.
pub const CONFIG_FILE: &str = "portsentry.toml";

/// The settings a case's daemon starts from: `lab`'s protected interface, [`TRAP`] as the only
/// (TCP) trap port and no UDP one, bans and the control socket in `dir`, no pinned maps, and no
/// automatic allowlist (the scanner side is the protected side's default gateway: allowed
/// automatically, nothing it sends would ever count).
pub fn settings(lab: &Lab, dir: &TempDir) -> Settings {
    let mut s = Settings::default();
    s.startup.interfaces = vec![lab.iface.clone()];
    s.startup.state_dir = dir.path.clone();
    s.startup.pin_dir = None;
    s.live.tcp_ports = ports(&TRAP.to_string());
    s.live.udp_ports = PortSet::default();
    s.live.auto_allow = false;
    s
}

/// [`settings`] for a fleet member: `[crowdsec]` pulling from the LAPI at `lapi_url` every
/// second, and bans of 6 h (no expiry during a case).
pub fn fleet_settings(lab: &Lab, dir: &TempDir, lapi_url: &str) -> Settings {
    let mut s = settings(lab, dir);
    s.live.ban_ttl = Some(Duration::from_secs(6 * 3600));
    s.startup.crowdsec = Some(CrowdsecSettings {
        lapi_url: lapi_url.to_owned(),
        update_frequency: Duration::from_secs(1),
        ..Default::default()
    });
    s
}

/// The `[crowdsec]` table of settings from [`fleet_settings`].
pub fn crowdsec(s: &mut Settings) -> &mut CrowdsecSettings {
    s.startup
        .crowdsec
        .get_or_insert_with(CrowdsecSettings::default)
}

/// A port list as the config file spells it (`"111-113,31337"`; `""` for none).
pub fn ports(list: &str) -> PortSet {
    PortSet::parse(list).unwrap_or_else(|e| panic!("port list {list:?}: {e}"))
}

/// An address or network as the config file spells it (`"100.64.0.0/10"`).
pub fn cidr(text: &str) -> Cidr {
    text.parse()
        .unwrap_or_else(|e| panic!("address or network {text:?}: {e}"))
}

/// `s` as config text: every key (and every key of a `[table]`) whose value differs from
/// portsentry's default, as `check-config` would write it; secrets in clear (check-config
/// hides them).
pub fn config_text(s: &Settings) -> String {
    let table = |s: &Settings| -> toml::Table {
        let text = portsentry::config::render(s);
        toml::from_str(&text).unwrap_or_else(|e| panic!("rendered settings: {e}\n{text}"))
    };
    let (mut wanted, defaults) = (table(s), table(&Settings::default()));
    wanted.retain(|key, value| {
        let default = defaults.get(key);
        if let (toml::Value::Table(inner), Some(toml::Value::Table(default))) =
            (&mut *value, default)
        {
            inner.retain(|k, v| default.get(k) != Some(&*v));
            return !inner.is_empty();
        }
        default != Some(&*value)
    });
    if let (Some(c), Some(toml::Value::Table(t))) =
        (&s.startup.crowdsec, wanted.get_mut("crowdsec"))
    {
        for (key, secret) in [("api_key", &c.api_key), ("password", &c.password)] {
            if let Some(secret) = secret {
                t.insert(key.to_owned(), toml::Value::String(secret.clone()));
            }
        }
    }
    toml::to_string(&wanted).unwrap_or_else(|e| panic!("settings as TOML: {e}"))
}

/// Writes `s` to [`CONFIG_FILE`] in `dir` (replacing it: rewrite it before a SIGHUP) and
/// returns its path.
pub fn write_config(dir: &TempDir, s: &Settings) -> String {
    dir.write(CONFIG_FILE, &config_text(s))
}

/// `portsentry run --config FILE` in `lab`'s protected namespace, the file written from `s`;
/// more flags can follow.
pub fn args(lab: &Lab, dir: &TempDir, s: &Settings) -> DaemonArgs {
    DaemonArgs::new(lab).config(write_config(dir, s))
}

/// [`args`], started: the daemon is ready (READY=1) when this returns.
pub fn start(lab: &Lab, dir: &TempDir, s: &Settings) -> Daemon {
    args(lab, dir, s)
        .start()
        .unwrap_or_else(|e| panic!("starting the daemon: {e:#}"))
}

/// The same baseline as [`settings`] as `run` flags instead of a file (`--iface`,
/// `--tcp-ports 111`, `--no-auto-allow`, `--state-dir`), for cases about the command line;
/// pinning is the caller's (`.no_pin()` or `.pin_dir(…)`).
pub fn cli_args(lab: &Lab, dir: &TempDir) -> DaemonArgs {
    DaemonArgs::new(lab)
        .iface()
        .tcp_ports(&TRAP.to_string())
        .no_auto_allow()
        .state_dir(&dir.path)
}

/// The last lines of a daemon's output (or any text), for failure messages.
pub fn tail(output: &str) -> String {
    const LINES: usize = 30;
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

/// A connect from `src` (a scanner address) to `lab`'s protected `port` (IPv4 or IPv6 after
/// `src`'s family) within [`SHORT`]: whether it completed.
pub fn connects(lab: &Lab, src: IpAddr, port: u16) -> bool {
    let dst = if src.is_ipv4() {
        lab.protected_v4
    } else {
        lab.protected_v6
    };
    lab.scanner
        .tcp_connect(src, SocketAddr::new(dst, port), SHORT)
}

/// A real SYN scan of [`TRAP`] from `ns` out of `dev`: `nmap -sS -Pn -n -p 111 --max-retries 1
/// -oG - -e DEV [-S SRC] TARGET` (no ping, no DNS, one retry, within 30 s); nmap's grepable
/// output, for failure messages and port states (`111/filtered`).
pub fn syn_scan(ns: &Netns, dev: &str, src: Option<IpAddr>, target: &str) -> String {
    let (port, src) = (TRAP.to_string(), src.map(|a| a.to_string()));
    let mut args = vec![
        "-sS",
        "-Pn",
        "-n",
        "-p",
        &port,
        "--max-retries",
        "1",
        "-oG",
        "-",
        "-e",
        dev,
    ];
    if let Some(src) = &src {
        args.extend(["-S", src]);
    }
    args.push(target);
    run_in(ns, "nmap", &args, Duration::from_secs(30)).1
}

/// One TCP SYN forged in `src`'s name from `ns` to `target:port` (`hping3 -c 1 -S -p PORT -a
/// SRC TARGET`, within 10 s): hping3's exit code (1 when nothing answered) and output, which
/// lists the answers it saw (`flags=SA` for a SYN-ACK).
pub fn forged_syn(
    ns: &Netns,
    src: impl std::fmt::Display,
    target: IpAddr,
    port: u16,
) -> (i32, String) {
    forged_syns(ns, src, target, port, 1, Duration::from_secs(1))
}

/// [`forged_syn`] `count` times, `every` apart (`hping3 -c COUNT -i uMICROS …`; hping3's own
/// default is 1 s), all within 10 s.
pub fn forged_syns(
    ns: &Netns,
    src: impl std::fmt::Display,
    target: IpAddr,
    port: u16,
    count: u32,
    every: Duration,
) -> (i32, String) {
    let (src, target, port) = (src.to_string(), target.to_string(), port.to_string());
    let (count, every) = (count.to_string(), format!("u{}", every.as_micros()));
    run_in(
        ns,
        "hping3",
        &[
            "-c", &count, "-i", &every, "-S", "-p", &port, "-a", &src, &target,
        ],
        Duration::from_secs(10),
    )
}

/// `count` UDP datagrams to `target:port` from random forged sources, `every` apart, from
/// `ns` (`hping3 --udp --rand-source -p PORT -c COUNT -i uMICROS TARGET`), within `within`:
/// hping3's exit code and output.
pub fn random_source_udp(
    ns: &Netns,
    target: IpAddr,
    port: u16,
    count: u32,
    every: Duration,
    within: Duration,
) -> (i32, String) {
    let (target, port, count) = (target.to_string(), port.to_string(), count.to_string());
    let every = format!("u{}", every.as_micros());
    run_in(
        ns,
        "hping3",
        &[
            "--udp",
            "--rand-source",
            "-p",
            &port,
            "-c",
            &count,
            "-i",
            &every,
            &target,
        ],
        within,
    )
}

/// A line saying `src` was banned and its packets are dropped.
pub fn ban_line(src: impl std::fmt::Display) -> impl Fn(&str) -> bool {
    let prefix = format!("attackalert: Host {src} has been blocked via XDP drop");
    move |l: &str| l.starts_with(&prefix)
}

/// The daemon's line about a probe from `src` it refused or only reported
/// (`portsentry: probe from SRC (…): …`) whose reason contains `why` (`spoofed`, `contested`,
/// `answered with a SYN cookie`, …).
pub fn probe_line(src: impl std::fmt::Display, why: &str) -> impl Fn(&str) -> bool {
    let (prefix, why) = (format!("portsentry: probe from {src} ("), why.to_owned());
    move |l: &str| l.starts_with(&prefix) && l.contains(&why)
}

/// Any `attackalert` line about `src` as the banned host (blocked, or detected only).
pub fn attackalert(src: impl std::fmt::Display) -> impl Fn(&str) -> bool {
    let prefix = format!("attackalert: Host {src} ");
    move |l: &str| l.starts_with(&prefix)
}

impl Daemon {
    /// The last lines of the output, for failure messages.
    pub fn tail(&self) -> String {
        tail(&self.output())
    }

    /// Waits up to [`WAIT`] for a line satisfying `pred`; panics naming `what`, with the
    /// output's tail, if none comes.
    pub fn expect_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        self.expect_line_within(what, WAIT, pred);
    }

    /// [`Daemon::expect_line`] with its own deadline (a slow step, or one that must be prompt).
    pub fn expect_line_within(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) {
        assert!(
            self.wait_for_line(pred, within),
            "no line for {what} within {within:?}; last lines:\n{}",
            self.tail()
        );
    }

    /// Stops the daemon (SIGTERM, then waits) and asserts it exited with status 0.
    pub fn stop_cleanly(&mut self) {
        let status = self
            .stop()
            .unwrap_or_else(|e| panic!("stopping the daemon: {e:#}"));
        assert_eq!(status, Some(0), "clean exit; last lines:\n{}", self.tail());
    }

    /// Panics naming `what`, with the output's tail, if a line so far satisfies `pred`.
    pub fn expect_no_line(&self, what: &str, pred: impl Fn(&str) -> bool) {
        assert!(
            !self.has_line(pred),
            "unexpected line: {what}; last lines:\n{}",
            self.tail()
        );
    }
}
