//! The learned-peer tables (PS_PEERS: hosts this one contacted; PS_INBOUND_PEERS: clients it
//! accepted, with `learn_inbound`): reading them whole, in batches or by address, recording
//! peers, their capacity and count, and whether an address is a current peer as the XDP
//! program decides.

use std::{net::IpAddr, os::fd::AsFd};

use aya::maps::{HashMap, IterableMap, MapData};
use portsentry_common::{maps as defs, AddrKey, PeerEntry};

use super::{is_not_found, Maps};
use crate::dataplane::{batch, map_err, Result};
use crate::net::cidr;

/// The two learned-peer tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerTable {
    /// PS_PEERS: hosts this one chose to contact (`peer_ways::OUTBOUND`).
    Outbound,
    /// PS_INBOUND_PEERS: clients it accepted, learned only with `learn_inbound`
    /// (`peer_ways::INBOUND`).
    Inbound,
}

impl Maps {
    fn peer_map(&self, table: PeerTable) -> (&HashMap<MapData, AddrKey, PeerEntry>, &'static str) {
        match table {
            PeerTable::Outbound => (&self.peers, defs::PS_PEERS.name),
            PeerTable::Inbound => (&self.inbound_peers, defs::PS_INBOUND_PEERS.name),
        }
    }

    /// Every outbound peer (PS_PEERS), current or not, and when each was last seen
    /// (CLOCK_BOOTTIME ns): the hosts this one depends on.
    pub fn peers(&self) -> Result<Vec<(IpAddr, PeerEntry)>> {
        self.peers_in(PeerTable::Outbound)
    }

    /// Every peer of `table`, current or not.
    pub fn peers_in(&self, table: PeerTable) -> Result<Vec<(IpAddr, PeerEntry)>> {
        let (map, name) = self.peer_map(table);
        let mut out = Vec::new();
        for item in map.iter() {
            match item {
                Ok((k, v)) => out.push((cidr::key_addr(&k), v)),
                // An LRU entry evicted while we iterate: skip it.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_err(name)(e)),
            }
        }
        Ok(out)
    }

    /// Every outbound peer in a few calls (batch lookup); `None` where the kernel has no batch
    /// operations (then [`Maps::peers`] or [`Maps::peer`]).
    pub fn peers_batch(&self) -> Result<Option<Vec<(IpAddr, PeerEntry)>>> {
        if !self.batch_ops {
            return Ok(None);
        }
        let capacity = self.peer_capacity() as usize;
        let mut keys = vec![AddrKey::default(); capacity];
        let mut values = vec![PeerEntry::default(); capacity];
        let fd = IterableMap::map(&self.peers).fd().as_fd();
        match batch::lookup_all(fd, &mut keys, &mut values) {
            Ok(read) => Ok(Some(
                keys.iter()
                    .zip(values)
                    .take(read)
                    .map(|(k, v)| (cidr::key_addr(k), v))
                    .collect(),
            )),
            // Unsupported, or ENOSPC (a bucket grew past the room left while peers were being
            // learned): the callers fall back to one lookup per address, which is exact.
            Err(_) => Ok(None),
        }
    }

    /// The outbound peer `addr`, current or not (see [`Maps::is_peer`]).
    pub fn peer(&self, addr: IpAddr) -> Result<Option<PeerEntry>> {
        self.peer_in(PeerTable::Outbound, addr)
    }

    /// The peer `addr` of `table`, current or not.
    pub fn peer_in(&self, table: PeerTable, addr: IpAddr) -> Result<Option<PeerEntry>> {
        let (map, name) = self.peer_map(table);
        match map.get(&cidr::addr_key(addr), 0) {
            Ok(p) => Ok(Some(p)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err(name)(e)),
        }
    }

    /// Records an outbound peer (restoring saved peers, tests; the cgroup programs write the
    /// rest). The table is LRU: when full, the least recently used peer makes room.
    pub fn insert_peer(&mut self, addr: IpAddr, entry: &PeerEntry) -> Result<()> {
        self.insert_peer_in(PeerTable::Outbound, addr, entry)
    }

    /// Records a peer in `table` (LRU, like [`Maps::insert_peer`]).
    pub fn insert_peer_in(
        &mut self,
        table: PeerTable,
        addr: IpAddr,
        entry: &PeerEntry,
    ) -> Result<()> {
        let (map, name) = match table {
            PeerTable::Outbound => (&mut self.peers, defs::PS_PEERS.name),
            PeerTable::Inbound => (&mut self.inbound_peers, defs::PS_INBOUND_PEERS.name),
        };
        map.insert(cidr::addr_key(addr), entry, 0)
            .map_err(map_err(name))
    }

    /// Capacity of each learned-peer table (`max_peers`).
    pub fn peer_capacity(&self) -> u32 {
        self.peers.map().info().map_or(0, |i| i.max_entries())
    }

    /// Entries in the learned-peer table `table`.
    pub fn peer_count(&self, table: PeerTable) -> Result<usize> {
        let (map, name) = self.peer_map(table);
        let mut n = 0;
        for key in map.keys() {
            key.map_err(map_err(name))?;
            n += 1;
        }
        Ok(n)
    }
}
