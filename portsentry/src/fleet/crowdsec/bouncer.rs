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
    lapi::{Lapi, LapiError},
    LapiOutage, Log,
};

pub fn explain(e: &LapiError) -> String {
    match e.status() {
        Some(403) => format!("{e} (is `api_key` a bouncer key from `cscli bouncers add`?)"),
        _ => e.to_string(),
    }
}

/// Runs until the daemon stops listening.
pub fn spawn(
    lapi: Lapi,
    api_key: String,
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
                match lapi.stream(&api_key, startup) {
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
                                explain(&e),
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
