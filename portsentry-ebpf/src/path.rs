//! The path check, run only when a probe is about to ban: did the packet arrive the way this
//! host routes back to its source? A forger can write any source address, but not make the
//! packet arrive on the interface (and from the neighbour) that the route to that address
//! uses. `bpf_fib_lookup` answers with the kernel's own routing and neighbour tables:
//!
//! - the egress interface of the route back must be the interface the probe came in on, or an
//!   upper device that interface feeds (PS_UPPER_LINKS, written by the daemon from rtnetlink:
//!   the bridge of a bridge port, the bond of a bond slave, the VLAN device of a tagged frame's
//!   tag, and their masters). A tagged frame whose tag no VLAN device is known for is not
//!   compared (as before layout 9);
//! - where the route has a resolved neighbour, the frame's source MAC must be that neighbour's
//!   (the gateway's for off-link sources, the host's own for on-link ones).
//!
//! Where the tables cannot decide (no route back, no neighbour entry yet for an on-link host
//! this one never talked to, lookups unavailable), the probe still bans and the ban is marked
//! unverified: a LAN scanner with a fresh address must still be stopped at its first probe.
//!
//! The lookup is made as if the packet came in on the loopback device: the helper refuses
//! lookups "from" an interface whose forwarding is off (every plain host's), and userspace
//! turns forwarding on for `lo` only, where nothing ever arrives from outside.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_md},
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};

use portsentry_common::LinkKey;

use crate::{
    maps::PS_UPPER_LINKS,
    parse::{be16_at, ptr_at, Packet},
};

use portsentry_common::address_family::{INET as AF_INET, INET6 as AF_INET6};
const LOOPBACK_IFINDEX: u32 = 1;

const RET_SUCCESS: i64 = 0;
const RET_NO_NEIGH: i64 = 7;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Arrived on the route back's interface, from its neighbour.
    Verified,
    /// The tables cannot tell.
    Unverified,
    /// Arrived where the route back does not lead: the source is forged.
    Spoofed,
}

#[inline(always)]
pub fn check(ctx: &XdpContext, pkt: &Packet) -> Path {
    let shape = u32::from(pkt.is_v6) | u32::from(pkt.vlan_tagged) << 1;
    match portsentry_path_check(ctx.ctx, pkt.l3_offset as u32, shape) {
        0 => Path::Verified,
        2 => Path::Spoofed,
        _ => Path::Unverified,
    }
}

/// The check as a global BPF function: the verifier checks it once, on its own, instead of once
/// for every state the pipeline reaches it in (inlined, it tripled the program's verification
/// work). Arguments are the context and plain numbers: the IP header offset and `shape` (bit 0
/// IPv6, bit 1 VLAN-tagged). Returns 0 verified, 1 unverified, 2 spoofed.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn portsentry_path_check(ctx: *mut xdp_md, l3_offset: u32, shape: u32) -> u32 {
    let ctx = XdpContext::new(ctx);
    // The offset is at most 22 (Ethernet and two VLAN tags); the mask tells the verifier so.
    let l3 = (l3_offset & 0x3f) as usize;
    match check_at(&ctx, l3, shape & 1 != 0, shape & 2 != 0) {
        Path::Verified => 0,
        Path::Unverified => 1,
        Path::Spoofed => 2,
    }
}

#[inline(always)]
fn check_at(ctx: &XdpContext, l3_offset: usize, is_v6: bool, vlan_tagged: bool) -> Path {
    // SAFETY: bpf_fib_lookup is plain data; all-zero is a valid starting state.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.ifindex = LOOPBACK_IFINDEX;
    if !fill_addresses(ctx, l3_offset, is_v6, &mut params) {
        return Path::Unverified;
    }
    // SAFETY: ctx.ctx is the xdp_md the kernel handed us.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: params is a valid, initialised bpf_fib_lookup of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    let same_interface = params.ifindex == ingress
        || routes_via_upper(ctx, ingress, l3_offset, vlan_tagged, params.ifindex);
    match rc {
        RET_SUCCESS if !same_interface => Path::Spoofed,
        RET_SUCCESS => match source_mac(ctx) {
            Some(mac) if mac == params.dmac => Path::Verified,
            Some(_) => Path::Spoofed,
            None => Path::Unverified,
        },
        // The route is known, its neighbour is not (yet): only the interface can be checked.
        RET_NO_NEIGH if !same_interface => Path::Spoofed,
        // No route back (NOT_FWDED also means "no route"), unreachable, blackhole, lookups
        // unavailable: the tables cannot tell. Own addresses never get here (the allowlist
        // always holds them) and bogus sources never reach a ban.
        _ => Path::Unverified,
    }
}

/// Whether a route back leaving by `egress` counts as leaving by the interface the frame came in
/// on: `egress` is an upper device of it for the frame's VLAN tags (PS_UPPER_LINKS). A tagged
/// frame whose tags have no entry is not compared (no VLAN device is known for them).
#[inline(always)]
pub(crate) fn routes_via_upper(
    ctx: &XdpContext,
    ingress: u32,
    l3_offset: usize,
    vlan_tagged: bool,
    egress: u32,
) -> bool {
    let mut key = LinkKey {
        ifindex: ingress,
        outer_vid: 0,
        inner_vid: 0,
    };
    if vlan_tagged {
        // The first tag's TCI follows its TPID at 12; a second tag's at 18 (l3 at 22).
        key.outer_vid = be16_at(ctx, 14).unwrap_or(0) & VID_MASK;
        if l3_offset >= 22 {
            key.inner_vid = be16_at(ctx, 18).unwrap_or(0) & VID_MASK;
        }
    }
    // SAFETY: a plain read of a hash map value; the daemon replaces whole values. By reference:
    // by value, `Borrow` copies the key onto the stack (clippy prefers it).
    #[allow(clippy::needless_borrows_for_generic_args)]
    let uppers = unsafe { PS_UPPER_LINKS.get(&key) };
    match uppers {
        Some(uppers) => {
            // Early returns: a running `found |= …` gave the verifier 2^8 states to walk.
            for i in 0..portsentry_common::UPPER_LINKS_MAX {
                let u = uppers.ifindex[i];
                if u == 0 {
                    return false;
                }
                if u == egress {
                    return true;
                }
            }
            false
        }
        None => vlan_tagged,
    }
}

/// The VLAN ID bits of a tag's TCI.
const VID_MASK: u16 = 0x0fff;

/// Route back to the probe's source, from the address it probed.
#[inline(always)]
fn fill_addresses(ctx: &XdpContext, off: usize, is_v6: bool, params: &mut FibParams) -> bool {
    if is_v6 {
        let Some(h) = ptr_at(ctx, off, 40) else {
            return false;
        };
        params.family = AF_INET6;
        // SAFETY: 40 bytes at h are in bounds: source at 8..24, destination at 24..40. The
        // union members are the IPv6 ones for AF_INET6.
        unsafe {
            for i in 0..4 {
                let word = |at: usize| {
                    u32::from_ne_bytes([*h.add(at), *h.add(at + 1), *h.add(at + 2), *h.add(at + 3)])
                };
                params.__bindgen_anon_4.ipv6_dst[i] = word(8 + 4 * i);
                params.__bindgen_anon_3.ipv6_src[i] = word(24 + 4 * i);
            }
        }
    } else {
        let Some(h) = ptr_at(ctx, off, 20) else {
            return false;
        };
        params.family = AF_INET;
        // SAFETY: 20 bytes at h are in bounds: source at 12..16, destination at 16..20.
        unsafe {
            params.__bindgen_anon_4.ipv4_dst =
                u32::from_ne_bytes([*h.add(12), *h.add(13), *h.add(14), *h.add(15)]);
            params.__bindgen_anon_3.ipv4_src =
                u32::from_ne_bytes([*h.add(16), *h.add(17), *h.add(18), *h.add(19)]);
        }
    }
    true
}

#[inline(always)]
fn source_mac(ctx: &XdpContext) -> Option<[u8; 6]> {
    let p = ptr_at(ctx, 6, 6)?;
    // SAFETY: 6 bytes at p are in bounds.
    Some(unsafe { [*p, *p.add(1), *p.add(2), *p.add(3), *p.add(4), *p.add(5)] })
}
