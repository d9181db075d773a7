//! Types shared between the XDP program (`portsentry-ebpf`) and userspace (`portsentry`).
//!
//! Every type here is `#[repr(C)]` with explicit padding so that the kernel and userspace agree on
//! the layout byte for byte, and so that BTF (and `bpftool map dump`) shows readable field names.
//! Layout changes must bump [`LAYOUT_VERSION`]: the daemon refuses pinned maps of another version.
//!
//! Declared once here and used by the kernel, the daemon and the tests alike: every map
//! ([`maps`]), every enum whose codes cross the boundary ([`ScanType`], [`Stat`], [`BanOrigin`],
//! [`EventKind`], [`IpProto`]) and the header constants ([`tcp_flags`], [`ethertype`],
//! [`ipv6_ext`]), and the bogus source ranges ([`bogus`]).
#![no_std]

pub mod bogus;
mod codes;
mod headers;
pub mod maps;

pub use codes::{BanOrigin, EventKind, IpProto, ScanType, Stat, UnknownCode};
pub use headers::{address_family, ethertype, ipv6_ext, tcp_flags};

/// Bumped on any change to a map's key or value layout; stored in [`Config::layout_version`].
pub const LAYOUT_VERSION: u32 = 12;

/// A past instant on `CLOCK_BOOTTIME` (what `bpf_ktime_get_boot_ns` returns), in nanoseconds,
/// *signed*: a record restored from before this boot (a peer seen, a ban made, on the machine's
/// previous life) lies before the clock's origin and is negative. Clamping such a time to the
/// boot would make it look only as old as the machine's uptime, so a record of 6 days on a
/// machine up 9 minutes would live nearly 6 days longer than configured (layout 8; before,
/// these fields were unsigned and clamped).
pub type BootInstant = i64;

/// How long ago `since` was at `now` (both boot-clock ns), 0 for an instant not yet past. Exact
/// for instants before the boot; saturates instead of wrapping for absurd ones.
#[inline(always)]
pub fn boot_age_ns(now: u64, since: BootInstant) -> u64 {
    // `now` is below 2^63 for 292 years of uptime; `as` keeps the bits either way.
    let age = (now as i64).saturating_sub(since);
    if age < 0 {
        0
    } else {
        age as u64
    }
}

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "portsentry";

/// The same XDP program without the learned-peer branch, for kernels that lack the SYN cookie
/// helpers (`bpf_tcp_raw_gen_syncookie_*`, Linux 6.0) or `bpf_xdp_load_bytes` (5.18).
pub const PROGRAM_NAME_COMPAT: &str = "portsentry_compat";

/// The cgroup programs that learn peers ([`PeerEntry`]), in the same object as the XDP program
/// so that they share its maps. Each name is the program's function name in `portsentry-ebpf`.
pub mod peer_programs {
    /// sock_ops: the remote end of every completed TCP handshake (opened or accepted).
    pub const TCP_ESTABLISHED: &str = "ps_peer_tcp";
    /// cgroup/connect4 and connect6: the destination a UDP socket is connected to.
    pub const UDP_CONNECT4: &str = "ps_peer_connect4";
    pub const UDP_CONNECT6: &str = "ps_peer_connect6";
    /// cgroup/sendmsg4 and sendmsg6: the destination of an unconnected UDP send (unless that
    /// socket heard from it first: an answer, not a choice).
    pub const UDP_SENDMSG4: &str = "ps_peer_sendmsg4";
    pub const UDP_SENDMSG6: &str = "ps_peer_sendmsg6";
    /// cgroup/recvmsg4 and recvmsg6: marks the sources a UDP socket heard from before it sent
    /// to them ([`HeardKey`]), so that its answers to them teach nothing.
    pub const UDP_RECVMSG4: &str = "ps_peer_recvmsg4";
    pub const UDP_RECVMSG6: &str = "ps_peer_recvmsg6";
}

/// New outbound peers (PS_PEERS) each CPU may learn at once after a quiet spell: the burst of
/// the learning rate bound. A host's own sockets reach this only when one process contacts
/// hundreds of new hosts in a row; beyond it they are learned at [`PEER_LEARN_INTERVAL_NS`].
pub const PEER_LEARN_BURST: u64 = 1024;
/// One new outbound peer per this many ns per CPU in the long run (10 a second): a local
/// process (or a remote party that makes this host contact addresses of its choosing) needs
/// hours, not seconds, to push a peer this host keeps using out of a full table.
pub const PEER_LEARN_INTERVAL_NS: u64 = 100_000_000;

/// Bits in each ban prefilter: 2^23 (1 MiB). With a million bans about 11 % of other sources
/// still take the exact lookup; with the default 65 536, under 1 %.
pub const BAN_FILTER_BITS_LOG2: u32 = 23;
/// 64-bit words in each ban prefilter.
pub const BAN_FILTER_WORDS: u32 = 1 << (BAN_FILTER_BITS_LOG2 - 6);

/// 64-bit words in the allowlist prefilter `PS_ALLOW_FILTER`: words 0..[`ALLOW_FILTER_V6_WORD`]
/// hold one bit per IPv4 /16 (exact), the rest one bit per hash bucket of an IPv6 source's
/// first 32 bits (65 536 buckets).
pub const ALLOW_FILTER_WORDS: u32 = 2048;
/// First word of the IPv6 half of the allowlist prefilter.
pub const ALLOW_FILTER_V6_WORD: u32 = 1024;

/// Allowlist prefilter slot (word, bit) of an IPv4 source: its /16, exact.
#[inline(always)]
pub const fn allow_slot_v4(octets: [u8; 4]) -> (u32, u64) {
    let idx = (octets[0] as u32) << 8 | octets[1] as u32;
    (idx >> 6, 1u64 << (idx & 63))
}

/// Allowlist prefilter slot (word, bit) of an IPv6 source (any 16-byte key read as IPv6): a
/// multiplicative hash of its first 32 bits (its /32) into the IPv6 half.
#[inline(always)]
pub const fn allow_slot_v6(first: [u8; 4]) -> (u32, u64) {
    let h = ((u32::from_be_bytes(first) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as u32;
    (ALLOW_FILTER_V6_WORD + (h >> 6), 1u64 << (h & 63))
}

/// Calls `mark(word, bits)` for every allowlist prefilter bit a trie key (`prefix` bits of the
/// 16-byte `addr`, IPv4 IPv4-mapped with prefix + 96) may cover, for both the IPv4 and the IPv6
/// view of a source: the IPv6 half gets the /32's bucket (every bucket below /32), the IPv4
/// half every /16 of the key's range that lies in `::ffff:0:0/96` (none if it has none). A
/// superset is safe (a set bit only costs the trie lookup); a missing bit is not.
pub fn allow_filter_marks(prefix: u32, addr: &[u8; 16], mut mark: impl FnMut(u32, u64)) {
    let p = if prefix > 128 { 128 } else { prefix };
    if p >= 32 {
        let (w, b) = allow_slot_v6([addr[0], addr[1], addr[2], addr[3]]);
        mark(w, b);
    } else {
        for w in ALLOW_FILTER_V6_WORD..ALLOW_FILTER_WORDS {
            mark(w, u64::MAX);
        }
    }
    const MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    let n = if p < 96 { p } else { 96 };
    let bit = |b: &[u8], i: u32| b[(i / 8) as usize] >> (7 - i % 8) & 1;
    if (0..n).any(|i| bit(addr, i) != bit(&MAPPED, i)) {
        return; // no IPv4-mapped address in range
    }
    let p4 = p.saturating_sub(96); // IPv4 prefix, 0..=32
    if p4 >= 16 {
        let (w, b) = allow_slot_v4([addr[12], addr[13], 0, 0]);
        mark(w, b);
    } else {
        let span = 1u32 << (16 - p4);
        let first = ((addr[12] as u32) << 8 | addr[13] as u32) & !(span - 1);
        for idx in first..first + span {
            mark(idx >> 6, 1u64 << (idx & 63));
        }
    }
}

/// Number of 64-bit words in a port bitmap: 65 536 ports / 64.
pub const PORT_BITMAP_WORDS: u32 = 1024;

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

    /// This address's slot in the ban prefilters ([`BAN_FILTER_WORDS`] words of 64 bits,
    /// `PS_BAN_FILTER` and `PS_BAN_FILTER_KERNEL`): the word index and the bit in it. A
    /// multiplicative hash of the two halves; the kernel and userspace both call this one.
    #[inline(always)]
    pub fn filter_slot(&self) -> (u32, u64) {
        let a = &self.addr;
        let hi = u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
        let lo = u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
        filter_slot_of(hi, lo)
    }

    /// [`AddrKey::filter_slot`] of the IPv4-mapped key of `octets`, from the 4 bytes alone
    /// (the XDP program's IPv4 path: no 16-byte key to read back).
    #[inline(always)]
    pub fn filter_slot_v4(octets: [u8; 4]) -> (u32, u64) {
        // Bytes 8..16 of `::ffff:a.b.c.d`, little endian: 0, 0, ff, ff, a, b, c, d.
        let lo = 0xffff_0000 | u64::from(u32::from_le_bytes(octets)) << 32;
        filter_slot_of(0, lo)
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

#[inline(always)]
const fn filter_slot_of(hi: u64, lo: u64) -> (u32, u64) {
    let h = (hi ^ lo.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let slot = (h >> (64 - BAN_FILTER_BITS_LOG2)) as u32;
    (slot >> 6, 1u64 << (slot & 63))
}

/// Flags in [`Config::flags`].
pub mod config_flags {
    /// Drop banned sources (block mode). Without it the program only counts (detect mode).
    pub const ENFORCE: u32 = 1 << 0;
    /// Probes on guarded TCP ports lead to a ban (PortSentry's BLOCK_TCP).
    pub const BLOCK_TCP: u32 = 1 << 1;
    /// Probes on guarded UDP ports lead to a ban (PortSentry's BLOCK_UDP).
    pub const BLOCK_UDP: u32 = 1 << 2;
    /// Check at ban time that the probe arrived the way this host routes back to its source
    /// (`bpf_fib_lookup`); a probe that fails never bans.
    pub const PATH_CHECK: u32 = 1 << 3;
    /// Trap probes from learned peers (PS_PEERS) do not ban on their own: TCP SYNs get a SYN
    /// cookie and ban only on a valid handshake, UDP is only reported.
    pub const PEER_CHALLENGE: u32 = 1 << 4;
    /// Accepted TCP connections teach inbound peers (PS_INBOUND_PEERS), and those count as
    /// learned peers too (`learn_inbound`): every client of a service then gets SYN cookies
    /// instead of a ban for its trap SYNs. Off by default.
    pub const LEARN_INBOUND: u32 = 1 << 5;
}

/// Runtime settings written by userspace into the single-entry config array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// Must equal [`LAYOUT_VERSION`]; a zeroed config (daemon never ran) makes the program pass all.
    pub layout_version: u32,
    /// `config_flags::*`.
    pub flags: u32,
    /// Ban on the N-th counted probe within `window_ns`, as [`effective_trigger`] applies it.
    pub scan_trigger: u32,
    /// Number of entries in the CIDR ban trie; 0 skips the lookup.
    pub ban_cidr_count: u32,
    /// Number of entries in the allowlist trie; 0 skips the lookup.
    pub allow_cidr_count: u32,
    /// Probes within `window_ns` from one prefix (`ipv6_prefix`, `ipv4_prefix`) that make a
    /// prefix trigger event ([`crate::EventKind::PrefixTrigger`]); 0 = no prefix counting.
    pub prefix_hits: u32,
    /// Probes older than this stop counting (nanoseconds; 0 = never decay, PortSentry's behaviour).
    pub window_ns: u64,
    /// Lifetime of a ban the kernel creates (nanoseconds; 0 = forever).
    pub ban_ttl_ns: u64,
    /// A learned peer not seen for this long is a stranger again (nanoseconds; 0 = never).
    pub peer_ttl_ns: u64,
    /// The network namespace the daemon guards (`bpf_get_netns_cookie`): the cgroup programs
    /// that learn peers see sockets of every namespace and record only this one's.
    pub netns_cookie: u64,
    /// Prefix length IPv6 probes are also counted under (0 or 128 = off).
    pub ipv6_prefix: u8,
    /// Prefix length IPv4 probes are also counted under (0 or 32 = off).
    pub ipv4_prefix: u8,
    pub _pad1: [u8; 2],
    /// Global event limit: burst of the per-CPU token bucket ([`EVENT_BURST`]).
    pub event_burst: u32,
    /// Global event limit: one token per this many ns per CPU (0 = no limit;
    /// [`EVENT_INTERVAL_NS`]). Ban and prefix-trigger events are never limited.
    pub event_interval_ns: u64,
    /// How long a neighbour whose MAC changed stays contested ([`ContestedEntry`]; ns, 0 = the
    /// ARP/ND watch is off and nothing is contested). Layout 10.
    pub contest_ns: u64,
    /// The trap SYN-ACK's options, as this host's own SYN-ACKs would carry them (the daemon
    /// reads the TCP sysctls): `synack_flags::*`. A peer must not tell trap ports from services
    /// by their options.
    pub synack_flags: u8,
    /// Window scale this host offers (`net.ipv4.tcp_rmem`, `net.core.rmem_max`).
    pub synack_wscale: u8,
    /// IPv4 TTL (`net.ipv4.ip_default_ttl`; 0 reads as 64).
    pub synack_ttl: u8,
    /// IPv6 hop limit (`net.ipv6.conf.default.hop_limit`; 0 reads as 64).
    pub synack_hop_limit: u8,
    /// A listener's receive space the SYN-ACK's window is cut from (a multiple of the MSS, at
    /// most 65535), as `tcp_select_initial_window` does (0 reads as 65535).
    pub synack_space: u32,
    /// Key of the per-address-pair TSval offset (`synack_flags::TS_OFFSET`), random per run.
    pub synack_ts_key: u32,
    pub _pad2: u32,
}

/// Flags in [`Config::synack_flags`]: which options a SYN-ACK of this host carries when the
/// SYN offered them.
pub mod synack_flags {
    /// `net.ipv4.tcp_sack`: SACK permitted.
    pub const SACK: u8 = 1 << 0;
    /// `net.ipv4.tcp_timestamps` 1 or 2: timestamps.
    pub const TIMESTAMPS: u8 = 1 << 1;
    /// `net.ipv4.tcp_timestamps` 1: each address pair's TSval has its own random offset.
    pub const TS_OFFSET: u8 = 1 << 2;
    /// `net.ipv4.tcp_window_scaling`: window scale.
    pub const WSCALE: u8 = 1 << 3;
}

/// An ACK to a trap port from a learned peer is checked for a SYN cookie only if a cookie went
/// to that source less than this long ago (a handshake's ACK follows its SYN-ACK within a
/// round trip; a lost SYN-ACK makes the peer resend its SYN, which sends a fresh cookie).
pub const COOKIE_ACK_WINDOW_NS: u64 = 10_000_000_000;
/// Wrong cookies checked per source per [`COOKIE_ACK_WINDOW_NS`] window (the window starts at
/// the first cookie sent after the last one ended); beyond them no ACK from that source is
/// checked until the next window. An off-path guess is right about once in 2^29, so a forger
/// needs about 2^29 / 8 windows: over 20 years per source.
pub const COOKIE_GUESSES: u64 = 8;

/// Per-CPU scratch space of the SYN cookie code (PS_COOKIE_SCRATCH): the route lookup's
/// parameters and result (`struct bpf_fib_lookup`, 64 bytes) and a copy of the SYN's TCP
/// header, kept in a map value rather than on the BPF stack, which the whole program shares
/// (512 bytes). Only the XDP program uses it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieScratch {
    pub fib: [u8; 64],
    pub syn: [u8; 64],
}

impl Default for CookieScratch {
    fn default() -> Self {
        Self {
            fib: [0; 64],
            syn: [0; 64],
        }
    }
}

/// A SYN cookie sent to a source: value of PS_COOKIES, keyed by [`AddrKey`]. Only this program
/// reads it (coarse-clock times).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CookieEntry {
    /// When the last cookie went to this source.
    pub sent_ns: u64,
    /// Start of the current guess-budget window.
    pub window_start_ns: u64,
    /// Wrong cookies checked in this window (updated atomically).
    pub wrong: u64,
}

/// `scan_trigger` as applied: the N-th probe from a source bans it, and 0 means the first
/// (PortSentry's SCAN_TRIGGER). The one statement of the rule, for both sides.
#[inline(always)]
pub const fn effective_trigger(scan_trigger: u32) -> u32 {
    if scan_trigger == 0 {
        1
    } else {
        scan_trigger
    }
}

/// Events (other than bans and prefix triggers) each CPU may send per second in the long run:
/// the kernel's global event limit ([`Config::event_interval_ns`]). Beyond it events are
/// counted (`Stat::EventsSuppressed`), not sent.
pub const EVENT_RATE_PER_CPU: u64 = 1_000;
/// [`Config::event_interval_ns`] for [`EVENT_RATE_PER_CPU`].
pub const EVENT_INTERVAL_NS: u64 = 1_000_000_000 / EVENT_RATE_PER_CPU;
/// Events a CPU may send at once after a quiet spell ([`Config::event_burst`]).
pub const EVENT_BURST: u32 = 64;
/// Per source, events whose count is at most the trigger plus this many always go out (a
/// detect-mode or noblock scanner's next probes still get PortSentry's per-probe lines, as many
/// as the daemon writes per source and interval); beyond that only powers of two of the count.
pub const EVENTS_BEYOND_TRIGGER: u64 = 5;

/// A ban: value of the ban table, keyed by [`AddrKey`].
///
/// Times are `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`); userspace converts them to
/// wall-clock time for display and persistence.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BanEntry {
    /// A [`BootInstant`]: negative for a ban restored from before this boot.
    pub banned_at_ns: BootInstant,
    /// 0 = never expires. The XDP program stops dropping once `now >= expires_at_ns`.
    pub expires_at_ns: u64,
    /// Packets dropped because of this ban (updated atomically by the XDP program).
    pub drops: u64,
    /// Destination port of the triggering probe.
    pub port: u16,
    /// [`IpProto`] of the triggering probe (0 for a ban no probe made).
    pub proto: u8,
    /// [`ScanType`] of the triggering probe.
    pub scan_type: u8,
    /// [`BanOrigin`].
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
    /// Made although the path check could not decide (`event_flags::UNVERIFIED`): such bans
    /// give way first when the table is full, and never escalate as repeat offences.
    pub const UNVERIFIED: u8 = 1 << 1;
}

/// Per-source probe counter: value of the hit table, keyed by [`AddrKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HitEntry {
    /// Start of the current counting window (`CLOCK_MONOTONIC_COARSE` ns: only the program
    /// reads it).
    pub window_start_ns: u64,
    /// Probes counted in the current window (updated atomically).
    pub count: u64,
}

/// Probe counter of a prefix: value of PS_PREFIX_HITS, keyed by [`PrefixKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PrefixHitEntry {
    /// Start of the current counting window (`CLOCK_MONOTONIC_COARSE` ns: only the program
    /// reads it).
    pub window_start_ns: u64,
    /// Probes counted in the current window (updated atomically).
    pub count: u64,
    /// The count from which the next prefix trigger may fire (0: [`Config::prefix_hits`]);
    /// doubled by the CPU that sends a trigger, reset with the window.
    pub next_trigger: u64,
}

/// A prefix as a map key: the address masked to `len` bits ([`AddrKey`] form, IPv4 mapped,
/// so an IPv4 /24 is `len` 120) and the length, so that a reload changing the length never
/// mixes counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PrefixKey {
    pub addr: [u8; 16],
    pub len: u32,
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
    /// A ban made although the path check could not decide (no route back, no neighbour entry
    /// yet): the source may be forged; such bans are never shared with the fleet.
    pub const UNVERIFIED: u8 = 1 << 4;
    /// A learned peer's probe (or ban), counted only because it completed a handshake on a
    /// valid SYN cookie.
    pub const CONFIRMED: u8 = 1 << 6;
    /// A learned peer's trap SYN that got no SYN cookie: no resolved neighbour on the route
    /// back, the route leaves by another interface, XDP_TX cannot deliver on this interface
    /// (PS_NO_XDP_TX), or the SYN could not be rewritten. It passed to the stack.
    pub const COOKIE_WITHHELD: u8 = 1 << 7;
}

/// A host this one has really talked to: value of PS_PEERS (hosts it chose to contact) and of
/// PS_INBOUND_PEERS (clients it accepted, with `learn_inbound`), keyed by [`AddrKey`]. Written
/// by the cgroup programs (completed TCP handshakes, UDP destinations) and by userspace
/// restoring the saved peers; a forged packet cannot create one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PeerEntry {
    /// Last time a socket of this host talked to the peer (a [`BootInstant`]: negative for a
    /// peer restored from before this boot).
    pub last_seen_ns: BootInstant,
    /// `peer_ways::*`: who started talking.
    pub ways: u32,
    pub _pad: u32,
}

impl PeerEntry {
    /// Whether the peer is still remembered at `now` (boot-clock ns) with a memory of `ttl_ns`
    /// (`Config::peer_ttl_ns`; 0 = forever). The one rule for the kernel and userspace.
    #[inline(always)]
    pub fn is_current(&self, now: u64, ttl_ns: u64) -> bool {
        ttl_ns == 0 || boot_age_ns(now, self.last_seen_ns) < ttl_ns
    }
}

/// Bits of [`PeerEntry::ways`].
pub mod peer_ways {
    /// This host contacted the peer (a TCP connection it opened, a connected UDP socket, an
    /// unconnected send to a destination that had not written to that socket first): a host it
    /// depends on. Kept in PS_PEERS; fleet decisions never ban these.
    pub const OUTBOUND: u32 = 1 << 0;
    /// The peer contacted this host (a TCP connection it accepted): a client. Kept in
    /// PS_INBOUND_PEERS, and only with `learn_inbound`; the fleet may still ban it (anyone can
    /// become a client first).
    pub const INBOUND: u32 = 1 << 1;
}

/// A UDP socket and a source it received from (key of PS_UDP_HEARD; the value is when, boot
/// clock ns): the socket's sends to that source answer it, and teach no outbound peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct HeardKey {
    /// `bpf_get_socket_cookie` of the receiving socket.
    pub socket_cookie: u64,
    pub addr: AddrKey,
}

/// Key of PS_UPPER_LINKS: the interface a frame came in on and its VLAN tags (0: none; a
/// single tag is `outer_vid`, a double-tagged frame has both). Layout 10.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LinkKey {
    pub ifindex: u32,
    pub outer_vid: u16,
    pub inner_vid: u16,
}

/// Most interfaces a route back may leave by for one [`LinkKey`] besides the ingress itself.
pub const UPPER_LINKS_MAX: usize = 8;

/// Value of PS_UPPER_LINKS: the upper devices a frame of the key's interface and tags is
/// handed to (bridge and bond masters, the VLAN device of its tag, their masters), so a route
/// back through one of them counts as a route back through the ingress. Unused slots are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UpperLinks {
    pub ifindex: [u32; UPPER_LINKS_MAX],
}

/// Value of PS_CONTESTED, keyed by [`AddrKey`]: a neighbour whose MAC changed recently (an
/// ARP or ND frame claimed its address from another MAC, or rtnetlink reported a new lladdr).
/// Until `until_ns` its probes do not ban and it gets no SYN cookie. Layout 10.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ContestedEntry {
    /// Boot-clock ns (`bpf_ktime_get_boot_ns`) until which the address is contested.
    pub until_ns: u64,
    /// The MAC that claimed the address (the new one).
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// A ring-buffer event: emitted on state changes only, never per dropped packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Event {
    /// `CLOCK_BOOTTIME` ns for `Ban` and `BanTableFull` events (the ban's time); for the others
    /// `CLOCK_MONOTONIC_COARSE` ns, the probe path's cheap clock (ordering only).
    pub timestamp_ns: u64,
    /// Probes counted for this source in the current window, this one included.
    pub count: u64,
    pub src: AddrKey,
    pub ifindex: u32,
    pub dst_port: u16,
    /// [`EventKind`].
    pub kind: u8,
    /// [`IpProto`].
    pub proto: u8,
    /// [`ScanType`].
    pub scan_type: u8,
    /// Raw TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// `event_flags::*`.
    pub flags: u8,
    /// A prefix trigger's prefix length (of `src`, the masked prefix; IPv4 as 0..=32); 0 in
    /// every other event.
    pub prefix_len: u8,
    pub _pad: [u8; 4],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), contain only integers and byte arrays, and have explicit padding.
    unsafe impl aya::Pod for super::AddrKey {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::BanEntry {}
    unsafe impl aya::Pod for super::HitEntry {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::PeerEntry {}
    unsafe impl aya::Pod for super::PrefixHitEntry {}
    unsafe impl aya::Pod for super::PrefixKey {}
    unsafe impl aya::Pod for super::CookieEntry {}
    unsafe impl aya::Pod for super::CookieScratch {}
    unsafe impl aya::Pod for super::HeardKey {}
    unsafe impl aya::Pod for super::LinkKey {}
    unsafe impl aya::Pod for super::UpperLinks {}
    unsafe impl aya::Pod for super::ContestedEntry {}
}

/// Pins a shared struct's layout: its size and the offset of every field, so that a resize, a
/// reorder or a swap of same-size fields fails the build instead of corrupting map reads. The
/// list must name every field (the destructuring below has no `..`), so a field added into
/// padding cannot go unpinned either.
macro_rules! assert_layout {
    ($t:ident, size $size:literal, { $($field:ident: $offset:literal),+ $(,)? }) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        $( const _: () = assert!(core::mem::offset_of!($t, $field) == $offset); )+
        const _: fn($t) = |v| {
            let $t { $($field: _),+ } = v;
        };
    };
}

assert_layout!(AddrKey, size 16, { addr: 0 });
assert_layout!(Config, size 96, {
    layout_version: 0,
    flags: 4,
    scan_trigger: 8,
    ban_cidr_count: 12,
    allow_cidr_count: 16,
    prefix_hits: 20,
    window_ns: 24,
    ban_ttl_ns: 32,
    peer_ttl_ns: 40,
    netns_cookie: 48,
    ipv6_prefix: 56,
    ipv4_prefix: 57,
    _pad1: 58,
    event_burst: 60,
    event_interval_ns: 64,
    contest_ns: 72,
    synack_flags: 80,
    synack_wscale: 81,
    synack_ttl: 82,
    synack_hop_limit: 83,
    synack_space: 84,
    synack_ts_key: 88,
    _pad2: 92,
});
assert_layout!(CookieScratch, size 128, { fib: 0, syn: 64 });
assert_layout!(CookieEntry, size 24, { sent_ns: 0, window_start_ns: 8, wrong: 16 });
assert_layout!(PeerEntry, size 16, { last_seen_ns: 0, ways: 8, _pad: 12 });
assert_layout!(HeardKey, size 24, { socket_cookie: 0, addr: 8 });
assert_layout!(BanEntry, size 32, {
    banned_at_ns: 0,
    expires_at_ns: 8,
    drops: 16,
    port: 24,
    proto: 26,
    scan_type: 27,
    origin: 28,
    flags: 29,
    _pad: 30,
});
assert_layout!(HitEntry, size 16, { window_start_ns: 0, count: 8 });
assert_layout!(PrefixHitEntry, size 24, { window_start_ns: 0, count: 8, next_trigger: 16 });
assert_layout!(PrefixKey, size 20, { addr: 0, len: 16 });
assert_layout!(LinkKey, size 8, { ifindex: 0, outer_vid: 4, inner_vid: 6 });
assert_layout!(UpperLinks, size 32, { ifindex: 0 });
assert_layout!(ContestedEntry, size 16, { until_ns: 0, mac: 8, _pad: 14 });
assert_layout!(Event, size 48, {
    timestamp_ns: 0,
    count: 8,
    src: 16,
    ifindex: 32,
    dst_port: 36,
    kind: 38,
    proto: 39,
    scan_type: 40,
    tcp_flags: 41,
    flags: 42,
    prefix_len: 43,
    _pad: 44,
});

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn ages_of_instants_before_the_boot_are_exact() {
        // A machine up 9 minutes; a peer seen 2 h ago lies 111 minutes before the boot.
        let now = 540 * S;
        let seen = now as i64 - 7_200 * S as i64;
        assert!(seen < 0);
        assert_eq!(boot_age_ns(now, seen), 7_200 * S);
        let peer = PeerEntry {
            last_seen_ns: seen,
            ways: peer_ways::OUTBOUND,
            _pad: 0,
        };
        // Forgotten after a 1 h memory, remembered with a 3 h one, and forever with none.
        assert!(!peer.is_current(now, 3_600 * S));
        assert!(peer.is_current(now, 3 * 3_600 * S));
        assert!(peer.is_current(now, 0));
    }

    #[test]
    fn ages_saturate_and_never_go_negative() {
        assert_eq!(boot_age_ns(5, 10), 0);
        assert_eq!(boot_age_ns(u64::MAX / 2, i64::MIN), i64::MAX as u64);
        assert_eq!(boot_age_ns(0, 0), 0);
    }
}
