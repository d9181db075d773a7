//! Contested neighbours: an address whose neighbour MAC changed recently (ARP/ND poisoning, or a
//! replaced host) must not ban, nor get a SYN cookie sent to its new MAC, for a while
//! (`Config::contest_ns`). One ARP request "who-has <this host> tell <victim>" from an
//! attacker's MAC makes Linux point the victim's neighbour entry at the attacker, after which a
//! forged probe in the victim's name passes the path check's MAC comparison.
//!
//! Two writers of PS_CONTESTED: this program, on the ARP or ND frame itself, before the stack
//! updates its neighbour table (so the next forged probe, microseconds later, already finds the
//! mark), and the daemon on rtnetlink's RTM_NEWNEIGH (flips that arrive another way, and the
//! log line). The frame check asks `bpf_fib_lookup` for the neighbour the route to the claimed
//! address resolves to now: only an on-link address with a resolved neighbour of another MAC is
//! a flip; a first claim (no entry yet) is not.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_md},
    helpers::{bpf_fib_lookup, bpf_ktime_get_boot_ns},
    programs::XdpContext,
};
use portsentry_common::{
    address_family::{INET as AF_INET, INET6 as AF_INET6},
    AddrKey, Config, ContestedEntry,
};

use crate::{
    maps::{PS_CONFIG, PS_CONTESTED},
    parse::{be16_at, ptr_at},
};

const LOOPBACK_IFINDEX: u32 = 1;
const RET_SUCCESS: i64 = 0;
const ETHERTYPE_ARP: u16 = 0x0806;
const IPPROTO_ICMPV6: u8 = 58;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// ND option types carrying a link-layer address.
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
/// Neighbour advertisement flag: override the cached link-layer address.
const NA_OVERRIDE: u8 = 0x20;

/// Whether `src` is contested now: its neighbour MAC changed within `contest_ns`. The hook the
/// ban path and the SYN cookie path ask; one hash lookup, only when the watch is on.
#[inline(always)]
pub fn contested(src: &AddrKey, cfg: &Config) -> bool {
    if cfg.contest_ns == 0 {
        return false;
    }
    match PS_CONTESTED.get_ptr(src) {
        // SAFETY: map memory from a successful lookup.
        Some(entry) => unsafe { bpf_ktime_get_boot_ns() < (*entry).until_ns },
        None => false,
    }
}

/// Looks at a frame that is not a probe (ARP, ICMPv6) for a claim of a known neighbour's
/// address from another MAC; true if it marked the address contested.
#[inline(always)]
pub fn watch(ctx: &XdpContext, l3_offset: usize, cfg: &Config) -> bool {
    cfg.contest_ns != 0 && portsentry_neigh_watch(ctx.ctx, l3_offset as u32) != 0
}

/// The frame check as a global BPF function (verified once, on its own). Returns 1 when it
/// marked an address contested, else 0. Its stack adds to the program's (512 bytes in all), so
/// it keeps one set of lookup parameters, one key and one MAC, filled in place.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn portsentry_neigh_watch(ctx: *mut xdp_md, l3_offset: u32) -> u32 {
    let ctx = XdpContext::new(ctx);
    // At most 22 (Ethernet and two VLAN tags); the mask tells the verifier so.
    let l3 = (l3_offset & 0x3f) as usize;
    // The EtherType just before the IP header, at a constant offset per tag count (a
    // computed `l3 - 2` becomes a negative packet offset the verifier refuses).
    let ether_type = match l3 {
        14 => be16_at(&ctx, 12),
        18 => be16_at(&ctx, 16),
        22 => be16_at(&ctx, 20),
        _ => None,
    };
    let Some(ether_type) = ether_type else {
        return 0;
    };
    let is_arp = ether_type == ETHERTYPE_ARP;
    // SAFETY: bpf_fib_lookup is plain data; all-zero is a valid starting state.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    let mut key = AddrKey { addr: [0; 16] };
    let mut mac = [0u8; 6];
    let claimed = if is_arp {
        arp_claim(&ctx, l3, &mut key, &mut mac)
    } else {
        nd_claim(&ctx, l3, &mut key, &mut mac)
    };
    if !claimed || mac[0] & 1 != 0 || mac == [0; 6] {
        return 0; // no claim; multicast, broadcast or no address: nothing an entry takes
    }
    params.ifindex = LOOPBACK_IFINDEX;
    let a = &key.addr;
    let word = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    // SAFETY: the union members of the family set with them.
    unsafe {
        if is_arp {
            params.family = AF_INET;
            params.__bindgen_anon_4.ipv4_dst = word(12);
        } else {
            params.family = AF_INET6;
            for i in 0..4 {
                params.__bindgen_anon_4.ipv6_dst[i] = word(4 * i);
            }
        }
    }
    // SAFETY: params is a valid, initialised bpf_fib_lookup of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    // Only an on-link address (the lookup left the destination as it was: no gateway) with a
    // resolved neighbour entry of another MAC is a flip.
    // SAFETY: the union members of the family set above.
    let on_link = unsafe {
        if is_arp {
            params.__bindgen_anon_4.ipv4_dst == word(12)
        } else {
            let d = &params.__bindgen_anon_4.ipv6_dst;
            d[0] == word(0) && d[1] == word(4) && d[2] == word(8) && d[3] == word(12)
        }
    };
    if rc != RET_SUCCESS || !on_link || params.dmac == mac {
        return 0;
    }
    let Some(cfg) = PS_CONFIG.get(0) else {
        return 0;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let entry = ContestedEntry {
        until_ns: now.saturating_add(cfg.contest_ns),
        mac,
        _pad: [0; 2],
    };
    // By reference, whatever clippy prefers: by value, `Borrow` copies key and entry onto this
    // function's stack, past the program's 512-byte total.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = PS_CONTESTED.insert(&key, &entry, 0).is_ok();
    u32::from(inserted)
}

/// An ARP request or reply for IPv4 over Ethernet: the sender's address and MAC (what Linux
/// writes into its neighbour entry for the sender).
#[inline(always)]
fn arp_claim(ctx: &XdpContext, l3: usize, key: &mut AddrKey, mac: &mut [u8; 6]) -> bool {
    let Some(a) = ptr_at(ctx, l3, 18) else {
        return false;
    };
    // SAFETY: 18 bytes at a are in bounds: htype 0..2, ptype 2..4, hlen 4, plen 5, op 6..8,
    // sender MAC 8..14, sender IP 14..18.
    unsafe {
        // Ethernet (1), IPv4 (0x0800), 6-byte and 4-byte addresses, request (1) or reply (2).
        let fixed = u64::from_be_bytes([
            *a,
            *a.add(1),
            *a.add(2),
            *a.add(3),
            *a.add(4),
            *a.add(5),
            *a.add(6),
            *a.add(7),
        ]);
        if fixed != 0x0001_0800_0604_0001 && fixed != 0x0001_0800_0604_0002 {
            return false;
        }
        for (i, m) in mac.iter_mut().enumerate() {
            *m = *a.add(8 + i);
        }
        let ip = [*a.add(14), *a.add(15), *a.add(16), *a.add(17)];
        if ip == [0; 4] {
            return false; // an ARP probe (RFC 5227) claims nothing yet
        }
        *key = AddrKey::from_v4(ip);
    }
    true
}

/// An ND message that makes Linux update a neighbour entry's link-layer address: a neighbour
/// solicitation or router advertisement (the IPv6 source, its source link-layer option) or a
/// neighbour advertisement with the override flag (its target, its target link-layer option).
/// Only packets without extension headers and with hop limit 255 (Linux ignores the others).
#[inline(always)]
fn nd_claim(ctx: &XdpContext, l3: usize, key: &mut AddrKey, mac: &mut [u8; 6]) -> bool {
    let Some(h) = ptr_at(ctx, l3, 48) else {
        return false;
    };
    // SAFETY: 48 bytes at h are in bounds: the IPv6 header (40) and the first 8 ICMPv6 bytes.
    let (version, next, hop_limit, kind, flags) =
        unsafe { (*h >> 4, *h.add(6), *h.add(7), *h.add(40), *h.add(44)) };
    if version != 6 || next != IPPROTO_ICMPV6 || hop_limit != 255 {
        return false;
    }
    let icmp = l3 + 40;
    // Where the claimed address is, where the options start and which option carries the MAC.
    let (addr_at, options_at, option) = match kind {
        ND_NEIGHBOR_SOLICIT => (l3 + 8, icmp + 24, OPT_SOURCE_LL),
        ND_ROUTER_ADVERT => (l3 + 8, icmp + 16, OPT_SOURCE_LL),
        ND_NEIGHBOR_ADVERT if flags & NA_OVERRIDE != 0 => (icmp + 8, icmp + 24, OPT_TARGET_LL),
        _ => return false,
    };
    let Some(a) = ptr_at(ctx, addr_at, 16) else {
        return false;
    };
    // SAFETY: 16 bytes at a are in bounds.
    unsafe {
        for (i, b) in key.addr.iter_mut().enumerate() {
            *b = *a.add(i);
        }
    }
    if key.addr == [0; 16] {
        return false; // duplicate address detection: no address claimed yet
    }
    nd_option_mac(ctx, options_at, option, mac)
}

/// The MAC of the first option of type `wanted` among the first three options at `at`.
#[inline(always)]
fn nd_option_mac(ctx: &XdpContext, at: usize, wanted: u8, mac: &mut [u8; 6]) -> bool {
    let mut at = at;
    for _ in 0..3 {
        let Some(o) = ptr_at(ctx, at, 8) else {
            return false;
        };
        // SAFETY: 8 bytes at o are in bounds: type, length (8-byte units), then the MAC.
        let (kind, len) = unsafe { (*o, *o.add(1)) };
        if len == 0 {
            return false; // malformed: Linux drops the message
        }
        if kind == wanted && len == 1 {
            for (i, m) in mac.iter_mut().enumerate() {
                // SAFETY: as above.
                *m = unsafe { *o.add(2 + i) };
            }
            return true;
        }
        at += len as usize * 8;
        if at > 0x1ff {
            return false;
        }
    }
    false
}
