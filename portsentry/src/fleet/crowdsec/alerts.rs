//! Our bans as CrowdSec alerts, and the queue that keeps them until LAPI has them. The queue's
//! file is written, and kept aside at start when it does not parse, by `crate::state_file`.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};

use super::{godur, DECISION_ORIGIN};
use crate::{
    bans::BanNotice,
    state_file::{self, StateFile, Unfit, Unusable},
};

/// The queue file in `state_dir`.
pub const QUEUE_FILE: &str = "crowdsec-alerts.json";
/// The end of the error line when the queue file cannot be used: what the pusher starts
/// without.
pub const STARTS_WITHOUT: &str = "starting without queued alerts";
/// What a ban that never expires (`ban_ttl = "never"`) is pushed as: Go durations have no
/// "forever", and ten years is forever for a scanner's address.
pub const FOREVER: Duration = Duration::from_secs(10 * 365 * 86_400);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub timestamp: String,
    pub meta: Vec<Meta>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub scope: String,
    pub value: String,
    pub ip: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub duration: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub scope: String,
    pub value: String,
    pub origin: String,
    pub scenario: String,
}

/// `POST /v1/alerts` body element. Every field LAPI requires is always present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub scenario: String,
    pub scenario_hash: String,
    pub scenario_version: String,
    pub message: String,
    pub events_count: u32,
    pub start_at: String,
    pub stop_at: String,
    pub capacity: u32,
    pub leakspeed: String,
    /// Detect mode and unblocked protocols: the alert is recorded, its decision not enforced
    /// by anyone (CrowdSec's simulation mode), matching what this host does.
    pub simulated: bool,
    pub remediation: bool,
    pub events: Vec<Event>,
    pub source: Source,
    pub decisions: Vec<Decision>,
}

impl Alert {
    /// The alert a local ban is pushed as.
    pub fn from_ban(ban: &BanNotice, scenario: &str, host: &str) -> Self {
        let ip = ban.source.to_string();
        let at = ban.at.to_rfc3339_opts(SecondsFormat::Millis, true);
        let meta = |k: &str, v: String| Meta {
            key: k.to_owned(),
            value: v,
        };
        Alert {
            scenario: scenario.to_owned(),
            scenario_hash: String::new(),
            scenario_version: env!("CARGO_PKG_VERSION").to_owned(),
            message: format!(
                "portsentry on {host}: {ip} probed {}/{} ({}) and was {}",
                ban.protocol.name(),
                ban.dst_port,
                ban.scan,
                if ban.enforced {
                    "banned"
                } else {
                    "detected (not blocked: detect mode)"
                }
            ),
            events_count: u32::try_from(ban.probes.max(1)).unwrap_or(u32::MAX),
            start_at: at.clone(),
            stop_at: at.clone(),
            capacity: 0,
            leakspeed: "0s".to_owned(),
            simulated: !ban.enforced,
            remediation: true,
            events: vec![Event {
                timestamp: at,
                meta: vec![
                    meta("source_ip", ip.clone()),
                    meta("dst_port", ban.dst_port.to_string()),
                    meta("proto", ban.protocol.mode().to_owned()),
                    meta("scan_type", ban.scan.clone()),
                    meta("interface", ban.interface.clone()),
                    meta("machine", host.to_owned()),
                    meta("service", "portsentry".to_owned()),
                    meta("log_type", "portsentry_ban".to_owned()),
                ],
            }],
            source: Source {
                scope: "Ip".to_owned(),
                value: ip.clone(),
                ip: ip.clone(),
            },
            decisions: vec![Decision {
                duration: godur::format(ban.ttl.unwrap_or(FOREVER)),
                kind: "ban".to_owned(),
                // Case matters: LAPI stores "ip" but never streams it to bouncers.
                scope: "Ip".to_owned(),
                value: ip,
                origin: DECISION_ORIGIN.to_owned(),
                scenario: scenario.to_owned(),
            }],
        }
    }
}

/// Alerts not yet accepted by LAPI, oldest first, bounded; mirrored in `state_dir`. Each entry
/// has a sequence number, so a batch in flight is removed exactly, even if the oldest entries
/// were dropped meanwhile to stay within the bound.
pub struct AlertQueue {
    dir: PathBuf,
    max: usize,
    alerts: VecDeque<(u64, Alert)>,
    next_seq: u64,
    /// Changed since the file was last written.
    dirty: bool,
    /// Since when the oldest entry has been waiting to be sent.
    waiting_since: Option<Instant>,
}

/// What loading the queue file found.
pub enum Loaded {
    Fresh,
    Restored(usize),
    /// The file could not be used (kept aside if it did not parse); the queue starts empty.
    Unusable(Unusable),
}

impl AlertQueue {
    /// Loads the queue left by the last run (a file that does not parse is kept aside).
    pub fn load(dir: &Path, max: usize) -> (Self, Loaded) {
        let mut q = Self {
            dir: dir.to_owned(),
            max: max.max(1),
            alerts: VecDeque::new(),
            next_seq: 0,
            dirty: false,
            waiting_since: None,
        };
        let file = StateFile::new(dir, QUEUE_FILE, "CrowdSec alert queue");
        let parse = |text: &str| Ok::<_, Unfit>(serde_json::from_str::<Vec<Alert>>(text)?);
        let loaded = match file.open(parse) {
            Ok(None) => Loaded::Fresh,
            Ok(Some(list)) => {
                let n = list.len();
                for alert in list {
                    q.push(alert);
                }
                q.dirty = false;
                if n == 0 {
                    Loaded::Fresh
                } else {
                    Loaded::Restored(n)
                }
            }
            Err(unusable) => Loaded::Unusable(unusable),
        };
        (q, loaded)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(QUEUE_FILE)
    }

    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn waiting_since(&self) -> Option<Instant> {
        self.waiting_since
    }

    /// Adds an alert; returns how many of the oldest were dropped to stay within `max`.
    pub fn push(&mut self, alert: Alert) -> usize {
        self.waiting_since.get_or_insert_with(Instant::now);
        self.alerts.push_back((self.next_seq, alert));
        self.next_seq += 1;
        self.dirty = true;
        let over = self.alerts.len().saturating_sub(self.max);
        self.alerts.drain(..over);
        over
    }

    /// The oldest `n` alerts (a batch to send) and the sequence number of the last one.
    pub fn front(&self, n: usize) -> (u64, Vec<Alert>) {
        let batch: Vec<&(u64, Alert)> = self.alerts.iter().take(n).collect();
        let last = batch.last().map_or(0, |(seq, _)| *seq);
        (last, batch.into_iter().map(|(_, a)| a.clone()).collect())
    }

    /// Forgets every alert up to sequence number `last` (LAPI has them, or rejected them).
    pub fn remove_through(&mut self, last: u64) {
        while self.alerts.front().is_some_and(|(seq, _)| *seq <= last) {
            self.alerts.pop_front();
            self.dirty = true;
        }
        self.waiting_since = (!self.alerts.is_empty()).then(Instant::now);
    }

    /// Writes the queue file if it changed.
    pub fn save_if_dirty(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.save()?;
        }
        Ok(())
    }

    /// Writes the queue file (an empty queue removes it).
    pub fn save(&mut self) -> std::io::Result<()> {
        self.write()?;
        self.dirty = false;
        Ok(())
    }

    fn write(&self) -> std::io::Result<()> {
        if self.alerts.is_empty() {
            return match std::fs::remove_file(self.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        std::fs::create_dir_all(&self.dir)?;
        let list: Vec<&Alert> = self.alerts.iter().map(|(_, a)| a).collect();
        let text = serde_json::to_vec(&list).unwrap_or_default();
        state_file::write_atomic(&self.dir, QUEUE_FILE, &text)
    }
}

#[cfg(test)]
mod tests;
