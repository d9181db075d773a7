//! `portsentry run`: load, restore bans, configure, attach, then log events, run hooks, persist
//! bans and reload on SIGHUP until SIGINT/SIGTERM.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use portsentry_common::proto;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    bpffs,
    cidr::Cidr,
    cli::{GlobalArgs, RunArgs},
    clock::Now,
    control::{self, DaemonInfo, DAEMON_FILE},
    crowdsec::alerts::LocalBan,
    dataplane::{AttachMode, Dataplane, LoadOptions},
    events::{self, EventKind, ProbeEvent},
    fleet::Fleet,
    hooks::{BanInfo, HookRunner},
    listening::{self, Listening},
    logging::{self, LogFn, LogSink},
    netinfo, options,
    settings::{Mode, Settings},
    state::{self, SavedCidrBan, StateError, StateStore},
};
use portsentry_common::ban_origin;

/// How often advanced mode and the service check look for new listening sockets.
const LISTEN_POLL: Duration = Duration::from_millis(500);
/// A ban is persisted at most this long after it happened.
const SAVE_DEBOUNCE: Duration = Duration::from_secs(1);
/// Even without events, the state is saved and expired bans are swept this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// A failed save is retried after this long.
const SAVE_RETRY: Duration = Duration::from_secs(5);
/// A persisting error is reported at most this often.
const ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// This host's own addresses, default gateways and resolvers, as host entries.
fn auto_allow_list() -> Result<Vec<Cidr>> {
    let mut addrs: Vec<IpAddr> = netinfo::own_addresses()?;
    addrs.extend(
        netinfo::default_routes()
            .into_iter()
            .filter_map(|r| r.gateway),
    );
    addrs.extend(netinfo::resolvers("/etc/resolv.conf"));
    let mut out: Vec<Cidr> = addrs.into_iter().map(Cidr::host).collect();
    out.sort_by_key(|c| (c.addr, c.prefix));
    out.dedup();
    Ok(out)
}

/// Everything `run` keeps between events.
struct Daemon {
    dp: Dataplane,
    settings: Settings,
    sink: LogSink,
    hooks: HookRunner,
    store: StateStore,
    /// Times of banned networks (the kernel keeps only their drop counters).
    cidr_meta: Vec<SavedCidrBan>,
    listening: Listening,
    names_by_index: HashMap<u32, String>,
    /// Interfaces we protect and the ifindex we are attached to (`None` while it is gone).
    attached: Vec<(String, Option<u32>)>,
    dirty_since: Option<Instant>,
    /// After a failed save, the next attempt waits until then.
    save_retry_at: Option<Instant>,
    last_save_error_report: Option<Instant>,
    last_sweep: Instant,
    /// The allowlist as last written to the kernel (configured + automatic entries).
    allow: Vec<Cidr>,
    /// Fleet mode (`[crowdsec]`).
    fleet: Option<Fleet>,
}

/// Banned networks as the state file has them (the CLI may have edited it) plus the fleet's,
/// which only the daemon knows.
fn merge_cidr_meta(on_disk: Vec<SavedCidrBan>, in_memory: &[SavedCidrBan]) -> Vec<SavedCidrBan> {
    let mut merged: Vec<SavedCidrBan> = on_disk
        .into_iter()
        .filter(|m| m.origin != ban_origin::FLEET)
        .collect();
    for m in in_memory.iter().filter(|m| m.origin == ban_origin::FLEET) {
        if !merged.iter().any(|d| d.cidr == m.cidr) {
            merged.push(m.clone());
        }
    }
    merged
}

/// Waits for the next fleet update, or forever without a bouncer.
async fn next_fleet_update(
    fleet: &mut Option<Fleet>,
) -> Option<crate::crowdsec::decisions::FleetUpdate> {
    match fleet.as_mut().and_then(|f| f.updates.as_mut()) {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    /// Writes ports, allowlist, hooks and the config block from `self.settings`.
    fn apply(&mut self) -> Result<()> {
        let s = &self.settings;
        let mut allow = s.allow.clone();
        if s.auto_allow {
            allow.extend(auto_allow_list()?);
        }
        let allow_count = self.dp.set_allowlist(&allow)?;
        self.allow = allow;
        self.refresh_ports()?;
        let ban_cidr_count = self.dp.config().map(|c| c.ban_cidr_count).unwrap_or(0);
        let ban_cidr_count = ban_cidr_count.max(self.dp.ban_cidrs()?.len() as u32);
        self.dp
            .set_config(&self.settings.kernel_config(allow_count, ban_cidr_count))?;
        self.hooks.reload(self.settings.hooks.clone());
        self.sink = LogSink::new(
            self.settings.log_format,
            self.settings.history_file.as_deref(),
        );
        eprintln!(
            "portsentry: guarding TCP [{}] UDP [{}]{}; mode {}; trigger {}; {} allowlist entr{}",
            self.settings.tcp_ports,
            self.settings.udp_ports,
            match (
                self.settings.advanced_tcp_below,
                self.settings.advanced_udp_below
            ) {
                (None, None) => String::new(),
                (t, u) => format!(
                    " plus advanced mode below TCP {} UDP {}",
                    t.map_or("-".into(), |n| n.to_string()),
                    u.map_or("-".into(), |n| n.to_string())
                ),
            },
            if self.settings.mode == Mode::Block {
                "block"
            } else {
                "detect"
            },
            self.settings.effective_trigger(),
            allow_count,
            if allow_count == 1 { "y" } else { "ies" }
        );
        Ok(())
    }

    /// Recomputes the guarded ports from the settings and the listening sockets.
    fn refresh_ports(&mut self) -> Result<()> {
        let s = &self.settings;
        let tcp = listening::guarded(
            &s.tcp_ports,
            s.advanced_tcp_below,
            &s.advanced_exclude_tcp,
            &self.listening.tcp,
        );
        let udp = listening::guarded(
            &s.udp_ports,
            s.advanced_udp_below,
            &s.advanced_exclude_udp,
            &self.listening.udp,
        );
        self.dp.set_guarded_ports(proto::TCP, &tcp)?;
        self.dp.set_guarded_ports(proto::UDP, &udp)?;
        Ok(())
    }

    fn poll_listening(&mut self) {
        let now = Listening::read();
        if now != self.listening {
            self.listening = now;
            if let Err(e) = self.refresh_ports() {
                eprintln!("portsentry: error: updating guarded ports: {e:#}");
            }
        }
    }

    /// Attaches to `iface` and records where; returns the mode name.
    fn attach(&mut self, iface: &str) -> Result<&'static str> {
        let mode = self.dp.attach(iface, self.settings.xdp_mode)?;
        if self.settings.xdp_mode == AttachMode::Auto && mode == AttachMode::Generic {
            eprintln!("portsentry: warning: {iface} has no native XDP support; using generic XDP (slower)");
        }
        let index = nix::net::if_::if_nametoindex(iface).ok();
        if let Some(i) = index {
            self.names_by_index.insert(i, iface.to_owned());
        }
        match self.attached.iter_mut().find(|(n, _)| n == iface) {
            Some(entry) => entry.1 = index,
            None => self.attached.push((iface.to_owned(), index)),
        }
        Ok(if mode == AttachMode::Native {
            "native"
        } else {
            "generic"
        })
    }

    /// An interface that disappears takes its XDP attachment with it. The daemon keeps running
    /// (bans live in the maps) and attaches again when an interface of that name comes back.
    fn watch_interfaces(&mut self) {
        for i in 0..self.attached.len() {
            let (name, recorded) = self.attached[i].clone();
            let current = nix::net::if_::if_nametoindex(name.as_str()).ok();
            match (recorded, current) {
                (Some(_), None) => {
                    eprintln!("portsentry: warning: interface {name} disappeared; it is re-attached when it returns");
                    self.attached[i].1 = None;
                }
                (old, Some(now)) if old != Some(now) => match self.attach(&name) {
                    Ok(mode) => {
                        eprintln!("portsentry: interface {name} is back; re-attached ({mode} XDP)")
                    }
                    Err(e) => eprintln!("portsentry: error: re-attaching to {name}: {e:#}"),
                },
                _ => {}
            }
        }
    }

    fn on_event(&mut self, ev: &ProbeEvent) {
        let iface = self
            .names_by_index
            .get(&ev.ifindex)
            .map(String::as_str)
            .unwrap_or("?");
        self.sink
            .event(ev, self.settings.effective_trigger(), iface);
        if ev.kind == EventKind::Ban {
            self.dirty_since.get_or_insert_with(Instant::now);
            let blocked = logging::is_blocked(ev);
            self.hooks.on_ban(&BanInfo {
                target: ev.src,
                port: ev.dst_port,
                protocol: ev.protocol,
                scan: ev.scan.name().to_owned(),
                blocked,
            });
            if let Some(fleet) = &self.fleet {
                fleet.on_local_ban(&LocalBan {
                    source: ev.src,
                    port: ev.dst_port,
                    protocol: ev.protocol.mode(),
                    scan: ev.scan.name().to_owned(),
                    probes: ev.count,
                    enforced: blocked,
                    ttl: self.settings.ban_ttl,
                    interface: iface.to_owned(),
                    at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                });
            }
        }
    }

    /// Enforces decisions pulled from LAPI.
    fn on_fleet_update(&mut self, update: &crate::crowdsec::decisions::FleetUpdate) {
        let Some(fleet) = self.fleet.as_mut() else {
            return;
        };
        match fleet.apply(&mut self.dp, &mut self.cidr_meta, &self.allow, update) {
            Ok(lines) => {
                for l in lines {
                    self.sink.line(&l);
                }
            }
            Err(e) => eprintln!("portsentry: error: crowdsec: applying decisions: {e:#}"),
        }
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Saves the state if a ban is waiting to be saved, or sweeps on schedule.
    fn tick(&mut self) {
        let save_due = self
            .dirty_since
            .is_some_and(|t| t.elapsed() >= SAVE_DEBOUNCE)
            && self.save_retry_at.is_none_or(|t| Instant::now() >= t);
        let sweep_due = self.last_sweep.elapsed() >= SWEEP_INTERVAL;
        if sweep_due {
            self.sweep();
        }
        if save_due || sweep_due {
            self.save();
        }
        self.hooks.flush_skip_summary();
    }

    /// Removes expired bans and banned networks from the kernel (they already stopped dropping).
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        let now = Now::read();
        if let Ok(bans) = self.dp.bans() {
            for (addr, e) in bans {
                if e.expires_at_ns != 0 && e.expires_at_ns <= now.boot_ns {
                    let _ = self.dp.remove_ban(addr);
                }
            }
        }
        if let Ok(on_disk) = self.store.load() {
            self.cidr_meta = merge_cidr_meta(on_disk.cidr_bans, &self.cidr_meta);
        }
        let expired: Vec<String> = self
            .cidr_meta
            .iter()
            .filter(|c| c.is_expired(now.unix_ms))
            .map(|c| c.cidr.clone())
            .collect();
        if !expired.is_empty() {
            if let Ok(current) = self.dp.ban_cidrs() {
                let kept: Vec<Cidr> = current
                    .into_iter()
                    .map(|(c, _)| c)
                    .filter(|c| !expired.contains(&c.to_string()))
                    .collect();
                if let Err(e) = control::apply_ban_cidrs(&mut self.dp, &kept) {
                    eprintln!("portsentry: error: removing expired banned networks: {e:#}");
                }
            }
        }
    }

    fn save(&mut self) {
        // The CLI may have edited the file (network metadata): merge before writing.
        if let Ok(on_disk) = self.store.load() {
            self.cidr_meta = merge_cidr_meta(on_disk.cidr_bans, &self.cidr_meta);
        }
        if let Some(fleet) = &self.fleet {
            fleet.persist();
        }
        let fleet = &mut self.fleet;
        let result = state::snapshot(&self.dp, &self.cidr_meta, &Now::read())
            .map(|mut s| {
                if let Some(fleet) = fleet {
                    // Notes only for fleet bans still in force.
                    let in_force = |target: &str| {
                        s.bans.iter().any(|b| {
                            b.origin == ban_origin::FLEET
                                && Cidr::host(b.addr).to_string() == target
                        }) || s.cidr_bans.iter().any(|c| c.cidr == target)
                    };
                    fleet.retain_notes(in_force);
                    s.fleet = fleet.notes();
                }
                s
            })
            .and_then(|s| self.store.save(&s));
        match result {
            Ok(()) => {
                self.dirty_since = None;
                self.save_retry_at = None;
            }
            // Stay dirty and retry a little later; enforcement is unaffected.
            Err(e) => {
                self.dirty_since.get_or_insert_with(Instant::now);
                self.save_retry_at = Some(Instant::now() + SAVE_RETRY);
                if self
                    .last_save_error_report
                    .is_none_or(|t| t.elapsed() >= ERROR_REPORT_INTERVAL)
                {
                    eprintln!("portsentry: error: saving bans: {e:#} (retrying every {}s; enforcement continues)", SAVE_RETRY.as_secs());
                    self.last_save_error_report = Some(Instant::now());
                }
            }
        }
    }

    fn reload(&mut self, global: &GlobalArgs, args: &RunArgs) {
        let loaded =
            options::load(global)
                .map_err(anyhow::Error::from)
                .and_then(|(mut s, source)| {
                    options::apply_run(&mut s, args)?;
                    Ok((s, source))
                });
        match loaded {
            Ok((s, source)) => {
                if s.interfaces != self.settings.interfaces || s.xdp_mode != self.settings.xdp_mode
                {
                    eprintln!("portsentry: warning: interfaces and xdp_mode changes take effect on restart only");
                }
                if s.crowdsec != self.settings.crowdsec {
                    eprintln!(
                        "portsentry: warning: [crowdsec] changes take effect on restart only"
                    );
                }
                if s.pin_dir != self.settings.pin_dir
                    || s.state_dir != self.settings.state_dir
                    || s.max_bans != self.settings.max_bans
                {
                    eprintln!("portsentry: warning: pin_dir, state_dir and max_bans changes take effect on restart only");
                }
                let crowdsec = self.settings.crowdsec.clone();
                let keep = (
                    self.settings.interfaces.clone(),
                    self.settings.xdp_mode,
                    self.settings.pin_dir.clone(),
                    self.settings.state_dir.clone(),
                    self.settings.max_bans,
                );
                self.settings = s;
                (
                    self.settings.interfaces,
                    self.settings.xdp_mode,
                    self.settings.pin_dir,
                    self.settings.state_dir,
                    self.settings.max_bans,
                ) = keep;
                self.settings.crowdsec = crowdsec;
                match self.apply() {
                    Ok(()) => {
                        eprintln!("portsentry: reloaded configuration from {source}; bans kept")
                    }
                    Err(e) => {
                        eprintln!("portsentry: error: applying reloaded configuration: {e:#}")
                    }
                }
            }
            Err(e) => eprintln!(
                "portsentry: error: reload failed, keeping the running configuration: {e:#}"
            ),
        }
    }
}

pub async fn run(global: GlobalArgs, args: RunArgs, settings: Settings) -> Result<()> {
    let interfaces = if settings.interfaces.is_empty() {
        vec![netinfo::default_route_iface()?]
    } else {
        settings.interfaces.clone()
    };
    if let Some(dir) = &settings.pin_dir {
        bpffs::ensure_pin_dir(dir)?;
    }
    let mut dp = Dataplane::load(&LoadOptions {
        pin_dir: settings.pin_dir.clone(),
        max_bans: settings.max_bans,
    })?;

    // Bans from the last run. A damaged state file is kept aside and reported, not fatal:
    // a security daemon that refuses to start protects nothing.
    let store = StateStore::new(&settings.state_dir);
    let saved = match store.load() {
        Ok(s) => s,
        Err(e @ StateError::Corrupt { .. }) => {
            eprintln!("portsentry: error: {e}; starting without saved bans");
            state::State::default()
        }
        Err(e) => return Err(e).context("reading saved bans"),
    };
    // Bans already in a reused pinned table are newer than any snapshot and are kept as they are.
    let kept = dp.bans()?.len();
    let restored = state::restore(&mut dp, &saved, &Now::read())?;
    let mut cidrs: Vec<Cidr> = dp.ban_cidrs()?.into_iter().map(|(c, _)| c).collect();
    cidrs.extend(restored.cidrs.iter().copied());
    cidrs.sort_by_key(|c| (c.addr, c.prefix));
    cidrs.dedup();
    dp.set_ban_cidrs(&cidrs)?;
    eprintln!(
        "portsentry: restored {} ban(s) and {} banned network(s) from {} ({} expired); {kept} ban(s) kept in the pinned maps",
        restored.bans,
        restored.cidrs.len(),
        store.path().display(),
        restored.expired,
    );
    for f in &restored.failed {
        eprintln!("portsentry: error: could not restore ban {f}");
    }

    let (log_tx, mut log_rx) = mpsc::unbounded_channel::<String>();
    let log_line: LogFn = Arc::new(move |line: String| {
        let _ = log_tx.send(line);
    });
    let hooks = HookRunner::new(settings.hooks.clone(), log_line.clone());
    let mut d = Daemon {
        dp,
        sink: LogSink::new(settings.log_format, settings.history_file.as_deref()),
        settings,
        hooks,
        store,
        cidr_meta: saved.cidr_bans.clone(),
        listening: Listening::read(),
        names_by_index: HashMap::new(),
        attached: Vec::new(),
        dirty_since: None,
        save_retry_at: None,
        last_save_error_report: None,
        last_sweep: Instant::now(),
        allow: Vec::new(),
        fleet: None,
    };
    // The config goes in last: until then the program fails open.
    d.apply()?;

    // Fleet mode starts after the allowlist is known (decisions touching it are not enforced).
    if let Some(c) = d.settings.crowdsec.clone() {
        let fleet_log = log_line.clone();
        let fleet = Fleet::start(&c, &d.settings.state_dir, saved.fleet.clone(), fleet_log)?;
        eprintln!("{}", fleet.describe());
        d.fleet = Some(fleet);
    }

    let mut attached = Vec::new();
    for iface in &interfaces {
        let mode = d.attach(iface)?;
        attached.push((iface.clone(), mode.to_owned()));
        eprintln!("portsentry: attached to {iface} ({mode} XDP)");
    }
    let info = DaemonInfo {
        pid: std::process::id(),
        started_at_ms: crate::clock::unix_ms(),
        interfaces: attached,
        pin_dir: d.settings.pin_dir.clone(),
    };
    let info_path = d.settings.state_dir.join(DAEMON_FILE);
    if let Err(e) = std::fs::create_dir_all(&d.settings.state_dir)
        .and_then(|()| std::fs::write(&info_path, serde_json::to_string(&info).unwrap_or_default()))
    {
        eprintln!("portsentry: warning: cannot write {}: {e} (`portsentry status` will not see this daemon)", info_path.display());
    }

    let ring = d.dp.take_events()?;
    let (tx, mut rx) = mpsc::channel::<ProbeEvent>(4096);
    let reader = tokio::spawn(events::read_events(ring, tx));
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut ticker = tokio::time::interval(LISTEN_POLL);

    d.sink.line("Portsentry is now active and listening.");
    let outcome = loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => d.on_event(&ev),
                None => break Err(anyhow::anyhow!("the event reader stopped unexpectedly")),
            },
            Some(line) = log_rx.recv() => d.sink.line(&line),
            Some(update) = next_fleet_update(&mut d.fleet) => d.on_fleet_update(&update),
            _ = ticker.tick() => {
                d.watch_interfaces();
                d.poll_listening();
                d.tick();
            }
            _ = sighup.recv() => d.reload(&global, &args),
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
        }
    };
    reader.abort();
    if let Some(fleet) = d.fleet.as_mut() {
        fleet.stop();
    }
    d.save();
    d.hooks.idle(Duration::from_secs(2)).await;
    while let Ok(line) = log_rx.try_recv() {
        d.sink.line(&line);
    }
    let _ = std::fs::remove_file(&info_path);
    drop(d); // detaches from every interface
    eprintln!(
        "portsentry: stopped; XDP detached from {}",
        interfaces.join(", ")
    );
    outcome
}
