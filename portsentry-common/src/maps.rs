//! Every map, declared once: name, kind, key type, value type and capacity rule, in
//! [`ps_maps!`](crate::ps_maps). Both sides are derived from that one table:
//!
//! - the XDP program expands it into its `#[btf_map]` statics (`portsentry-ebpf/src/maps.rs`);
//! - this module expands it into one typed [`MapDef`] per map plus [`ALL`], whose key and value
//!   sizes come from `size_of` of the declared types. Userspace checks, pins and migrates maps by
//!   iterating [`ALL`], and opens each map through its `MapDef`, so its handle types must be the
//!   declared ones.
//!
//! The table's identifier *is* the map name (the ELF symbol `#[btf_map]` exports, the pin file
//! name, what `bpftool map dump pinned` shows); `stringify!` gives userspace the same text.

use core::{marker::PhantomData, mem::size_of};

/// The table of maps, handed to `$callback` as
/// `$(#[doc])* NAME: Kind<Key, Value> = capacity;` lines.
///
/// `Kind` is a [`MapKind`] variant, spelled like the `aya_ebpf::btf_maps` type. Array kinds
/// declare their implicit `u32` index as the key; an LPM trie declares the data part of its key
/// (the kernel key is a `u32` prefix length followed by it); the ring buffer declares `()` and
/// the record type it carries.
#[macro_export]
macro_rules! ps_maps {
    ($callback:ident) => {
        $callback! {
            /// Runtime settings, one entry, written by userspace.
            PS_CONFIG: Array<u32, $crate::Config> = $crate::maps::Capacity::Fixed(1);

            /// Guarded TCP ports: bit `port % 64` of word `port / 64`.
            PS_TCP_GUARD: Array<u32, u64> =
                $crate::maps::Capacity::Fixed($crate::PORT_BITMAP_WORDS);

            /// Guarded UDP ports, same layout as the TCP bitmap.
            PS_UDP_GUARD: Array<u32, u64> =
                $crate::maps::Capacity::Fixed($crate::PORT_BITMAP_WORDS);

            /// Banned sources. A preallocated hash, never LRU: a flood must not be able to evict
            /// real bans.
            PS_BANS: HashMap<$crate::AddrKey, $crate::BanEntry> = $crate::maps::Capacity::ByOption {
                option: $crate::maps::CapacityOption::MaxBans,
                default: 65_536,
            };

            /// Ban prefilter written by userspace: bit [`crate::AddrKey::filter_slot`] is set
            /// before userspace adds a ban to PS_BANS, and never cleared while the map lives (a
            /// stale bit only costs the exact lookup). A clear bit in both prefilters means "not
            /// in PS_BANS", so most packets skip the hash lookup. Userspace alone writes it (it
            /// updates whole words), so no update of its can lose one of the kernel's bits.
            PS_BAN_FILTER: Array<u32, u64> =
                $crate::maps::Capacity::Fixed($crate::BAN_FILTER_WORDS);

            /// Ban prefilter the XDP program sets (atomic OR) before it adds a detected ban.
            PS_BAN_FILTER_KERNEL: Array<u32, u64> =
                $crate::maps::Capacity::Fixed($crate::BAN_FILTER_WORDS);

            /// Probe counts per source. LRU on purpose: under a spoofed flood the oldest counters
            /// are forgotten (a scanner is detected later) instead of detection stopping for
            /// everyone.
            PS_HITS: LruHashMap<$crate::AddrKey, $crate::HitEntry> =
                $crate::maps::Capacity::Fixed(65_536);

            /// Probe counts per prefix (`ipv6_prefix`, `ipv4_prefix`): a rotating scanner uses a
            /// new address per probe, so each address stays below the trigger while its prefix
            /// does not. A map of its own rather than marked keys in PS_HITS: no prefix key can
            /// collide with a real source's, a flood of one-probe sources evicts exact counters
            /// without evicting prefix counters, and the value holds the prefix's trigger state.
            /// LRU for the same reason as PS_HITS.
            PS_PREFIX_HITS: LruHashMap<$crate::PrefixKey, $crate::PrefixHitEntry> =
                $crate::maps::Capacity::Fixed(16_384);

            /// Banned networks (IPv4 stored IPv4-mapped, prefix + 96); the value counts drops.
            PS_BAN_CIDRS: LpmTrie<[u8; 16], u64> = $crate::maps::Capacity::ByOption {
                option: $crate::maps::CapacityOption::MaxBanNetworks,
                default: 16_384,
            };

            /// Sources never counted or banned (same key form as the ban trie).
            PS_ALLOW_CIDRS: LpmTrie<[u8; 16], u8> = $crate::maps::Capacity::Fixed(16_384);

            /// Allowlist prefilter written by userspace: every bit an allow entry may cover
            /// ([`crate::allow_filter_marks`]) is set before the entry goes into PS_ALLOW_CIDRS,
            /// and never cleared while the map lives (a stale bit only costs the trie lookup).
            /// A clear bit ([`crate::allow_slot_v4`], [`crate::allow_slot_v6`]) is proof that no
            /// allow entry covers the source, so most probes skip the trie lookup.
            PS_ALLOW_FILTER: Array<u32, u64> =
                $crate::maps::Capacity::Fixed($crate::ALLOW_FILTER_WORDS);

            /// Outbound peers: hosts this one chose to talk to (TCP connections it opened,
            /// connected UDP sockets, UDP destinations that had not written to the sending socket
            /// first), written by the cgroup programs at a bounded rate. Nothing a remote host
            /// sends can add an entry, so inbound or forged traffic cannot push one out. LRU: the
            /// least recently seen peer makes room for a new one this host contacts.
            PS_PEERS: LruHashMap<$crate::AddrKey, $crate::PeerEntry> =
                $crate::maps::Capacity::ByOption {
                    option: $crate::maps::CapacityOption::MaxPeers,
                    default: 65_536,
                };

            /// Inbound peers: clients whose TCP connection this host accepted, learned only
            /// with `learn_inbound`. A table of its own, so that clients (whom anyone can
            /// become) never evict an outbound peer.
            PS_INBOUND_PEERS: LruHashMap<$crate::AddrKey, $crate::PeerEntry> =
                $crate::maps::Capacity::ByOption {
                    option: $crate::maps::CapacityOption::MaxPeers,
                    default: 65_536,
                };

            /// Sources each UDP socket received from while they were not outbound peers
            /// ([`crate::HeardKey`]): that socket's sends to them are answers (a DNS, NTP or
            /// QUIC server replying to whoever asked, forged or not) and teach no peer. LRU: a
            /// mark only has to outlive the time a server takes to answer.
            PS_UDP_HEARD: LruHashMap<$crate::HeardKey, u64> =
                $crate::maps::Capacity::Fixed(65_536);

            /// Per-CPU token bucket (GCRA time) bounding how fast new outbound peers are
            /// learned ([`crate::PEER_LEARN_BURST`], [`crate::PEER_LEARN_INTERVAL_NS`]).
            PS_PEER_LEARN_RATE: PerCpuArray<u32, u64> = $crate::maps::Capacity::Fixed(1);

            /// Where a route back may leave for a frame that came in on an interface with some
            /// VLAN tags (a bridge port's bridge, a bond slave's bond, the VLAN device of a
            /// tag), written by the daemon from rtnetlink (`net::topology`). Layout 10.
            PS_UPPER_LINKS: HashMap<$crate::LinkKey, $crate::UpperLinks> =
                $crate::maps::Capacity::Fixed(4096);

            /// Contested neighbours: addresses whose neighbour MAC changed recently (set by the
            /// XDP program on the ARP/ND frame that claims it, and by the daemon on rtnetlink's
            /// RTM_NEWNEIGH). LRU: a flood of claims forgets the oldest. Layout 10.
            PS_CONTESTED: LruHashMap<$crate::AddrKey, $crate::ContestedEntry> =
                $crate::maps::Capacity::Fixed(16_384);

            /// SYN cookies sent to learned peers, by source: an ACK to a trap port is checked for
            /// a cookie only if one went to its source moments ago, and only a few wrong ones per
            /// window ([`crate::COOKIE_ACK_WINDOW_NS`], [`crate::COOKIE_GUESSES`]). LRU: only
            /// learned peers that were sent a cookie get an entry.
            PS_COOKIES: LruHashMap<$crate::AddrKey, $crate::CookieEntry> =
                $crate::maps::Capacity::Fixed(16_384);

            /// Scratch space of the SYN cookie code, one per CPU (see [`crate::CookieScratch`]).
            PS_COOKIE_SCRATCH: PerCpuArray<u32, $crate::CookieScratch> =
                $crate::maps::Capacity::Fixed(1);

            /// Interfaces (by ifindex) where a frame sent with XDP_TX is not delivered: a veth
            /// in native mode whose peer runs no XDP program, found by the daemon at attach.
            /// Learned peers' trap SYNs there are passed to the stack instead of answered.
            PS_NO_XDP_TX: HashMap<u32, u32> = $crate::maps::Capacity::Fixed(256);

            /// Per-CPU time of the last event of each throttled kind (index 0: bogus sources,
            /// 1: spoofed probes, 2: ignored sources), so a forged flood yields a few events a
            /// second, not one each; index 3: the global event limit's token-bucket time (GCRA).
            PS_THROTTLE: PerCpuArray<u32, u64> = $crate::maps::Capacity::Fixed(5);

            /// Counters, indexed by `Stat`.
            PS_STATS: PerCpuArray<u32, u64> =
                $crate::maps::Capacity::Fixed($crate::Stat::COUNT as u32);

            /// Probe and ban events for the daemon; the capacity is the ring's size in bytes (a
            /// power of two, a multiple of the page size).
            PS_EVENTS: RingBuf<(), $crate::Event> = $crate::maps::Capacity::Fixed(1 << 20);
        }
    };
}

/// Map types in use, named after their `aya_ebpf::btf_maps` type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Array,
    HashMap,
    LruHashMap,
    LpmTrie,
    PerCpuArray,
    RingBuf,
}

impl MapKind {
    /// The kernel's key size for a declared key of `declared` bytes.
    pub const fn key_size(self, declared: usize) -> usize {
        match self {
            // `aya_ebpf::btf_maps::lpm_trie::Key<K>`: packed `u32` prefix length, then the data.
            MapKind::LpmTrie => size_of::<u32>() + declared,
            // Ring buffers have no keys or values; the kernel reports both sizes as 0.
            MapKind::RingBuf => 0,
            _ => declared,
        }
    }

    /// The kernel's value size for a declared value of `declared` bytes.
    pub const fn value_size(self, declared: usize) -> usize {
        match self {
            MapKind::RingBuf => 0,
            _ => declared,
        }
    }
}

/// Load options that set a map's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapacityOption {
    MaxBans,
    MaxBanNetworks,
    MaxPeers,
}

impl CapacityOption {
    /// The option's name in the configuration file.
    pub const fn name(self) -> &'static str {
        match self {
            CapacityOption::MaxBans => "max_bans",
            CapacityOption::MaxBanNetworks => "max_ban_networks",
            CapacityOption::MaxPeers => "max_peers",
        }
    }
}

/// How many entries a map has (bytes, for the ring buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    /// Fixed by this build.
    Fixed(u32),
    /// Set at load time by `option`; the object carries `default`.
    ByOption {
        option: CapacityOption,
        default: u32,
    },
}

impl Capacity {
    /// `max_entries` in the object file.
    pub const fn object_entries(self) -> u32 {
        match self {
            Capacity::Fixed(n) | Capacity::ByOption { default: n, .. } => n,
        }
    }
}

/// One map as the kernel sees it, derived from its declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// Name in the object file and in the pin directory.
    pub name: &'static str,
    pub kind: MapKind,
    /// Key size the kernel reports (0 for the ring buffer).
    pub key_size: usize,
    /// Value size the kernel reports (0 for the ring buffer).
    pub value_size: usize,
    pub capacity: Capacity,
}

/// A [`MapSpec`] that also carries the declared key and value types, so a typed handle opened
/// through it cannot disagree with the declaration.
pub struct MapDef<K, V> {
    pub spec: MapSpec,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> MapDef<K, V> {
    pub const fn new(name: &'static str, kind: MapKind, capacity: Capacity) -> Self {
        assert!(
            !matches!(kind, MapKind::Array | MapKind::PerCpuArray) || size_of::<K>() == 4,
            "array maps are indexed by u32"
        );
        Self {
            spec: MapSpec {
                name,
                kind,
                key_size: kind.key_size(size_of::<K>()),
                value_size: kind.value_size(size_of::<V>()),
                capacity,
            },
            types: PhantomData,
        }
    }
}

impl<K, V> core::ops::Deref for MapDef<K, V> {
    type Target = MapSpec;
    fn deref(&self) -> &MapSpec {
        &self.spec
    }
}

macro_rules! map_defs {
    ($( $(#[$doc:meta])* $name:ident: $kind:ident<$key:ty, $value:ty> = $capacity:expr; )+) => {
        $(
            $(#[$doc])*
            pub const $name: MapDef<$key, $value> =
                MapDef::new(stringify!($name), MapKind::$kind, $capacity);
        )+

        /// Every map, in declaration order.
        pub const ALL: [&MapSpec; [$(stringify!($name)),+].len()] = [$(&$name.spec),+];
    };
}

crate::ps_maps!(map_defs);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_published_ones() {
        let names = ALL.map(|m| m.name);
        assert_eq!(
            names,
            [
                "PS_CONFIG",
                "PS_TCP_GUARD",
                "PS_UDP_GUARD",
                "PS_BANS",
                "PS_BAN_FILTER",
                "PS_BAN_FILTER_KERNEL",
                "PS_HITS",
                "PS_PREFIX_HITS",
                "PS_BAN_CIDRS",
                "PS_ALLOW_CIDRS",
                "PS_ALLOW_FILTER",
                "PS_PEERS",
                "PS_INBOUND_PEERS",
                "PS_UDP_HEARD",
                "PS_PEER_LEARN_RATE",
                "PS_UPPER_LINKS",
                "PS_CONTESTED",
                "PS_COOKIES",
                "PS_COOKIE_SCRATCH",
                "PS_NO_XDP_TX",
                "PS_THROTTLE",
                "PS_STATS",
                "PS_EVENTS",
            ]
        );
    }

    #[test]
    fn sizes_are_the_kernels() {
        // What `expected_layout()` listed by hand before the maps were declared once.
        let sizes = ALL.map(|m| (m.name, m.key_size, m.value_size));
        assert_eq!(
            sizes,
            [
                ("PS_CONFIG", 4, 96),
                ("PS_TCP_GUARD", 4, 8),
                ("PS_UDP_GUARD", 4, 8),
                ("PS_BANS", 16, 32),
                ("PS_BAN_FILTER", 4, 8),
                ("PS_BAN_FILTER_KERNEL", 4, 8),
                ("PS_HITS", 16, 16),
                ("PS_PREFIX_HITS", 20, 24),
                ("PS_BAN_CIDRS", 20, 8),
                ("PS_ALLOW_CIDRS", 20, 1),
                ("PS_ALLOW_FILTER", 4, 8),
                ("PS_PEERS", 16, 16),
                ("PS_INBOUND_PEERS", 16, 16),
                ("PS_UDP_HEARD", 24, 8),
                ("PS_PEER_LEARN_RATE", 4, 8),
                ("PS_UPPER_LINKS", 8, 32),
                ("PS_CONTESTED", 16, 16),
                ("PS_COOKIES", 16, 24),
                ("PS_COOKIE_SCRATCH", 4, 128),
                ("PS_NO_XDP_TX", 4, 4),
                ("PS_THROTTLE", 4, 8),
                ("PS_STATS", 4, 8),
                ("PS_EVENTS", 0, 0),
            ]
        );
        let kinds = ALL.map(|m| m.kind);
        assert_eq!(
            kinds,
            [
                MapKind::Array,
                MapKind::Array,
                MapKind::Array,
                MapKind::HashMap,
                MapKind::Array,
                MapKind::Array,
                MapKind::LruHashMap,
                MapKind::LruHashMap,
                MapKind::LpmTrie,
                MapKind::LpmTrie,
                MapKind::Array,
                MapKind::LruHashMap,
                MapKind::LruHashMap,
                MapKind::LruHashMap,
                MapKind::PerCpuArray,
                MapKind::HashMap,
                MapKind::LruHashMap,
                MapKind::LruHashMap,
                MapKind::PerCpuArray,
                MapKind::HashMap,
                MapKind::PerCpuArray,
                MapKind::PerCpuArray,
                MapKind::RingBuf,
            ]
        );
    }

    #[test]
    fn filter_slots_spread_and_stay_in_range() {
        let mut seen = [false; 4096];
        for i in 0..1024u32 {
            let (word, bit) = crate::AddrKey::from_v4(i.to_be_bytes()).filter_slot();
            assert_eq!(
                (word, bit),
                crate::AddrKey::filter_slot_v4(i.to_be_bytes()),
                "the IPv4 shortcut is the same slot"
            );
            assert!(word < crate::BAN_FILTER_WORDS && bit.count_ones() == 1);
            seen[(word as usize * 64 + bit.trailing_zeros() as usize) % 4096] = true;
        }
        assert!(
            seen.iter().filter(|s| **s).count() > 800,
            "1024 addresses spread"
        );
    }

    /// Every address a trie key covers has its prefilter bit among the key's marks.
    #[test]
    fn allow_filter_marks_cover_every_covered_source() {
        let marks = |p: u32, a: [u8; 16]| {
            let mut f = [0u64; crate::ALLOW_FILTER_WORDS as usize];
            crate::allow_filter_marks(p, &a, |w, b| f[w as usize] |= b);
            f
        };
        let has = |f: &[u64], (w, b): (u32, u64)| f[w as usize] & b != 0;
        let v4 = |o: [u8; 4]| crate::AddrKey::from_v4(o).addr;
        // 10.1.2.3/32, 10.1.2.0/24, 172.16.0.0/12, 0.0.0.0/0 (IPv4, prefix + 96).
        let f = marks(128, v4([10, 1, 2, 3]));
        assert!(has(&f, crate::allow_slot_v4([10, 1, 2, 3])));
        assert!(
            has(&f, crate::allow_slot_v6([0, 0, 0, 0])),
            "IPv4-mapped as IPv6"
        );
        assert!(!has(&f, crate::allow_slot_v4([10, 2, 2, 3])));
        let f = marks(108, v4([172, 16, 0, 0]));
        for b in 16..32 {
            assert!(has(&f, crate::allow_slot_v4([172, b, 9, 9])));
        }
        assert!(!has(&f, crate::allow_slot_v4([172, 32, 0, 0])));
        assert!(!has(&f, crate::allow_slot_v4([172, 15, 0, 0])));
        let f = marks(96, v4([0, 0, 0, 0]));
        assert!(f[..crate::ALLOW_FILTER_V6_WORD as usize]
            .iter()
            .all(|w| *w == u64::MAX));
        // ::/0 covers IPv4-mapped sources too.
        let f = marks(0, [0; 16]);
        assert!(f.iter().all(|w| *w == u64::MAX));
        // 2001:db8::/16 covers every IPv6 bucket, no IPv4 one.
        let mut a = [0u8; 16];
        a[0] = 0x20;
        a[1] = 0x01;
        let f = marks(16, a);
        assert!(f[crate::ALLOW_FILTER_V6_WORD as usize..]
            .iter()
            .all(|w| *w == u64::MAX));
        assert!(f[..crate::ALLOW_FILTER_V6_WORD as usize]
            .iter()
            .all(|w| *w == 0));
        // 2001:db8::/64: its /32's bucket.
        a[2] = 0x0d;
        a[3] = 0xb8;
        let f = marks(64, a);
        assert!(has(&f, crate::allow_slot_v6([0x20, 0x01, 0x0d, 0xb8])));
        assert_eq!(f.iter().map(|w| w.count_ones()).sum::<u32>(), 1);
        for i in 0..65_536u32 {
            let (w, b) = crate::allow_slot_v6(i.wrapping_mul(2_654_435_761).to_be_bytes());
            assert!((crate::ALLOW_FILTER_V6_WORD..crate::ALLOW_FILTER_WORDS).contains(&w));
            assert_eq!(b.count_ones(), 1);
        }
    }

    #[test]
    fn capacities() {
        let entries = ALL.map(|m| m.capacity.object_entries());
        assert_eq!(
            entries,
            [
                1,
                1024,
                1024,
                65_536,
                131_072,
                131_072,
                65_536,
                16_384,
                16_384,
                16_384,
                2048,
                65_536,
                65_536,
                65_536,
                1,
                4096,
                16_384,
                16_384,
                1,
                256,
                5,
                32,
                1 << 20
            ]
        );
        let by_option = ALL.map(|m| match m.capacity {
            Capacity::ByOption { option, .. } => option.name(),
            Capacity::Fixed(_) => "",
        });
        assert_eq!(
            by_option,
            [
                "",
                "",
                "",
                "max_bans",
                "",
                "",
                "",
                "",
                "max_ban_networks",
                "",
                "",
                "max_peers",
                "max_peers",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                ""
            ]
        );
    }
}
