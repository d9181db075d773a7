//! Start-up steps of `run` with their log lines: loading (and migrating) the maps, opening the
//! ban book on the saved bans, the config block's facts of this run, and telling the service
//! manager when the daemon is ready, alive and stopping.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{guard::KernelExtras, peers::Peers};
use crate::{
    bans::{BanBook, Saved, StateError, StateStore},
    clock::Now,
    config::settings::Settings,
    dataplane::{bpffs, Dataplane, LoadOptions},
    detect::diagnostics,
};

/// Loads the program and its maps (pinned ones reused or migrated), saying what migration did.
/// Loads the XDP program: as a libxdp dispatcher component when `xdp_mode = "multi"` or one of
/// `interfaces` already runs libxdp's dispatcher (`dataplane::dispatcher`).
pub(super) fn load_dataplane(settings: &Settings, interfaces: &[String]) -> Result<Dataplane> {
    if let Some(dir) = &settings.startup.pin_dir {
        bpffs::ensure_pin_dir(dir)?;
    }
    let dp = Dataplane::load(&LoadOptions {
        pin_dir: settings.startup.pin_dir.clone(),
        max_bans: Some(settings.startup.max_bans),
        max_ban_networks: Some(settings.startup.max_ban_networks),
        max_peers: Some(settings.startup.max_peers),
        compat: false,
        log_level: diagnostics::kernel_level(settings.startup.log_level),
        component: crate::dataplane::dispatcher::wanted(settings.startup.xdp_mode, interfaces),
    })?;
    if let (Some(m), Some(dir)) = (&dp.migrated, &settings.startup.pin_dir) {
        crate::errln!(
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

    Ok(dp)
}

/// The ban book on the last run's bans, installed into the kernel tables.
pub(super) fn open_ban_book(dp: &mut Dataplane, settings: &Settings) -> Result<BanBook> {
    // Bans from the last run. A damaged or too-new state file is kept aside and reported, not
    // fatal: a security daemon that refuses to start protects nothing.
    let store = StateStore::new(&settings.startup.state_dir);
    let saved = match store.open() {
        Ok(s) => s,
        Err(u) if matches!(u.error, StateError::Io { .. }) => {
            return Err(u.error).context("reading saved bans")
        }
        Err(u) => {
            crate::errln!("{}", u.line("starting without saved bans"));
            Saved::default()
        }
    };
    let now = Now::read();
    let migrated = dp.migrated.take();
    let (mut book, opened) = BanBook::open(store, saved, Some(dp), migrated.as_ref(), true, &now)?;
    let refused = book.install(dp, &now)?;
    crate::errln!(
        "portsentry: restored {} ban(s) from {} ({} expired); {} ban(s) kept in the pinned maps",
        opened.from_file,
        book.store().path().display(),
        opened.expired,
        opened.in_kernel,
    );
    if !refused.is_empty() {
        crate::errln!(
            "portsentry: error: {} ban(s) do not fit the tables (first: {}); raise max_bans or max_ban_networks",
            refused.len(),
            refused[0]
        );
    }

    Ok(book)
}

/// What the config block holds beyond the settings, fixed at start: whether learned peers are
/// challenged, their network namespace, and this host's SYN-ACK shape.
pub(super) fn kernel_extras(peers: &Peers) -> KernelExtras {
    KernelExtras {
        peer_challenge: peers.learning(),
        netns_cookie: peers.netns_cookie(),
        synack: crate::net::synack::SynAckShape::read(),
    }
}

/// systemd's readiness protocol (the unit's `Type=notify`; the end-to-end tests wait for it
/// too): READY=1 once every interface is attached, the maps are configured and the control
/// socket listens. Sends nothing without `$NOTIFY_SOCKET`.
pub(super) fn notify_ready(interfaces: &[String]) {
    let status = format!("active and listening on {}", interfaces.join(", "));
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
}

/// STOPPING=1 when shutdown begins (bans are saved and XDP detached next).
pub(super) fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// How often to send WATCHDOG=1: half the unit's `WatchdogSec` (`WATCHDOG_USEC`, when
/// `WATCHDOG_PID` is unset or this process), as sd_watchdog_enabled(3) advises; None without a
/// watchdog.
pub(super) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// WATCHDOG=1, sent from the event loop itself: a loop that hangs stops sending it and
/// systemd restarts the daemon.
pub(super) fn notify_watchdog() {
    notify(&[sd_notify::NotifyState::Watchdog]);
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        crate::errln!("portsentry: warning: cannot notify the service manager: {e}");
    }
}
