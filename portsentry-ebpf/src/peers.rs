//! Learned peers: the hosts this one has really talked to, recorded by cgroup programs into
//! PS_PEERS, and the XDP program's lookup of them.
//!
//! The cgroup programs run for sockets of every process (they are attached to the cgroup2 root)
//! and of every network namespace, so each records only when the socket's namespace is the one
//! the daemon guards (`Config::netns_cookie`). They record the remote address and the time,
//! never ports or payload, and they never refuse anything: the sock_addr programs always return
//! 1 (allow), the sock_ops program's return value is ignored for the callbacks it handles.
//!
//! What counts as talking (and which way, `peer_ways`: the fleet may not ban a host this one
//! contacted, but may ban a client that contacted it):
//! - TCP: a completed handshake, opened (`ACTIVE_ESTABLISHED`) or accepted
//!   (`PASSIVE_ESTABLISHED`). A forger cannot complete one without seeing our SYN-ACK.
//! - UDP: a `connect` (the intent to talk to that host) or an unconnected send (`sendmsg` with
//!   an address). Only this host's own sockets create these entries; a forged packet cannot.

use aya_ebpf::{
    bindings::{
        bpf_sock_addr, bpf_sock_ops, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
    },
    helpers::bpf_get_netns_cookie,
    macros::{cgroup_sock_addr, sock_ops},
    programs::{SockAddrContext, SockOpsContext},
};
use portsentry_common::{
    address_family, boot_age_ns, peer_ways, AddrKey, BootInstant, Config, PeerEntry, LAYOUT_VERSION,
};

use crate::{boot_ns, maps::PS_CONFIG, maps::PS_PEERS};

const AF_INET: u32 = address_family::INET as u32;
const AF_INET6: u32 = address_family::INET6 as u32;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_UDP: u32 = 17;

/// A peer seen less than this long ago is not written again: a busy UDP sender would otherwise
/// rewrite the same entry for every datagram.
const REFRESH_NS: u64 = 1_000_000_000;

/// Whether `src` is a learned peer that has not expired (`peer_ttl_ns` 0: never expires).
#[inline(always)]
pub fn is_learned(src: &AddrKey, cfg: &Config, now: u64) -> bool {
    match PS_PEERS.get_ptr(src) {
        // SAFETY: pointer from a successful lookup; a torn read of the i64 cannot happen (it is
        // 8-byte aligned map memory).
        Some(peer) => unsafe { *peer }.is_current(now, cfg.peer_ttl_ns),
        None => false,
    }
}

/// The config, if a daemon wrote one of this layout and the socket is in its namespace.
#[inline(always)]
fn guarded_netns(ctx: *mut core::ffi::c_void) -> bool {
    let Some(cfg) = PS_CONFIG.get(0) else {
        return false;
    };
    if cfg.layout_version != LAYOUT_VERSION || cfg.netns_cookie == 0 {
        return false;
    }
    // SAFETY: ctx is the program's context, a type the helper accepts for sock_ops and
    // sock_addr programs.
    unsafe { bpf_get_netns_cookie(ctx) == cfg.netns_cookie }
}

/// Records `peer` as seen now, contacted the way `way` says (`peer_ways::*`).
#[inline(always)]
fn record(peer: AddrKey, way: u32) {
    let now = boot_ns();
    if let Some(entry) = PS_PEERS.get_ptr_mut(peer) {
        // SAFETY: pointer from a successful lookup into aligned map memory; plain aligned
        // stores are atomic. Two CPUs adding different ways at once may lose one bit until the
        // next contact sets it again: harmless for a hint that is refreshed on every contact.
        unsafe {
            let seen = &raw mut (*entry).last_seen_ns;
            if boot_age_ns(now, seen.read_volatile()) >= REFRESH_NS {
                seen.write_volatile(now as BootInstant);
            }
            let ways = &raw mut (*entry).ways;
            let known = ways.read_volatile();
            if known & way == 0 {
                ways.write_volatile(known | way);
            }
        }
        return;
    }
    let entry = PeerEntry {
        last_seen_ns: now as BootInstant,
        ways: way,
        _pad: 0,
    };
    // LRU: a full table forgets the least recently seen peer.
    let _ = PS_PEERS.insert(peer, entry, 0);
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

/// Completed TCP handshakes, opened or accepted: records the remote end.
#[sock_ops]
pub fn ps_peer_tcp(ctx: SockOpsContext) -> u32 {
    let ops: *mut bpf_sock_ops = ctx.ops;
    // SAFETY (all reads): `ops` is the context the kernel handed us; each read is one u32 field.
    let op = unsafe { (&raw const (*ops).op).read_volatile() };
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        return 1;
    }
    if !guarded_netns(ops.cast()) {
        return 1;
    }
    let way = if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        peer_ways::OUTBOUND
    } else {
        peer_ways::INBOUND
    };
    let family = unsafe { (&raw const (*ops).family).read_volatile() };
    if family == AF_INET {
        record(
            v4_key(unsafe { (&raw const (*ops).remote_ip4).read_volatile() }),
            way,
        );
    } else if family == AF_INET6 {
        // An IPv4 peer of a dual-stack socket arrives IPv4-mapped: the same key as from_v4.
        record(
            v6_key(unsafe { read_ip6(&raw const (*ops).remote_ip6) }),
            way,
        );
    }
    1
}

/// A UDP socket's destination (connect, or an unconnected send). Always allows.
#[inline(always)]
fn udp_destination(ctx: &SockAddrContext, v6: bool) -> i32 {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY (all reads): `sa` is the context the kernel handed us; each read is one u32 field.
    let (sock_type, protocol) = unsafe {
        (
            (&raw const (*sa).type_).read_volatile(),
            (&raw const (*sa).protocol).read_volatile(),
        )
    };
    // TCP connects are learned when the handshake completes (sock_ops), not on intent.
    if sock_type != SOCK_DGRAM || protocol != IPPROTO_UDP || !guarded_netns(sa.cast()) {
        return 1;
    }
    // An unspecified destination (0.0.0.0, ::) names no peer.
    if v6 {
        let ip = unsafe { read_ip6(&raw const (*sa).user_ip6) };
        if ip != [0; 4] {
            record(v6_key(ip), peer_ways::OUTBOUND);
        }
    } else {
        let ip = unsafe { (&raw const (*sa).user_ip4).read_volatile() };
        if ip != 0 {
            record(v4_key(ip), peer_ways::OUTBOUND);
        }
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
