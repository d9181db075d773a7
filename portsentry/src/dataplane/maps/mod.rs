//! Typed handles on the program's maps and their accessors.
//!
//! Owns [`Maps`]: one aya handle per map, each opened through its declaration in
//! `portsentry_common::maps`, so a handle's key and value types cannot differ from the ones the
//! kernel was built with. Accessors read and write entries; they apply no policy. Writing bans
//! and banned networks is for the ban book (`crate::bans`) alone, loading and pins are
//! `super` and `super::pins`' business.
//!
//! This file holds the handles themselves (opening them, from a loaded object or the pins) and
//! the helpers every family shares; the accessors live with their map family:
//! - [`bans`]: the ban table (PS_BANS) and its prefilter (PS_BAN_FILTER), batch writes and walks;
//! - [`peers`]: the learned-peer tables (PS_PEERS, PS_INBOUND_PEERS) and [`PeerTable`];
//! - [`topology`]: what the interfaces' topology feeds the program (PS_UPPER_LINKS,
//!   PS_CONTESTED, PS_NO_XDP_TX);
//! - [`tries`]: the allowlist (PS_ALLOW_CIDRS with PS_ALLOW_FILTER) and banned networks
//!   (PS_BAN_CIDRS);
//! - [`config`]: the program's config and guarded ports (PS_CONFIG, PS_TCP_GUARD,
//!   PS_UDP_GUARD), its per-source hit counts (PS_HITS) and counters ([`Stats`], PS_STATS);
//!   PS_CONFIG's one writer, which composes the block from its owners' parts.

use std::path::Path;

use aya::{
    maps::{
        lpm_trie::{Key as LpmKey, LpmTrie},
        Array, HashMap, Map, MapData, MapError, PerCpuArray, RingBuf,
    },
    Pod,
};
use portsentry_common::{
    maps::{self as defs, MapDef, MapSpec},
    AddrKey, BanEntry, ContestedEntry, HitEntry, LinkKey, PeerEntry, UpperLinks,
};

use super::{map_err, pins, Result};
use crate::{net::cidr, net::cidr::Cidr};

mod bans;
mod config;
mod peers;
mod topology;
mod tries;

pub use config::Stats;
pub use peers::PeerTable;

/// An aya handle whose key and value types are `K` and `V`: what a map declared as
/// `MapDef<K, V>` may be opened as.
pub(super) trait Handle<K, V>: TryFrom<Map, Error = MapError> {}

impl<V: Pod> Handle<u32, V> for Array<MapData, V> {}
impl<V: Pod> Handle<u32, V> for PerCpuArray<MapData, V> {}
/// Covers LRU hashes too: aya opens both as `HashMap`.
impl<K: Pod, V: Pod> Handle<K, V> for HashMap<MapData, K, V> {}
impl<K: Pod, V: Pod> Handle<K, V> for LpmTrie<MapData, K, V> {}
impl<V> Handle<(), V> for RingBuf<MapData> {}

/// Opens the map `def` declares, got from `get` (a loaded object or the pin directory), as a
/// handle of the declared types.
pub(super) fn open<T, K, V>(
    get: &mut impl FnMut(&'static MapSpec) -> Result<Map>,
    def: &'static MapDef<K, V>,
) -> Result<T>
where
    T: Handle<K, V>,
{
    T::try_from(get(&def.spec)?).map_err(map_err(def.name))
}

/// Typed handles on every map except the ring buffer. Opened either from a freshly loaded
/// program (`Dataplane`) or from the pin directory (the CLI, with or without a daemon).
pub struct Maps {
    /// PS_CONFIG and the block last written: its one writer (`config::ConfigMap`).
    config: config::ConfigMap,
    tcp_guard: Array<MapData, u64>,
    udp_guard: Array<MapData, u64>,
    bans: HashMap<MapData, AddrKey, BanEntry>,
    ban_filter: Array<MapData, u64>,
    /// The PS_BAN_FILTER words this process has read or written (indexed by word; `None`: not
    /// read yet; empty until the first ban), so a ban whose bit is set already costs no
    /// syscall. Read whole at the first ban where the kernel has batch operations. Bits are
    /// never cleared, and only one process writes the filter at a time (the daemon, or the
    /// offline CLI while no daemon runs).
    ban_filter_words: Vec<Option<u64>>,
    /// Batch map operations (`batch`) work here; cleared at the first refusal (a kernel before
    /// 5.6), then every write is one element per call.
    batch_ops: bool,
    hits: HashMap<MapData, AddrKey, HitEntry>,
    ban_cidrs: LpmTrie<MapData, [u8; 16], u64>,
    allow_cidrs: LpmTrie<MapData, [u8; 16], u8>,
    allow_filter: Array<MapData, u64>,
    peers: HashMap<MapData, AddrKey, PeerEntry>,
    inbound_peers: HashMap<MapData, AddrKey, PeerEntry>,
    upper_links: HashMap<MapData, LinkKey, UpperLinks>,
    contested: HashMap<MapData, AddrKey, ContestedEntry>,
    no_xdp_tx: HashMap<MapData, u32, u32>,
    stats: PerCpuArray<MapData, u64>,
}

impl Maps {
    /// Opens every map but the ring buffer, each got from `get`.
    pub(super) fn open_with(get: &mut impl FnMut(&'static MapSpec) -> Result<Map>) -> Result<Self> {
        Ok(Self {
            config: config::ConfigMap::new(open(get, &defs::PS_CONFIG)?)?,
            tcp_guard: open(get, &defs::PS_TCP_GUARD)?,
            udp_guard: open(get, &defs::PS_UDP_GUARD)?,
            bans: open(get, &defs::PS_BANS)?,
            ban_filter: open(get, &defs::PS_BAN_FILTER)?,
            ban_filter_words: Vec::new(),
            batch_ops: true,
            hits: open(get, &defs::PS_HITS)?,
            ban_cidrs: open(get, &defs::PS_BAN_CIDRS)?,
            allow_cidrs: open(get, &defs::PS_ALLOW_CIDRS)?,
            allow_filter: open(get, &defs::PS_ALLOW_FILTER)?,
            peers: open(get, &defs::PS_PEERS)?,
            inbound_peers: open(get, &defs::PS_INBOUND_PEERS)?,
            upper_links: open(get, &defs::PS_UPPER_LINKS)?,
            contested: open(get, &defs::PS_CONTESTED)?,
            no_xdp_tx: open(get, &defs::PS_NO_XDP_TX)?,
            stats: open(get, &defs::PS_STATS)?,
        })
    }

    /// Opens the maps pinned in `dir`; `Ok(None)` if nothing is pinned there.
    pub fn open_pinned(dir: &Path) -> Result<Option<Self>> {
        if !dir.join(defs::PS_BANS.name).exists() {
            return Ok(None);
        }
        pins::check(dir)?;
        pins::check_layout_version(dir)?;
        Self::open_with(&mut |map| pins::open_map(dir, map)).map(Some)
    }

    /// Whether batch map operations are used (tests turn them off to check the fallback).
    pub fn batch_ops(&self) -> bool {
        self.batch_ops
    }

    pub fn set_batch_ops(&mut self, on: bool) {
        self.batch_ops = on;
    }
}

pub(super) fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

pub(super) fn cidr_from_key(k: &LpmKey<[u8; 16]>) -> Cidr {
    let addr = cidr::key_addr(&AddrKey { addr: k.data() });
    let prefix = if addr.is_ipv4() {
        k.prefix_len().saturating_sub(96)
    } else {
        k.prefix_len()
    };
    Cidr {
        addr,
        prefix: u8::try_from(prefix).unwrap_or(128),
    }
}
