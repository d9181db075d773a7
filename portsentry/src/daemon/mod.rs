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
    bans::{BanBook, MadeRoom, NewBan, Origin, Saved, StateError, StateStore, Trigger},
    cli::{GlobalArgs, RunArgs},
    clock::Now,
    config::settings::{Mode, Settings},
    config::sources,
    control::{self, socket, DaemonInfo, DAEMON_FILE},
    dataplane::bpffs,
    dataplane::{AttachMode, Dataplane, LoadOptions},
    detect::events::{self, EventKind, ProbeEvent},
    detect::logging::{self, LogFn, LogSink},
    fleet::crowdsec::alerts::LocalBan,
    fleet::Fleet,
    hooks::{BanInfo, HookRunner},
    net::cidr::Cidr,
    net::listening::{self, Listening},
    net::netinfo,
    net::netwatch,
};

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

/// Everything `run` keeps between events.
struct Daemon {
    dp: Dataplane,
    /// Every ban: the only writer of the ban maps and the state file.
    book: BanBook,
    settings: Settings,
    sink: LogSink,
    hooks: HookRunner,
    listening: Listening,
    names_by_index: HashMap<u32, String>,
    /// Interfaces we protect and the ifindex we are attached to (`None` while it is gone).
    attached: Vec<(String, Option<u32>)>,
    dirty_since: Option<Instant>,
    /// After a failed save, the next attempt waits until then.
    save_retry_at: Option<Instant>,
    last_save_error_report: Option<Instant>,
    last_sweep: Instant,
    /// The automatic allowlist entries as last computed (own addresses, gateways, resolvers,
    /// the LAPI host); recomputed on every rtnetlink address or route notification.
    auto_allow: Vec<Cidr>,
    /// The LAPI's addresses, resolved once at start (fleet mode).
    lapi_hosts: Vec<IpAddr>,
    /// Fleet mode (`[crowdsec]`).
    fleet: Option<Fleet>,
    /// For `status` over the control socket.
    info: Option<DaemonInfo>,
}

/// Waits for the next address or route notification, or forever without a watch.
async fn next_route_change(watch: &mut Option<netwatch::RouteWatch>) -> std::io::Result<()> {
    match watch.as_mut() {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// Waits for the next fleet update, or forever without a bouncer.
async fn next_fleet_update(
    fleet: &mut Option<Fleet>,
) -> Option<crate::fleet::crowdsec::decisions::FleetUpdate> {
    match fleet.as_mut().and_then(|f| f.updates.as_mut()) {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    /// Writes ports, allowlist, hooks and the config block from `self.settings`.
    fn apply(&mut self) -> Result<()> {
        self.auto_allow = if self.settings.auto_allow {
            netinfo::auto_allow_list(&self.lapi_hosts)?
        } else {
            Vec::new()
        };
        let allow_count = self.write_allowlist()?;
        self.refresh_ports()?;
        // The banned-network count is the ban book's; keep what it wrote.
        let ban_cidr_count = self.dp.config().map(|c| c.ban_cidr_count).unwrap_or(0);
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

    /// Writes the configured plus automatic allowlist into the kernel and hands it to the ban
    /// book, which lifts every ban it now covers. Returns the trie's entry count.
    fn write_allowlist(&mut self) -> Result<u32> {
        let mut allow = self.settings.allow.clone();
        allow.extend(self.auto_allow.iter().copied());
        allow.sort();
        allow.dedup();
        let written = self.dp.set_allowlist(&allow)?;
        if !written.refused.is_empty() {
            eprintln!(
                "portsentry: error: the allowlist trie is full: {} entr(y/ies) not written (first: {})",
                written.refused.len(),
                written.refused[0]
            );
        }
        let lifted = self
            .book
            .set_allowlist(Some(&mut self.dp), &allow, &Now::read())?;
        if !lifted.is_empty() {
            let shown: Vec<String> = lifted.iter().take(10).map(Cidr::to_string).collect();
            self.sink.line(&format!(
                "portsentry: allowlist: lifted {} ban(s) covered by the allowlist: {}{}",
                lifted.len(),
                shown.join(", "),
                if lifted.len() > 10 { ", …" } else { "" }
            ));
            self.mark_dirty();
        }
        Ok(written.count)
    }

    /// An address or route changed: recompute the automatic allowlist and apply it if it
    /// differs (a new gateway is protected before a spoofed probe from it can count).
    fn refresh_auto_allow(&mut self) {
        if !self.settings.auto_allow {
            return;
        }
        let fresh = match netinfo::auto_allow_list(&self.lapi_hosts) {
            Ok(list) => list,
            Err(e) => {
                eprintln!("portsentry: error: recomputing the automatic allowlist: {e:#}");
                return;
            }
        };
        if fresh == self.auto_allow {
            return;
        }
        self.auto_allow = fresh;
        let result = self.write_allowlist().and_then(|count| {
            let mut config = self.dp.config()?;
            config.allow_cidr_count = count;
            self.dp.set_config(&config)?;
            Ok(count)
        });
        match result {
            Ok(count) => eprintln!(
                "portsentry: addresses or routes changed; automatic allowlist updated ({} automatic, {count} in total)",
                self.auto_allow.len()
            ),
            Err(e) => eprintln!("portsentry: error: updating the automatic allowlist: {e:#}"),
        }
    }

    fn mark_dirty(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
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
            .cloned()
            .unwrap_or_else(|| "?".into());
        let mut ev = ev.clone();
        let target = Cidr::host(ev.src);
        match ev.kind {
            EventKind::Probe => {}
            EventKind::Ban => {
                if let Err(e) = self.book.on_kernel_ban(&self.dp, &target, &Now::read()) {
                    eprintln!("portsentry: error: recording the ban of {target}: {e:#}");
                }
                self.mark_dirty();
            }
            EventKind::BanTableFull => {
                if self.ban_despite_full_table(&ev) {
                    ev.kind = EventKind::Ban;
                }
            }
        }
        self.sink
            .event(&ev, self.settings.effective_trigger(), &iface);
        if ev.kind == EventKind::Ban {
            self.respond(&ev, &iface);
        }
    }

    /// The kernel could not store a ban: make room in the ban book's order (expired entries,
    /// then the detected ban expiring soonest) and ban the source from here.
    fn ban_despite_full_table(&mut self, ev: &ProbeEvent) -> bool {
        let now = Now::read();
        let capacity = self.dp.ban_capacity();
        let room = match self.book.make_room(&mut self.dp, &now) {
            Ok(room) => room,
            Err(e) => {
                eprintln!("portsentry: error: making room in the ban table: {e:#}");
                return false;
            }
        };
        let new = NewBan {
            target: Cidr::host(ev.src),
            origin: Origin::Detected,
            shadow: !ev.dropped,
            expires_ms: self.settings.ban_ttl.map(|ttl| {
                now.unix_ms
                    .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            }),
            trigger: Trigger::from_kernel(
                match ev.protocol {
                    events::Protocol::Tcp => proto::TCP,
                    events::Protocol::Udp => proto::UDP,
                },
                ev.dst_port,
                ev.scan as u8,
            ),
            fleet: None,
        };
        let banned = match room {
            MadeRoom::NoRoom => false,
            _ => matches!(
                self.book.ban(Some(&mut self.dp), new, &now),
                Ok(crate::bans::BanOutcome::Banned | crate::bans::BanOutcome::Renewed)
            ),
        };
        let line = match (&room, banned) {
            (MadeRoom::Displaced(v), true) => format!(
                "portsentry: ban table full ({capacity} entries): displaced {v} (detected, expires soonest) to ban {}",
                ev.src
            ),
            (MadeRoom::Reclaimed(n), true) => format!(
                "portsentry: ban table full ({capacity} entries): reclaimed {n} expired ban(s) to ban {}",
                ev.src
            ),
            _ => format!(
                "portsentry: error: ban table full ({capacity} entries), all of them manual or fleet bans: {} not banned; raise max_bans",
                ev.src
            ),
        };
        self.sink.line(&line);
        self.mark_dirty();
        banned
    }

    /// A ban's responses: hooks, and an alert for the fleet.
    fn respond(&self, ev: &ProbeEvent, iface: &str) {
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

    /// Enforces decisions pulled from LAPI.
    fn on_fleet_update(&mut self, update: &crate::fleet::crowdsec::decisions::FleetUpdate) {
        let Some(fleet) = self.fleet.as_mut() else {
            return;
        };
        match fleet.apply(&mut self.book, &mut self.dp, update) {
            Ok(lines) => {
                for l in lines {
                    self.sink.line(&l);
                }
            }
            Err(e) => eprintln!("portsentry: error: crowdsec: applying decisions: {e:#}"),
        }
        self.mark_dirty();
    }

    /// A verb from the control socket, answered from the live state.
    fn control(&mut self, req: &control::Request) -> control::Reply {
        let reply = control::verbs::execute(
            req,
            control::verbs::Target {
                book: &mut self.book,
                maps: Some(&mut self.dp),
                daemon: self.info.as_ref(),
                pin_dir: self.settings.pin_dir.as_deref(),
            },
        );
        if req.mutates() && self.book.is_dirty() {
            // Persist before answering: the verb's change must survive a crash right after.
            self.save();
        }
        reply
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

    /// Removes expired bans (they already stopped dropping) and reconciles book and kernel.
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        match self.book.sweep(&mut self.dp, &Now::read()) {
            Ok(n) if n > 0 => self.mark_dirty(),
            Ok(_) => {}
            Err(e) => eprintln!("portsentry: error: sweeping expired bans: {e:#}"),
        }
    }

    fn save(&mut self) {
        if let Some(fleet) = &self.fleet {
            fleet.persist();
        }
        if !self.book.is_dirty() && self.dirty_since.is_none() {
            return;
        }
        match self.book.save() {
            Ok(()) => {
                self.dirty_since = None;
                self.save_retry_at = None;
            }
            // Stay dirty and retry a little later; enforcement is unaffected.
            Err(e) => {
                self.mark_dirty();
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

    /// Block mode never enforces what detect mode recorded, unless the operator asks.
    fn report_shadow_bans(&self) {
        let n = self.book.shadow_count();
        if self.settings.mode == Mode::Block && n > 0 {
            eprintln!(
                "portsentry: block mode: {n} shadow ban(s) from detect mode are not enforced; \
                 `portsentry promote-shadow` enforces them"
            );
        }
    }

    fn reload(&mut self, global: &GlobalArgs, args: &RunArgs) {
        let loaded =
            sources::load(global)
                .map_err(anyhow::Error::from)
                .and_then(|(mut s, source)| {
                    sources::apply_run(&mut s, args)?;
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
                    || s.max_ban_networks != self.settings.max_ban_networks
                {
                    eprintln!("portsentry: warning: pin_dir, state_dir, max_bans and max_ban_networks changes take effect on restart only");
                }
                let to_block = self.settings.mode == Mode::Detect && s.mode == Mode::Block;
                let crowdsec = self.settings.crowdsec.clone();
                let keep = (
                    self.settings.interfaces.clone(),
                    self.settings.xdp_mode,
                    self.settings.pin_dir.clone(),
                    self.settings.state_dir.clone(),
                    self.settings.max_bans,
                    self.settings.max_ban_networks,
                );
                self.settings = s;
                (
                    self.settings.interfaces,
                    self.settings.xdp_mode,
                    self.settings.pin_dir,
                    self.settings.state_dir,
                    self.settings.max_bans,
                    self.settings.max_ban_networks,
                ) = keep;
                self.settings.crowdsec = crowdsec;
                match self.apply() {
                    Ok(()) => {
                        eprintln!("portsentry: reloaded configuration from {source}; bans kept");
                        if to_block {
                            self.report_shadow_bans();
                        }
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
        max_ban_networks: settings.max_ban_networks,
    })?;
    if let (Some(m), Some(dir)) = (&dp.migrated, &settings.pin_dir) {
        eprintln!(
            "portsentry: migrated pinned maps in {}: {}; {}",
            dir.display(),
            m.reasons.join(", "),
            if m.copied {
                format!(
                    "{} ban(s) and {} network(s) copied into fresh maps",
                    m.bans.len(),
                    m.networks.len()
                )
            } else {
                "the old layout is unreadable, so bans come from the state file".to_owned()
            }
        );
    }

    // Bans from the last run. A damaged or too-new state file is kept aside and reported, not
    // fatal: a security daemon that refuses to start protects nothing.
    let store = StateStore::new(&settings.state_dir);
    let saved = match store.load() {
        Ok(s) => s,
        Err(e @ (StateError::Corrupt { .. } | StateError::TooNew { .. })) => {
            let why = if matches!(e, StateError::TooNew { .. }) {
                "newer"
            } else {
                "corrupt"
            };
            match store.keep_aside(why) {
                Ok(moved) => eprintln!(
                    "portsentry: error: {e}; kept aside as {}; starting without saved bans",
                    moved.display()
                ),
                Err(m) => eprintln!(
                    "portsentry: error: {e}; could not keep it aside ({m}); starting without saved bans"
                ),
            }
            Saved::default()
        }
        Err(e) => return Err(e).context("reading saved bans"),
    };
    let now = Now::read();
    let migrated = dp.migrated.take();
    let (mut book, opened) = BanBook::open(store, saved, Some(&dp), migrated.as_ref(), true, &now)?;
    let refused = book.install(&mut dp, &now)?;
    eprintln!(
        "portsentry: restored {} ban(s) from {} ({} expired); {} ban(s) kept in the pinned maps",
        opened.from_file,
        book.store().path().display(),
        opened.expired,
        opened.in_kernel,
    );
    if !refused.is_empty() {
        eprintln!(
            "portsentry: error: {} ban(s) do not fit the tables (first: {}); raise max_bans or max_ban_networks",
            refused.len(),
            refused[0]
        );
    }

    let (log_tx, mut log_rx) = mpsc::unbounded_channel::<String>();
    let log_line: LogFn = Arc::new(move |line: String| {
        let _ = log_tx.send(line);
    });
    let hooks = HookRunner::new(settings.hooks.clone(), log_line.clone());
    let lapi_hosts = settings
        .crowdsec
        .as_ref()
        .map(|c| netinfo::lapi_hosts(&c.lapi_url))
        .unwrap_or_default();
    let mut d = Daemon {
        dp,
        book,
        sink: LogSink::new(settings.log_format, settings.history_file.as_deref()),
        settings,
        hooks,
        listening: Listening::read(),
        names_by_index: HashMap::new(),
        attached: Vec::new(),
        dirty_since: None,
        save_retry_at: None,
        last_save_error_report: None,
        last_sweep: Instant::now(),
        auto_allow: Vec::new(),
        lapi_hosts,
        fleet: None,
        info: None,
    };
    // The config goes in last: until then the program fails open.
    d.apply()?;
    d.report_shadow_bans();
    if d.book.is_dirty() {
        d.save();
    }

    // Fleet mode starts after the allowlist is known (decisions touching it are not enforced).
    if let Some(c) = d.settings.crowdsec.clone() {
        let fleet_log = log_line.clone();
        let fleet = Fleet::start(&c, &d.settings.state_dir, fleet_log)?;
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
    d.info = Some(info);

    // The control socket: verbs act on the live state through the event loop.
    let socket_path = socket::socket_path(&d.settings.state_dir);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<socket::Call>(16);
    let server = match socket::bind(&socket_path) {
        Ok(listener) => Some(tokio::spawn(socket::serve(listener, ctl_tx))),
        Err(e) => {
            eprintln!(
                "portsentry: error: control socket {}: {e} (the CLI verbs cannot reach this daemon)",
                socket_path.display()
            );
            None
        }
    };
    // Addresses and routes followed live, for the automatic allowlist.
    let mut route_watch = match netwatch::RouteWatch::new() {
        Ok(w) => Some(w),
        Err(e) => {
            eprintln!("portsentry: warning: cannot follow address and route changes ({e}); the automatic allowlist is refreshed on SIGHUP only");
            None
        }
    };

    let ring = d.dp.take_events()?;
    let (tx, mut rx) = mpsc::channel::<ProbeEvent>(4096);
    let reader = tokio::spawn(events::read_events(ring, tx));
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut ticker = tokio::time::interval(LISTEN_POLL);

    d.sink.line("Portsentry is now active and listening.");
    notify_ready(&interfaces);
    let outcome = loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => d.on_event(&ev),
                None => break Err(anyhow::anyhow!("the event reader stopped unexpectedly")),
            },
            Some(line) = log_rx.recv() => d.sink.line(&line),
            Some(update) = next_fleet_update(&mut d.fleet) => d.on_fleet_update(&update),
            Some((req, reply)) = ctl_rx.recv() => {
                let answer = d.control(&req);
                let _ = reply.send(answer);
            }
            changed = next_route_change(&mut route_watch) => match changed {
                Ok(()) => d.refresh_auto_allow(),
                Err(e) => {
                    eprintln!("portsentry: warning: lost the address and route notifications ({e}); the automatic allowlist is refreshed on SIGHUP only");
                    route_watch = None;
                }
            },
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
    notify_stopping();
    reader.abort();
    if let Some(server) = server {
        server.abort();
    }
    let _ = std::fs::remove_file(&socket_path);
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

/// systemd's readiness protocol (the unit's `Type=notify`; the end-to-end tests wait for it
/// too): READY=1 once every interface is attached, the maps are configured and the control
/// socket listens. Sends nothing without `$NOTIFY_SOCKET`.
fn notify_ready(interfaces: &[String]) {
    let status = format!("active and listening on {}", interfaces.join(", "));
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
}

/// STOPPING=1 when shutdown begins (bans are saved and XDP detached next).
fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        eprintln!("portsentry: warning: cannot notify the service manager: {e}");
    }
}
