//! Fleet decisions through the ban book: one pulled update applied in bounded steps
//! ([`FleetBatch`]), networks written to the trie once per update, the precedence rules of
//! `bans/mod.rs` for each target. Nothing here is quadratic: a step costs O(step × log n).
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

use super::{BanBook, BanOutcome, NewBan, Origin};
use crate::{
    clock::Now,
    dataplane::{DataplaneError, Maps},
    net::{
        bogus,
        cidr::{self, Cidr},
    },
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

    /// The targets an update lifts: its deletions and, for a `startup` update, every fleet ban
    /// it does not list. Sorted, without duplicates.
    fn fleet_lifts(&self, batch: &FleetBatch) -> Vec<Cidr> {
        let mut lift: Vec<Cidr> = batch.update.lifted.clone();
        if batch.update.startup {
            let listed = batch.listed();
            lift.extend(
                self.records
                    .values()
                    .filter(|r| r.origin == Origin::Fleet && !listed(&r.target))
                    .map(|r| r.target),
            );
        }
        lift.sort();
        lift.dedup();
        lift
    }

    /// The refusal of each decision of `bans`, checked in order: allowlist, bogus range,
    /// learned peer. Each network's key range is computed once per call, so a decision costs
    /// a few comparisons per allow entry and bogus range.
    fn fleet_refusals(
        &self,
        bans: &[FleetBan],
        peers: &mut dyn PeerLookup,
    ) -> Result<Vec<Option<Refusal>>, DataplaneError> {
        let ranges = |nets: &mut dyn Iterator<Item = Cidr>| -> Vec<(u128, u128, Cidr)> {
            nets.map(|c| {
                let (first, last) = c.key_range();
                (first, last, c)
            })
            .collect()
        };
        let allow = ranges(&mut self.allow.iter().copied());
        let bogus = ranges(&mut bogus::ranges());
        // Two networks share an address exactly when their key ranges meet (one holds the
        // other): `Cidr::overlaps`.
        let meeting = |list: &[(u128, u128, Cidr)], (first, last): (u128, u128)| {
            list.iter()
                .find(|(f, l, _)| *f <= last && first <= *l)
                .map(|(_, _, c)| *c)
        };
        bans.iter()
            .map(|ban| {
                let t = &ban.target;
                let range = t.key_range();
                if let Some(a) = meeting(&allow, range) {
                    return Ok(Some(Refusal::Allowlisted(a)));
                }
                if let Some(r) = meeting(&bogus, range) {
                    return Ok(Some(Refusal::Bogus(r)));
                }
                Ok(peers.peer_within(t)?.map(Refusal::LearnedPeer))
            })
            .collect()
    }

    /// Weighs and enforces decision `i` of `batch`. A fresh address ban (no record before)
    /// is recorded and, with `maps`, left in `fresh` for [`Self::write_fresh_hosts`], which
    /// writes the step's fresh bans together; everything else is written here.
    fn apply_decision(
        &mut self,
        maps: Option<&mut Maps>,
        batch: &mut FleetBatch,
        i: usize,
        refusal: Option<Refusal>,
        now: &Now,
        fresh: &mut Vec<usize>,
    ) -> Result<(), DataplaneError> {
        let ban = &batch.update.bans[i];
        let done = &mut batch.done;
        if let Some(why) = refusal {
            // A fleet ban made before the check knew better (an older version, a peer learned
            // since) goes too.
            if self
                .records
                .get(&ban.target)
                .is_some_and(|r| r.origin == Origin::Fleet)
            {
                self.lift(maps, &ban.target, now, false)?;
                batch.networks_changed |= !ban.target.is_host();
            }
            done.refused.push((ban.target, why));
            return Ok(());
        }
        let known = self.records.contains_key(&ban.target);
        if batch.table_full && ban.target.is_host() && !known {
            done.full += 1;
            return Ok(());
        }
        // The TTL LAPI gives now, whatever was enforced before: every pull re-asserts it.
        let expires_ms = now
            .unix_ms
            .saturating_add(u64::try_from(ban.remaining.as_millis()).unwrap_or(u64::MAX));
        let new = NewBan {
            target: ban.target,
            origin: Origin::Fleet,
            shadow: false,
            expires_ms: Some(expires_ms),
            trigger: None,
            fleet: Some(super::FleetNote {
                origin: ban.origin.to_string(),
                scenario: ban.scenario.to_string(),
            }),
            unverified: false,
        };
        if ban.target.is_host() && !known && maps.is_some() {
            // The allowlist and bogus ranges were checked with the refusals of this step.
            match self.record_ban(new, now, true) {
                Ok(_) => fresh.push(i),
                Err(refused) => Self::count_outcome(batch, i, refused),
            }
            return Ok(());
        }
        let outcome = self.ban_one(maps, new, now, false)?;
        Self::count_outcome(batch, i, outcome);
        Ok(())
    }

    /// Counts what decision `i` of `batch` led to.
    fn count_outcome(batch: &mut FleetBatch, i: usize, outcome: BanOutcome) {
        let ban = &batch.update.bans[i];
        let done = &mut batch.done;
        match outcome {
            BanOutcome::Banned => {
                if !ban.target.is_host() {
                    batch.networks_changed = true;
                    batch.new_networks.insert(ban.target);
                }
                done.banned_count += 1;
                if done.banned.len() < DETAIL_MAX {
                    done.banned.push(format!(
                        "{} for {} ({}: {})",
                        ban.target,
                        humantime::format_duration(Duration::from_secs(ban.remaining.as_secs())),
                        ban.origin,
                        ban.scenario
                    ));
                }
            }
            BanOutcome::Renewed => done.renewed += 1,
            BanOutcome::Allowlisted(a) => done.refused.push((ban.target, Refusal::Allowlisted(a))),
            BanOutcome::Bogus(r) => done.refused.push((ban.target, Refusal::Bogus(r))),
            BanOutcome::KeptLocal => done.kept_local += 1,
            BanOutcome::OperatorUnbanned => done.operator_unbanned += 1,
            BanOutcome::TableFull => {
                batch.table_full |= ban.target.is_host();
                done.full += 1;
            }
        }
    }

    /// Writes the fresh address bans of one step (decisions `fresh` of `batch`, recorded by
    /// [`Self::apply_decision`]) into the kernel: all their prefilter bits, then their
    /// entries, in one call each where the kernel can ([`Maps::insert_bans`]). An address the
    /// kernel holds without a record (its own ban whose event is still queued) is replaced and
    /// its drop counter starts over. Where the table is full, room is made as for a single ban
    /// ([`BanBook::write_host_making_room`]); when none can be, that address and the rest of
    /// the update's fresh addresses are not enforced and their records go.
    fn write_fresh_hosts(
        &mut self,
        maps: &mut Maps,
        batch: &mut FleetBatch,
        fresh: &[usize],
        now: &Now,
    ) -> Result<(), DataplaneError> {
        // Each fresh target was recorded just before; one without a record (never) is left
        // out rather than written as a default, never-expiring entry.
        let fresh: Vec<usize> = fresh
            .iter()
            .copied()
            .filter(|i| self.records.contains_key(&batch.update.bans[*i].target))
            .collect();
        let targets: Vec<Cidr> = fresh.iter().map(|i| batch.update.bans[*i].target).collect();
        let keys: Vec<_> = targets.iter().map(Cidr::key).collect();
        let entries: Vec<_> = targets
            .iter()
            .filter_map(|t| self.records.get(t).map(|r| r.to_entry(now, r.drops)))
            .collect();
        let mut next = 0;
        while next < fresh.len() {
            if batch.table_full {
                for t in &targets[next..] {
                    self.records.remove(t);
                    batch.done.full += 1;
                }
                break;
            }
            let written = next + maps.insert_bans(&keys[next..], &entries[next..])?;
            for i in &fresh[next..written] {
                self.count_made(Origin::Fleet);
                Self::count_outcome(batch, *i, BanOutcome::Banned);
            }
            next = written;
            if let Some(t) = targets.get(next) {
                // The table was full at this one.
                let outcome = if self.write_host_making_room(maps, t, now)? {
                    self.count_made(Origin::Fleet);
                    BanOutcome::Banned
                } else {
                    self.records.remove(t);
                    BanOutcome::TableFull
                };
                Self::count_outcome(batch, fresh[next], outcome);
                next += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a/p` with host bits cleared; an IPv4-mapped network becomes the IPv4 one.
    fn net(s: &str) -> Cidr {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.parse().unwrap();
        let p = p.parse().unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        Cidr::masked(addr, p).unwrap()
    }

    /// The refusal checks compare precomputed key ranges; they must refuse exactly what
    /// `Cidr::overlaps` does, in the same order (first allow entry, then first bogus range).
    #[test]
    fn range_refusals_match_the_overlap_rule() {
        let store = super::super::StateStore::new(std::path::Path::new("/nonexistent"));
        let (mut book, _) = BanBook::open(
            store,
            super::super::Saved::default(),
            None,
            None,
            false,
            &Now::read(),
        )
        .unwrap();
        let allow = [
            net("192.0.2.0/24"),
            net("198.51.100.7"),
            net("2001:db8::/48"),
            net("::ffff:203.0.113.0/120"),
        ];
        book.set_allowlist(None, &allow, &Now::read()).unwrap();
        let targets = [
            "192.0.2.9",
            "192.0.0.0/16",
            "192.0.3.0/24",
            "198.51.100.7",
            "198.51.100.0/31",
            "198.51.100.8",
            "203.0.113.200",
            "2001:db8::1",
            "2001:db8:1::/48",
            "2001:db8::/32",
            "::ffff:0:0/96",
            "0.0.0.0/0",
            "::/0",
            "127.0.0.1",
            "126.0.0.0/7",
            "224.1.2.3",
            "::1",
            "::/96",
            "::2",
            "ff02::1",
            "8.8.8.8",
            "2a00::1",
        ];
        let bans: Vec<FleetBan> = targets
            .iter()
            .map(|t| FleetBan {
                target: net(t),
                remaining: Duration::from_secs(60),
                origin: "t".into(),
                scenario: "t".into(),
            })
            .collect();
        let got = book.fleet_refusals(&bans, &mut Vec::new()).unwrap();
        for (ban, got) in bans.iter().zip(got) {
            let t = &ban.target;
            let want = allow
                .iter()
                .find(|a| a.overlaps(t))
                .map(|a| Refusal::Allowlisted(*a))
                .or_else(|| bogus::overlapping(t).map(Refusal::Bogus));
            assert_eq!(got, want, "{t}");
        }
    }
}
