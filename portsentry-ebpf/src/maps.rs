//! Every map the program uses, in one place. All are BTF-defined so `bpftool map dump` shows
//! field names. Sizes here are defaults; the loader may resize the ban, hit and CIDR tables.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use portsentry_common::{
    AddrKey, BanEntry, Config, Event, HitEntry, Stat, DEFAULT_MAX_BANS, DEFAULT_MAX_CIDRS,
    DEFAULT_MAX_HITS, EVENTS_RING_BYTES, PORT_BITMAP_WORDS,
};

/// Runtime settings, one entry, written by userspace.
#[btf_map]
pub static PS_CONFIG: Array<Config, 1> = Array::new();

/// Guarded TCP ports: bit `port % 64` of word `port / 64`.
#[btf_map]
pub static PS_TCP_GUARD: Array<u64, { PORT_BITMAP_WORDS as usize }> = Array::new();

/// Guarded UDP ports, same layout as the TCP bitmap.
#[btf_map]
pub static PS_UDP_GUARD: Array<u64, { PORT_BITMAP_WORDS as usize }> = Array::new();

/// Banned sources. A preallocated hash, never LRU: a flood must not be able to evict real bans.
#[btf_map]
pub static PS_BANS: HashMap<AddrKey, BanEntry, { DEFAULT_MAX_BANS as usize }> = HashMap::new();

/// Probe counts per source. LRU on purpose: under a spoofed flood the oldest counters are
/// forgotten (a scanner is detected later) instead of detection stopping for everyone.
#[btf_map]
pub static PS_HITS: LruHashMap<AddrKey, HitEntry, { DEFAULT_MAX_HITS as usize }> =
    LruHashMap::new();

/// Banned networks (IPv4 stored IPv4-mapped, prefix + 96); the value counts drops.
#[btf_map]
pub static PS_BAN_CIDRS: LpmTrie<[u8; 16], u64, { DEFAULT_MAX_CIDRS as usize }> = LpmTrie::new();

/// Sources never counted or banned (same key form as the ban trie).
#[btf_map]
pub static PS_ALLOW_CIDRS: LpmTrie<[u8; 16], u8, { DEFAULT_MAX_CIDRS as usize }> = LpmTrie::new();

/// Counters, indexed by `Stat`.
#[btf_map]
pub static PS_STATS: PerCpuArray<u64, { Stat::COUNT as usize }> = PerCpuArray::new();

/// Probe and ban events for the daemon.
#[btf_map]
pub static PS_EVENTS: RingBuf<Event, { EVENTS_RING_BYTES as usize }> = RingBuf::new();
