//! Fleet decisions through the ban book: one pulled update applied in one pass, networks
//! written to the trie once per update, the precedence rules of `bans/mod.rs` for each target.
//!
//! Before a decision is weighed against local bans it is checked in the kernel's key space (an
//! IPv4-mapped range is IPv4) against the bogus ranges, the allowlist and the learned peers; a
//! decision touching any of them is refused, and a fleet ban it had made before is lifted.

use std::{collections::HashSet, fmt, net::IpAddr, time::Duration};

use super::{BanBook, BanOutcome, NewBan, Origin};
use crate::{
    clock::Now,
    dataplane::{peer_is_current, DataplaneError, Maps},
    fleet::crowdsec::decisions::FleetUpdate,
    net::{
        bogus,
        cidr::{self, Cidr},
    },
};

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
    p.ways & portsentry_common::peer_ways::OUTBOUND != 0 && peer_is_current(p, now, ttl)
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
            let mut keys: Vec<u128> = self
                .maps
                .peers()?
                .into_iter()
                .filter(|(_, p)| depends_on(p, now, ttl))
                .map(|(a, _)| u128::from_be_bytes(cidr::addr_key(a).addr))
                .collect();
            keys.sort_unstable();
            self.sorted = Some(keys);
        }
        let keys = self.sorted.as_deref().unwrap_or_default();
        let (first, last) = target.key_range();
        let i = keys.partition_point(|k| *k < first);
        Ok(keys.get(i).filter(|k| **k <= last).map(|k| {
            cidr::key_addr(&portsentry_common::AddrKey {
                addr: k.to_be_bytes(),
            })
        }))
    }
}

/// What one update did, for the log.
#[derive(Debug, Default)]
pub struct FleetApplied {
    /// "TARGET for DURATION (ORIGIN: SCENARIO)"
    pub banned: Vec<String>,
    pub renewed: usize,
    pub lifted: Vec<Cidr>,
    pub kept_local: usize,
    pub operator_unbanned: usize,
    /// Decisions refused by the checks above, with the reason.
    pub refused: Vec<(Cidr, Refusal)>,
    pub full: usize,
}

impl BanBook {
    /// Enforces one pulled update. A `startup` update is the whole truth: fleet bans it does
    /// not list are lifted.
    pub fn apply_fleet(
        &mut self,
        maps: &mut Maps,
        update: &FleetUpdate,
        now: &Now,
    ) -> Result<FleetApplied, DataplaneError> {
        let refusals = if update.bans.is_empty() {
            Vec::new()
        } else {
            let mut peers = KernelPeers::new(maps, now)?;
            self.fleet_refusals(update, &mut peers)?
        };
        self.apply_checked(Some(maps), update, refusals, now)
    }

    /// [`Self::apply_fleet`] with the learned peers from `peers` and, without `maps`, on the
    /// book alone (tests).
    pub fn apply_fleet_with(
        &mut self,
        maps: Option<&mut Maps>,
        peers: &mut dyn PeerLookup,
        update: &FleetUpdate,
        now: &Now,
    ) -> Result<FleetApplied, DataplaneError> {
        let refusals = self.fleet_refusals(update, peers)?;
        self.apply_checked(maps, update, refusals, now)
    }

    /// The refusal of each decision of `update`, checked in order: allowlist, bogus range,
    /// learned peer.
    fn fleet_refusals(
        &self,
        update: &FleetUpdate,
        peers: &mut dyn PeerLookup,
    ) -> Result<Vec<Option<Refusal>>, DataplaneError> {
        update
            .bans
            .iter()
            .map(|ban| {
                let t = &ban.target;
                if let Some(a) = self.fleet_allow_conflict(t) {
                    return Ok(Some(Refusal::Allowlisted(a)));
                }
                if let Some(range) = bogus::overlapping(t) {
                    return Ok(Some(Refusal::Bogus(range)));
                }
                Ok(peers.peer_within(t)?.map(Refusal::LearnedPeer))
            })
            .collect()
    }

    fn apply_checked(
        &mut self,
        mut maps: Option<&mut Maps>,
        update: &FleetUpdate,
        refusals: Vec<Option<Refusal>>,
        now: &Now,
    ) -> Result<FleetApplied, DataplaneError> {
        let mut done = FleetApplied::default();
        let mut networks_changed = false;
        for (ban, refusal) in update.bans.iter().zip(refusals) {
            if let Some(why) = refusal {
                // A fleet ban made before the check knew better (an older version, a peer
                // learned since) goes too.
                if self
                    .records
                    .get(&ban.target)
                    .is_some_and(|r| r.origin == Origin::Fleet)
                {
                    self.lift(maps.as_deref_mut(), &ban.target, now, false)?;
                    networks_changed |= !ban.target.is_host();
                }
                done.refused.push((ban.target, why));
                continue;
            }
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
                    origin: ban.origin.clone(),
                    scenario: ban.scenario.clone(),
                }),
            };
            match self.ban_one(maps.as_deref_mut(), new, now, false)? {
                BanOutcome::Banned => {
                    networks_changed |= !ban.target.is_host();
                    done.banned.push(format!(
                        "{} for {} ({}: {})",
                        ban.target,
                        humantime::format_duration(Duration::from_secs(ban.remaining.as_secs())),
                        ban.origin,
                        ban.scenario
                    ));
                }
                BanOutcome::Renewed => done.renewed += 1,
                BanOutcome::Allowlisted(a) => {
                    done.refused.push((ban.target, Refusal::Allowlisted(a)))
                }
                BanOutcome::Bogus(r) => done.refused.push((ban.target, Refusal::Bogus(r))),
                BanOutcome::KeptLocal => done.kept_local += 1,
                BanOutcome::OperatorUnbanned => done.operator_unbanned += 1,
                BanOutcome::TableFull => done.full += 1,
            }
        }

        let mut lift: Vec<Cidr> = update.lifted.clone();
        if update.startup {
            let listed: HashSet<Cidr> = update.bans.iter().map(|b| b.target).collect();
            lift.extend(
                self.records
                    .values()
                    .filter(|r| r.origin == Origin::Fleet && !listed.contains(&r.target))
                    .map(|r| r.target),
            );
        }
        lift.sort();
        lift.dedup();
        for t in lift {
            if self
                .records
                .get(&t)
                .is_some_and(|r| r.origin == Origin::Fleet)
            {
                self.lift(maps.as_deref_mut(), &t, now, false)?;
                networks_changed |= !t.is_host();
                done.lifted.push(t);
            }
        }
        if let (true, Some(maps)) = (networks_changed, maps) {
            for refused in self.sync_networks(maps, now)? {
                if self
                    .records
                    .get(&refused)
                    .is_some_and(|r| r.origin == Origin::Fleet)
                {
                    self.records.remove(&refused);
                    done.banned
                        .retain(|b| !b.starts_with(&format!("{refused} ")));
                    done.full += 1;
                }
            }
        }
        Ok(done)
    }
}
