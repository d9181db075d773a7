//! `portsentry run`: load, restore bans, configure, attach, then log events, run hooks, persist
//! bans and reload on SIGHUP until SIGINT/SIGTERM.
//!
//! Owns: the event loop and the wiring between the parts (one `Daemon` value, changed only
//! from the loop, so no state is shared between tasks). The loop's work is split by concern:
//! `allowlist`, `interfaces`, `peers`, `probes`, `persist`, `reload`; `guard` writes what the
//! live settings say into the kernel. Must not: write a ban except through the ban book, or word a
//! PortSentry log line itself (`detect::logging` does).

mod allowlist;
pub mod guard;
mod interfaces;
mod notify;
mod peers;
mod per_source;
mod persist;
mod prefixes;
mod probes;
mod reload;
pub mod resources;
mod saver;
mod startup;
mod topology;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    bans::BanNotice,
    bans::{BanBook, MadeRoom, NewBan, Origin, Saved, StateError, StateStore, Trigger},
    clock::Now,
    config::settings::{HistoryFormat, Mode, Settings},
    config::Sources,
    control::{self, socket, DaemonInfo, DAEMON_FILE},
    dataplane::bpffs,
    dataplane::{AttachMode, Dataplane, LoadOptions, PeerLearning, TrieWrite},
    detect::diagnostics,
    detect::events::{self, EventKind, ProbeEvent},
    detect::logging::{LogFn, LogSink},
    fleet::Fleet,
    hooks::HookRunner,
    metrics,
    net::cidr::Cidr,
    net::listening::Listening,
    net::lo_forwarding::LoopbackForwarding,
    net::netinfo,
    net::netwatch,
    net::service_ports::ServicePorts,
    report::{ReportGate, REPORT_INTERVAL},
};

/// How often advanced mode and the service check look for new listening sockets.
const LISTEN_POLL: Duration = Duration::from_millis(500);
/// A ban is persisted at most this long after it happened.
const SAVE_DEBOUNCE: Duration = Duration::from_secs(1);
/// Even without events, the state is saved and expired bans are swept this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// The next debounced save waits at least this many times as long as the last save took.
const SAVE_COST_FACTOR: u32 = 10;
/// A save copies at most this many ban records per loop turn (a few ms in a debug build).
const SNAPSHOT_STEP: usize = 4096;
/// The sweep looks at most this many book records or kernel entries per loop turn.
const SWEEP_STEP: usize = 4096;
/// A failed save is retried after this long.
const SAVE_RETRY: Duration = Duration::from_secs(5);
/// The service-port memory is written soon after a new port, otherwise (refreshed times only)
/// at most this often, and at stop.
const SERVICE_PORTS_REFRESH: Duration = Duration::from_secs(600);

/// Everything `run` keeps between events.
struct Daemon {
    dp: Dataplane,
    /// Every ban: the only writer of the ban maps and the state file.
    book: BanBook,
    settings: Settings,
    sink: LogSink,
    hooks: HookRunner,
    listening: Listening,
    /// Every port seen listening and when (advanced mode's service-port memory), and the ports
    /// it currently counts as services.
    service_ports: ServicePorts,
    remembered: Listening,
    /// A port was first seen since the memory was last written.
    service_ports_new: Option<Instant>,
    /// When the memory was last written, and what.
    service_ports_written: Option<(Instant, String)>,
    names_by_index: HashMap<u32, String>,
    /// Interfaces we protect and the ifindex we are attached to (`None` while it is gone).
    attached: Vec<(String, Option<u32>)>,
    dirty_since: Option<Instant>,
    /// After a failed save, the next attempt waits until then.
    save_retry_at: Option<Instant>,
    save_error_report: ReportGate,
    /// When the last write of the book ended, and how long it took.
    last_save: Option<(Instant, Duration)>,
    /// Writes `bans.json` on its own thread.
    saver: saver::Saver,
    /// The copy of the book being taken for a save, and its number.
    snapshot: Option<(u64, crate::bans::Snapshot)>,
    /// Copies begun so far (the last one's number).
    copies_begun: u64,
    /// A verb changed the book while a copy was under way: another copy follows it.
    copy_again: bool,
    /// Answers to verbs that changed the book, sent once copy number `.0` is written.
    save_waiters: Vec<(
        u64,
        tokio::sync::oneshot::Sender<control::Reply>,
        control::Reply,
    )>,
    last_sweep: Instant,
    /// The ban book's sweep under way, a step per loop turn.
    sweep: Option<crate::bans::Sweep>,
    /// The automatic allowlist entries as last computed (own addresses, gateways, resolvers,
    /// the LAPI host); recomputed on every rtnetlink address or route notification.
    auto_allow: Vec<Cidr>,
    /// The LAPI's addresses, resolved once at start (fleet mode).
    lapi_hosts: Vec<IpAddr>,
    /// Fleet mode (`[crowdsec]`).
    fleet: Option<Fleet>,
    /// The pulled update being applied, a step per loop turn; the next is received after it.
    fleet_batch: Option<crate::bans::FleetBatch>,
    /// For `status` over the control socket.
    info: Option<DaemonInfo>,
    /// Forwarding on `lo` for the path check's route lookups, restored on drop.
    lo_forwarding: Option<LoopbackForwarding>,
    /// Sources answered with `run_cmd` although their protocol does not block.
    unenforced: per_source::UnenforcedResponses,
    /// Sources already written to a PortSentry 1.2 format history in their ban period.
    classic_history: per_source::UnenforcedResponses,
    /// Recent verified address bans per prefix, for prefix-aware bans.
    prefixes: prefixes::PrefixTracker,
    /// Bounds the event lines a flood can write.
    line_budget: crate::detect::budget::LineBudget,
    /// Per-source limit on the `ignored: [true]` lines.
    ignored_lines: per_source::IgnoredLines,
    /// What the config block holds beyond the settings (peer challenge, netns cookie).
    extras: guard::KernelExtras,
    /// The attached peer-learning programs; detached on drop.
    _peer_learning: Option<PeerLearning>,
    /// `peers.json`, while peers are learned.
    peer_memory: Option<crate::peers::PeerMemory>,
    /// The last snapshot served to a scraper.
    metrics_cache: metrics::SnapshotCache,
    /// Upper devices of the guarded interfaces and neighbour MACs (rtnetlink).
    topology: topology::Topology,
    /// Alert and digest mail, webhook (`[notify]`).
    notifier: crate::notify::Notifier,
    /// The counters at the start of the digest window.
    notify_baseline: crate::notify::digest::Totals,
}

/// Waits for the next address or route notification, or forever without a watch.
async fn next_route_change(watch: &mut Option<netwatch::RouteWatch>) -> std::io::Result<()> {
    match watch.as_mut() {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// Waits for the next scrape's snapshot request, or forever without `metrics_listen`.
async fn next_scrape(
    rx: &mut Option<mpsc::Receiver<metrics::server::SnapshotRequest>>,
) -> Option<metrics::server::SnapshotRequest> {
    match rx.as_mut() {
        Some(rx) => rx.recv().await,
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
    /// Starts enforcing decisions pulled from LAPI; [`Daemon::fleet_step`] applies them a
    /// step per loop turn.
    fn on_fleet_update(&mut self, update: crate::fleet::crowdsec::decisions::FleetUpdate) {
        let Some(fleet) = self.fleet.as_mut() else {
            return;
        };
        let (batch, line) = fleet.begin(update);
        if let Some(l) = line {
            self.sink.line(&l);
        }
        self.fleet_batch = Some(batch);
    }

    /// Applies the next step of the fleet update in progress (a bounded amount of work: the
    /// loop serves probes, signals and the control socket between steps).
    fn fleet_step(&mut self) {
        let (Some(fleet), Some(batch)) = (self.fleet.as_mut(), self.fleet_batch.as_mut()) else {
            self.fleet_batch = None;
            return;
        };
        let result = fleet.step(&mut self.book, &mut self.dp, batch);
        self.mark_dirty();
        match result {
            Ok(None) => {}
            Ok(Some(lines)) => {
                self.fleet_batch = None;
                for l in lines {
                    self.sink.line(&l);
                }
            }
            Err(e) => {
                self.fleet_batch = None;
                crate::errln!("portsentry: error: crowdsec: applying decisions: {e:#}");
            }
        }
    }

    /// What only the daemon knows, for `status` and the metrics.
    fn daemon_view(&self) -> metrics::DaemonView {
        metrics::DaemonView {
            hooks: self.hooks.stats(),
            hooks_running: self.hooks.running() as u64,
            hooks_queued: self.hooks.queued() as u64,
            fleet: self.fleet.as_ref().map(Fleet::counters),
            notify: self.notifier.is_enabled().then(|| self.notifier.stats()),
        }
    }

    /// A snapshot for a scrape: the cached one if it is fresh, else a new reading.
    fn metrics_snapshot(&mut self) -> Option<Arc<metrics::Snapshot>> {
        let view = self.daemon_view();
        let top = self.settings.startup.metrics_top_bans as usize;
        let (book, dp) = (&mut self.book, &self.dp);
        match self.metrics_cache.get(|| {
            book.refresh_drops(dp)?;
            metrics::Snapshot::collect(book, Some(dp), Some(view), top)
        }) {
            Ok(s) => Some(s),
            Err(e) => {
                crate::errln!("portsentry: error: metrics: reading the counters failed: {e:#}");
                None
            }
        }
    }

    /// A verb from the control socket, answered from the live state.
    fn control(
        &mut self,
        req: &control::Request,
        reply: tokio::sync::oneshot::Sender<control::Reply>,
    ) {
        let view = self.daemon_view();
        let answer = control::verbs::execute(
            req,
            control::verbs::Target {
                book: &mut self.book,
                maps: Some(&mut self.dp),
                daemon: self.info.as_ref(),
                pin_dir: self.settings.startup.pin_dir.as_deref(),
                view: Some(view),
                top_bans: self.settings.startup.metrics_top_bans as usize,
            },
        );
        if req.mutates() && self.book.is_dirty() {
            // Persist before answering: the verb's change must survive a crash right after.
            self.save_then_reply(reply, answer);
        } else {
            let _ = reply.send(answer);
        }
    }
}

/// Runs until SIGINT/SIGTERM with `settings` (read from `sources`, which SIGHUP reads again).
pub async fn run(sources: Sources, settings: Settings) -> Result<()> {
    let interfaces = if settings.startup.interfaces.is_empty() {
        vec![netinfo::default_route_iface()?]
    } else {
        settings.startup.interfaces.clone()
    };
    // The metrics listener first: a taken address is a startup error before anything is
    // attached.
    let metrics_listener = match settings.startup.metrics_listen {
        Some(addr) => Some(metrics::server::bind(addr).await?),
        None => None,
    };
    let mut dp = startup::load_dataplane(&settings)?;
    let book = startup::open_ban_book(&mut dp, &settings)?;
    let (saver, mut saved_rx) =
        saver::Saver::start(book.store().clone()).context("starting the bans.json writer")?;

    // Learned peers: the cgroup programs, then what the last run saved. Before the config is
    // written, so that the first config already challenges peers.
    let (peer_learning, peer_memory) = peers::start_learning(&mut dp, &settings);
    let extras = guard::KernelExtras {
        peer_challenge: peer_learning.is_some(),
        netns_cookie: peer_learning.as_ref().map_or(0, |l| l.netns_cookie),
        synack: crate::net::synack::SynAckShape::read(),
    };

    let (log_tx, mut log_rx) = mpsc::unbounded_channel::<String>();
    let log_line: LogFn = Arc::new(move |line: String| {
        let _ = log_tx.send(line);
    });
    let hooks = HookRunner::new(settings.live.hooks.clone(), log_line.clone());
    let notifier = crate::notify::Notifier::new(
        &settings.live.notify,
        &settings.startup.state_dir,
        log_line.clone(),
    );
    let listening = Listening::read();
    let mut service_ports = persist::load_service_ports(&settings.startup.state_dir);
    service_ports.observe(&listening, crate::clock::unix_ms());
    let lapi_hosts = settings
        .startup
        .crowdsec
        .as_ref()
        .map(|c| netinfo::lapi_hosts(&c.lapi_url))
        .unwrap_or_default();
    let mut d = Daemon {
        dp,
        book,
        sink: LogSink::new(
            settings.live.log_format,
            settings.live.history_file.as_deref(),
            settings.live.history_format,
        ),
        settings,
        hooks,
        listening,
        service_ports,
        remembered: Listening::default(),
        service_ports_new: None,
        service_ports_written: None,
        names_by_index: HashMap::new(),
        attached: Vec::new(),
        dirty_since: None,
        save_retry_at: None,
        save_error_report: ReportGate::new(REPORT_INTERVAL),
        last_save: None,
        saver,
        snapshot: None,
        copies_begun: 0,
        copy_again: false,
        save_waiters: Vec::new(),
        last_sweep: Instant::now(),
        sweep: None,
        auto_allow: Vec::new(),
        lapi_hosts,
        fleet: None,
        fleet_batch: None,
        info: None,
        lo_forwarding: None,
        unenforced: Default::default(),
        classic_history: Default::default(),
        prefixes: Default::default(),
        line_budget: Default::default(),
        ignored_lines: Default::default(),
        extras,
        _peer_learning: peer_learning,
        peer_memory,
        metrics_cache: Default::default(),
        topology: Default::default(),
        notifier,
        notify_baseline: Default::default(),
    };
    // The config goes in last: until then the program fails open.
    d.apply()?;
    let suppressed = d.kernel_events_suppressed();
    d.line_budget.set_kernel_baseline(suppressed);
    d.notify_mark();
    d.report_shadow_bans();
    if d.book.is_dirty() {
        d.save();
    }

    // Fleet mode starts after the allowlist is known (decisions touching it are not enforced).
    if let Some(c) = d.settings.startup.crowdsec.clone() {
        let fleet_log = log_line.clone();
        let fleet = Fleet::start(&c, &d.settings.startup.state_dir, fleet_log)?;
        crate::errln!("{}", fleet.describe());
        d.fleet = Some(fleet);
    }

    let mut attached = Vec::new();
    for iface in &interfaces {
        let mode = d.attach(iface)?;
        attached.push((iface.clone(), mode.to_owned()));
        crate::errln!("portsentry: attached to {iface} ({mode} XDP)");
    }
    // Links and neighbours followed live: subscribe first, then read the tables, so no change
    // falls between the two.
    let mut link_watch = match crate::net::rtnl::LinkWatch::new() {
        Ok(w) => Some(w),
        Err(e) => {
            crate::errln!("portsentry: warning: cannot follow link and neighbour changes ({e}); bridge and VLAN membership is read at start only and neighbour MAC flips go unnoticed");
            None
        }
    };
    d.refresh_uppers();
    d.learn_neighbours();
    let info = DaemonInfo {
        pid: std::process::id(),
        started_at_ms: crate::clock::unix_ms(),
        interfaces: attached,
        pin_dir: d.settings.startup.pin_dir.clone(),
    };
    let info_path = d.settings.startup.state_dir.join(DAEMON_FILE);
    if let Err(e) = std::fs::create_dir_all(&d.settings.startup.state_dir)
        .and_then(|()| std::fs::write(&info_path, serde_json::to_string(&info).unwrap_or_default()))
    {
        crate::errln!("portsentry: warning: cannot write {}: {e} (`portsentry status` will not see this daemon)", info_path.display());
    }
    d.info = Some(info);

    // The control socket: verbs act on the live state through the event loop.
    let socket_path = socket::socket_path(&d.settings.startup.state_dir);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<socket::Call>(16);
    let server = match socket::bind(&socket_path) {
        Ok(listener) => Some(tokio::spawn(socket::serve(listener, ctl_tx))),
        Err(e) => {
            crate::errln!(
                "portsentry: error: control socket {}: {e} (the CLI verbs cannot reach this daemon)",
                socket_path.display()
            );
            None
        }
    };
    // Scrapes ask the loop for snapshots; the listener task does the rest.
    let (metrics_tx, metrics_rx) = mpsc::channel::<metrics::server::SnapshotRequest>(4);
    let mut metrics_rx = metrics_listener.as_ref().map(|_| metrics_rx);
    let metrics_server = metrics_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            crate::errln!("portsentry: metrics at http://{addr}/metrics");
        }
        metrics::server::spawn(l, metrics_tx)
    });
    // Addresses and routes followed live, for the automatic allowlist.
    let mut route_watch = match netwatch::RouteWatch::new() {
        Ok(w) => Some(w),
        Err(e) => {
            crate::errln!("portsentry: warning: cannot follow address and route changes ({e}); the automatic allowlist is refreshed on SIGHUP only");
            None
        }
    };

    if let Some(logger) = d.dp.take_logger() {
        diagnostics::install(d.settings.startup.log_level);
        tokio::spawn(diagnostics::forward(logger));
    }
    let ring = d.dp.take_events()?;
    let (tx, mut rx) = mpsc::channel::<ProbeEvent>(4096);
    let reader = tokio::spawn(events::read_events(ring, tx));
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut ticker = tokio::time::interval(LISTEN_POLL);
    let watchdog = startup::watchdog_interval();
    let mut watchdog_ticker = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

    d.sink.line("Portsentry is now active and listening.");
    startup::notify_ready(&interfaces);
    let outcome = loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => d.on_event(&ev),
                None => break Err(anyhow::anyhow!("the event reader stopped unexpectedly")),
            },
            Some(line) = log_rx.recv() => d.sink.line(&line),
            Some(update) = next_fleet_update(&mut d.fleet), if d.fleet_batch.is_none() => {
                d.on_fleet_update(update);
            }
            () = std::future::ready(()), if d.fleet_batch.is_some() => {
                d.fleet_step();
                // Let the event reader and the socket tasks run between steps.
                tokio::task::yield_now().await;
            }
            Some(reply) = next_scrape(&mut metrics_rx) => {
                if let Some(snapshot) = d.metrics_snapshot() {
                    let _ = reply.send(snapshot);
                }
            }
            Some((req, reply)) = ctl_rx.recv() => d.control(&req, reply),
            () = std::future::ready(()), if d.snapshot.is_some() || d.sweep.is_some() => {
                d.sweep_step();
                d.snapshot_step();
                tokio::task::yield_now().await;
            }
            Some(done) = saved_rx.recv() => d.on_saved(done),
            changed = next_route_change(&mut route_watch) => match changed {
                Ok(()) => d.refresh_auto_allow(),
                Err(e) => {
                    crate::errln!("portsentry: warning: lost the address and route notifications ({e}); the automatic allowlist is refreshed on SIGHUP only");
                    route_watch = None;
                }
            },
            changes = topology::next_link_change(&mut link_watch) => match changes {
                Ok(changes) => d.on_link_changes(changes),
                Err(e) => {
                    crate::errln!("portsentry: warning: lost the link and neighbour notifications ({e}); bridge and VLAN membership is no longer followed and neighbour MAC flips go unnoticed");
                    link_watch = None;
                }
            },
            _ = ticker.tick() => {
                d.watch_interfaces();
                d.poll_listening();
                d.tick();
                d.notify_tick();
            }
            _ = watchdog_ticker.tick(), if watchdog.is_some() => startup::notify_watchdog(),
            _ = sighup.recv() => d.reload(&sources),
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
        }
    };
    startup::notify_stopping();
    reader.abort();
    if let Some(server) = server {
        server.abort();
    }
    if let Some(server) = metrics_server {
        server.abort();
    }
    let _ = std::fs::remove_file(&socket_path);
    if let Some(fleet) = d.fleet.as_mut() {
        fleet.stop();
    }
    d.save_and_finish(&mut saved_rx);
    d.save_service_ports();
    d.save_peers();
    d.hooks.abandon_queue();
    d.hooks.idle(Duration::from_secs(2)).await;
    while let Ok(line) = log_rx.try_recv() {
        d.sink.line(&line);
    }
    let _ = std::fs::remove_file(&info_path);
    let learned = d.peer_memory.is_some();
    drop(d); // detaches from every interface, and the peer-learning programs
    crate::errln!(
        "portsentry: stopped; XDP detached from {}{}",
        interfaces.join(", "),
        if learned {
            "; peer-learning programs detached"
        } else {
            ""
        }
    );
    outcome
}
