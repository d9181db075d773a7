//! The ban book: the one owner of every ban (addresses and networks, every origin), and the
//! only code that writes PS_BANS, PS_BAN_CIDRS, the banned-network count in PS_CONFIG (through
//! the maps' one config writer, `Maps::set_ban_cidr_count`) and `bans.json`. The daemon, the CLI verbs (without a daemon) and fleet mode all go through it.
//!
//! The precedence rules (allowlist and bogus ranges, the operator's unban, local bans, the
//! fleet) are in `precedence`, written there once.
//!
//! Detect mode makes *shadow* bans: recorded, listed and persisted, never dropped, in any mode,
//! until `promote-shadow`. Under table pressure an unverified detected ban gives way first, then
//! the detected ban silent longest (its drop counter still since it was banned: a forged
//! source never sends again, a real scanner keeps hitting the drop); manual and fleet bans are
//! never displaced.
//!
//! Here: the types, the book's accessors and saving. Banning, unbanning, the allowlist and
//! promotion under the precedence rules are in `precedence`, opening in `open`, keeping the
//! kernel in step in `kernel`, table pressure in `pressure`, fleet updates in `fleet`, repeat
//! offenders' history and TTLs in `recidive`, the file in `store`, copies of the book for a
//! writer on another thread in `snapshot`.
//!
//! Must not touch: the allowlist trie and guarded ports (daemon), hooks, logging.

mod fleet;
mod kernel;
pub mod notice;
mod open;
mod precedence;
mod pressure;
pub mod recidive;
pub mod record;
mod snapshot;
pub mod store;

use std::collections::BTreeMap;

pub use fleet::{
    FleetApplied, FleetBan, FleetBatch, FleetUpdate, KernelPeers, PeerLookup, PeerSource, Refusal,
    DETAIL_MAX,
};
pub use kernel::Sweep;
pub use notice::BanNotice;
pub use open::Opened;
pub use pressure::MadeRoom;
pub use recidive::{Offence, RecidivePolicy, Repeat};
pub use record::{BanRecord, FleetNote, Origin, OriginRules, Trigger};
pub use snapshot::Snapshot;
pub use store::{Saved, StateError, StateStore, Unbanned};

use crate::{
    dataplane::DataplaneError,
    net::cidr::{self, Cidr},
};

/// A ban to make.
#[derive(Clone, Debug)]
pub struct NewBan {
    pub target: Cidr,
    pub origin: Origin,
    pub shadow: bool,
    pub expires_ms: Option<u64>,
    pub trigger: Option<Trigger>,
    pub fleet: Option<FleetNote>,
    /// The path check could not decide (a detected ban only).
    pub unverified: bool,
}

/// What `ban` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanOutcome {
    Banned,
    /// The target was banned already; the record now carries the new expiry.
    Renewed,
    /// Refused: this allow entry covers (or, for the fleet, overlaps) the target.
    Allowlisted(Cidr),
    /// Refused: the target lies in this bogus range (for the fleet: reaches into it).
    Bogus(Cidr),
    /// Refused for the fleet: a local ban of the target stands.
    KeptLocal,
    /// Refused for the fleet: the operator unbanned this target.
    OperatorUnbanned,
    /// Refused: no room in the kernel table, even after reclaiming.
    TableFull,
}

type Result<T> = std::result::Result<T, DataplaneError>;

fn origin_index(origin: Origin) -> usize {
    Origin::ALL.iter().position(|o| *o == origin).unwrap_or(0)
}

pub struct BanBook {
    records: BTreeMap<Cidr, BanRecord>,
    /// Operator's unbans: target → until (Unix ms).
    unbanned: BTreeMap<Cidr, u64>,
    allow: Vec<Cidr>,
    store: StateStore,
    dirty: bool,
    /// Bans made since the book was opened, by origin (indexed by the origin's position in
    /// `Origin::ALL`); renewals are not counted.
    made: [u64; Origin::COUNT],
    /// Repeat offenders: per source, bans in a row and the last one (`recidive`).
    history: recidive::History,
    /// The order address bans give way in when the kernel table is full (`pressure`).
    pressure: pressure::Displacement,
}

impl BanBook {
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    pub fn records(&self) -> impl Iterator<Item = &BanRecord> {
        self.records.values()
    }

    pub fn get(&self, target: &Cidr) -> Option<&BanRecord> {
        self.records.get(target)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn shadow_count(&self) -> usize {
        self.records.values().filter(|r| r.shadow).count()
    }

    /// Bans of `origin` made since the book was opened (renewals not counted).
    pub fn made(&self, origin: Origin) -> u64 {
        self.made[origin_index(origin)]
    }

    /// The single-address bans inside `network` (a range of the ordered book, not a scan).
    pub fn hosts_in<'a>(&'a self, network: &Cidr) -> impl Iterator<Item = &'a BanRecord> + 'a {
        // The network's key range, back in its own family (IPv4 keys are IPv4-mapped).
        let (first, last) = match Cidr::masked(network.addr, network.prefix) {
            Some(n) => n.key_range(),
            None => {
                let k = u128::from_be_bytes(network.key().addr);
                (k, k)
            }
        };
        let addr = |k: u128| {
            cidr::key_addr(&portsentry_common::AddrKey {
                addr: k.to_be_bytes(),
            })
        };
        let (first, last) = (addr(first), addr(last));
        let low = Cidr {
            addr: first,
            prefix: 0,
        };
        let high = Cidr {
            addr: last,
            prefix: u8::MAX,
        };
        let network = *network;
        self.records
            .range(low..=high)
            .map(|(_, r)| r)
            .filter(move |r| r.target.is_host() && network.covers(&r.target))
    }

    /// Entries of the allowlist the book enforces (configured plus automatic).
    pub fn allow_len(&self) -> usize {
        self.allow.len()
    }

    fn count_made(&mut self, origin: Origin) {
        let n = &mut self.made[origin_index(origin)];
        *n = n.saturating_add(1);
    }

    /// Writes the book to `bans.json`: one pass over the records, straight into the file.
    pub fn save(&mut self) -> std::result::Result<(), StateError> {
        let unbanned = self.unbanned_list();
        let history = self.history.to_saved();
        self.store
            .save_records(self.records.values(), &unbanned, &history)?;
        self.dirty = false;
        Ok(())
    }

    pub(super) fn unbanned_list(&self) -> Vec<Unbanned> {
        self.unbanned
            .iter()
            .map(|(t, until)| Unbanned {
                target: *t,
                until_ms: *until,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
