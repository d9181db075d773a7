//! The daemon's side of fleet mode: start the CrowdSec workers, enforce what the bouncer pulls
//! in the kernel tables, hand local bans to the pusher.
//!
//! The precedence rules (bogus ranges, learned peers, allowlist, operator's unban, local before
//! fleet) live in the ban book (`bans/`), which applies each update; this module starts the
//! workers, words the log (each refused decision once) and keeps the fleet counters `status`
//! shows. What is shared is decided here (`share`): only bans of verified sources, at most
//! `max_alerts_per_minute`. LAPI unreachable: nothing is lifted; bans expire at their own time.
//! (`counters` declares them.) This file starts and stops the workers; `apply` enforces a
//! pulled update and words its lines, `local_bans` queues local bans as alerts under the cap.
//!
//! Must not: write kernel maps or `bans.json` (the ban book does), or block the event loop
//! (LAPI calls run on the workers' own threads).

mod apply;
mod counters;
pub mod crowdsec;
mod local_bans;
pub mod share;

use std::{collections::HashSet, path::Path, sync::Arc};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::{
    config::settings::CrowdsecSettings,
    fleet::crowdsec::{
        bouncer,
        decisions::FleetUpdate,
        lapi::{BouncerAuth, Lapi, MachineAuth},
        pusher::{self, Machine, Outbox},
        tls::{self, LapiTls},
        Credentials, Log,
    },
    net::cidr::Cidr,
    report::{ReportGate, REPORT_INTERVAL},
};

use self::{local_bans::CapReport, share::AlertCap};

pub use self::counters::FleetCounters;

pub struct Fleet {
    /// Pulled decisions, for the event loop.
    pub updates: Option<mpsc::Receiver<FleetUpdate>>,
    outbox: Option<Arc<Outbox>>,
    log: Log,
    scenario: String,
    host: String,
    lapi_url: String,
    /// Authenticated by a TLS client certificate.
    client_cert: bool,
    cap: AlertCap,
    cap_report: CapReport,
    counters: FleetCounters,
    /// The pull thread's counters (bouncer role).
    pulls: Option<Arc<bouncer::PullStats>>,
    /// Refused decisions already logged (and counted).
    reported: HashSet<Cidr>,
}

impl Fleet {
    /// Reads what `[crowdsec]` names (credentials, CA bundle, client certificate) as
    /// [`Fleet::start`] would, without starting anything: a bad file is a configuration error.
    pub fn check(c: &CrowdsecSettings) -> Result<(), crowdsec::CheckError> {
        Credentials::resolve(c)?;
        LapiTls::load(c)?;
        Ok(())
    }

    pub fn start(c: &CrowdsecSettings, state_dir: &Path, log: Log) -> Result<Self> {
        let creds = Credentials::resolve(c)?;
        let tls = LapiTls::load(c)?;
        for warning in tls::startup_warnings(c) {
            log(warning);
        }
        let mut fleet = Fleet {
            updates: None,
            outbox: None,
            log: log.clone(),
            scenario: c.scenario.clone(),
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
            lapi_url: c.lapi_url.clone(),
            client_cert: tls.client_cert,
            cap: AlertCap::new(c.max_alerts_per_minute),
            cap_report: CapReport {
                gate: ReportGate::new(REPORT_INTERVAL),
                pending: 0,
                latest: None,
            },
            counters: FleetCounters::default(),
            pulls: None,
            reported: HashSet::new(),
        };
        let bouncer = match creds.api_key {
            Some(key) => Some(BouncerAuth::ApiKey(key)),
            None => tls.client_cert.then_some(BouncerAuth::Certificate),
        };
        let machine = match creds.machine {
            Some((login, password)) => Some(MachineAuth::Password { login, password }),
            None => tls.client_cert.then_some(MachineAuth::Certificate),
        };
        if let Some(auth) = bouncer {
            let (tx, rx) = mpsc::channel(16);
            let pulls = Arc::new(bouncer::PullStats::default());
            bouncer::spawn(
                Lapi::new(&c.lapi_url, &tls),
                auth,
                c.update_frequency,
                c.max_decisions,
                tx,
                log.clone(),
                pulls.clone(),
            )
            .context("starting the crowdsec bouncer thread")?;
            fleet.updates = Some(rx);
            fleet.pulls = Some(pulls);
        }
        if let Some(auth) = machine {
            let machine = Machine {
                lapi: Lapi::new(&c.lapi_url, &tls),
                auth,
                scenario: c.scenario.clone(),
            };
            let outbox = pusher::spawn(machine, state_dir, c.queue_max, log)
                .context("starting the crowdsec alert thread")?;
            fleet.outbox = Some(outbox);
        }
        Ok(fleet)
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let mut roles = Vec::new();
        if self.updates.is_some() {
            roles.push("enforcing its decisions");
        }
        if self.outbox.is_some() {
            roles.push("sharing our bans as alerts");
        }
        format!(
            "portsentry: crowdsec: LAPI {}: {}{}",
            self.lapi_url,
            roles.join(" and "),
            if self.client_cert {
                " (authenticated by our client certificate)"
            } else {
                ""
            }
        )
    }

    /// The counters since start.
    pub fn counters(&self) -> FleetCounters {
        use std::sync::atomic::Ordering::Relaxed;
        let pulls = self.pulls.as_deref();
        let outbox = self.outbox.as_deref();
        FleetCounters {
            pulls: pulls.map_or(0, |p| p.ok.load(Relaxed)),
            pull_errors: pulls.map_or(0, |p| p.failed.load(Relaxed)),
            last_pull_ms: pulls
                .map(|p| p.last_ok_ms.load(Relaxed))
                .filter(|ms| *ms > 0),
            alert_queue: outbox.map_or(0, |o| o.len() as u64),
            alerts_pushed: outbox.map_or(0, |o| o.delivered()),
            pushes: outbox.map_or(0, |o| o.pushes()),
            push_errors: outbox.map_or(0, |o| o.push_errors()),
            ..self.counters.clone()
        }
    }

    /// Writes the alert queue to `state_dir` if it changed (the daemon's save schedule).
    pub fn persist(&self) {
        if let Some(outbox) = &self.outbox {
            if let Err(e) = outbox.persist() {
                (self.log)(format!(
                    "portsentry: error: crowdsec: saving the alert queue to {}: {e} (alerts stay queued in memory)",
                    outbox.path().display()
                ));
            }
        }
    }

    /// Stops both workers; the queue is written by `persist` and by the delivery thread.
    pub fn stop(&mut self) {
        if let Some(outbox) = &self.outbox {
            outbox.stop();
        }
        self.persist();
        self.updates = None;
    }
}

#[cfg(test)]
mod tests;
