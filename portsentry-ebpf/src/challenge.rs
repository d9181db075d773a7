//! Trap probes from learned peers (PS_PEERS, see `peers.rs`): they do not ban on their own,
//! because a forger can send a probe in a peer's name but cannot complete a handshake in it.
//!
//! - A TCP SYN is answered here with a SYN-ACK whose sequence number is a SYN cookie
//!   (`bpf_tcp_raw_gen_syncookie_*`), sent back out of the interface (XDP_TX); the stack never
//!   sees the SYN. Only the real peer receives the SYN-ACK, so only it can send the ACK that
//!   carries the cookie back (`cookie_valid`). That ACK is then counted as a probe like any
//!   other and bans at the trigger; a forged SYN yields nothing.
//! - Any other trap probe from a peer (UDP, FIN, NULL, XMAS) is reported and passes.
//!
//! No state is kept between the SYN and the ACK: the cookie itself is the proof. The helpers use
//! the kernel's syncookie secret, which exists whatever `net.ipv4.tcp_syncookies` says.

use aya_ebpf::{
    bindings::{iphdr, ipv6hdr, tcphdr, xdp_action},
    helpers::{
        bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6,
        bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_tail,
        bpf_xdp_load_bytes,
    },
    programs::XdpContext,
};
use portsentry_common::{
    ethertype,
    tcp_flags::{ACK, RST, SYN},
    EventKind, IpProto, ScanType, Stat,
};

use crate::{
    count, emit,
    parse::{be16_at, ptr_at, Packet, ETH_HLEN, IPV6_HLEN, VLAN_HLEN},
    pass, probe_event,
};

const TCP_MAX_HLEN: usize = 60;
const IPV4_HLEN: usize = 20;
/// The SYN-ACK's TCP header: 20 bytes and one MSS option.
const SYNACK_TCP_LEN: usize = 24;
const TTL: u8 = 64;
const WINDOW: u16 = 65535;
const TCPOPT_MSS: u8 = 2;
const TCPOLEN_MSS: u8 = 4;

/// An ACK without SYN or RST: what completes a handshake.
#[inline(always)]
pub fn is_handshake_ack(flags: u8) -> bool {
    flags & (ACK | SYN | RST) == ACK
}

/// A trap probe from a learned peer: a SYN gets a SYN cookie (XDP_TX); anything else, or a SYN
/// that cannot be answered, is reported and passes. Nothing is counted as a hit or banned.
#[inline(always)]
pub fn answer(ctx: &XdpContext, pkt: &Packet, scan: ScanType, now: u64) -> u32 {
    count(Stat::PeerProbes);
    let event = probe_event(ctx, pkt, EventKind::PeerProbe, scan, 0, now);
    let verdict = if scan == ScanType::TcpSyn && pkt.l4.protocol == IpProto::Tcp as u8 {
        if send_cookie(ctx) {
            count(Stat::CookiesSent);
            xdp_action::XDP_TX
        } else {
            pass()
        }
    } else {
        pass()
    };
    if crate::limit::allows(0, now) {
        emit(&event);
    }
    verdict
}

/// Where the IP and TCP headers are.
struct Headers {
    l3: usize,
    l4: usize,
    is_v6: bool,
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
            })
        }
        _ => None,
    }
}

/// Whether this ACK carries a cookie we sent: its acknowledgement number is the cookie + 1 for
/// its addresses, ports and sequence number (minus one), within the cookie's lifetime.
#[inline(always)]
pub fn cookie_valid(ctx: &XdpContext) -> bool {
    let Some(Headers { l3, l4, is_v6 }) = locate(ctx) else {
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

/// Turns the SYN into its SYN-ACK in place: MACs, addresses and ports swapped, sequence number
/// the cookie, acknowledgement their sequence number + 1, one MSS option (the MSS the cookie
/// encodes), no IP options or extension headers, VLAN tags kept, both checksums computed.
/// Returns false when it cannot; the packet is then untouched.
///
/// Everything but the 60-byte copy of the SYN's TCP header lives in registers: the whole
/// program shares the BPF stack's 512 bytes.
#[inline(always)]
fn send_cookie(ctx: &XdpContext) -> bool {
    let Some(Headers { l3, l4, is_v6 }) = locate(ctx) else {
        return false;
    };

    // 1. The cookie, from the SYN as it came. The helper reads `doff * 4` bytes of TCP header
    // (options included, for the MSS): a length the verifier can bound in a stack buffer, not
    // in the packet, so the header is copied out first.
    let Some(th) = ptr_at(ctx, l4, 20) else {
        return false;
    };
    // SAFETY: 20 bytes at th are in bounds; the data offset is the top nibble of byte 12.
    // A data offset below 5 is raised to 20 bytes here, and the cookie helper then refuses the
    // header (its length must be `doff * 4`). Raising rather than returning early keeps the
    // lower bound on the very register the helpers get: LLVM compares before it masks, and the
    // verifier needs a non-zero minimum length.
    let th_len = (usize::from(unsafe { *th.add(12) } >> 4) * 4).max(20);
    let mut syn = [0u8; TCP_MAX_HLEN];
    // SAFETY: copies th_len (20..=60) bytes into a 60-byte buffer; the helper checks the
    // packet bounds itself.
    let loaded = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx.cast(),
            l4 as u32,
            syn.as_mut_ptr().cast(),
            th_len as u32,
        )
    };
    if loaded != 0 {
        return false;
    }
    // SAFETY (both helpers): the IP header is in bounds (ptr_at) and th_len bytes of TCP header
    // are in `syn`; the helpers only read them.
    let cookie = if is_v6 {
        let Some(ip) = ptr_at(ctx, l3, IPV6_HLEN) else {
            return false;
        };
        unsafe {
            bpf_tcp_raw_gen_syncookie_ipv6(
                ip as *mut ipv6hdr,
                syn.as_mut_ptr().cast(),
                th_len as u32,
            )
        }
    } else {
        let Some(ip) = ptr_at(ctx, l3, IPV4_HLEN) else {
            return false;
        };
        unsafe {
            bpf_tcp_raw_gen_syncookie_ipv4(ip as *mut iphdr, syn.as_mut_ptr().cast(), th_len as u32)
        }
    };
    if cookie < 0 {
        return false;
    }
    // The helper returns the cookie in the low 32 bits and the MSS it encodes above them.
    let seq = cookie as u32;
    let mss = (cookie >> 32) as u16;
    let their_port = u16::from_be_bytes([syn[0], syn[1]]);
    let our_port = u16::from_be_bytes([syn[2], syn[3]]);
    let their_seq = u32::from_be_bytes([syn[4], syn[5], syn[6], syn[7]]);

    // 2. Resize the frame to exactly Ethernet (+ VLAN tags) + IP header + TCP header: a SYN
    // without TCP options grows by 4 bytes, one with options (or IP options) shrinks. The tail
    // moves, the headers stay where they are.
    let ip_len = if is_v6 { IPV6_HLEN } else { IPV4_HLEN };
    let new_len = (l3 + ip_len + SYNACK_TCP_LEN) as i32;
    let old_len = (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: ctx.ctx is the xdp_md the kernel handed us. Every packet pointer taken above is
    // dead from here on; the writes below take fresh ones.
    if new_len != old_len && unsafe { bpf_xdp_adjust_tail(ctx.ctx, new_len - old_len) } != 0 {
        return false;
    }

    // 3. Rewrite it: Ethernet addresses swapped, then the IP header (addresses swapped), then
    // the TCP header, each with its checksum.
    let Some(eth) = ptr_at(ctx, 0, 12) else {
        return false;
    };
    // SAFETY: 12 bytes at eth are in bounds.
    unsafe { swap(eth as *mut u8, 0, 6, 6) };
    let (ip, pseudo) = if is_v6 {
        let Some(ip) = ptr_at(ctx, l3, IPV6_HLEN + SYNACK_TCP_LEN) else {
            return false;
        };
        let ip = ip as *mut u8;
        // SAFETY: 64 bytes at ip are in bounds; source at 8..24, destination at 24..40.
        unsafe {
            put32(ip, 0, 0x6000_0000); // version 6, traffic class and flow label 0
            put16(ip, 4, SYNACK_TCP_LEN as u16);
            *ip.add(6) = IpProto::Tcp as u8; // next header: no extension headers
            *ip.add(7) = TTL;
            swap(ip, 8, 24, 16);
            (ip.add(IPV6_HLEN), sum16(ip, 8, 16))
        }
    } else {
        let Some(ip) = ptr_at(ctx, l3, IPV4_HLEN + SYNACK_TCP_LEN) else {
            return false;
        };
        let ip = ip as *mut u8;
        // SAFETY: 44 bytes at ip are in bounds; source at 12..16, destination at 16..20.
        unsafe {
            *ip = 0x45; // version 4, IHL 5: no options
            *ip.add(1) = 0;
            put16(ip, 2, (IPV4_HLEN + SYNACK_TCP_LEN) as u16);
            put16(ip, 4, 0); // id
            put16(ip, 6, 0x4000); // DF
            *ip.add(8) = TTL;
            *ip.add(9) = IpProto::Tcp as u8;
            put16(ip, 10, 0);
            swap(ip, 12, 16, 4);
            put16(ip, 10, checksum(sum16(ip, 0, 10)));
            (ip.add(IPV4_HLEN), sum16(ip, 12, 4))
        }
    };
    // The pseudo-header: both addresses (summed above), the protocol and the TCP length.
    let pseudo = pseudo + u64::from(IpProto::Tcp as u8) + SYNACK_TCP_LEN as u64;
    let tcp = ip;
    // SAFETY: the 24 bytes after the IP header are in bounds (checked with it above).
    unsafe {
        put16(tcp, 0, our_port);
        put16(tcp, 2, their_port);
        put32(tcp, 4, seq);
        put32(tcp, 8, their_seq.wrapping_add(1));
        *tcp.add(12) = ((SYNACK_TCP_LEN / 4) as u8) << 4;
        *tcp.add(13) = SYN | ACK;
        put16(tcp, 14, WINDOW);
        put16(tcp, 16, 0); // checksum, below
        put16(tcp, 18, 0); // urgent pointer
        *tcp.add(20) = TCPOPT_MSS;
        *tcp.add(21) = TCPOLEN_MSS;
        put16(tcp, 22, mss);
        put16(
            tcp,
            16,
            checksum(sum16(tcp, 0, SYNACK_TCP_LEN / 2) + pseudo),
        );
    }
    true
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
