//! Typed handles on the program's maps and their accessors.
//!
//! Owns [`Maps`]: one aya handle per map, each opened through its declaration in
//! `portsentry_common::maps`, so a handle's key and value types cannot differ from the ones the
//! kernel was built with. Accessors read and write entries; they apply no policy. Writing bans
//! and banned networks is for the ban book (`crate::bans`) alone, loading and pins are
//! `super` and `super::pins`' business.

use std::{collections::BTreeMap, net::IpAddr, os::fd::AsFd, path::Path};

use aya::{
    maps::{
        lpm_trie::{Key as LpmKey, LpmTrie},
        Array, HashMap, IterableMap, Map, MapData, MapError, PerCpuArray, RingBuf,
    },
    Pod,
};
use portsentry_common::{
    maps::{self as defs, MapDef, MapSpec},
    AddrKey, BanEntry, Config, ContestedEntry, HitEntry, IpProto, LinkKey, PeerEntry, Stat,
    UpperLinks, PORT_BITMAP_WORDS,
};

use super::{batch, map_err, pins, trie, DataplaneError, Result, TrieWrite};
use crate::{net::cidr, net::cidr::Cidr, net::ports::PortSet};

/// `BPF_NOEXIST` (linux/bpf.h): create only; EEXIST if the key exists.
const BPF_NOEXIST: u64 = 1;
/// Elements per batch lookup when reading a table's keys ([`Maps::ban_keys`]): ~0.5 MiB of
/// buffers, far more than any hash bucket holds (a smaller room than a bucket is ENOSPC).
const KEY_CHUNK: usize = 8192;

/// Counters summed over CPUs, indexed like [`Stat`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats(pub [u64; Stat::COUNT]);

impl Stats {
    pub fn get(&self, stat: Stat) -> u64 {
        self.0[stat as usize]
    }
    /// Packets seen while configured: every packet ends passed, dropped (banned source, or a
    /// fragment or extension-header chain dropped as evasion) or turned into the SYN cookie
    /// answering a learned peer's trap SYN.
    pub fn packets(&self) -> u64 {
        self.get(Stat::Passed)
            + self.get(Stat::Dropped)
            + self.get(Stat::CookiesSent)
            + self.get(Stat::FragmentsDropped)
            + self.get(Stat::ExtChainsDropped)
    }
}

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
    config: Array<MapData, Config>,
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
    /// Opens every map but the ring buffer, each got from `get`.
    pub(super) fn open_with(get: &mut impl FnMut(&'static MapSpec) -> Result<Map>) -> Result<Self> {
        Ok(Self {
            config: open(get, &defs::PS_CONFIG)?,
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

    pub fn set_config(&mut self, config: &Config) -> Result<()> {
        self.config
            .set(0, config, 0)
            .map_err(map_err(defs::PS_CONFIG.name))
    }

    pub fn config(&self) -> Result<Config> {
        self.config
            .get(&0, 0)
            .map_err(map_err(defs::PS_CONFIG.name))
    }

    /// Replaces the guarded-port bitmap of `protocol`, writing only the words that changed.
    pub fn set_guarded_ports(&mut self, protocol: IpProto, ports: &PortSet) -> Result<()> {
        let (name, map) = match protocol {
            IpProto::Tcp => (defs::PS_TCP_GUARD.name, &mut self.tcp_guard),
            IpProto::Udp => (defs::PS_UDP_GUARD.name, &mut self.udp_guard),
        };
        for (i, word) in ports
            .words()
            .iter()
            .enumerate()
            .take(PORT_BITMAP_WORDS as usize)
        {
            let i = i as u32;
            if map.get(&i, 0).ok() != Some(*word) {
                map.set(i, word, 0).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    /// Adds or replaces a ban. Its prefilter bit (PS_BAN_FILTER) is set first, so that from
    /// the moment the ban exists, the XDP program looks it up.
    pub fn insert_ban(&mut self, addr: IpAddr, entry: &BanEntry) -> Result<()> {
        let key = cidr::addr_key(addr);
        self.set_filter_bit(&key)?;
        match self.bans.insert(key, entry, 0) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
                Err(DataplaneError::TableFull("ban"))
            }
            Err(e) => Err(map_err(defs::PS_BANS.name)(e)),
        }
    }

    /// Inserts a ban only if the address has none in the kernel; false if it has one (then
    /// only the prefilter bit may have been written). The common case of a fresh ban costs the
    /// insert and at most one filter write.
    pub fn insert_new_ban(&mut self, addr: IpAddr, entry: &BanEntry) -> Result<bool> {
        let key = cidr::addr_key(addr);
        self.set_filter_bit(&key)?;
        match self.bans.insert(key, entry, BPF_NOEXIST) {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
                Err(DataplaneError::TableFull("ban"))
            }
            Err(e) => Err(map_err(defs::PS_BANS.name)(e)),
        }
    }

    /// Writes fresh bans: every prefilter bit of the batch first (one write per changed
    /// word), then the entries, each replacing any entry the kernel holds for its address. One
    /// call each where the kernel has batch operations, else one per element. Returns how many
    /// entries were written, in order: all of them, or fewer when the table was full at the
    /// next one (the caller makes room for it and goes on with the rest).
    pub fn insert_bans(&mut self, keys: &[AddrKey], entries: &[BanEntry]) -> Result<usize> {
        let n = keys.len().min(entries.len());
        let name = defs::PS_BANS.name;
        self.set_filter_bits(&keys[..n])?;
        if self.batch_ops {
            let fd = IterableMap::map(&self.bans).fd().as_fd();
            match batch::update(fd, &keys[..n], &entries[..n]) {
                Ok(()) => return Ok(n),
                Err((written, e)) if e.raw_os_error() == Some(libc::E2BIG) => return Ok(written),
                Err((0, e)) if batch::unsupported(&e) => self.batch_ops = false,
                Err((_, e)) => return Err(map_err(name)(batch_error(e))),
            }
        }
        for (i, (key, entry)) in keys.iter().zip(entries).take(n).enumerate() {
            match self.bans.insert(key, entry, 0) {
                Ok(()) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::E2BIG) =>
                {
                    return Ok(i)
                }
                Err(e) => return Err(map_err(name)(e)),
            }
        }
        Ok(n)
    }

    /// Whether `addr`'s bit is set in the kernel's ban prefilter (read from the map, not the
    /// cache; for tests).
    pub fn filter_bit(&self, addr: IpAddr) -> Result<bool> {
        let (word, bit) = cidr::addr_key(addr).filter_slot();
        let w = self
            .ban_filter
            .get(&word, 0)
            .map_err(map_err(defs::PS_BAN_FILTER.name))?;
        Ok(w & bit != 0)
    }

    /// Whether batch map operations are used (tests turn them off to check the fallback).
    pub fn batch_ops(&self) -> bool {
        self.batch_ops
    }

    pub fn set_batch_ops(&mut self, on: bool) {
        self.batch_ops = on;
    }

    /// The cached PS_BAN_FILTER words, read whole the first time where the kernel can.
    fn filter_words(&mut self) -> &mut Vec<Option<u64>> {
        if self.ban_filter_words.is_empty() {
            let words = portsentry_common::BAN_FILTER_WORDS as usize;
            self.ban_filter_words = vec![None; words];
            if self.batch_ops {
                let mut keys = vec![0u32; words];
                let mut values = vec![0u64; words];
                let fd = IterableMap::map(&self.ban_filter).fd().as_fd();
                match batch::lookup_all(fd, &mut keys, &mut values) {
                    Ok(read) => {
                        for (k, v) in keys.iter().zip(&values).take(read) {
                            if let Some(w) = self.ban_filter_words.get_mut(*k as usize) {
                                *w = Some(*v);
                            }
                        }
                    }
                    Err(e) if batch::unsupported(&e) => self.batch_ops = false,
                    // Read word by word on demand instead.
                    Err(_) => {}
                }
            }
        }
        &mut self.ban_filter_words
    }

    /// Filter word `word` as the kernel holds it.
    fn filter_word(&mut self, word: u32) -> Result<u64> {
        if let Some(Some(w)) = self.filter_words().get(word as usize) {
            return Ok(*w);
        }
        self.ban_filter
            .get(&word, 0)
            .map_err(map_err(defs::PS_BAN_FILTER.name))
    }

    /// Sets `key`'s bit in the ban prefilter, before its ban is written: the XDP program looks
    /// a source up in PS_BANS only when its bit is set, so a ban without its bit would never
    /// drop.
    fn set_filter_bit(&mut self, key: &AddrKey) -> Result<()> {
        self.set_filter_bits(std::slice::from_ref(key))
    }

    /// Sets the prefilter bits of `keys`: each changed word written once (one batch call where
    /// the kernel has them), the cache updated only once the kernel holds the word. Call it
    /// before the bans are written, as [`Maps::insert_ban`] does for one; restoring a million
    /// bans would otherwise write a word per ban.
    pub fn set_filter_bits(&mut self, keys: &[AddrKey]) -> Result<()> {
        let name = defs::PS_BAN_FILTER.name;
        let mut slots: Vec<(u32, u64)> = Vec::with_capacity(keys.len());
        for key in keys {
            let (word, bit) = key.filter_slot();
            let current = self.filter_word(word)?;
            if current & bit == 0 {
                slots.push((word, current | bit));
            }
        }
        slots.sort_unstable_by_key(|(w, _)| *w);
        // Bits of one word from several keys: one value with all of them.
        let mut words: Vec<u32> = Vec::with_capacity(slots.len());
        let mut values: Vec<u64> = Vec::with_capacity(slots.len());
        for (w, v) in slots {
            match (words.last(), values.last_mut()) {
                (Some(last), Some(acc)) if *last == w => *acc |= v,
                _ => {
                    words.push(w);
                    values.push(v);
                }
            }
        }
        let mut written = 0;
        if self.batch_ops && words.len() > 1 {
            let fd = IterableMap::map(&self.ban_filter).fd().as_fd();
            match batch::update(fd, &words, &values) {
                Ok(()) => written = words.len(),
                Err((0, e)) if batch::unsupported(&e) => self.batch_ops = false,
                Err((_, e)) => return Err(map_err(name)(batch_error(e))),
            }
        }
        for (w, v) in words.iter().zip(&values).skip(written) {
            self.ban_filter.set(*w, v, 0).map_err(map_err(name))?;
        }
        let cache = self.filter_words();
        for (w, v) in words.iter().zip(&values) {
            if let Some(slot) = cache.get_mut(*w as usize) {
                *slot = Some(*v);
            }
        }
        Ok(())
    }

    /// Removes a ban; false if there was none.
    pub fn remove_ban(&mut self, addr: IpAddr) -> Result<bool> {
        match self.bans.remove(&cidr::addr_key(addr)) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_err(defs::PS_BANS.name)(e)),
        }
    }

    pub fn ban(&self, addr: IpAddr) -> Result<Option<BanEntry>> {
        match self.bans.get(&cidr::addr_key(addr), 0) {
            Ok(b) => Ok(Some(b)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err(defs::PS_BANS.name)(e)),
        }
    }

    pub fn bans(&self) -> Result<Vec<(IpAddr, BanEntry)>> {
        let mut out = Vec::new();
        for item in self.bans.iter() {
            let (k, v) = item.map_err(map_err(defs::PS_BANS.name))?;
            out.push((cidr::key_addr(&k), v));
        }
        Ok(out)
    }

    /// Every key the ban table holds: a chunk of [`KEY_CHUNK`] per call where the kernel has
    /// batch operations, else one `BPF_MAP_GET_NEXT_KEY` per key. For the restore at start,
    /// which must not overwrite an entry the kernel holds already (pinned or migrated maps).
    ///
    /// An empty table (fresh maps, the usual start) costs one call: a batch lookup locks every
    /// bucket it passes (2 M buckets at 1 M capacity: ~0.3 s here), the first-key walk does not.
    pub fn ban_keys(&mut self) -> Result<Vec<AddrKey>> {
        let Some(first) = self.next_ban_key(None)? else {
            return Ok(Vec::new());
        };
        let fd = IterableMap::map(&self.bans).fd().as_fd();
        if self.batch_ops {
            match batch::lookup_keys::<AddrKey, BanEntry>(fd, KEY_CHUNK) {
                Ok(keys) => return Ok(keys),
                Err(e) if batch::unsupported(&e) => self.batch_ops = false,
                // ENOSPC (a bucket larger than a chunk, never at these sizes) or a table
                // changed under the walk: the exact walk below.
                Err(_) => {}
            }
        }
        let mut keys = Vec::new();
        let mut key = Some(first);
        // A walk restarted by removals elsewhere ends after twice the table.
        let bound = 2 * self.ban_capacity() as usize;
        while let Some(k) = key {
            if keys.len() >= bound {
                break;
            }
            keys.push(k);
            key = self.next_ban_key(Some(&k))?;
        }
        Ok(keys)
    }

    /// Up to `max` addresses of the ban table, from `from` on (`None`: from the start), and
    /// the address to resume from (`None`: the end), for walking a large table a part at a
    /// time. The order is the kernel's; a resume address removed meanwhile restarts the walk
    /// from the start (the kernel's `BPF_MAP_GET_NEXT_KEY`), so callers bound their walk.
    pub fn ban_addrs_from(
        &self,
        from: Option<IpAddr>,
        max: usize,
    ) -> Result<(Vec<IpAddr>, Option<IpAddr>)> {
        let mut out = Vec::new();
        let mut key = from.map(cidr::addr_key);
        if key.is_none() {
            key = self.next_ban_key(None)?;
        }
        while let Some(k) = key {
            if out.len() == max {
                return Ok((out, Some(cidr::key_addr(&k))));
            }
            out.push(cidr::key_addr(&k));
            key = self.next_ban_key(Some(&k))?;
        }
        Ok((out, None))
    }

    /// The ban table's key after `key` (the first with `None`), by `BPF_MAP_GET_NEXT_KEY`,
    /// which aya's key iterator cannot resume from a given key.
    fn next_ban_key(&self, key: Option<&AddrKey>) -> Result<Option<AddrKey>> {
        let fd = IterableMap::map(&self.bans).fd().as_fd();
        batch::next_key(fd, key).map_err(|io_error| {
            map_err(defs::PS_BANS.name)(MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_get_next_key",
                io_error,
            }))
        })
    }

    pub fn hits(&self, addr: IpAddr) -> Result<Option<HitEntry>> {
        match self.hits.get(&cidr::addr_key(addr), 0) {
            Ok(h) => Ok(Some(h)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err(defs::PS_HITS.name)(e)),
        }
    }

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

    /// Records whether a frame sent with XDP_TX is delivered on interface `ifindex` (PS_NO_XDP_TX
    /// holds the ones where it is not): learned peers' trap SYNs there get no SYN cookie.
    pub fn set_xdp_tx_delivers(&mut self, ifindex: u32, delivers: bool) -> Result<()> {
        let name = defs::PS_NO_XDP_TX.name;
        if delivers {
            match self.no_xdp_tx.remove(&ifindex) {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(map_err(name)(e)),
            }
        } else {
            self.no_xdp_tx.insert(ifindex, 1, 0).map_err(map_err(name))
        }
    }

    /// The interfaces where XDP_TX is known not to deliver (PS_NO_XDP_TX).
    pub fn xdp_tx_undeliverable(&self) -> Result<Vec<u32>> {
        self.no_xdp_tx
            .keys()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(map_err(defs::PS_NO_XDP_TX.name))
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

    /// Replaces PS_UPPER_LINKS with `entries` (`net::topology`): writes every entry, then
    /// deletes the keys that are no longer in it.
    pub fn set_upper_links(&mut self, entries: &BTreeMap<LinkKey, UpperLinks>) -> Result<()> {
        let name = defs::PS_UPPER_LINKS.name;
        for (k, v) in entries {
            self.upper_links.insert(k, v, 0).map_err(map_err(name))?;
        }
        let stale: Vec<LinkKey> = self
            .upper_links
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !entries.contains_key(k))
            .collect();
        for k in stale {
            match self.upper_links.remove(&k) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_err(name)(e)),
            }
        }
        Ok(())
    }

    /// Every PS_UPPER_LINKS entry.
    pub fn upper_links(&self) -> Result<Vec<(LinkKey, UpperLinks)>> {
        self.upper_links
            .iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(map_err(defs::PS_UPPER_LINKS.name))
    }

    /// Marks `addr` contested until `until_ns` (boot clock), claimed by `mac`.
    pub fn contest(&mut self, addr: IpAddr, until_ns: u64, mac: [u8; 6]) -> Result<()> {
        let entry = ContestedEntry {
            until_ns,
            mac,
            _pad: [0; 2],
        };
        self.contested
            .insert(cidr::addr_key(addr), entry, 0)
            .map_err(map_err(defs::PS_CONTESTED.name))
    }

    /// The contested entry of `addr`, current or not.
    pub fn contested(&self, addr: IpAddr) -> Result<Option<ContestedEntry>> {
        match self.contested.get(&cidr::addr_key(addr), 0) {
            Ok(e) => Ok(Some(e)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err(defs::PS_CONTESTED.name)(e)),
        }
    }

    /// Capacity of each learned-peer table (`max_peers`).
    pub fn peer_capacity(&self) -> u32 {
        self.peers.map().info().map_or(0, |i| i.max_entries())
    }

    /// Replaces the allowlist trie; the count goes into `Config`. The prefilter bits of every
    /// entry are set first (PS_ALLOW_FILTER, never cleared): the XDP program looks a probe's
    /// source up in the trie only when its bit is set, so an entry without its bits would not
    /// protect anyone.
    pub fn set_allowlist(&mut self, cidrs: &[Cidr]) -> Result<TrieWrite> {
        self.set_allow_filter_bits(cidrs)?;
        trie::replace(&mut self.allow_cidrs, defs::PS_ALLOW_CIDRS.name, cidrs, 1u8)
    }

    /// Writes `cidr` into the allowlist trie WITHOUT its prefilter bits: only for tests that
    /// prove the XDP program consults the prefilter (such an entry must not protect a source
    /// whose bit is clear). Never call it elsewhere.
    #[doc(hidden)]
    pub fn insert_allow_trie_only_for_tests(&mut self, cidr: &Cidr) -> Result<()> {
        self.allow_cidrs
            .insert(&LpmKey::new(cidr.key_prefix(), cidr.key().addr), 1u8, 0)
            .map_err(map_err(defs::PS_ALLOW_CIDRS.name))
    }

    /// ORs the allowlist prefilter bits of `cidrs` into PS_ALLOW_FILTER, each changed word
    /// written once. At most 2 048 words, read and written only on a configuration change.
    fn set_allow_filter_bits(&mut self, cidrs: &[Cidr]) -> Result<()> {
        let name = defs::PS_ALLOW_FILTER.name;
        let mut wanted = vec![0u64; portsentry_common::ALLOW_FILTER_WORDS as usize];
        for c in cidrs {
            portsentry_common::allow_filter_marks(c.key_prefix(), &c.key().addr, |w, b| {
                if let Some(slot) = wanted.get_mut(w as usize) {
                    *slot |= b;
                }
            });
        }
        for (w, bits) in (0u32..).zip(&wanted) {
            if *bits == 0 {
                continue;
            }
            let current = self.allow_filter.get(&w, 0).map_err(map_err(name))?;
            if current | bits != current {
                self.allow_filter
                    .set(w, current | bits, 0)
                    .map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    /// Replaces the banned-network trie (only the ban book calls this). Entries that stay keep
    /// their drop counters.
    pub fn set_ban_cidrs(&mut self, cidrs: &[Cidr]) -> Result<TrieWrite> {
        trie::replace(&mut self.ban_cidrs, defs::PS_BAN_CIDRS.name, cidrs, 0u64)
    }

    /// Capacity of the ban table.
    pub fn ban_capacity(&self) -> u32 {
        self.bans.map().info().map_or(0, |i| i.max_entries())
    }

    /// Capacity of the allowlist trie.
    pub fn allow_capacity(&self) -> u32 {
        self.allow_cidrs.map().info().map_or(0, |i| i.max_entries())
    }

    /// Capacity of the banned-network trie.
    pub fn ban_network_capacity(&self) -> u32 {
        self.ban_cidrs.map().info().map_or(0, |i| i.max_entries())
    }

    /// Banned networks with their drop counters.
    pub fn ban_cidrs(&self) -> Result<Vec<(Cidr, u64)>> {
        let mut out = Vec::new();
        for item in self.ban_cidrs.iter() {
            let (k, drops) = item.map_err(map_err(defs::PS_BAN_CIDRS.name))?;
            out.push((cidr_from_key(&k), drops));
        }
        Ok(out)
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

    /// Whether `addr` is a learned peer now, as the XDP program decides: an outbound peer, or
    /// with `learn_inbound` (`config_flags::LEARN_INBOUND`) an inbound one, seen within the
    /// configured `peer_memory` (`Config::peer_ttl_ns`, 0 = forever) at `now_boot_ns`.
    pub fn is_peer(&self, addr: IpAddr, now_boot_ns: u64) -> Result<bool> {
        let config = self.config()?;
        let current =
            |p: Option<PeerEntry>| p.is_some_and(|p| p.is_current(now_boot_ns, config.peer_ttl_ns));
        if current(self.peer(addr)?) {
            return Ok(true);
        }
        let inbound = config.flags & portsentry_common::config_flags::LEARN_INBOUND != 0;
        Ok(inbound && current(self.peer_in(PeerTable::Inbound, addr)?))
    }

    pub fn stats(&self) -> Result<Stats> {
        let mut stats = Stats::default();
        for stat in Stat::ALL {
            let per_cpu = self
                .stats
                .get(&(stat as u32), 0)
                .map_err(map_err(defs::PS_STATS.name))?;
            stats.0[stat as usize] = per_cpu.iter().sum();
        }
        Ok(stats)
    }
}

fn batch_error(io_error: std::io::Error) -> MapError {
    MapError::SyscallError(aya::sys::SyscallError {
        call: "bpf_map_update_batch",
        io_error,
    })
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
