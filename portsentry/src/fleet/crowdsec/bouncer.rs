//! The bouncer thread: pull the decision stream every `update_frequency`, hand each answer to
//! the daemon. The first pull of a process is always `startup=true` (LAPI's per-bouncer delta
//! would otherwise start at whatever the last process saw); after any failure the next pull is a
//! full resync again, so an answer lost in transit never leaves a decision unseen.

use std::{
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

/// Runs until the daemon stops listening.
pub fn spawn(
    lapi: Lapi,
    auth: BouncerAuth,
    every: Duration,
    updates: mpsc::Sender<FleetUpdate>,
    log: Log,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("crowdsec-pull".into())
        .spawn(move || {
            let mut startup = true;
            let mut outage = LapiOutage::new("pulling decisions");
            loop {
                let started = Instant::now();
                match lapi.stream(&auth, startup) {
                    Ok(stream) => {
                        if let Some(down) = outage.recovered() {
                            log(format!(
                                "portsentry: crowdsec: LAPI at {} answers again (decisions were not updated for {}s)",
                                lapi.url(),
                                down.as_secs()
                            ));
                        }
                        let update = decisions::classify(stream, startup);
                        startup = false;
                        if !update.is_empty() && updates.blocking_send(update).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
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
