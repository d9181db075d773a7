//! Trap probes from learned peers (PS_PEERS, see `peers.rs`): they do not ban on their own,
//! because a forger can send a probe in a peer's name but cannot complete a handshake in it.
//!
//! - A TCP SYN is answered here with a SYN-ACK whose sequence number is a SYN cookie
//!   (`bpf_tcp_raw_gen_syncookie_*`), sent back out of the interface (XDP_TX); the stack never
//!   sees the SYN. The SYN-ACK goes to the neighbour the route back to the claimed source names
//!   (`bpf_fib_lookup`), never to the MAC the SYN came from: a LAN forger writing a peer's
//!   address from its own MAC never sees the cookie. So only the real peer can send the ACK that
//!   carries the cookie back ([`check_ack`]). That ACK is then counted as a probe like any other
//!   (and still gets the path check at ban time); a forged SYN yields nothing.
//! - No cookie (the SYN passes to the stack, which refuses it, and the event says so) where the
//!   route back has no resolved neighbour, leaves by another interface, or where XDP_TX cannot
//!   deliver (PS_NO_XDP_TX: a veth whose far end runs no XDP program): never a silent black hole.
//! - The SYN-ACK carries the options this host's own SYN-ACKs carry (the daemon writes what the
//!   TCP sysctls say into the config): MSS from the route's MTU, SACK permitted, timestamps,
//!   window scale, in Linux's order, and Linux's window. A peer cannot sort trap ports from
//!   services by their options.
//! - Any other trap probe from a peer (UDP, FIN, NULL, XMAS) is reported and passes.
//!
//! The cookie itself is the proof; PS_COOKIES only bounds guessing: an ACK is checked only if a
//! cookie went to its source moments ago, and only [`COOKIE_GUESSES`] wrong ones per window.
//! The helpers use the kernel's syncookie secret, which exists whatever
//! `net.ipv4.tcp_syncookies` says.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, iphdr, ipv6hdr, tcphdr, xdp_action, xdp_md},
    helpers::{
        bpf_fib_lookup, bpf_ktime_get_ns, bpf_tcp_raw_check_syncookie_ipv4,
        bpf_tcp_raw_check_syncookie_ipv6, bpf_tcp_raw_gen_syncookie_ipv4,
        bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
    },
    programs::XdpContext,
};
use portsentry_common::{
    address_family::{INET as AF_INET, INET6 as AF_INET6},
    ethertype, event_flags, synack_flags,
    tcp_flags::{ACK, RST, SYN},
    AddrKey, CookieEntry, CookieScratch, EventKind, IpProto, ScanType, Stat, COOKIE_ACK_WINDOW_NS,
    COOKIE_GUESSES,
};

use crate::{
    atomic, count, emit,
    maps::{PS_CONFIG, PS_COOKIES, PS_COOKIE_SCRATCH, PS_NO_XDP_TX},
    parse::{be16_at, ptr_at, Packet, ETH_HLEN, IPV6_HLEN, VLAN_HLEN},
    pass, probe_event,
};

const IPV4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const DEFAULT_TTL: u8 = 64;
const DEFAULT_SPACE: u32 = 65535;
const DEFAULT_MTU: u32 = 1500;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;
const TCPOPT_WINDOW: u8 = 3;
const TCPOPT_SACK_PERM: u8 = 4;
const TCPOPT_TIMESTAMP: u8 = 8;
/// Options walked in a SYN: Linux sends 5 (MSS, SACK permitted, timestamps, NOP, window
/// scale), Windows 6.
const MAX_SYN_OPTIONS: usize = 12;
const LOOPBACK_IFINDEX: u32 = 1;
const FIB_SUCCESS: i64 = 0;

/// [`portsentry_cookie_write`]'s answer when the SYN-ACK is ready.
const SENT: u32 = 0;

/// An ACK without SYN or RST: what completes a handshake.
#[inline(always)]
pub fn is_handshake_ack(flags: u8) -> bool {
    flags & (ACK | SYN | RST) == ACK
}

/// A trap probe from a learned peer: a SYN gets a SYN cookie (XDP_TX) where one can be
/// delivered to the route's neighbour; anything else, or a SYN that cannot be answered, is
/// reported and passes. Nothing is counted as a hit or banned.
#[inline(always)]
pub fn answer(ctx: &XdpContext, pkt: &Packet, scan: u8, now: u64) -> u32 {
    count(Stat::PeerProbes);
    let mut event = probe_event(ctx, pkt, EventKind::PeerProbe, scan, 0, now);
    let verdict = if scan == ScanType::TcpSyn as u8 && pkt.l4.protocol == IpProto::Tcp as u8 {
        match send_cookie(ctx) {
            Cookie::Sent => {
                count(Stat::CookiesSent);
                cookie_sent(&pkt.src, now);
                xdp_action::XDP_TX
            }
            Cookie::Withheld => {
                count(Stat::CookiesWithheld);
                event.flags |= event_flags::COOKIE_WITHHELD;
                pass()
            }
            Cookie::Broken => {
                count(Stat::CookiesWithheld);
                count(Stat::Dropped);
                event.flags |= event_flags::COOKIE_WITHHELD;
                xdp_action::XDP_DROP
            }
        }
    } else {
        pass()
    };
    if crate::limit::allows(0, now) {
        emit(&event);
    }
    verdict
}

/// Notes that a cookie went to `src` now; starts a new guess-budget window if the last one is
/// over (the CPU that wins the compare-and-swap on its start resets the count).
#[inline(always)]
fn cookie_sent(src: &AddrKey, now: u64) {
    if let Some(entry) = PS_COOKIES.get_ptr_mut(src) {
        // SAFETY: pointers into the value of a successful lookup; aligned u64 stores are atomic,
        // and the count is reset by the one CPU that wins the window.
        unsafe {
            (&raw mut (*entry).sent_ns).write_volatile(now);
            let start_ptr = &raw mut (*entry).window_start_ns;
            let start = start_ptr.read_volatile();
            if now.wrapping_sub(start) > COOKIE_ACK_WINDOW_NS
                && atomic::compare_exchange(start_ptr, start, now)
            {
                atomic::swap(&raw mut (*entry).wrong, 0);
            }
        }
        return;
    }
    let fresh = CookieEntry {
        sent_ns: now,
        window_start_ns: now,
        wrong: 0,
    };
    // LRU: a full table forgets the source sent a cookie longest ago.
    let _ = PS_COOKIES.insert(src, fresh, 0);
}

/// Whether this ACK from learned peer `src` completes a handshake on a cookie we sent. Checked
/// only if a cookie went to `src` less than [`COOKIE_ACK_WINDOW_NS`] ago and fewer than
/// [`COOKIE_GUESSES`] wrong ones came from it in this window; otherwise it passes unchecked.
#[inline(always)]
pub fn check_ack(ctx: &XdpContext, src: &AddrKey, now: u64) -> bool {
    let Some(entry) = PS_COOKIES.get_ptr_mut(src) else {
        count(Stat::CookieAcksUnsolicited);
        return false;
    };
    // SAFETY: pointers into the value of a successful lookup; every CPU updates `wrong`
    // atomically.
    unsafe {
        if now.wrapping_sub((&raw const (*entry).sent_ns).read_volatile()) > COOKIE_ACK_WINDOW_NS {
            count(Stat::CookieAcksUnsolicited);
            return false;
        }
        let wrong = &raw mut (*entry).wrong;
        if wrong.read_volatile() >= COOKIE_GUESSES {
            count(Stat::CookieChecksRefused);
            return false;
        }
        if cookie_valid(ctx) {
            return true;
        }
        atomic::add(wrong, 1);
    }
    false
}

/// Where the IP and TCP headers are.
struct Headers {
    l3: usize,
    l4: usize,
    is_v6: bool,
    vlan_tagged: bool,
}

/// Finds the IP and TCP headers again from the frame (0–2 VLAN tags; IPv4 with or without
/// options; IPv6 only without extension headers) instead of taking offsets from the parser.
///
/// This is for the verifier: the parser arrives here along many paths (VLAN tags, IPv4
/// options, every IPv6 extension-header chain), each with its own exact offsets, and each
/// would be verified through the cookie code separately (about 15 times the whole program's
/// cost). Offsets found here are the same few on every path. A SYN with IPv6 extension
/// headers therefore gets no cookie: it is reported and passes.
#[inline(always)]
fn locate(ctx: &XdpContext) -> Option<Headers> {
    let mut ether_type = be16_at(ctx, 12)?;
    let mut l3 = ETH_HLEN;
    for _ in 0..2 {
        if ether_type != ethertype::VLAN && ether_type != ethertype::QINQ {
            break;
        }
        ether_type = be16_at(ctx, l3 + 2)?;
        l3 += VLAN_HLEN;
    }
    let vlan_tagged = l3 != ETH_HLEN;
    match ether_type {
        ethertype::IPV4 => {
            let ip = ptr_at(ctx, l3, IPV4_HLEN)?;
            // SAFETY: 20 bytes at ip are in bounds; IHL is the low nibble of byte 0.
            let ihl = usize::from(unsafe { *ip } & 0x0f) * 4;
            if ihl < IPV4_HLEN {
                return None;
            }
            Some(Headers {
                l3,
                l4: l3 + ihl,
                is_v6: false,
                vlan_tagged,
            })
        }
        ethertype::IPV6 => {
            let ip = ptr_at(ctx, l3, IPV6_HLEN)?;
            // SAFETY: 40 bytes at ip are in bounds; the next header is byte 6.
            if unsafe { *ip.add(6) } != IpProto::Tcp as u8 {
                return None;
            }
            Some(Headers {
                l3,
                l4: l3 + IPV6_HLEN,
                is_v6: true,
                vlan_tagged,
            })
        }
        _ => None,
    }
}

/// Whether this ACK carries a cookie we sent: its acknowledgement number is the cookie + 1 for
/// its addresses, ports and sequence number (minus one), within the cookie's lifetime.
#[inline(always)]
fn cookie_valid(ctx: &XdpContext) -> bool {
    let Some(Headers { l3, l4, is_v6, .. }) = locate(ctx) else {
        return false;
    };
    let Some(th) = ptr_at(ctx, l4, 20) else {
        return false;
    };
    let th = th as *mut tcphdr;
    // SAFETY (both helpers): the IP header and the 20-byte TCP header are in bounds (ptr_at);
    // the helpers only read them.
    let ret = if is_v6 {
        let Some(ip) = ptr_at(ctx, l3, IPV6_HLEN) else {
            return false;
        };
        unsafe { bpf_tcp_raw_check_syncookie_ipv6(ip as *mut ipv6hdr, th) }
    } else {
        let Some(ip) = ptr_at(ctx, l3, IPV4_HLEN) else {
            return false;
        };
        unsafe { bpf_tcp_raw_check_syncookie_ipv4(ip as *mut iphdr, th) }
    };
    ret == 0
}

/// What the SYN offered, from its options.
#[derive(Clone, Copy)]
struct Offered {
    sack: bool,
    timestamps: bool,
    wscale: bool,
    /// Their TSval (our TSecr).
    tsval: u32,
}

/// Walks the SYN's options in the packet (`th_len` bytes of TCP header at `l4`): what it
/// offered, packed as [`Offered::unpack`] reads it, left in this CPU's scratch (the SYN area's
/// first 8 bytes, free from step 1 until step 2 writes its plan there); returns 0, or 1 without
/// a scratch.
///
/// A global BPF function of its own (the context and two numbers in, one number out): the walk
/// is a loop over data-dependent offsets, and inside the SYN-ACK code every iteration's state
/// would carry that code's many live values, which the verifier cannot prune (it gave up after
/// a million instructions). Here it carries almost nothing. Nor does it carry what it found:
/// accumulated in a register from a zero, the bits were constants the verifier tracks exactly,
/// and Linux 6.1 kept one walk per combination of options found so far (65 000 instructions
/// there, 25 000 on 6.18). Map memory is not tracked, so every combination is the same state.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn portsentry_syn_options(ctx: *mut xdp_md, l4: u32, th_len: u32) -> u32 {
    let ctx = XdpContext::new(ctx);
    let Some(scratch) = scratch() else {
        return 1;
    };
    // SAFETY: the SYN area is 64 bytes of 8-aligned map memory, this CPU's alone while the
    // program runs.
    let found = unsafe { (&raw mut (*scratch).syn) as *mut u64 };
    // SAFETY: as above; volatile, so that the compiler keeps every update in map memory.
    let add = |bits: u64| unsafe { found.write_volatile(found.read_volatile() | bits) };
    // SAFETY: as above.
    unsafe { found.write_volatile(0) };
    // At most 22 + 60 (Ethernet, two VLAN tags, IPv4 with options); the mask says so.
    let l4 = (l4 & 0x7f) as usize;
    let th_len = (th_len & 0x3f) as usize;
    let mut i = TCP_HLEN;
    for _ in 0..MAX_SYN_OPTIONS {
        if i + 1 >= th_len {
            break;
        }
        let Some(p) = ptr_at(&ctx, l4 + (i & 0x3f), 2) else {
            break;
        };
        // SAFETY: 2 bytes at p are in bounds.
        let (kind, len) = unsafe { (*p, usize::from(*p.add(1))) };
        if kind == 0 {
            break;
        }
        if kind == TCPOPT_NOP {
            i += 1;
            continue;
        }
        if len < 2 || i + len > th_len {
            break;
        }
        match (kind, len) {
            (TCPOPT_SACK_PERM, 2) => add(Offered::SACK),
            (TCPOPT_WINDOW, 3) => add(Offered::WSCALE),
            (TCPOPT_TIMESTAMP, 10) => {
                if let Some(v) = ptr_at(&ctx, l4 + (i & 0x3f) + 2, 4) {
                    // SAFETY: 4 bytes at v are in bounds.
                    let tsval =
                        unsafe { u32::from_be_bytes([*v, *v.add(1), *v.add(2), *v.add(3)]) };
                    // SAFETY: as for `found` above.
                    unsafe {
                        found.write_volatile(
                            found.read_volatile() & 0xffff_ffff
                                | Offered::TIMESTAMPS
                                | u64::from(tsval) << 32,
                        )
                    };
                }
            }
            _ => {}
        }
        i += len;
    }
    0
}

impl Offered {
    const SACK: u64 = 1;
    const TIMESTAMPS: u64 = 2;
    const WSCALE: u64 = 4;

    fn unpack(v: u64) -> Self {
        Self {
            sack: v & Self::SACK != 0,
            timestamps: v & Self::TIMESTAMPS != 0,
            wscale: v & Self::WSCALE != 0,
            tsval: (v >> 32) as u32,
        }
    }
}

/// Turns the SYN into its SYN-ACK in place and returns true, or returns false and leaves the
/// packet untouched when no cookie may or can go out: XDP_TX does not deliver on this
/// interface (PS_NO_XDP_TX), the route back to the claimed source has no resolved neighbour or
/// leaves by another interface, or the SYN cannot be rewritten.
///
/// The SYN-ACK: Ethernet to the route's neighbour from the route's interface (VLAN tags kept);
/// addresses and ports swapped; no IP options or extension headers; TTL / hop limit from the
/// host's sysctls; sequence number the cookie, acknowledgement their sequence number + 1;
/// options as Linux writes them for this SYN under the host's sysctls (MSS, then SACK permitted
/// and timestamps, then window scale); Linux's initial window; both checksums.
///
/// Two global BPF functions, called one after the other (each verified once, on its own; each
/// with its own stack frame, the route lookup's parameters and the SYN's header kept in a
/// per-CPU map value, PS_COOKIE_SCRATCH): together on the stack they did not fit beside the
/// pipeline's frame in the BPF stack's 512 bytes.
#[inline(always)]
fn send_cookie(ctx: &XdpContext) -> Cookie {
    let seq = portsentry_cookie_route(ctx.ctx);
    if seq < 0 || portsentry_cookie_plan(ctx.ctx, seq as u32) != SENT {
        return Cookie::Withheld;
    }
    if portsentry_cookie_emit(ctx.ctx) == SENT {
        Cookie::Sent
    } else {
        Cookie::Broken
    }
}

/// What became of a SYN's cookie.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cookie {
    Sent,
    /// None may or can go out; the SYN is untouched.
    Withheld,
    /// The frame was resized but could not be written (never seen: step 3 checks what step 2
    /// made); it must be dropped, neither sent nor passed.
    Broken,
}

/// The scratch space of this CPU.
#[inline(always)]
fn scratch() -> Option<*mut CookieScratch> {
    PS_COOKIE_SCRATCH.get_ptr_mut(0)
}

/// Step 1: the route back and the cookie. Returns the cookie (the SYN-ACK's sequence number) or
/// -1; leaves the route lookup's result and the SYN's TCP header in PS_COOKIE_SCRATCH.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn portsentry_cookie_route(ctx: *mut xdp_md) -> i64 {
    let ctx = XdpContext::new(ctx);
    route_and_cookie(&ctx).unwrap_or(-1)
}

#[inline(always)]
fn route_and_cookie(ctx: &XdpContext) -> Option<i64> {
    // SAFETY: ctx.ctx is the xdp_md the kernel handed us.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: only the presence of the key is read, never the value's memory.
    if unsafe { PS_NO_XDP_TX.get(ingress) }.is_some() {
        return None;
    }
    let Headers {
        l3,
        l4,
        is_v6,
        vlan_tagged,
    } = locate(ctx)?;
    // The offsets are at most 22 and 82; the masks tell the verifier so.
    let (l3, l4) = (l3 & 0x1f, l4 & 0x7f);
    let scratch = scratch()?;
    // SAFETY: the per-CPU scratch value from a successful lookup, 128 bytes: a
    // `struct bpf_fib_lookup` (64 bytes, plain data) and the SYN header's 64 bytes. Nothing else
    // on this CPU runs the program while it is in use.
    let (fib, syn) = unsafe {
        (
            &raw mut (*scratch).fib as *mut FibParams,
            &raw mut (*scratch).syn as *mut u8,
        )
    };

    // The route back to the claimed source, from the address it probed, as if from `lo` (see
    // path.rs): its interface must be this one (or an upper device of it), and its neighbour
    // resolved. The SYN-ACK goes to that neighbour, never to the SYN's sender.
    // SAFETY: fib points at 64 bytes of map memory; every field is written before the call.
    unsafe {
        core::ptr::write_bytes(fib as *mut u8, 0, core::mem::size_of::<FibParams>());
        (*fib).ifindex = LOOPBACK_IFINDEX;
        if is_v6 {
            let h = ptr_at(ctx, l3, IPV6_HLEN)?;
            (*fib).family = AF_INET6;
            // 40 bytes at h are in bounds: source at 8..24, destination at 24..40.
            for i in 0..4 {
                let word = |at: usize| {
                    u32::from_ne_bytes([*h.add(at), *h.add(at + 1), *h.add(at + 2), *h.add(at + 3)])
                };
                (*fib).__bindgen_anon_4.ipv6_dst[i] = word(8 + 4 * i);
                (*fib).__bindgen_anon_3.ipv6_src[i] = word(24 + 4 * i);
            }
        } else {
            let h = ptr_at(ctx, l3, IPV4_HLEN)?;
            (*fib).family = AF_INET;
            // 20 bytes at h are in bounds: source at 12..16, destination at 16..20.
            (*fib).__bindgen_anon_4.ipv4_dst =
                u32::from_ne_bytes([*h.add(12), *h.add(13), *h.add(14), *h.add(15)]);
            (*fib).__bindgen_anon_3.ipv4_src =
                u32::from_ne_bytes([*h.add(16), *h.add(17), *h.add(18), *h.add(19)]);
        }
    }
    // SAFETY: fib is a valid, initialised bpf_fib_lookup of the size passed, in map memory.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    if rc != FIB_SUCCESS {
        return None;
    }
    // SAFETY: as above.
    let (egress, dmac) = unsafe { ((*fib).ifindex, (*fib).dmac) };
    if egress != ingress {
        // A route by an upper device of this interface (its bridge, bond or VLAN device: see
        // path.rs) counts as this one, as for the path check. But the SYN-ACK leaves by this
        // port, not necessarily the one the neighbour lives behind, where a switch would flood
        // it: here the SYN must have come from that neighbour itself.
        if !crate::path::routes_via_upper(ctx, ingress, l3, vlan_tagged, egress) {
            return None;
        }
        let from = ptr_at(ctx, 6, 6)?;
        // SAFETY: 6 bytes at from are in bounds.
        let from = unsafe {
            [
                *from,
                *from.add(1),
                *from.add(2),
                *from.add(3),
                *from.add(4),
                *from.add(5),
            ]
        };
        if from != dmac {
            return None;
        }
    }

    // The cookie, from the SYN as it came. The helper reads `doff * 4` bytes of TCP header
    // (options included, for the MSS): a length the verifier can bound in a buffer, not in the
    // packet, so the header is copied out first.
    let th = ptr_at(ctx, l4, 20)?;
    // SAFETY: 20 bytes at th are in bounds; the data offset is the top nibble of byte 12.
    // A data offset below 5 is raised to 20 bytes here, and the cookie helper then refuses the
    // header (its length must be `doff * 4`). Raising rather than returning early keeps the
    // lower bound on the very register the helpers get: LLVM compares before it masks, and the
    // verifier needs a non-zero minimum length.
    let th_len = (usize::from(unsafe { *th.add(12) } >> 4) * 4).max(20);
    // SAFETY: copies th_len (20..=60) bytes into the 64-byte scratch; the helper checks the
    // packet bounds itself.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx.cast(), l4 as u32, syn.cast(), th_len as u32) } != 0 {
        return None;
    }
    // SAFETY (both helpers): the IP header is in bounds (ptr_at) and th_len bytes of TCP header
    // are in the scratch; the helpers only read them.
    let cookie = if is_v6 {
        let ip = ptr_at(ctx, l3, IPV6_HLEN)?;
        unsafe { bpf_tcp_raw_gen_syncookie_ipv6(ip as *mut ipv6hdr, syn.cast(), th_len as u32) }
    } else {
        let ip = ptr_at(ctx, l3, IPV4_HLEN)?;
        unsafe { bpf_tcp_raw_gen_syncookie_ipv4(ip as *mut iphdr, syn.cast(), th_len as u32) }
    };
    // The cookie is in the low 32 bits (the MSS it encodes above them is the peer's, for a
    // connection we never make).
    (cookie >= 0).then_some(i64::from(cookie as u32))
}

/// What step 2 works out for step 3, kept in the scratch's SYN area (free after step 1) so
/// that nothing has to live on the stack across the resize.
#[repr(C)]
struct Plan {
    seq: u32,
    their_seq: u32,
    /// Their TSval.
    tsecr: u32,
    ts_key: u32,
    our_port: u16,
    their_port: u16,
    mss: u16,
    window: u16,
    tcp_len: u8,
    l3: u8,
    /// `PLAN_*`.
    flags: u8,
    wscale: u8,
    ttl: u8,
    hop_limit: u8,
    ts_flags: u8,
    _pad: u8,
}

const PLAN_SACK: u8 = 1;
const PLAN_TS: u8 = 2;
const PLAN_WS: u8 = 4;
const PLAN_V6: u8 = 8;

/// The plan in this CPU's scratch.
#[inline(always)]
fn plan() -> Option<*mut Plan> {
    let scratch = scratch()?;
    // SAFETY: the SYN area is 64 bytes of 8-aligned map memory; a Plan is 32 plain bytes.
    Some(unsafe { (&raw mut (*scratch).syn) as *mut Plan })
}

/// Step 2: works out the SYN-ACK from the SYN still in the packet, the route lookup in
/// PS_COOKIE_SCRATCH and the cookie `seq`, stores the plan, and resizes the frame to the
/// SYN-ACK's length. Returns [`SENT`], or 1 with the packet untouched.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn portsentry_cookie_plan(ctx: *mut xdp_md, seq: u32) -> u32 {
    let ctx = XdpContext::new(ctx);
    if plan_synack(&ctx, seq).is_some() {
        SENT
    } else {
        1
    }
}

#[inline(always)]
fn plan_synack(ctx: &XdpContext, seq: u32) -> Option<()> {
    let cfg = PS_CONFIG.get(0)?;
    let Headers { l3, l4, is_v6, .. } = locate(ctx)?;
    let (l3, l4) = (l3 & 0x1f, l4 & 0x7f);
    let scratch = scratch()?;
    let ip_len = if is_v6 { IPV6_HLEN } else { IPV4_HLEN };
    // SAFETY: the scratch value from a successful lookup, written by step 1 on this CPU.
    let mtu = unsafe {
        let fib = &raw const (*scratch).fib as *const FibParams;
        u32::from((*fib).__bindgen_anon_1.mtu_result)
    };
    let mtu = if mtu == 0 { DEFAULT_MTU } else { mtu };
    // Linux advertises its own MSS: the route's MTU less the IP and TCP headers.
    let mss = mtu
        .saturating_sub(ip_len as u32 + TCP_HLEN as u32)
        .clamp(536, 65495) as u16;

    // The SYN as it came (still in the packet).
    let th = ptr_at(ctx, l4, TCP_HLEN)?;
    // SAFETY: 20 bytes at th are in bounds.
    let (their_port, our_port, their_seq, th_len) = unsafe {
        (
            u16::from_be_bytes([*th, *th.add(1)]),
            u16::from_be_bytes([*th.add(2), *th.add(3)]),
            u32::from_be_bytes([*th.add(4), *th.add(5), *th.add(6), *th.add(7)]),
            (u32::from(*th.add(12) >> 4) * 4).max(20),
        )
    };
    if portsentry_syn_options(ctx.ctx, l4 as u32, th_len) != 0 {
        return None;
    }
    // SAFETY: the scratch value from a successful lookup; step 2's walk just wrote these 8
    // bytes, the plan below overwrites them.
    let o = Offered::unpack(unsafe { ((&raw const (*scratch).syn) as *const u64).read() });
    let sack = o.sack && cfg.synack_flags & synack_flags::SACK != 0;
    let ts = o.timestamps && cfg.synack_flags & synack_flags::TIMESTAMPS != 0;
    let ws = o.wscale && cfg.synack_flags & synack_flags::WSCALE != 0;
    // MSS, then 12 bytes for timestamps (with SACK permitted in their padding) or 4 for SACK
    // permitted alone, then 4 for the window scale.
    let opt_len =
        4 + (if ts {
            12
        } else if sack {
            4
        } else {
            0
        }) + (if ws { 4 } else { 0 });
    let tcp_len = TCP_HLEN + opt_len;
    // tcp_select_initial_window: the space cut to a multiple of the MSS less the timestamps
    // (`checked_rem`: a `%` would keep a panic path for a zero divisor, which the verifier
    // refuses; `seg` is at least 524).
    let space = if cfg.synack_space == 0 {
        DEFAULT_SPACE
    } else {
        cfg.synack_space
    };
    let seg = u32::from(mss) - if ts { 12 } else { 0 };
    let window = if space > seg {
        space - space.checked_rem(seg).unwrap_or(0)
    } else {
        space
    }
    .min(65535) as u16;
    let flags = if sack { PLAN_SACK } else { 0 }
        | if ts { PLAN_TS } else { 0 }
        | if ws { PLAN_WS } else { 0 }
        | if is_v6 { PLAN_V6 } else { 0 };
    let plan = plan()?;
    // SAFETY: plan points at 32 bytes of this CPU's scratch.
    unsafe {
        plan.write(Plan {
            seq,
            their_seq,
            tsecr: o.tsval,
            ts_key: cfg.synack_ts_key,
            our_port,
            their_port,
            mss,
            window,
            tcp_len: tcp_len as u8,
            l3: l3 as u8,
            flags,
            wscale: cfg.synack_wscale.min(14),
            ttl: cfg.synack_ttl,
            hop_limit: cfg.synack_hop_limit,
            ts_flags: cfg.synack_flags,
            _pad: 0,
        });
    }

    // Resize the frame to exactly Ethernet (+ VLAN tags) + IP header + TCP header. The tail
    // moves, the headers stay where they are.
    let new_len = (l3 + ip_len + tcp_len) as i32;
    let old_len = (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: ctx.ctx is the xdp_md the kernel handed us.
    if new_len != old_len && unsafe { bpf_xdp_adjust_tail(ctx.ctx, new_len - old_len) } != 0 {
        return None;
    }
    Some(())
}

/// Step 3: writes the SYN-ACK the plan describes into the resized frame. Returns [`SENT`], or
/// 1 if the frame is not as step 2 left it (it then must not go anywhere).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn portsentry_cookie_emit(ctx: *mut xdp_md) -> u32 {
    let ctx = XdpContext::new(ctx);
    if emit_synack(&ctx).is_some() {
        SENT
    } else {
        1
    }
}

#[inline(always)]
fn emit_synack(ctx: &XdpContext) -> Option<()> {
    let scratch = scratch()?;
    let plan = plan()?;
    // SAFETY: the plan step 2 wrote on this CPU.
    let (l3, flags, tcp_len) = unsafe {
        (
            usize::from((*plan).l3 & 0x1f),
            (*plan).flags,
            usize::from((*plan).tcp_len & 0x3f),
        )
    };
    let is_v6 = flags & PLAN_V6 != 0;
    let ip_len = if is_v6 { IPV6_HLEN } else { IPV4_HLEN };

    // Ethernet to the route's neighbour, from the route's interface.
    let eth = ptr_at(ctx, 0, 12)? as *mut u8;
    // SAFETY: 12 bytes at eth are in bounds; the route lookup's result is in the scratch.
    unsafe {
        let fib = &raw const (*scratch).fib as *const FibParams;
        for i in 0..6 {
            *eth.add(i) = (*fib).dmac[i];
            *eth.add(6 + i) = (*fib).smac[i];
        }
    }
    let ttl_or_default = |v: u8| if v == 0 { DEFAULT_TTL } else { v };
    // SAFETY (both arms): the plan is this CPU's scratch; the header bytes are in bounds.
    let (tcp, pseudo) = if is_v6 {
        let ip = ptr_at(ctx, l3, IPV6_HLEN + TCP_HLEN + 4)? as *mut u8;
        // Source at 8..24, destination at 24..40.
        unsafe {
            swap(ip, 8, 24, 16);
            // Version 6, traffic class 0, and a flow label as Linux's automatic ones look: a
            // hash of the flow.
            let flow = flow_label(
                sum16(ip, 8, 16),
                (*plan).our_port,
                (*plan).their_port,
                (*plan).ts_key,
            );
            put32(ip, 0, 0x6000_0000 | flow);
            put16(ip, 4, tcp_len as u16);
            *ip.add(6) = IpProto::Tcp as u8; // next header: no extension headers
            *ip.add(7) = ttl_or_default((*plan).hop_limit);
            (ip.add(IPV6_HLEN), sum16(ip, 8, 16))
        }
    } else {
        let ip = ptr_at(ctx, l3, IPV4_HLEN + TCP_HLEN + 4)? as *mut u8;
        // Source at 12..16, destination at 16..20.
        unsafe {
            *ip = 0x45; // version 4, IHL 5: no options
            *ip.add(1) = 0;
            put16(ip, 2, (IPV4_HLEN + tcp_len) as u16);
            put16(ip, 4, 0); // id: 0 with DF, as Linux's SYN-ACKs
            put16(ip, 6, 0x4000); // DF
            *ip.add(8) = ttl_or_default((*plan).ttl);
            *ip.add(9) = IpProto::Tcp as u8;
            put16(ip, 10, 0);
            swap(ip, 12, 16, 4);
            put16(ip, 10, checksum(sum16(ip, 0, 10)));
            (ip.add(IPV4_HLEN), sum16(ip, 12, 4))
        }
    };
    // The pseudo-header: both addresses (summed above), the protocol and the TCP length.
    let mut sum = pseudo + u64::from(IpProto::Tcp as u8) + tcp_len as u64;
    // SAFETY: the 24 bytes after the IP header are in bounds (checked with it above).
    unsafe {
        let p = &*plan;
        sum += put32s(
            tcp,
            0,
            u32::from(p.our_port) << 16 | u32::from(p.their_port),
        );
        sum += put32s(tcp, 4, p.seq);
        sum += put32s(tcp, 8, p.their_seq.wrapping_add(1));
        sum += put32s(
            tcp,
            12,
            ((tcp_len / 4) as u32) << 28 | u32::from(SYN | ACK) << 16 | u32::from(p.window),
        );
        put32(tcp, 16, 0); // checksum (below) and urgent pointer
        sum += put32s(
            tcp,
            20,
            u32::from(TCPOPT_MSS) << 24 | 4 << 16 | u32::from(p.mss),
        );
    }
    // The optional words, each in bounds by its own check: the frame ends where they do.
    let mut at = l3 + ip_len + TCP_HLEN + 4;
    if flags & PLAN_TS != 0 {
        let p = ptr_at(ctx, at, 12)? as *mut u8;
        let first = if flags & PLAN_SACK != 0 {
            u32::from(TCPOPT_SACK_PERM) << 24 | 2 << 16
        } else {
            u32::from(TCPOPT_NOP) << 24 | u32::from(TCPOPT_NOP) << 16
        } | u32::from(TCPOPT_TIMESTAMP) << 8
            | 10;
        // SAFETY: 12 bytes at p are in bounds; the plan is this CPU's scratch.
        unsafe {
            let tsval = ts_val((*plan).ts_flags, (*plan).ts_key, pseudo);
            sum += put32s(p, 0, first);
            sum += put32s(p, 4, tsval);
            sum += put32s(p, 8, (*plan).tsecr);
        }
        at += 12;
    } else if flags & PLAN_SACK != 0 {
        let p = ptr_at(ctx, at, 4)? as *mut u8;
        let word = u32::from(TCPOPT_NOP) << 24
            | u32::from(TCPOPT_NOP) << 16
            | u32::from(TCPOPT_SACK_PERM) << 8
            | 2;
        // SAFETY: 4 bytes at p are in bounds.
        sum += unsafe { put32s(p, 0, word) };
        at += 4;
    }
    if flags & PLAN_WS != 0 {
        let p = ptr_at(ctx, at, 4)? as *mut u8;
        // SAFETY: 4 bytes at p are in bounds; the plan is this CPU's scratch.
        let word = u32::from(TCPOPT_NOP) << 24
            | u32::from(TCPOPT_WINDOW) << 16
            | 3 << 8
            | u32::from(unsafe { (*plan).wscale });
        // SAFETY: as above.
        sum += unsafe { put32s(p, 0, word) };
    }
    let tcp = ptr_at(ctx, l3 + ip_len, TCP_HLEN)? as *mut u8;
    // SAFETY: 20 bytes at tcp are in bounds; the checksum is bytes 16..18.
    unsafe { put16(tcp, 16, checksum(sum)) };
    Some(())
}

/// The SYN-ACK's TSval as Linux makes it: milliseconds of CLOCK_MONOTONIC, plus, with
/// `tcp_timestamps = 1`, an offset per address pair (`addr_sum`: the addresses' word sum, the
/// same either way round). Linux keys that offset with a secret of its own, which we cannot
/// read; ours is keyed per run (see docs/THREAT-MODEL.md).
#[inline(always)]
fn ts_val(flags: u8, key: u32, addr_sum: u64) -> u32 {
    // SAFETY: helper without arguments.
    let ms = (unsafe { bpf_ktime_get_ns() } / 1_000_000) as u32;
    if flags & synack_flags::TS_OFFSET == 0 {
        return ms;
    }
    ms.wrapping_add(mix(addr_sum as u32 ^ key))
}

/// A 20-bit flow label from the flow's addresses (their word sum), ports and the run's key.
#[inline(always)]
fn flow_label(addr_sum: u64, a: u16, b: u16, key: u32) -> u32 {
    let h = mix(addr_sum as u32 ^ (u32::from(a) << 16 | u32::from(b)) ^ key.rotate_left(13));
    match h & 0xf_ffff {
        0 => 1,
        l => l,
    }
}

/// A 32-bit integer hash (murmur3's finaliser).
#[inline(always)]
fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Writes `v` big-endian at `off` and returns its two 16-bit words' sum, for a checksum.
#[inline(always)]
unsafe fn put32s(p: *mut u8, off: usize, v: u32) -> u64 {
    unsafe { put32(p, off, v) };
    u64::from(v >> 16) + u64::from(v & 0xffff)
}

// Byte-wise packet access. SAFETY (all): the caller has checked that every byte touched is in
// the packet.

#[inline(always)]
unsafe fn put16(p: *mut u8, off: usize, v: u16) {
    let b = v.to_be_bytes();
    unsafe {
        *p.add(off) = b[0];
        *p.add(off + 1) = b[1];
    }
}

#[inline(always)]
unsafe fn put32(p: *mut u8, off: usize, v: u32) {
    unsafe {
        put16(p, off, (v >> 16) as u16);
        put16(p, off + 2, v as u16);
    }
}

/// Swaps the `n` bytes at `a` with the `n` bytes at `b`.
#[inline(always)]
unsafe fn swap(p: *mut u8, a: usize, b: usize, n: usize) {
    for i in 0..n {
        unsafe {
            let t = *p.add(a + i);
            *p.add(a + i) = *p.add(b + i);
            *p.add(b + i) = t;
        }
    }
}

/// The sum of `words` big-endian 16-bit words at `off`.
#[inline(always)]
unsafe fn sum16(p: *const u8, off: usize, words: usize) -> u64 {
    let mut sum = 0u64;
    for i in 0..words {
        unsafe {
            sum += u64::from(u16::from_be_bytes([
                *p.add(off + 2 * i),
                *p.add(off + 2 * i + 1),
            ]));
        }
    }
    sum
}

/// The Internet checksum of a word sum: folded to 16 bits, complemented.
#[inline(always)]
fn checksum(mut sum: u64) -> u16 {
    // A few dozen 16-bit words sum to well under 2^32: two folds leave 16 bits plus at most a
    // carry, which the third folds in.
    for _ in 0..3 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
