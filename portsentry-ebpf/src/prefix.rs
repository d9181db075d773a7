//! Per-prefix probe counting (issue 16, item 2). An IPv6 scanner owns at least a /64 and can
//! send every probe from a new address: each address stays below `scan_trigger` and is never
//! banned. So every counted probe is also counted against its prefix (the source masked to
//! `ipv6_prefix`, or `ipv4_prefix` when set) in PS_PREFIX_HITS; when a prefix's probes in the
//! window reach `Config::prefix_hits`, the program sends one `PrefixTrigger` event (masked
//! prefix, length, count). It bans nothing itself: the daemon bans the prefix through its
//! prefix path (allowlist refusal, member bans folded).
//!
//! A trigger is sent only after the path check a ban would get (a forged source must not get
//! a /64 banned): spoofed or unverified, it is withheld and counted (`prefix_unproven`), and
//! the prefix's next probe tries again. Block mode and a blocking protocol only, like a ban.
//! Link-local sources are never counted here (fe80::/64 is every link's hosts).
//!
//! Owns PS_PREFIX_HITS. All of it is one global BPF function, verified once on its own.

use aya_ebpf::{bindings::xdp_md, bindings::BPF_NOEXIST, programs::XdpContext};
use portsentry_common::{
    config_flags, event_flags, Config, Event, EventKind, IpProto, PrefixHitEntry, PrefixKey, Stat,
    LAYOUT_VERSION,
};

use crate::{atomic, count, diag, emit, maps::*, parse::Packet};

/// Bits of [`portsentry_prefix_probe`]'s `shape` argument.
const V6: u32 = 1;
const VLAN: u32 = 2;
const CONFIRMED: u32 = 4;
const IP_OPTIONS: u32 = 8;
/// The source is a contested neighbour (`neigh::contested`): its probes never trigger.
const CONTESTED: u32 = 16;

/// Counts a probe (already counted for its source) against its prefix; see the module docs.
#[inline(always)]
pub fn probe(ctx: &XdpContext, cfg: &Config, pkt: &Packet, scan: u8, confirmed: bool, now: u64) {
    // Off for this family (IPv4 by default): no call, no packing. The function checks again.
    let len = if pkt.is_v6 {
        cfg.ipv6_prefix
    } else {
        cfg.ipv4_prefix
    };
    if len == 0 || cfg.prefix_hits == 0 {
        return;
    }
    let a = &pkt.src.addr;
    let hi = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let lo = u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    let shape = u32::from(pkt.is_v6)
        | u32::from(pkt.vlan_tagged) << 1
        | u32::from(confirmed) << 2
        | u32::from(pkt.ip_options) << 3
        // Looked up here, in the caller's frame: the global function's stack is at its limit.
        | u32::from(crate::neigh::contested(&pkt.src, cfg)) << 4
        | (pkt.l3_offset as u32 & 0x3f) << 8
        | u32::from(scan) << 16
        | u32::from(pkt.l4.protocol) << 24;
    let l4 = u32::from(pkt.l4.dst_port) | u32::from(pkt.l4.flags) << 16;
    portsentry_prefix_probe(ctx.ctx, hi, lo, u64::from(shape) | u64::from(l4) << 32, now);
}

/// The prefix count as a global BPF function. Arguments are the context and plain numbers:
/// the source as two big-endian halves; `shape_l4`: bits 0–3 [`V6`], [`VLAN`], [`CONFIRMED`],
/// [`IP_OPTIONS`], 8–13 the IP header offset, 16–23 the scan type, 24–31 the protocol, 32–47
/// the destination port, 48–55 the TCP flags; `now`: the caller's coarse clock reading (a
/// global function takes five arguments; packing spares a second clock call). Returns the
/// prefix's count (0 when not counted).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn portsentry_prefix_probe(
    ctx: *mut xdp_md,
    hi: u64,
    lo: u64,
    shape_l4: u64,
    now: u64,
) -> u64 {
    let Some(cfg) = PS_CONFIG.get(0) else {
        return 0;
    };
    if cfg.layout_version != LAYOUT_VERSION || cfg.prefix_hits == 0 {
        return 0;
    }
    let (shape, l4) = (shape_l4 as u32, (shape_l4 >> 32) as u32);
    let is_v6 = shape & V6 != 0;
    // The prefix length within the 128-bit key (IPv4 keys are IPv4-mapped: 96 bits first).
    let (len, bits) = if is_v6 {
        let len = u32::from(cfg.ipv6_prefix);
        (len, len)
    } else {
        let len = u32::from(cfg.ipv4_prefix);
        (len, 96 + len)
    };
    let full = if is_v6 { 128 } else { 32 };
    if len == 0 || len >= full {
        return 0;
    }
    // Link-local: fe80::/10, 169.254/16.
    let link_local = if is_v6 {
        hi >> 54 == 0x3fa
    } else {
        (lo >> 16) & 0xffff == 0xa9fe
    };
    if link_local {
        return 0;
    }
    // 0 < bits < 128.
    let mask_hi = if bits >= 64 {
        u64::MAX
    } else {
        u64::MAX << ((64 - bits) & 63)
    };
    let mask_lo = if bits <= 64 {
        0
    } else {
        u64::MAX << ((128 - bits) & 63)
    };
    let mut key = PrefixKey { addr: [0; 16], len };
    key.addr[..8].copy_from_slice(&(hi & mask_hi).to_be_bytes());
    key.addr[8..].copy_from_slice(&(lo & mask_lo).to_be_bytes());

    let Some((hits, next)) = count_prefix(&key, cfg.window_ns, now) else {
        return 0;
    };
    let threshold = u64::from(cfg.prefix_hits);
    let due = if next == 0 { threshold } else { next };
    if hits < due {
        return hits;
    }
    // Only where a probe could ban: block mode and a blocking protocol.
    let proto = (shape >> 24) as u8;
    let block_flag = if proto == IpProto::Tcp as u8 {
        config_flags::BLOCK_TCP
    } else {
        config_flags::BLOCK_UDP
    };
    if cfg.flags & config_flags::ENFORCE == 0 || cfg.flags & block_flag == 0 {
        return hits;
    }
    // The path check a ban would get; a completed cookie handshake already proved the source.
    // A contested neighbour (its MAC changed moments ago) proves nothing either.
    if shape & CONTESTED != 0
        || (shape & CONFIRMED == 0
            && cfg.flags & config_flags::PATH_CHECK != 0
            && crate::path::portsentry_path_check(ctx, (shape >> 8) & 0x3f, shape & (V6 | VLAN))
                != 0)
    {
        count(Stat::PrefixUnproven);
        return hits;
    }
    // One CPU sends the trigger: the one that moves the next trigger on.
    let Some(entry) = PS_PREFIX_HITS.get_ptr_mut(key) else {
        return hits;
    };
    // SAFETY: map memory from a successful lookup, updated atomically by every CPU.
    if !unsafe {
        atomic::compare_exchange(
            &raw mut (*entry).next_trigger,
            next,
            hits.wrapping_add(hits),
        )
    } {
        return hits;
    }
    let mut flags = if is_v6 { event_flags::IPV6 } else { 0 };
    if shape & IP_OPTIONS != 0 {
        flags |= event_flags::IP_OPTIONS;
    }
    if shape & CONFIRMED != 0 {
        flags |= event_flags::CONFIRMED;
    }
    let event = Event {
        timestamp_ns: now,
        count: hits,
        src: portsentry_common::AddrKey { addr: key.addr },
        // SAFETY: ctx is the xdp_md the kernel handed the program.
        ifindex: unsafe { (*ctx).ingress_ifindex },
        dst_port: l4 as u16,
        kind: EventKind::PrefixTrigger as u8,
        proto,
        scan_type: (shape >> 16) as u8,
        tcp_flags: (l4 >> 16) as u8,
        flags,
        prefix_len: len as u8,
        _pad: [0; 4],
    };
    count(Stat::PrefixTriggers);
    diag::prefix_trigger(&event.src, len, hits);
    emit(&event);
    hits
}

/// Counts a probe for `key`: the count in the current window, this probe included, and the
/// entry's `next_trigger` as it was before this probe.
#[inline(always)]
fn count_prefix(key: &PrefixKey, window_ns: u64, now: u64) -> Option<(u64, u64)> {
    if let Some(hit) = PS_PREFIX_HITS.get_ptr_mut(key) {
        // SAFETY (both blocks): pointers into the value of a successful lookup, which every CPU
        // updates atomically.
        let next = unsafe { &raw mut (*hit).next_trigger };
        let (hits, new_window) = unsafe {
            crate::window::count(
                &raw mut (*hit).window_start_ns,
                &raw mut (*hit).count,
                window_ns,
                now,
            )
        };
        // A new window restarts the trigger too.
        if new_window {
            unsafe { atomic::swap(next, 0) };
            return Some((1, 0));
        }
        return Some((hits, unsafe { next.read_volatile() }));
    }
    let fresh = PrefixHitEntry {
        window_start_ns: now,
        count: 1,
        next_trigger: 0,
    };
    if PS_PREFIX_HITS
        .insert(key, fresh, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        return Some((1, 0));
    }
    let hit = PS_PREFIX_HITS.get_ptr_mut(key)?;
    // SAFETY: as above.
    unsafe {
        let hits = atomic::fetch_add(&raw mut (*hit).count, 1) + 1;
        Some((hits, (&raw mut (*hit).next_trigger).read_volatile()))
    }
}
