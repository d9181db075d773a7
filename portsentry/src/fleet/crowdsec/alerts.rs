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
mod tests {
    use super::*;
    use crate::detect::events::Protocol;

    fn ban(ip: &str) -> BanNotice {
        BanNotice {
            source: ip.parse().unwrap(),
            dst_port: 111,
            protocol: Protocol::Tcp,
            scan: "TCP SYN/Normal scan".into(),
            probes: 3,
            enforced: true,
            shareable: true,
            verified: true,
            ttl: Some(Duration::from_secs(86_400)),
            interface: "eth0".into(),
            at: "2026-11-25T09:16:34.032Z".parse().unwrap(),
        }
    }

    #[test]
    fn alert_has_every_field_lapi_requires() {
        let a = Alert::from_ban(&ban("2001:db8::7"), "portsentry/port-scan", "host-a");
        let v = serde_json::to_value(&a).unwrap();
        for k in [
            "scenario",
            "scenario_hash",
            "scenario_version",
            "message",
            "events_count",
            "start_at",
            "stop_at",
            "capacity",
            "leakspeed",
            "simulated",
            "events",
            "source",
        ] {
            assert!(!v[k].is_null(), "{k} missing: {v}");
        }
        let d = &v["decisions"][0];
        assert_eq!(d["duration"], "86400s");
        assert_eq!(d["type"], "ban");
        assert_eq!(d["scope"], "Ip");
        assert_eq!(d["value"], "2001:db8::7");
        assert_eq!(d["origin"], "portsentry");
        assert_eq!(v["events_count"], 3);
        assert_eq!(v["simulated"], false);
        assert!(v["events"][0]["meta"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"key": "dst_port", "value": "111"})));
        let unenforced = BanNotice {
            enforced: false,
            ttl: None,
            ..ban("10.0.0.9")
        };
        let a = Alert::from_ban(&unenforced, "x/y", "h");
        assert!(a.simulated);
        assert_eq!(a.decisions[0].duration, "315360000s");
    }

    #[test]
    fn alert_payload_is_pinned() {
        // The whole body, byte for byte: LAPI and the scenarios downstream parse all of it.
        let a = Alert::from_ban(&ban("2001:db8::7"), "portsentry/port-scan", "host-a");
        let want = concat!(
            r#"{"scenario":"portsentry/port-scan","scenario_hash":"","#,
            r#""scenario_version":""#,
            env!("CARGO_PKG_VERSION"),
            r#"","message":"portsentry on host-a: 2001:db8::7 probed TCP/111 (TCP SYN/Normal scan) and was banned""#,
            r#","events_count":3,"start_at":"2026-11-25T09:16:34.032Z","stop_at":"2026-11-25T09:16:34.032Z","capacity":0,"leakspeed":"0s","simulated":false,"remediation":true"#,
            r#","events":[{"timestamp":"2026-11-25T09:16:34.032Z","meta":["#,
            r#"{"key":"source_ip","value":"2001:db8::7"},{"key":"dst_port","value":"111"},{"key":"proto","value":"tcp"},"#,
            r#"{"key":"scan_type","value":"TCP SYN/Normal scan"},{"key":"interface","value":"eth0"},"#,
            r#"{"key":"machine","value":"host-a"},{"key":"service","value":"portsentry"},{"key":"log_type","value":"portsentry_ban"}]}]"#,
            r#","source":{"scope":"Ip","value":"2001:db8::7","ip":"2001:db8::7"}"#,
            r#","decisions":[{"duration":"86400s","type":"ban","scope":"Ip","value":"2001:db8::7","#,
            r#""origin":"portsentry","scenario":"portsentry/port-scan"}]}"#,
        );
        assert_eq!(serde_json::to_string(&a).unwrap(), want);
    }

    #[test]
    fn queue_is_bounded_persisted_and_survives_garbage() {
        let dir = std::env::temp_dir().join(format!("ps-cs-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut q, loaded) = AlertQueue::load(&dir, 3);
        assert!(matches!(loaded, Loaded::Fresh));
        for i in 1..=5 {
            let dropped = q.push(Alert::from_ban(&ban(&format!("10.0.0.{i}")), "s", "h"));
            assert_eq!(dropped, usize::from(i > 3));
        }
        let (last, batch) = q.front(2);
        assert_eq!(batch[0].source.value, "10.0.0.3", "the oldest went first");
        // While that batch is in flight, a new alert pushes 10.0.0.3 out of the bound.
        q.push(Alert::from_ban(&ban("10.0.0.6"), "s", "h"));
        q.remove_through(last);
        let (_, rest) = q.front(5);
        let rest: Vec<&str> = rest.iter().map(|a| a.source.value.as_str()).collect();
        assert_eq!(
            rest,
            ["10.0.0.5", "10.0.0.6"],
            "exactly the sent ones are gone"
        );
        assert!(q.is_dirty());
        q.save().unwrap();
        assert!(!q.is_dirty());
        let (mut again, loaded) = AlertQueue::load(&dir, 3);
        assert!(matches!(loaded, Loaded::Restored(2)));
        let (last, _) = again.front(5);
        again.remove_through(last);
        assert!(again.is_empty());
        again.save().unwrap();
        assert!(!again.path().exists(), "an empty queue leaves no file");
        // Garbage is kept aside byte for byte through `state_file`, with the line every
        // state file gets.
        std::fs::write(again.path(), "{not json").unwrap();
        let (q, loaded) = AlertQueue::load(&dir, 3);
        assert!(q.is_empty());
        let Loaded::Unusable(unusable) = loaded else {
            panic!("garbage must be kept aside");
        };
        let crate::state_file::Kept::Aside(moved) = &unusable.kept else {
            panic!("{unusable:?}");
        };
        assert_eq!(std::fs::read_to_string(moved).unwrap(), "{not json");
        assert!(moved
            .to_string_lossy()
            .contains("crowdsec-alerts.json.corrupt-"));
        let line = unusable.line(STARTS_WITHOUT);
        let head = format!(
            "portsentry: error: {}: not a portsentry CrowdSec alert queue (",
            q.path().display()
        );
        let tail = format!("); kept aside as {}; {STARTS_WITHOUT}", moved.display());
        assert!(line.starts_with(&head) && line.ends_with(&tail), "{line}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
