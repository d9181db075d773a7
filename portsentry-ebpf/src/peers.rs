//! Learned peers: the hosts this one chose to talk to (PS_PEERS, "outbound") and, only with
//! `learn_inbound`, the clients it accepted (PS_INBOUND_PEERS), recorded by cgroup programs,
//! and the XDP program's lookup of them.
//!
//! The cgroup programs run for sockets of every process (they are attached to the cgroup2 root)
//! and of every network namespace, so each records only when the socket's namespace is the one
//! the daemon guards (`Config::netns_cookie`). They record the remote address and the time,
//! never ports or payload, and they never refuse anything: the sock_addr programs always return
//! 1 (allow), the sock_ops program's return value is ignored for the callbacks it handles.
//!
//! What teaches an outbound peer (`peer_ways::OUTBOUND`: a host this one depends on; the fleet
//! may not ban it, a forged probe in its name gets a SYN cookie):
//! - TCP: a handshake this host opened (`ACTIVE_ESTABLISHED`). A forger cannot complete one
//!   without seeing our SYN-ACK.
//! - UDP: a `connect`, or an unconnected send (`sendmsg` with an address), unless the sending
//!   socket received from that address first while it was no peer (PS_UDP_HEARD, marked by the
//!   recvmsg programs): that send answers whoever wrote, and anyone can write a UDP datagram
//!   with any source. A DNS, NTP or QUIC server answering strangers learns nobody.
//!
//! New outbound peers are learned at a bounded rate (a per-CPU token bucket in
//! PS_PEER_LEARN_RATE; refreshing a known one is free), so no local process can churn the
//! table, and nothing a remote host sends writes PS_PEERS at all: inbound or forged traffic
//! cannot push out the resolver or the LAPI host.
//!
//! A TCP connection this host accepted (`PASSIVE_ESTABLISHED`) teaches an inbound peer only with
//! `learn_inbound` (`config_flags::LEARN_INBOUND`), in its own table: a client of any service
//! could otherwise scan with SYN cookies instead of bans.

use aya_ebpf::{
    bindings::{
        bpf_sock_addr, bpf_sock_ops, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
    },
    btf_maps::LruHashMap,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, sock_ops},
    programs::{SockAddrContext, SockOpsContext},
};
use portsentry_common::{
    address_family, boot_age_ns, config_flags, peer_ways, AddrKey, BootInstant, Config, HeardKey,
    PeerEntry, Stat, LAYOUT_VERSION, PEER_LEARN_BURST, PEER_LEARN_INTERVAL_NS,
};

use crate::{
    boot_ns, count,
    maps::{PS_CONFIG, PS_INBOUND_PEERS, PS_PEERS, PS_PEER_LEARN_RATE, PS_UDP_HEARD},
};

const AF_INET: u32 = address_family::INET as u32;
const AF_INET6: u32 = address_family::INET6 as u32;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_UDP: u32 = 17;

/// A peer seen less than this long ago is not written again: a busy UDP sender would otherwise
/// rewrite the same entry for every datagram.
const REFRESH_NS: u64 = 1_000_000_000;

/// Both peer tables: the same declaration but for the name (asserted below).
type PeerTable = LruHashMap<AddrKey, PeerEntry, { PEER_ENTRIES as usize }>;
const PEER_ENTRIES: u32 = portsentry_common::maps::PS_PEERS
    .spec
    .capacity
    .object_entries();
const _: () = assert!(
    portsentry_common::maps::PS_INBOUND_PEERS
        .spec
        .capacity
        .object_entries()
        == PEER_ENTRIES
);

/// Whether `src` is a learned peer that has not expired (`peer_ttl_ns` 0: never expires): an
/// outbound one, or with `learn_inbound` an inbound one.
#[inline(always)]
pub fn is_learned(src: &AddrKey, cfg: &Config, now: u64) -> bool {
    is_current_in(&PS_PEERS, src, cfg.peer_ttl_ns, now)
        || (cfg.flags & config_flags::LEARN_INBOUND != 0
            && is_current_in(&PS_INBOUND_PEERS, src, cfg.peer_ttl_ns, now))
}

#[inline(always)]
fn is_current_in(table: &PeerTable, src: &AddrKey, ttl_ns: u64, now: u64) -> bool {
    match table.get_ptr(src) {
        // SAFETY: pointer from a successful lookup; a torn read of the i64 cannot happen (it is
        // 8-byte aligned map memory).
        Some(peer) => unsafe { *peer }.is_current(now, ttl_ns),
        None => false,
    }
}

/// The config, if a daemon wrote one of this layout and the socket is in its namespace.
#[inline(always)]
fn guarded_netns(ctx: *mut core::ffi::c_void) -> Option<&'static Config> {
    let cfg = PS_CONFIG.get(0)?;
    if cfg.layout_version != LAYOUT_VERSION || cfg.netns_cookie == 0 {
        return None;
    }
    // SAFETY: ctx is the program's context, a type the helper accepts for sock_ops and
    // sock_addr programs.
    (unsafe { bpf_get_netns_cookie(ctx) } == cfg.netns_cookie).then_some(cfg)
}

/// Refreshes `peer` in `table` if it is there and still current; false if it is not (absent,
/// or forgotten: then it must be learned anew, under the same rules as a new one).
#[inline(always)]
fn refresh(table: &PeerTable, peer: &AddrKey, way: u32, ttl_ns: u64, now: u64) -> bool {
    let Some(entry) = table.get_ptr_mut(peer) else {
        return false;
    };
    // SAFETY: pointer from a successful lookup into aligned map memory; plain aligned
    // stores are atomic. Two CPUs adding different ways at once may lose one bit until the
    // next contact sets it again: harmless for a hint that is refreshed on every contact.
    unsafe {
        let seen = &raw mut (*entry).last_seen_ns;
        let age = boot_age_ns(now, seen.read_volatile());
        if ttl_ns != 0 && age >= ttl_ns {
            return false;
        }
        if age >= REFRESH_NS {
            seen.write_volatile(now as BootInstant);
        }
        let ways = &raw mut (*entry).ways;
        let known = ways.read_volatile();
        if known & way == 0 {
            ways.write_volatile(known | way);
        }
    }
    true
}

#[inline(always)]
fn insert(table: &PeerTable, peer: &AddrKey, way: u32, now: u64) {
    let entry = PeerEntry {
        last_seen_ns: now as BootInstant,
        ways: way,
        _pad: 0,
    };
    // LRU: a full table forgets its least recently seen peer.
    let _ = table.insert(peer, entry, 0);
}

/// Whether the learning rate bound lets one more new outbound peer in at `now` (GCRA, one
/// timestamp per CPU). Two programs on one CPU (they run with migration, not preemption,
/// disabled) may both take the same token: a peer more, never fewer.
#[inline(always)]
fn learning_allowed(now: u64) -> bool {
    let Some(tat) = PS_PEER_LEARN_RATE.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: per-CPU slot from a successful lookup.
    let last = unsafe { tat.read_volatile() };
    let next = if last > now { last } else { now }.saturating_add(PEER_LEARN_INTERVAL_NS);
    if next - now > PEER_LEARN_INTERVAL_NS * PEER_LEARN_BURST {
        count(Stat::PeerLearnLimited);
        return false;
    }
    // SAFETY: as above.
    unsafe { tat.write_volatile(next) };
    true
}

/// Records `peer` as a host this one chose to talk to. `socket`: the UDP socket's cookie; a
/// socket that heard from `peer` first is answering it, and learns nothing new.
#[inline(always)]
fn record_outbound(peer: AddrKey, socket: Option<u64>, cfg: &Config) {
    let now = boot_ns();
    if refresh(&PS_PEERS, &peer, peer_ways::OUTBOUND, cfg.peer_ttl_ns, now) {
        return;
    }
    if let Some(socket_cookie) = socket {
        let heard = HeardKey {
            socket_cookie,
            addr: peer,
        };
        if PS_UDP_HEARD.get_ptr(heard).is_some() {
            return;
        }
    }
    if learning_allowed(now) {
        insert(&PS_PEERS, &peer, peer_ways::OUTBOUND, now);
    }
}

/// Records a client whose connection this host accepted, if `learn_inbound` is on.
#[inline(always)]
fn record_inbound(peer: AddrKey, cfg: &Config) {
    if cfg.flags & config_flags::LEARN_INBOUND == 0 {
        return;
    }
    let now = boot_ns();
    if !refresh(
        &PS_INBOUND_PEERS,
        &peer,
        peer_ways::INBOUND,
        cfg.peer_ttl_ns,
        now,
    ) {
        insert(&PS_INBOUND_PEERS, &peer, peer_ways::INBOUND, now);
    }
}

/// An address in network byte order as the kernel keeps it in `__u32` context fields.
#[inline(always)]
fn v4_key(ip: u32) -> AddrKey {
    AddrKey::from_v4(ip.to_ne_bytes())
}

#[inline(always)]
fn v6_key(words: [u32; 4]) -> AddrKey {
    let mut addr = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        let b = w.to_ne_bytes();
        addr[i * 4] = b[0];
        addr[i * 4 + 1] = b[1];
        addr[i * 4 + 2] = b[2];
        addr[i * 4 + 3] = b[3];
    }
    AddrKey::from_v6(addr)
}

/// Reads four `__u32` context words one by one: the verifier accepts only 4-byte loads of
/// these fields, and a copy of the whole array might be merged into 8-byte loads.
///
/// # Safety
/// `p` points at a `[__u32; 4]` field of the program's context.
#[inline(always)]
unsafe fn read_ip6(p: *const [u32; 4]) -> [u32; 4] {
    let w = p.cast::<u32>();
    // SAFETY: the caller's promise; each read is one aligned context word.
    unsafe {
        [
            w.read_volatile(),
            w.add(1).read_volatile(),
            w.add(2).read_volatile(),
            w.add(3).read_volatile(),
        ]
    }
}

/// Completed TCP handshakes: the remote end of one this host opened is an outbound peer; of
/// one it accepted, an inbound peer (with `learn_inbound`).
#[sock_ops]
pub fn ps_peer_tcp(ctx: SockOpsContext) -> u32 {
    let ops: *mut bpf_sock_ops = ctx.ops;
    // SAFETY (all reads): `ops` is the context the kernel handed us; each read is one u32 field.
    let op = unsafe { (&raw const (*ops).op).read_volatile() };
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        return 1;
    }
    let Some(cfg) = guarded_netns(ops.cast()) else {
        return 1;
    };
    let family = unsafe { (&raw const (*ops).family).read_volatile() };
    let peer = if family == AF_INET {
        v4_key(unsafe { (&raw const (*ops).remote_ip4).read_volatile() })
    } else if family == AF_INET6 {
        // An IPv4 peer of a dual-stack socket arrives IPv4-mapped: the same key as from_v4.
        v6_key(unsafe { read_ip6(&raw const (*ops).remote_ip6) })
    } else {
        return 1;
    };
    if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        record_outbound(peer, None, cfg);
    } else {
        record_inbound(peer, cfg);
    }
    1
}

/// The remote address of a UDP socket's connect, send or receive, with the config; `None` for
/// other sockets, other namespaces and unspecified addresses (0.0.0.0, ::, which name no peer).
#[inline(always)]
fn udp_remote(ctx: &SockAddrContext, v6: bool) -> Option<(AddrKey, &'static Config)> {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY (all reads): `sa` is the context the kernel handed us; each read is one u32 field.
    let (sock_type, protocol) = unsafe {
        (
            (&raw const (*sa).type_).read_volatile(),
            (&raw const (*sa).protocol).read_volatile(),
        )
    };
    // TCP connects are learned when the handshake completes (sock_ops), not on intent.
    if sock_type != SOCK_DGRAM || protocol != IPPROTO_UDP {
        return None;
    }
    let cfg = guarded_netns(sa.cast())?;
    if v6 {
        let ip = unsafe { read_ip6(&raw const (*sa).user_ip6) };
        (ip != [0; 4]).then(|| (v6_key(ip), cfg))
    } else {
        let ip = unsafe { (&raw const (*sa).user_ip4).read_volatile() };
        (ip != 0).then(|| (v4_key(ip), cfg))
    }
}

/// The socket's cookie (`bpf_get_socket_cookie`, never 0 for a socket).
#[inline(always)]
fn socket_cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: the sock_addr context, a type the helper accepts.
    unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) }
}

/// A UDP socket's destination (connect, or an unconnected send). Always allows.
#[inline(always)]
fn udp_destination(ctx: &SockAddrContext, v6: bool) -> i32 {
    if let Some((peer, cfg)) = udp_remote(ctx, v6) {
        record_outbound(peer, Some(socket_cookie(ctx)), cfg);
    }
    1
}

/// A datagram a UDP socket receives (with its source asked for, as every server that answers
/// must): marks the source as heard by that socket unless it is already a current outbound
/// peer (a reply from a host this one contacted keeps refreshing it). Must return 1.
#[inline(always)]
fn udp_heard(ctx: &SockAddrContext, v6: bool) -> i32 {
    let Some((src, cfg)) = udp_remote(ctx, v6) else {
        return 1;
    };
    let now = boot_ns();
    if is_current_in(&PS_PEERS, &src, cfg.peer_ttl_ns, now) {
        return 1;
    }
    let heard = HeardKey {
        socket_cookie: socket_cookie(ctx),
        addr: src,
    };
    if PS_UDP_HEARD.get_ptr(heard).is_none() {
        let _ = PS_UDP_HEARD.insert(heard, now, 0);
    }
    1
}

#[cgroup_sock_addr(connect4)]
pub fn ps_peer_connect4(ctx: SockAddrContext) -> i32 {
    udp_destination(&ctx, false)
}

#[cgroup_sock_addr(connect6)]
pub fn ps_peer_connect6(ctx: SockAddrContext) -> i32 {
    udp_destination(&ctx, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn ps_peer_sendmsg4(ctx: SockAddrContext) -> i32 {
    udp_destination(&ctx, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn ps_peer_sendmsg6(ctx: SockAddrContext) -> i32 {
    udp_destination(&ctx, true)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn ps_peer_recvmsg4(ctx: SockAddrContext) -> i32 {
    udp_heard(&ctx, false)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn ps_peer_recvmsg6(ctx: SockAddrContext) -> i32 {
    udp_heard(&ctx, true)
}
