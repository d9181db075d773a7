//! Version 1 of `bans.json`: numeric codes, addresses and networks in separate lists, fleet
//! notes apart. Read only, into today's records; nothing writes this version any more.

use std::net::IpAddr;

use serde::Deserialize;

use super::Saved;
use crate::bans::record::{BanRecord, FleetNote, Origin, OriginRules, Trigger};
use crate::net::cidr::Cidr;

#[derive(Deserialize)]
pub struct File {
    bans: Vec<Ban>,
    #[serde(default)]
    cidr_bans: Vec<Network>,
    #[serde(default)]
    fleet: Vec<Note>,
}

#[derive(Deserialize)]
struct Ban {
    addr: IpAddr,
    banned_at_ms: u64,
    expires_at_ms: Option<u64>,
    port: u16,
    proto: u8,
    scan_type: u8,
    origin: u8,
    drops: u64,
}

#[derive(Deserialize)]
struct Network {
    cidr: String,
    added_at_ms: u64,
    expires_at_ms: Option<u64>,
    #[serde(default = "manual")]
    origin: u8,
}

fn manual() -> u8 {
    Origin::Manual as u8
}

#[derive(Deserialize)]
struct Note {
    target: String,
    origin: String,
    scenario: String,
}

impl File {
    pub fn into_saved(self) -> Saved {
        // Indexed once: a lookup per ban, not a scan of the notes (with a `to_string` each).
        let notes: std::collections::HashMap<Cidr, &Note> = self
            .fleet
            .iter()
            .filter_map(|n| Some((n.target.parse::<Cidr>().ok()?, n)))
            .collect();
        let note = |t: &Cidr| {
            notes.get(t).map(|n| FleetNote {
                origin: n.origin.clone(),
                scenario: n.scenario.clone(),
            })
        };
        let mut bans: Vec<BanRecord> = self
            .bans
            .iter()
            .map(|b| {
                let target = Cidr::host(b.addr);
                let origin = Origin::from_code(b.origin);
                BanRecord {
                    target,
                    origin,
                    shadow: false,
                    since_ms: b.banned_at_ms,
                    expires_ms: b.expires_at_ms,
                    trigger: Trigger::from_kernel(b.proto, b.port, b.scan_type),
                    fleet: (origin == Origin::Fleet).then(|| note(&target)).flatten(),
                    drops: b.drops,
                    unverified: false,
                }
            })
            .collect();
        bans.extend(self.cidr_bans.iter().filter_map(|n| {
            let target: Cidr = n.cidr.parse().ok()?;
            let origin = Origin::from_code(n.origin);
            Some(BanRecord {
                target,
                origin,
                shadow: false,
                since_ms: n.added_at_ms,
                expires_ms: n.expires_at_ms,
                trigger: None,
                fleet: (origin == Origin::Fleet).then(|| note(&target)).flatten(),
                drops: 0,
                unverified: false,
            })
        }));
        Saved {
            bans,
            ..Saved::default()
        }
    }
}
