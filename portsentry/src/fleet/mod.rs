//! The daemon's side of fleet mode: start the CrowdSec workers, enforce what the bouncer pulls
//! in the kernel tables, hand local bans to the pusher.
//!
//! The precedence rules (bogus ranges, learned peers, allowlist, operator's unban, local before
//! fleet) live in the ban book (`bans/`), which applies each update; this module starts the
//! workers, words the log (each refused decision once) and keeps the fleet counters `status`
//! shows. What is shared is decided here (`share`): only bans of verified sources, at most
//! `max_alerts_per_minute`. LAPI unreachable: nothing is lifted; bans expire at their own time.
//! (`counters` declares them.)
//!
//! Must not: write kernel maps or `bans.json` (the ban book does), or block the event loop
//! (LAPI calls run on the workers' own threads).

mod counters;
pub mod crowdsec;
pub mod share;

use std::{collections::HashSet, path::Path, sync::Arc, time::Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::{
    bans::{BanBook, BanNotice, FleetApplied, FleetBatch, PeerSource, Refusal},
    clock::Now,
    config::settings::CrowdsecSettings,
    dataplane::Maps,
    fleet::crowdsec::{
        alerts::Alert,
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

use self::share::AlertCap;

/// Per-decision log lines are written for updates up to this size; bigger ones (a community
/// blocklist at startup) get the summary only.
const DETAIL_LINES_MAX: usize = 20;
/// Updates with this many decisions and deletions or more get a line when their application
/// starts (it takes a while; the summary follows at the end).
const ANNOUNCE_FROM: usize = 10_000;
/// Refused decisions remembered so each is logged once; beyond this many the memory starts over.
const REPORTED_MAX: usize = 100_000;

pub use self::counters::FleetCounters;

/// Alerts dropped by the cap and not reported yet; reported at once, then once a minute.
struct CapReport {
    gate: ReportGate,
    pending: u64,
    latest: Option<std::net::IpAddr>,
}

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
    pub fn check(c: &CrowdsecSettings) -> Result<()> {
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

    /// Queues an alert for a local ban (a push under a lock the network never holds), unless
    /// its source is unverified or link-local, or the cap is reached.
    pub fn on_local_ban(&mut self, ban: &BanNotice) {
        self.on_local_ban_at(ban, Instant::now());
    }

    fn on_local_ban_at(&mut self, ban: &BanNotice, now: Instant) {
        let Some(outbox) = self.outbox.clone() else {
            return;
        };
        if let Some(why) = share::not_shared_reason(ban) {
            self.counters.alerts_not_shared += 1;
            (self.log)(format!(
                "portsentry: crowdsec: ban of {} not shared with the fleet: {why}",
                ban.source
            ));
            return;
        }
        if !self.cap.try_take(now) {
            self.counters.alerts_capped += 1;
            self.cap_report.pending += 1;
            self.cap_report.latest = Some(ban.source);
            self.flush_cap_report_at(now);
            return;
        }
        self.counters.alerts_queued += 1;
        let alert = Alert::from_ban(ban, &self.scenario, &self.host);
        if outbox.push(alert) > 0 {
            (self.log)(format!(
                "portsentry: error: crowdsec: alert queue full ({} alerts): dropped the oldest; raise crowdsec.queue_max or bring LAPI back",
                outbox.len()
            ));
        }
    }

    /// Reports alerts dropped by the cap: the first at once, then at most once a minute (the
    /// daemon calls this on its tick, so a count held back is told when the minute is over).
    pub fn flush_cap_report(&mut self) {
        self.flush_cap_report_at(Instant::now());
    }

    fn flush_cap_report_at(&mut self, now: Instant) {
        let r = &mut self.cap_report;
        // The gate is asked only when there is something to say.
        if r.pending == 0 || r.gate.try_report_at(now).is_none() {
            return;
        }
        (self.log)(format!(
            "portsentry: warning: crowdsec: alert cap reached (crowdsec.max_alerts_per_minute = {}): {} alert(s) not pushed since the last report (latest: {}); {} dropped in total",
            self.cap.per_minute(),
            r.pending,
            r.latest.map_or_else(|| "?".into(), |a| a.to_string()),
            self.counters.alerts_capped,
        ));
        r.pending = 0;
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

    /// Enforces one pulled update through the ban book at once; returns log lines. Learned
    /// peers are current within `peer_ttl_ns` (the settings' `peer_memory`).
    pub fn apply(
        &mut self,
        book: &mut BanBook,
        maps: &mut Maps,
        update: &FleetUpdate,
        peer_ttl_ns: u64,
    ) -> Result<Vec<String>> {
        let done = book.apply_fleet(maps, update, &Now::read(), peer_ttl_ns)?;
        Ok(self.lines(done, update))
    }

    /// Starts applying a pulled update a step at a time ([`Fleet::step`]); a large one is
    /// announced.
    pub fn begin(&mut self, update: FleetUpdate) -> (FleetBatch, Option<String>) {
        let n = update.bans.len() + update.lifted.len();
        let line = (n >= ANNOUNCE_FROM).then(|| {
            format!(
                "portsentry: crowdsec: applying {} ({} decisions, {} deletions) in steps; probes are served meanwhile",
                if update.startup { "the full decision list" } else { "a decision update" },
                update.bans.len(),
                update.lifted.len()
            )
        });
        (FleetBatch::new(update), line)
    }

    /// Applies the next step of `batch`; the update's log lines once it is finished. Learned
    /// peers are current within `peer_ttl_ns` (the settings' `peer_memory`).
    pub fn step(
        &mut self,
        book: &mut BanBook,
        maps: &mut Maps,
        batch: &mut FleetBatch,
        peer_ttl_ns: u64,
    ) -> Result<Option<Vec<String>>> {
        let peers = PeerSource::Kernel { peer_ttl_ns };
        let Some(done) = book.apply_fleet_step(Some(maps), peers, batch, &Now::read())? else {
            return Ok(None);
        };
        Ok(Some(self.lines(done, batch.update())))
    }

    /// Keeps the refusals not reported before (each decision is logged and counted once; a
    /// decision deleted on LAPI may be reported again when it comes back).
    fn first_refusals(
        &mut self,
        done: &FleetApplied,
        update: &FleetUpdate,
    ) -> Vec<(Cidr, Refusal)> {
        for t in &update.lifted {
            self.reported.remove(t);
        }
        if self.reported.len() > REPORTED_MAX {
            self.reported.clear();
        }
        let mut fresh = Vec::new();
        for (t, why) in &done.refused {
            if self.reported.insert(*t) {
                match why {
                    Refusal::Bogus(_) => self.counters.refused_bogus += 1,
                    Refusal::LearnedPeer(_) => self.counters.refused_learned_peer += 1,
                    Refusal::Allowlisted(_) => self.counters.refused_allowlisted += 1,
                }
                fresh.push((*t, why.clone()));
            }
        }
        fresh
    }

    /// The log lines for one applied update: each change while there are few, else a summary.
    fn lines(&mut self, done: FleetApplied, update: &FleetUpdate) -> Vec<String> {
        let refused = self.first_refusals(&done, update);
        let mut out = Vec::new();
        let changes = done.banned_count + done.lifted.len();
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
        for (t, why) in refused.iter().take(DETAIL_LINES_MAX) {
            out.push(format!(
                "portsentry: warning: crowdsec: refused the decision to ban {t}: {}",
                why.explain()
            ));
        }
        if refused.len() > DETAIL_LINES_MAX {
            out.push(format!(
                "portsentry: warning: crowdsec: refused {} more decision(s) for the same reasons (see `portsentry status`)",
                refused.len() - DETAIL_LINES_MAX
            ));
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
                format!("{} banned", done.banned_count),
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
            if !done.refused.is_empty() {
                parts.push(format!("{} refused", done.refused.len()));
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

#[cfg(test)]
mod tests;
