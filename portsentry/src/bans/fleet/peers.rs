//! The learned peers a fleet decision is checked against (a decision covering a host this one
//! depends on is refused): the [`PeerLookup`] the checks ask, PS_PEERS read on demand
//! ([`KernelPeers`]) or in one batch per interval (`PeerSnapshot`), and where an update's
//! lookups come from ([`PeerSource`]). The peers' lifetime is the settings' `peer_memory`,
//! handed in; nothing here reads it back from the kernel's config block.
//!
//! Reads PS_PEERS only; never writes a map.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    clock::Now,
    dataplane::{DataplaneError, Maps},
    net::cidr::{self, Cidr},
};

/// Where the decisions of an update find the learned peers.
pub enum PeerSource<'a> {
    /// PS_PEERS in the maps the update is applied to (no peers without maps), current within
    /// `peer_ttl_ns`: the settings' `peer_memory` (`LiveSettings::peer_ttl_ns`).
    Kernel { peer_ttl_ns: u64 },
    /// This lookup (tests, and the book without a kernel).
    Given(&'a mut dyn PeerLookup),
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
    /// The peers in `maps` current at `now` within `peer_ttl_ns`: the settings' `peer_memory`
    /// (`LiveSettings::peer_ttl_ns`, 0 = forever), as the kernel was configured with it.
    pub fn new(maps: &'a Maps, now: &Now, peer_ttl_ns: u64) -> Self {
        Self {
            maps,
            now_boot_ns: now.boot_ns,
            ttl_ns: peer_ttl_ns,
            sorted: None,
        }
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
pub(super) struct PeerSnapshot {
    taken: Instant,
    keys: Vec<u128>,
}

impl PeerSnapshot {
    /// The current peers of `maps` this host depends on, in one batch lookup; `None` where the
    /// kernel has no batch operations (then [`KernelPeers`] looks each decision up).
    pub(super) fn read(
        maps: &Maps,
        now: &Now,
        peer_ttl_ns: u64,
    ) -> Result<Option<Self>, DataplaneError> {
        Ok(maps.peers_batch()?.map(|peers| PeerSnapshot {
            taken: Instant::now(),
            keys: sorted_peer_keys(peers, now.boot_ns, peer_ttl_ns),
        }))
    }

    /// Taken within [`PEER_SNAPSHOT_MAX_AGE`].
    pub(super) fn is_fresh(&self) -> bool {
        self.taken.elapsed() < PEER_SNAPSHOT_MAX_AGE
    }
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
const PEER_SNAPSHOT_MAX_AGE: Duration = Duration::from_millis(250);
