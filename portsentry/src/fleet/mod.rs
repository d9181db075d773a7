//! The daemon's side of fleet mode: start the CrowdSec workers, enforce what the bouncer pulls
//! in the kernel tables, hand local bans to the pusher.
//!
//! The precedence rules (allowlist, operator's unban, local before fleet) live in the ban book
//! (`bans/`), which applies each update; this module starts the workers and words the log.
//! LAPI unreachable: nothing is lifted; bans expire at their own time.
//!
//! Must not: write kernel maps or `bans.json` (the ban book does), or block the event loop
//! (LAPI calls run on the workers' own threads).

pub mod crowdsec;

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::{
    bans::{BanBook, BanNotice, FleetApplied},
    clock::Now,
    config::settings::CrowdsecSettings,
    dataplane::Maps,
    fleet::crowdsec::{
        alerts::Alert,
        bouncer,
        decisions::FleetUpdate,
        lapi::Lapi,
        pusher::{self, Machine, Outbox},
        Credentials, Log,
    },
};

/// Per-decision log lines are written for updates up to this size; bigger ones (a community
/// blocklist at startup) get the summary only.
const DETAIL_LINES_MAX: usize = 20;

pub struct Fleet {
    /// Pulled decisions, for the event loop.
    pub updates: Option<mpsc::Receiver<FleetUpdate>>,
    outbox: Option<Arc<Outbox>>,
    log: Log,
    scenario: String,
    host: String,
    lapi_url: String,
}

impl Fleet {
    pub fn start(c: &CrowdsecSettings, state_dir: &Path, log: Log) -> Result<Self> {
        let creds = Credentials::resolve(c)?;
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
        };
        if let Some(key) = creds.api_key {
            let (tx, rx) = mpsc::channel(16);
            bouncer::spawn(
                Lapi::new(&c.lapi_url),
                key,
                c.update_frequency,
                tx,
                log.clone(),
            )
            .context("starting the crowdsec bouncer thread")?;
            fleet.updates = Some(rx);
        }
        if let Some((login, password)) = creds.machine {
            let machine = Machine {
                lapi: Lapi::new(&c.lapi_url),
                login,
                password,
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
            "portsentry: crowdsec: LAPI {}: {}",
            self.lapi_url,
            roles.join(" and ")
        )
    }

    /// Queues an alert for a local ban (a push under a lock the network never holds).
    pub fn on_local_ban(&self, ban: &BanNotice) {
        if let Some(outbox) = &self.outbox {
            let alert = Alert::from_ban(ban, &self.scenario, &self.host);
            if outbox.push(alert) > 0 {
                (self.log)(format!(
                    "portsentry: error: crowdsec: alert queue full ({} alerts): dropped the oldest; raise crowdsec.queue_max or bring LAPI back",
                    outbox.len()
                ));
            }
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

    /// Enforces one pulled update through the ban book; returns log lines.
    pub fn apply(
        &mut self,
        book: &mut BanBook,
        maps: &mut Maps,
        update: &FleetUpdate,
    ) -> Result<Vec<String>> {
        let done = book.apply_fleet(maps, update, &Now::read())?;
        Ok(lines(done, update))
    }
}

/// The log lines for one applied update: each change while there are few, else a summary.
fn lines(done: FleetApplied, update: &FleetUpdate) -> Vec<String> {
    {
        let mut out = Vec::new();
        let changes = done.banned.len() + done.lifted.len();
        if changes <= DETAIL_LINES_MAX {
            out.extend(
                done.banned
                    .iter()
                    .map(|b| format!("portsentry: crowdsec: banned {b}")),
            );
            out.extend(done.lifted.iter().map(|l| {
                format!("portsentry: crowdsec: lifted {l} (decision deleted or expired)")
            }));
        }
        for a in done.allowlisted.iter().take(DETAIL_LINES_MAX) {
            out.push(format!("portsentry: warning: crowdsec: not enforcing the ban of {a}: it covers an allowlisted address"));
        }
        if done.full > 0 {
            out.push(format!("portsentry: error: crowdsec: {} decision(s) not enforced: the ban table is full (raise max_bans)", done.full));
        }
        let ignored: usize = update.ignored.values().sum();
        if update.startup
            || changes > DETAIL_LINES_MAX
            || ignored > 0
            || done.kept_local > 0
            || done.operator_unbanned > 0
        {
            let mut parts = vec![
                format!("{} banned", done.banned.len()),
                format!("{} renewed", done.renewed),
                format!("{} lifted", done.lifted.len()),
            ];
            if done.kept_local > 0 {
                parts.push(format!("{} already banned locally", done.kept_local));
            }
            if done.operator_unbanned > 0 {
                parts.push(format!(
                    "{} unbanned by the operator",
                    done.operator_unbanned
                ));
            }
            if !done.allowlisted.is_empty() {
                parts.push(format!("{} allowlisted", done.allowlisted.len()));
            }
            if ignored > 0 {
                let kinds: Vec<String> = update
                    .ignored
                    .iter()
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect();
                parts.push(format!("{ignored} ignored ({})", kinds.join(", ")));
            }
            out.push(format!(
                "portsentry: crowdsec: {}: {}",
                if update.startup {
                    "full decision list"
                } else {
                    "decision update"
                },
                parts.join(", ")
            ));
        }
        out
    }
}
