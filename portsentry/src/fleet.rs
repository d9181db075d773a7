//! The daemon's side of fleet mode: start the CrowdSec workers, enforce what the bouncer pulls
//! in the kernel tables, hand local bans to the pusher.
//!
//! Rules (docs/CONFIG.md, "Fleet mode"):
//! - Fleet bans carry origin `crowdsec`; a local ban (detected, manual, restored) of the same
//!   address is never replaced or lifted by the fleet.
//! - A decision that touches the allowlist (including auto_allow's own addresses, gateways and
//!   resolvers) is not enforced: the fleet must not cut this host off its own network.
//! - A `startup` answer is the whole truth: fleet bans it does not list are lifted.
//! - LAPI unreachable: nothing is lifted; bans expire at their own time.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use portsentry_common::{ban_origin, BanEntry, ScanType};
use tokio::sync::mpsc;

use crate::{
    cidr::Cidr,
    clock::Now,
    control,
    crowdsec::{
        alerts::{Alert, LocalBan},
        bouncer,
        decisions::FleetUpdate,
        lapi::Lapi,
        pusher::{self, Machine, Outbox},
        Credentials, Log,
    },
    dataplane::{DataplaneError, Maps},
    settings::CrowdsecSettings,
    state::{FleetNote, SavedCidrBan},
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
    /// Where each fleet ban came from, by target text.
    notes: BTreeMap<String, FleetNote>,
    lapi_url: String,
}

/// What one update did, for the log.
#[derive(Default)]
struct Applied {
    banned: Vec<String>,
    renewed: usize,
    lifted: Vec<String>,
    kept_local: usize,
    allowlisted: Vec<String>,
    full: usize,
}

impl Fleet {
    pub fn start(
        c: &CrowdsecSettings,
        state_dir: &Path,
        notes: Vec<FleetNote>,
        log: Log,
    ) -> Result<Self> {
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
            notes: notes.into_iter().map(|n| (n.target.clone(), n)).collect(),
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

    pub fn notes(&self) -> Vec<FleetNote> {
        self.notes.values().cloned().collect()
    }

    /// Queues an alert for a local ban (a push under a lock the network never holds).
    pub fn on_local_ban(&self, ban: &LocalBan) {
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

    /// Forgets notes of fleet bans no longer in force.
    pub fn retain_notes(&mut self, keep: impl Fn(&str) -> bool) {
        self.notes.retain(|target, _| keep(target));
    }

    /// Enforces one pulled update; returns log lines.
    pub fn apply(
        &mut self,
        maps: &mut Maps,
        cidr_meta: &mut Vec<SavedCidrBan>,
        allow: &[Cidr],
        update: &FleetUpdate,
    ) -> Result<Vec<String>> {
        let now = Now::read();
        let mut done = Applied::default();
        let mut cidrs: Vec<Cidr> = maps.ban_cidrs()?.into_iter().map(|(c, _)| c).collect();
        let cidrs_before = cidrs.clone();
        let is_fleet_cidr = |meta: &[SavedCidrBan], c: &Cidr| {
            meta.iter()
                .any(|m| m.cidr == c.to_string() && m.origin == ban_origin::FLEET)
        };

        let mut lift: Vec<Cidr> = update.lifted.clone();
        if update.startup {
            // Everything of ours the full state does not list is stale.
            let listed = |c: &Cidr| update.bans.iter().any(|b| b.target == *c);
            for (addr, e) in maps.bans()? {
                let c = Cidr::host(addr);
                if e.origin == ban_origin::FLEET && !listed(&c) {
                    lift.push(c);
                }
            }
            for m in cidr_meta.iter().filter(|m| m.origin == ban_origin::FLEET) {
                if let Ok(c) = m.cidr.parse::<Cidr>() {
                    if !listed(&c) {
                        lift.push(c);
                    }
                }
            }
        }

        for ban in &update.bans {
            let t = ban.target;
            if allow.iter().any(|a| a.overlaps(&t)) {
                done.allowlisted.push(t.to_string());
                continue;
            }
            let expires_ms = now
                .unix_ms
                .saturating_add(u64::try_from(ban.remaining.as_millis()).unwrap_or(u64::MAX));
            let is_new;
            if t.is_host() {
                let existing = maps.ban(t.addr)?;
                if existing.is_some_and(|e| e.origin != ban_origin::FLEET) {
                    done.kept_local += 1;
                    continue;
                }
                is_new = existing.is_none();
                let entry = BanEntry {
                    banned_at_ns: existing.map_or(now.boot_ns, |e| e.banned_at_ns),
                    expires_at_ns: now.unix_ms_to_boot(expires_ms),
                    drops: existing.map_or(0, |e| e.drops),
                    port: 0,
                    proto: 0,
                    scan_type: ScanType::Manual as u8,
                    origin: ban_origin::FLEET,
                    _pad: [0; 3],
                };
                match maps.insert_ban(t.addr, &entry) {
                    Ok(()) => {}
                    Err(DataplaneError::TableFull(_)) => {
                        done.full += 1;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                let text = t.to_string();
                match cidr_meta.iter_mut().find(|m| m.cidr == text) {
                    Some(m) if m.origin != ban_origin::FLEET && cidrs.contains(&t) => {
                        done.kept_local += 1;
                        continue;
                    }
                    Some(m) => {
                        is_new = !cidrs.contains(&t);
                        m.expires_at_ms = Some(expires_ms);
                        m.origin = ban_origin::FLEET;
                    }
                    None => {
                        is_new = !cidrs.contains(&t);
                        cidr_meta.push(SavedCidrBan {
                            cidr: text,
                            added_at_ms: now.unix_ms,
                            expires_at_ms: Some(expires_ms),
                            origin: ban_origin::FLEET,
                        });
                    }
                }
                if !cidrs.contains(&t) {
                    cidrs.push(t);
                }
            }
            self.notes.insert(
                t.to_string(),
                FleetNote {
                    target: t.to_string(),
                    origin: ban.origin.clone(),
                    scenario: ban.scenario.clone(),
                },
            );
            if is_new {
                done.banned.push(format!(
                    "{t} for {} ({}: {})",
                    humantime::format_duration(Duration::from_secs(ban.remaining.as_secs())),
                    ban.origin,
                    ban.scenario
                ));
            } else {
                done.renewed += 1;
            }
        }

        lift.sort_by_key(|c| (c.addr, c.prefix));
        lift.dedup();
        for t in lift {
            let lifted = if t.is_host() {
                match maps.ban(t.addr)? {
                    Some(e) if e.origin == ban_origin::FLEET => maps.remove_ban(t.addr)?,
                    _ => false,
                }
            } else if is_fleet_cidr(cidr_meta, &t) {
                cidr_meta.retain(|m| m.cidr != t.to_string());
                let before = cidrs.len();
                cidrs.retain(|c| *c != t);
                before != cidrs.len()
            } else {
                false
            };
            if lifted {
                self.notes.remove(&t.to_string());
                done.lifted.push(t.to_string());
            }
        }

        if cidrs != cidrs_before {
            if let Err(e) = control::apply_ban_cidrs(maps, &cidrs) {
                if matches!(
                    e.downcast_ref::<DataplaneError>(),
                    Some(DataplaneError::TableFull(_))
                ) {
                    done.full += 1;
                } else {
                    return Err(e);
                }
            }
        }
        Ok(done.lines(update))
    }
}

impl Applied {
    fn lines(self, update: &FleetUpdate) -> Vec<String> {
        let mut out = Vec::new();
        let changes = self.banned.len() + self.lifted.len();
        if changes <= DETAIL_LINES_MAX {
            out.extend(
                self.banned
                    .iter()
                    .map(|b| format!("portsentry: crowdsec: banned {b}")),
            );
            out.extend(self.lifted.iter().map(|l| {
                format!("portsentry: crowdsec: lifted {l} (decision deleted or expired)")
            }));
        }
        for a in self.allowlisted.iter().take(DETAIL_LINES_MAX) {
            out.push(format!("portsentry: warning: crowdsec: not enforcing the ban of {a}: it covers an allowlisted address"));
        }
        if self.full > 0 {
            out.push(format!("portsentry: error: crowdsec: {} decision(s) not enforced: the ban table is full (raise max_bans)", self.full));
        }
        let ignored: usize = update.ignored.values().sum();
        if update.startup || changes > DETAIL_LINES_MAX || ignored > 0 || self.kept_local > 0 {
            let mut parts = vec![
                format!("{} banned", self.banned.len()),
                format!("{} renewed", self.renewed),
                format!("{} lifted", self.lifted.len()),
            ];
            if self.kept_local > 0 {
                parts.push(format!("{} already banned locally", self.kept_local));
            }
            if !self.allowlisted.is_empty() {
                parts.push(format!("{} allowlisted", self.allowlisted.len()));
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
