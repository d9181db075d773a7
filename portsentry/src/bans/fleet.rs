//! Fleet decisions through the ban book: one pulled update applied in bounded steps
//! ([`FleetBatch`]), networks written to the trie once per update, the precedence rules of
//! `bans/mod.rs` for each target (weighed a step at a time in `decide`). Nothing here is
//! quadratic: a step costs O(step × log n).
//!
//! Before a decision is weighed against local bans it is checked in the kernel's key space (an
//! IPv4-mapped range is IPv4) against the bogus ranges, the allowlist and the learned peers; a
//! decision touching any of them is refused, and a fleet ban it had made before is lifted.
//!
//! Here: the batch and its phases. What an update holds and the refusals are in `update`, the
//! learned peers the checks ask in `peers`, the weighing of each decision in `decide`.

mod decide;
mod peers;
mod update;

use std::collections::HashSet;

use self::peers::PeerSnapshot;
pub use self::{
    peers::{KernelPeers, PeerLookup, PeerSource},
    update::{FleetBan, FleetUpdate, Refusal},
};
use super::{BanBook, Origin};
use crate::{
    clock::Now,
    dataplane::{DataplaneError, Maps},
    net::cidr::Cidr,
};

/// Per-decision texts kept for the log; beyond this many only the count is (a community
/// blocklist at startup gets the summary line).
pub const DETAIL_MAX: usize = 21;
/// Decisions weighed and written per [`BanBook::apply_fleet_step`].
pub const STEP_DECISIONS: usize = 1024;

/// What one update did, for the log.
#[derive(Debug, Default)]
pub struct FleetApplied {
    /// The first [`DETAIL_MAX`] bans made: "TARGET for DURATION (ORIGIN: SCENARIO)".
    pub banned: Vec<String>,
    /// Bans made (all of them).
    pub banned_count: usize,
    pub renewed: usize,
    pub lifted: Vec<Cidr>,
    pub kept_local: usize,
    pub operator_unbanned: usize,
    /// Decisions refused by the checks above, with the reason.
    pub refused: Vec<(Cidr, Refusal)>,
    pub full: usize,
}

/// Where an update's application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Bans,
    Lifts,
    Networks,
}

/// One pulled update being applied a step at a time ([`BanBook::apply_fleet_step`]), so the
/// event loop serves probes, signals and the control socket between steps. Every step costs
/// O(step × log n): nothing in it scans the book or the kernel table.
#[derive(Debug)]
pub struct FleetBatch {
    update: FleetUpdate,
    phase: Phase,
    /// Next decision (in `update.bans`) or next lift (in `lifts`).
    next: usize,
    lifts: Vec<Cidr>,
    done: FleetApplied,
    networks_changed: bool,
    /// Networks banned by this update (a trie refusal takes them back).
    new_networks: HashSet<Cidr>,
    /// The address table refused a new fleet ban (nothing displaceable): the rest of the
    /// update's new addresses are counted as not enforced without trying each.
    table_full: bool,
    /// The learned peers the decisions are checked against (with a kernel that reads them in
    /// one batch; else one lookup per decision).
    peers: Option<PeerSnapshot>,
}

impl FleetBatch {
    pub fn new(update: FleetUpdate) -> Self {
        Self {
            update,
            phase: Phase::Bans,
            next: 0,
            lifts: Vec::new(),
            done: FleetApplied::default(),
            networks_changed: false,
            new_networks: HashSet::new(),
            table_full: false,
            peers: None,
        }
    }

    pub fn update(&self) -> &FleetUpdate {
        &self.update
    }

    /// Decisions weighed so far.
    pub fn applied(&self) -> usize {
        match self.phase {
            Phase::Bans => self.next,
            _ => self.update.bans.len(),
        }
    }

    /// A test of "does the update list this target": a binary search when the decisions are
    /// sorted by target (`classify` sorts them), else a set built once.
    fn listed(&self) -> impl Fn(&Cidr) -> bool + '_ {
        let key = |b: &FleetBan| (b.target.addr, b.target.prefix);
        let sorted = self.update.bans.is_sorted_by_key(key);
        let set: HashSet<Cidr> = if sorted {
            HashSet::new()
        } else {
            self.update.bans.iter().map(|b| b.target).collect()
        };
        move |t: &Cidr| {
            if sorted {
                self.update
                    .bans
                    .binary_search_by_key(&(t.addr, t.prefix), key)
                    .is_ok()
            } else {
                set.contains(t)
            }
        }
    }
}

impl BanBook {
    /// Enforces one pulled update at once (the CLI, tests). A `startup` update is the whole
    /// truth: fleet bans it does not list are lifted.
    /// Learned peers are PS_PEERS' entries current within `peer_ttl_ns` (the settings'
    /// `peer_memory`).
    pub fn apply_fleet(
        &mut self,
        maps: &mut Maps,
        update: &FleetUpdate,
        now: &Now,
        peer_ttl_ns: u64,
    ) -> Result<FleetApplied, DataplaneError> {
        let mut batch = FleetBatch::new(update.clone());
        let kernel = || PeerSource::Kernel { peer_ttl_ns };
        loop {
            if let Some(done) = self.apply_fleet_step(Some(maps), kernel(), &mut batch, now)? {
                return Ok(done);
            }
        }
    }

    /// [`Self::apply_fleet`] with the learned peers from `peers` and, without `maps`, on the
    /// book alone (tests).
    pub fn apply_fleet_with(
        &mut self,
        mut maps: Option<&mut Maps>,
        peers: &mut dyn PeerLookup,
        update: &FleetUpdate,
        now: &Now,
    ) -> Result<FleetApplied, DataplaneError> {
        let mut batch = FleetBatch::new(update.clone());
        loop {
            let peers = PeerSource::Given(&mut *peers);
            if let Some(done) =
                self.apply_fleet_step(maps.as_deref_mut(), peers, &mut batch, now)?
            {
                return Ok(done);
            }
        }
    }

    /// Applies the next [`STEP_DECISIONS`] decisions (or lifts) of `batch`; returns what the
    /// whole update did once it is finished. Learned peers come from `peers`.
    pub fn apply_fleet_step(
        &mut self,
        mut maps: Option<&mut Maps>,
        peers: PeerSource<'_>,
        batch: &mut FleetBatch,
        now: &Now,
    ) -> Result<Option<FleetApplied>, DataplaneError> {
        match batch.phase {
            Phase::Bans => {
                let end = (batch.next + STEP_DECISIONS).min(batch.update.bans.len());
                let range = batch.next..end;
                let bans = &batch.update.bans[range.clone()];
                let refusals = match (peers, maps.as_deref()) {
                    (PeerSource::Given(p), _) => self.fleet_refusals(bans, p)?,
                    (PeerSource::Kernel { peer_ttl_ns }, Some(m)) => {
                        if batch.peers.as_ref().is_none_or(|s| !s.is_fresh()) {
                            batch.peers = PeerSnapshot::read(m, now, peer_ttl_ns)?;
                        }
                        match &batch.peers {
                            Some(snapshot) => self.fleet_refusals(bans, &mut &*snapshot)?,
                            None => {
                                let mut p = KernelPeers::new(m, now, peer_ttl_ns);
                                self.fleet_refusals(bans, &mut p)?
                            }
                        }
                    }
                    (PeerSource::Kernel { .. }, None) => {
                        self.fleet_refusals(bans, &mut Vec::new())?
                    }
                };
                let mut fresh = Vec::new();
                for (i, refusal) in range.zip(refusals) {
                    self.apply_decision(maps.as_deref_mut(), batch, i, refusal, now, &mut fresh)?;
                }
                if let Some(m) = maps.as_deref_mut() {
                    self.write_fresh_hosts(m, batch, &fresh, now)?;
                }
                batch.next = end;
                if end == batch.update.bans.len() {
                    batch.phase = Phase::Lifts;
                    batch.next = 0;
                    batch.lifts = self.fleet_lifts(batch);
                }
                Ok(None)
            }
            Phase::Lifts => {
                let end = (batch.next + STEP_DECISIONS).min(batch.lifts.len());
                for i in batch.next..end {
                    let t = batch.lifts[i];
                    if self
                        .records
                        .get(&t)
                        .is_some_and(|r| r.origin == Origin::Fleet)
                    {
                        self.lift(maps.as_deref_mut(), &t, now, false)?;
                        batch.networks_changed |= !t.is_host();
                        batch.done.lifted.push(t);
                    }
                }
                batch.next = end;
                if end == batch.lifts.len() {
                    batch.phase = Phase::Networks;
                }
                Ok(None)
            }
            Phase::Networks => {
                if let (true, Some(maps)) = (batch.networks_changed, maps) {
                    for refused in self.sync_networks(maps, now)? {
                        if self
                            .records
                            .get(&refused)
                            .is_some_and(|r| r.origin == Origin::Fleet)
                        {
                            self.records.remove(&refused);
                            if batch.new_networks.remove(&refused) {
                                batch.done.banned_count = batch.done.banned_count.saturating_sub(1);
                                let prefix = format!("{refused} ");
                                batch.done.banned.retain(|b| !b.starts_with(&prefix));
                            }
                            batch.done.full += 1;
                        }
                    }
                }
                Ok(Some(std::mem::take(&mut batch.done)))
            }
        }
    }
}

#[cfg(test)]
mod tests;
