//! The bouncer thread: pull the decision stream every `update_frequency`, hand each answer to
//! the daemon. The first pull of a process is always `startup=true` (LAPI's per-bouncer delta
//! would otherwise start at whatever the last process saw); after any failure the next pull is a
//! full resync again, so an answer lost in transit never leaves a decision unseen.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{
    decisions::{self, FleetUpdate},
    lapi::{BouncerAuth, Lapi, LapiError},
    LapiOutage, Log,
};

pub fn explain(e: &LapiError, auth: &BouncerAuth) -> String {
    match (e.status(), auth) {
        (Some(403), BouncerAuth::ApiKey(_)) => {
            format!("{e} (is `api_key` a bouncer key from `cscli bouncers add`?)")
        }
        (Some(403), BouncerAuth::Certificate) => format!(
            "{e} (does LAPI authenticate bouncers by certificate, and does ours carry an OU from its api.server.tls.bouncers_allowed_ou?)"
        ),
        _ => e.to_string(),
    }
}

/// What the pull thread did since start, read by `status` and the metrics endpoint.
#[derive(Debug, Default)]
pub struct PullStats {
    /// Pulls LAPI answered.
    pub ok: AtomicU64,
    /// Pulls that failed (LAPI unreachable, an error status, an unreadable answer).
    pub failed: AtomicU64,
    /// Wall clock (Unix ms) of the last answered pull; 0 before the first.
    pub last_ok_ms: AtomicU64,
}

impl PullStats {
    fn succeeded(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        self.last_ok_ms
            .store(crate::clock::unix_ms(), Ordering::Relaxed);
    }
}

/// Runs until the daemon stops listening.
pub fn spawn(
    lapi: Lapi,
    auth: BouncerAuth,
    every: Duration,
    max_decisions: usize,
    updates: mpsc::Sender<FleetUpdate>,
    log: Log,
    stats: Arc<PullStats>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("crowdsec-pull".into())
        .spawn(move || {
            let mut startup = true;
            let mut outage = LapiOutage::new("pulling decisions");
            loop {
                let started = Instant::now();
                let pulled = lapi.stream(&auth, startup, max_decisions, |stream| {
                    decisions::classify(stream, startup)
                });
                match pulled {
                    Ok(update) => {
                        stats.succeeded();
                        if let Some(down) = outage.recovered() {
                            log(format!(
                                "portsentry: crowdsec: LAPI at {} answers again (decisions were not updated for {}s)",
                                lapi.url(),
                                down.as_secs()
                            ));
                        }
                        startup = false;
                        if !update.is_empty() && updates.blocking_send(update).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        startup = true;
                        outage.failed(&log, || {
                            format!(
                                "LAPI at {}: {}; bans in force stay enforced, retrying every {}",
                                lapi.url(),
                                explain(&e, &auth),
                                humantime::format_duration(every)
                            )
                        });
                    }
                }
                if updates.is_closed() {
                    return;
                }
                thread::sleep(every.saturating_sub(started.elapsed()));
            }
        })
}
