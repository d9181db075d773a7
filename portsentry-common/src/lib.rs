//! Types shared between the XDP program (`portsentry-ebpf`) and userspace (`portsentry`).
//!
//! Every type here is `#[repr(C)]` with explicit padding so that the kernel and userspace agree on
//! the layout byte for byte, and so that BTF (and `bpftool map dump`) shows readable field names.
//! Layout changes must bump [`LAYOUT_VERSION`]: the daemon refuses pinned maps of another version.
#![no_std]

/// Bumped on any change to a map's key or value layout; stored in [`Config::layout_version`].
pub const LAYOUT_VERSION: u32 = 2;

/// Map names, shared so that userspace and the XDP program cannot disagree.
pub mod map_names {
    pub const CONFIG: &str = "PS_CONFIG";
    pub const TCP_GUARD: &str = "PS_TCP_GUARD";
    pub const UDP_GUARD: &str = "PS_UDP_GUARD";
    pub const BANS: &str = "PS_BANS";
    pub const HITS: &str = "PS_HITS";
    pub const BAN_CIDRS: &str = "PS_BAN_CIDRS";
    pub const ALLOW_CIDRS: &str = "PS_ALLOW_CIDRS";
    pub const STATS: &str = "PS_STATS";
    pub const EVENTS: &str = "PS_EVENTS";
}

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "portsentry";

/// Number of 64-bit words in a port bitmap: 65 536 ports / 64.
pub const PORT_BITMAP_WORDS: u32 = 1024;

/// Default capacity of the ban table (overridable at load time).
pub const DEFAULT_MAX_BANS: u32 = 65_536;
/// Default capacity of the per-source hit table.
pub const DEFAULT_MAX_HITS: u32 = 65_536;
/// Default capacity of each CIDR trie.
pub const DEFAULT_MAX_CIDRS: u32 = 16_384;
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 1 << 20;

/// An address as a map key: IPv6 as is, IPv4 as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
///
/// One key form for both families keeps one ban table and one lookup per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct AddrKey {
    pub addr: [u8; 16],
}

impl AddrKey {
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12] = octets[0];
        addr[13] = octets[1];
        addr[14] = octets[2];
        addr[15] = octets[3];
        Self { addr }
    }

    pub const fn from_v6(octets: [u8; 16]) -> Self {
        Self { addr: octets }
    }

    /// The IPv4 address if this key is IPv4-mapped.
    pub fn as_v4(&self) -> Option<[u8; 4]> {
        let a = &self.addr;
        if a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff {
            Some([a[12], a[13], a[14], a[15]])
        } else {
            None
        }
    }
}

/// IP protocol numbers as stored in maps and events.
pub mod proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// How a probe was classified; names follow PortSentry's log wording (see `ScanType::name`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanType {
    /// Not a probe (or not classified).
    None = 0,
    TcpSyn = 1,
    TcpFin = 2,
    TcpNull = 3,
    TcpXmas = 4,
    /// Some other flag combination without ACK or RST.
    TcpOther = 5,
    Udp = 6,
    /// Ban added by an administrator (`portsentry ban`), not by a probe.
    Manual = 7,
}

impl ScanType {
    pub const COUNT: usize = 8;

    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::TcpSyn,
            2 => Self::TcpFin,
            3 => Self::TcpNull,
            4 => Self::TcpXmas,
            5 => Self::TcpOther,
            6 => Self::Udp,
            7 => Self::Manual,
            _ => Self::None,
        }
    }

    /// PortSentry's scan-type wording, as it appears in `type: [...]`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "Unknown",
            Self::TcpSyn => "TCP SYN/Normal scan",
            Self::TcpFin => "TCP FIN scan",
            Self::TcpNull => "TCP NULL scan",
            Self::TcpXmas => "TCP XMAS scan",
            Self::TcpOther => "Unknown Type",
            Self::Udp => "UDP",
            Self::Manual => "Manual",
        }
    }
}

/// Flags in [`Config::flags`].
pub mod config_flags {
    /// Drop banned sources (block mode). Without it the program only counts (detect mode).
    pub const ENFORCE: u32 = 1 << 0;
    /// Probes on guarded TCP ports lead to a ban (PortSentry's BLOCK_TCP).
    pub const BLOCK_TCP: u32 = 1 << 1;
    /// Probes on guarded UDP ports lead to a ban (PortSentry's BLOCK_UDP).
    pub const BLOCK_UDP: u32 = 1 << 2;
}

/// Runtime settings written by userspace into the single-entry config array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// Must equal [`LAYOUT_VERSION`]; a zeroed config (daemon never ran) makes the program pass all.
    pub layout_version: u32,
    /// `config_flags::*`.
    pub flags: u32,
    /// Ban on the N-th counted probe within `window_ns`; 0 is treated as 1.
    pub scan_trigger: u32,
    /// Number of entries in the CIDR ban trie; 0 skips the lookup.
    pub ban_cidr_count: u32,
    /// Number of entries in the allowlist trie; 0 skips the lookup.
    pub allow_cidr_count: u32,
    pub _pad0: u32,
    /// Probes older than this stop counting (nanoseconds; 0 = never decay, PortSentry's behaviour).
    pub window_ns: u64,
    /// Lifetime of a ban the kernel creates (nanoseconds; 0 = forever).
    pub ban_ttl_ns: u64,
}

/// Who created a ban.
pub mod ban_origin {
    /// The XDP program, after a source crossed the trigger.
    pub const DETECTED: u8 = 1;
    /// An administrator, via `portsentry ban`.
    pub const MANUAL: u8 = 2;
    /// Restored from the state directory at start.
    pub const RESTORED: u8 = 3;
    /// A fleet decision (e.g. CrowdSec).
    pub const FLEET: u8 = 4;
}

/// A ban: value of the ban table, keyed by [`AddrKey`].
///
/// Times are `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`); userspace converts them to
/// wall-clock time for display and persistence.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BanEntry {
    pub banned_at_ns: u64,
    /// 0 = never expires. The XDP program stops dropping once `now >= expires_at_ns`.
    pub expires_at_ns: u64,
    /// Packets dropped because of this ban (updated atomically by the XDP program).
    pub drops: u64,
    /// Destination port of the triggering probe.
    pub port: u16,
    /// `proto::*` of the triggering probe.
    pub proto: u8,
    /// `ScanType` of the triggering probe.
    pub scan_type: u8,
    /// `ban_origin::*`.
    pub origin: u8,
    /// `ban_flags::*`.
    pub flags: u8,
    pub _pad: [u8; 2],
}

/// Flags in [`BanEntry::flags`].
pub mod ban_flags {
    /// A detect-mode ("shadow") ban: recorded and reported, never dropped, in any mode. In
    /// block mode a new probe from its source replaces it with a real ban.
    pub const SHADOW: u8 = 1 << 0;
}

/// Per-source probe counter: value of the hit table, keyed by [`AddrKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HitEntry {
    /// Start of the current counting window (`CLOCK_BOOTTIME` ns).
    pub window_start_ns: u64,
    /// Probes counted in the current window (updated atomically).
    pub count: u64,
}

/// Indexes into the per-CPU statistics array.
///
/// There is no packet counter: the ordinary path updates exactly one counter (`Passed`), so
/// userspace derives `packets = passed + dropped`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    Passed = 0,
    Dropped = 1,
    /// Detect mode: packets that block mode would have dropped.
    DroppedWould = 2,
    ProbesSyn = 3,
    ProbesFin = 4,
    ProbesNull = 5,
    ProbesXmas = 6,
    ProbesOther = 7,
    ProbesUdp = 8,
    Bans = 9,
    /// Bans that could not be stored because the ban table was full.
    BanTableFull = 10,
    /// Events the ring buffer had no room for.
    EventsLost = 11,
    /// Packets that did not parse; they pass unless their source is banned.
    Malformed = 12,
    /// Would-be probes from allowlisted sources (passed, not counted).
    Allowlisted = 13,
    /// Probes that could not be counted because the hit table was full.
    HitTableFull = 14,
}

impl Stat {
    pub const COUNT: u32 = 15;
    pub const ALL: [Stat; Stat::COUNT as usize] = [
        Stat::Passed,
        Stat::Dropped,
        Stat::DroppedWould,
        Stat::ProbesSyn,
        Stat::ProbesFin,
        Stat::ProbesNull,
        Stat::ProbesXmas,
        Stat::ProbesOther,
        Stat::ProbesUdp,
        Stat::Bans,
        Stat::BanTableFull,
        Stat::EventsLost,
        Stat::Malformed,
        Stat::Allowlisted,
        Stat::HitTableFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stat::Passed => "passed",
            Stat::Dropped => "dropped",
            Stat::DroppedWould => "dropped_would",
            Stat::ProbesSyn => "probes_syn",
            Stat::ProbesFin => "probes_fin",
            Stat::ProbesNull => "probes_null",
            Stat::ProbesXmas => "probes_xmas",
            Stat::ProbesOther => "probes_other",
            Stat::ProbesUdp => "probes_udp",
            Stat::Bans => "bans",
            Stat::BanTableFull => "ban_table_full",
            Stat::EventsLost => "events_lost",
            Stat::Malformed => "malformed",
            Stat::Allowlisted => "allowlisted",
            Stat::HitTableFull => "hit_table_full",
        }
    }
}

/// Kinds of ring-buffer events.
pub mod event_kind {
    /// A counted probe on a guarded port (below or at the trigger).
    pub const PROBE: u8 = 1;
    /// The probe that banned its source.
    pub const BAN: u8 = 2;
    /// A ban that could not be stored because the ban table is full.
    pub const BAN_TABLE_FULL: u8 = 3;
}

/// Event flags in [`Event::flags`].
pub mod event_flags {
    /// The IPv4 header carried options.
    pub const IP_OPTIONS: u8 = 1 << 0;
    /// The source is IPv6 (IP options are then "unknown" in PortSentry's wording).
    pub const IPV6: u8 = 1 << 1;
    /// The packet was dropped.
    pub const DROPPED: u8 = 1 << 2;
    /// Blocking for this protocol is off or the program is in detect mode (PortSentry's "noblock").
    pub const NOBLOCK: u8 = 1 << 3;
}

/// A ring-buffer event: emitted on state changes only, never per dropped packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Event {
    /// `CLOCK_BOOTTIME` ns.
    pub timestamp_ns: u64,
    /// Probes counted for this source in the current window, this one included.
    pub count: u64,
    pub src: AddrKey,
    pub ifindex: u32,
    pub dst_port: u16,
    /// `event_kind::*`.
    pub kind: u8,
    /// `proto::*`.
    pub proto: u8,
    /// `ScanType`.
    pub scan_type: u8,
    /// Raw TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// `event_flags::*`.
    pub flags: u8,
    pub _pad: [u8; 5],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), contain only integers and byte arrays, and have explicit padding.
    unsafe impl aya::Pod for super::AddrKey {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::BanEntry {}
    unsafe impl aya::Pod for super::HitEntry {}
    unsafe impl aya::Pod for super::Event {}
}

// Layout checks: a silent size change would corrupt every map read.
const _: () = assert!(core::mem::size_of::<AddrKey>() == 16);
const _: () = assert!(core::mem::size_of::<Config>() == 40);
const _: () = assert!(core::mem::size_of::<BanEntry>() == 32);
const _: () = assert!(core::mem::size_of::<HitEntry>() == 16);
const _: () = assert!(core::mem::size_of::<Event>() == 48);
// Field order is part of the pinned layout: a swap of same-size fields must fail the build.
const _: () = assert!(core::mem::offset_of!(BanEntry, expires_at_ns) == 8);
const _: () = assert!(core::mem::offset_of!(BanEntry, drops) == 16);
const _: () = assert!(core::mem::offset_of!(BanEntry, port) == 24);
const _: () = assert!(core::mem::offset_of!(BanEntry, origin) == 28);
const _: () = assert!(core::mem::offset_of!(BanEntry, flags) == 29);
const _: () = assert!(core::mem::offset_of!(Config, window_ns) == 24);
