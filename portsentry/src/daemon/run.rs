//! The loop of `portsentry run`: the start-up order, the `select!` over kernel events, hook
//! and worker lines, fleet updates, scrapes, control verbs, saves, route and link changes,
//! timers and signals, and shutdown. Each arm hands its input to one [`Daemon`] method, which
//! routes the outcome; nothing here holds state of its own beyond the channels and tasks.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use super::{startup, topology, Daemon};
use crate::{
    config::{settings::Settings, sources::Sources},
    control::{socket, DaemonInfo, DAEMON_FILE},
    detect::{
        diagnostics,
        events::{self, ProbeEvent},
        lines,
        logging::LogFn,
    },
    metrics,
    net::{netinfo, netwatch},
};

/// How often advanced mode and the service check look for new listening sockets.
const LISTEN_POLL: Duration = Duration::from_millis(500);

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
    let (log_tx, mut log_rx) = mpsc::unbounded_channel::<String>();
    let log_line: LogFn = Arc::new(move |line: String| {
        let _ = log_tx.send(line);
    });
    let (mut d, mut saved_rx, attached) = Daemon::start(settings, &interfaces, log_line)?;
    // Links and neighbours followed live: subscribe first, then read the tables, so no change
    // falls between the two.
    let mut link_watch = match crate::net::rtnl::LinkWatch::new() {
        Ok(w) => Some(w),
        Err(e) => {
            crate::errln!("portsentry: warning: cannot follow link and neighbour changes ({e}); bridge and VLAN membership is read at start only and neighbour MAC flips go unnoticed");
            None
        }
    };
    d.read_topology();
    let state_dir = d.settings().startup.state_dir.clone();
    let info = DaemonInfo {
        pid: std::process::id(),
        started_at_ms: crate::clock::unix_ms(),
        interfaces: attached,
        pin_dir: d.settings().startup.pin_dir.clone(),
    };
    let info_path = state_dir.join(DAEMON_FILE);
    if let Err(e) = std::fs::create_dir_all(&state_dir)
        .and_then(|()| std::fs::write(&info_path, serde_json::to_string(&info).unwrap_or_default()))
    {
        crate::errln!("portsentry: warning: cannot write {}: {e} (`portsentry status` will not see this daemon)", info_path.display());
    }
    d.set_info(info);

    // The control socket: verbs act on the live state through the event loop.
    let socket_path = socket::socket_path(&state_dir);
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

    if let Some(logger) = d.dataplane().take_logger() {
        diagnostics::install(d.settings().startup.log_level);
        tokio::spawn(diagnostics::forward(logger));
    }
    let ring = d.dataplane().take_events()?;
    let (tx, mut rx) = mpsc::channel::<ProbeEvent>(4096);
    let reader = tokio::spawn(events::read_events(ring, tx));
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut ticker = tokio::time::interval(LISTEN_POLL);
    let watchdog = startup::watchdog_interval();
    let mut watchdog_ticker = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

    d.line(lines::ACTIVE);
    startup::notify_ready(&interfaces);
    let outcome = loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => d.on_event(&ev),
                None => break Err(anyhow::anyhow!("the event reader stopped unexpectedly")),
            },
            Some(line) = log_rx.recv() => d.line(&line),
            Some(update) = d.next_fleet_update(), if !d.fleet_busy() => d.on_fleet_update(update),
            () = std::future::ready(()), if d.fleet_busy() => {
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
            () = std::future::ready(()), if d.working() => {
                d.work_step();
                tokio::task::yield_now().await;
            }
            Some(done) = saved_rx.recv() => d.on_saved(done),
            changed = next_route_change(&mut route_watch) => match changed {
                Ok(()) => d.on_route_change(),
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
            _ = ticker.tick() => d.on_tick(),
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
    let learned = d.stop(&mut saved_rx, &mut log_rx).await;
    let _ = std::fs::remove_file(&info_path);
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
