//! Fleet decisions through the ban book: one pulled update applied in bounded steps
//! ([`FleetBatch`]), networks written to the trie once per update, the precedence rules of
//! `bans/mod.rs` for each target (weighed a step at a time in `decide`). Nothing here is
//! quadratic: a step costs O(step × log n).
//!
//! Before a decision is weighed against local bans it is checked in the kernel's key space (an
//! IPv4-mapped range is IPv4) against the bogus ranges, the allowlist and the learned peers; a
//! decision touching any of them is refused, and a fleet ban it had made before is lifted.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{BanBook, Origin};
use crate::{
    clock::Now,
    dataplane::{DataplaneError, Maps},
    net::cidr::{self, Cidr},
};

/// A ban decision to enforce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetBan {
    pub target: Cidr,
    pub remaining: Duration,
    /// Who decided: `cscli`, `crowdsec`, `CAPI`, `portsentry`, … (one shared copy per text).
    pub origin: Arc<str>,
    pub scenario: Arc<str>,
}

/// One pull from the fleet, classified (`fleet::crowdsec::decisions` reads LAPI's answer into
/// it): what the book weighs and applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetUpdate {
    /// The full state (first pull of this process, or a resync after an error): every fleet ban
    /// not listed in `bans` is stale.
    pub startup: bool,
    pub bans: Vec<FleetBan>,
    pub lifted: Vec<Cidr>,
    /// Decisions not enforced, by reason (`captcha/Ip`, `ban/Country`, `bad value`, `expired`).
    pub ignored: BTreeMap<String, usize>,
}

impl FleetUpdate {
    pub fn is_empty(&self) -> bool {
        !self.startup && self.bans.is_empty() && self.lifted.is_empty() && self.ignored.is_empty()
    }
}

/// Why a fleet decision is not enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It reaches into this bogus range.
    Bogus(Cidr),
    /// It overlaps this allow entry (own address, gateway, resolver, LAPI host, `allow`, …).
    Allowlisted(Cidr),
    /// It covers this learned peer, a host this one has really talked to.
    LearnedPeer(IpAddr),
}

impl Refusal {
    /// The reason's name, as counted in `status`.
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::Bogus(_) => "bogus",
            Refusal::Allowlisted(_) => "allowlisted",
            Refusal::LearnedPeer(_) => "learned_peer",
        }
    }
}

impl Refusal {
    /// Why, as a clause of a log line.
    pub fn explain(&self) -> String {
        match self {
            Refusal::Bogus(_) => format!("it reaches into the {self} (no real peer is there)"),
            Refusal::Allowlisted(a) if a.is_host() => {
                format!("it covers the {self}; the fleet must not cut this host off")
            }
            Refusal::Allowlisted(_) => {
                format!("it overlaps the {self}; the fleet must not cut this host off")
            }
            Refusal::LearnedPeer(_) => format!(
                "it covers the {self}, a host this one talks to (a forged scan in its name must not cut it off)"
            ),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Bogus(r) => write!(f, "bogus range {r}"),
            Refusal::Allowlisted(a) if a.is_host() => write!(f, "allowlisted host {a}"),
            Refusal::Allowlisted(a) => write!(f, "allowlisted network {a}"),
            Refusal::LearnedPeer(p) => write!(f, "learned peer {p}"),
        }
    }
}

/// Learned peers (PS_PEERS), as fleet decisions are checked against them.
pub trait PeerLookup {
    /// A current learned peer inside `target`, if any.
    fn peer_within(&mut self, target: &Cidr) -> Result<Option<IpAddr>, DataplaneError>;
}

/// A fixed list of peers (tests, and callers without a kernel).
impl PeerLookup for Vec<IpAddr> {
    fn peer_within(&mut self, target: &Cidr) -> Result<Option<IpAddr>, DataplaneError> {
        Ok(self.iter().copied().find(|p| target.contains(*p)))
    }
}

/// PS_PEERS read on demand: one lookup per address decision, and for network decisions one
/// pass over the table (current peers only, sorted in key space, then binary-searched).
pub struct KernelPeers<'a> {
    maps: &'a Maps,
    now_boot_ns: u64,
    ttl_ns: u64,
    sorted: Option<Vec<u128>>,
}

impl<'a> KernelPeers<'a> {
    pub fn new(maps: &'a Maps, now: &Now) -> Result<Self, DataplaneError> {
        Ok(Self {
            maps,
            now_boot_ns: now.boot_ns,
            ttl_ns: maps.config()?.peer_ttl_ns,
            sorted: None,
        })
    }
}

/// A peer this host contacted itself (a host it depends on), seen within `peer_memory`. A
/// client that only contacted us does not count: anyone can become one first, and the fleet
/// must still be able to ban it.
fn depends_on(p: &portsentry_common::PeerEntry, now: u64, ttl: u64) -> bool {
    p.ways & portsentry_common::peer_ways::OUTBOUND != 0 && p.is_current(now, ttl)
}

impl PeerLookup for KernelPeers<'_> {
    fn peer_within(&mut self, target: &Cidr) -> Result<Option<IpAddr>, DataplaneError> {
        let (now, ttl) = (self.now_boot_ns, self.ttl_ns);
        if target.is_host() {
            return Ok(self
                .maps
                .peer(target.addr)?
                .filter(|p| depends_on(p, now, ttl))
                .map(|_| target.addr));
        }
        if self.sorted.is_none() {
            let peers = self.maps.peers()?;
            self.sorted = Some(sorted_peer_keys(peers, now, ttl));
        }
        Ok(first_within(
            self.sorted.as_deref().unwrap_or_default(),
            target,
        ))
    }
}

/// The key-space addresses of the current peers of `peers` this host depends on, sorted.
fn sorted_peer_keys(
    peers: Vec<(IpAddr, portsentry_common::PeerEntry)>,
    now: u64,
    ttl: u64,
) -> Vec<u128> {
    let mut keys: Vec<u128> = peers
        .into_iter()
        .filter(|(_, p)| depends_on(p, now, ttl))
        .map(|(a, _)| u128::from_be_bytes(cidr::addr_key(a).addr))
        .collect();
    keys.sort_unstable();
    keys
}

/// The first of the sorted key-space addresses `keys` inside `target`.
fn first_within(keys: &[u128], target: &Cidr) -> Option<IpAddr> {
    let (first, last) = target.key_range();
    let i = keys.partition_point(|k| *k < first);
    keys.get(i).filter(|k| **k <= last).map(|k| {
        cidr::key_addr(&portsentry_common::AddrKey {
            addr: k.to_be_bytes(),
        })
    })
}

/// PS_PEERS as read at one moment (one batch lookup), for the decisions of the next steps.
#[derive(Debug)]
struct PeerSnapshot {
    taken: Instant,
    keys: Vec<u128>,
}

impl PeerLookup for &PeerSnapshot {
    fn peer_within(&mut self, target: &Cidr) -> Result<Option<IpAddr>, DataplaneError> {
        Ok(first_within(&self.keys, target))
    }
}

/// A peer snapshot serves the steps of an update for this long, then is read again: a peer
/// learned meanwhile is protected from the decisions weighed after that (as it is from every
/// decision that LAPI sends later), and a large table costs one read per interval, not one
/// lookup per decision.
const PEER_SNAPSHOT_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(250);

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
    pub fn apply_fleet(
        &mut self,
        maps: &mut Maps,
        update: &FleetUpdate,
        now: &Now,
    ) -> Result<FleetApplied, DataplaneError> {
        let mut batch = FleetBatch::new(update.clone());
        loop {
            if let Some(done) = self.apply_fleet_step(Some(maps), None, &mut batch, now)? {
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
            if let Some(done) =
                self.apply_fleet_step(maps.as_deref_mut(), Some(&mut *peers), &mut batch, now)?
            {
                return Ok(done);
            }
        }
    }

    /// Applies the next [`STEP_DECISIONS`] decisions (or lifts) of `batch`; returns what the
    /// whole update did once it is finished. Learned peers come from `peers`, else from the
    /// kernel's PS_PEERS (with `maps`).
    pub fn apply_fleet_step(
        &mut self,
        mut maps: Option<&mut Maps>,
        peers: Option<&mut dyn PeerLookup>,
        batch: &mut FleetBatch,
        now: &Now,
    ) -> Result<Option<FleetApplied>, DataplaneError> {
        match batch.phase {
            Phase::Bans => {
                let end = (batch.next + STEP_DECISIONS).min(batch.update.bans.len());
                let range = batch.next..end;
                let refusals = match (peers, maps.as_deref()) {
                    (Some(p), _) => self.fleet_refusals(&batch.update.bans[range.clone()], p)?,
                    (None, Some(m)) => {
                        let mut p = KernelPeers::new(m, now)?;
                        if batch
                            .peers
                            .as_ref()
                            .is_none_or(|s| s.taken.elapsed() >= PEER_SNAPSHOT_MAX_AGE)
                        {
                            batch.peers = m.peers_batch()?.map(|peers| PeerSnapshot {
                                taken: Instant::now(),
                                keys: sorted_peer_keys(peers, p.now_boot_ns, p.ttl_ns),
                            });
                        }
                        let bans = &batch.update.bans[range.clone()];
                        match &batch.peers {
                            Some(snapshot) => self.fleet_refusals(bans, &mut &*snapshot)?,
                            None => self.fleet_refusals(bans, &mut p)?,
                        }
                    }
                    (None, None) => {
                        self.fleet_refusals(&batch.update.bans[range.clone()], &mut Vec::new())?
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

mod decide;

#[cfg(test)]
mod tests;
