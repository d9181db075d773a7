//! Header parsing: Ethernet (up to two VLAN tags) → IPv4/IPv6 (options, extension headers,
//! fragments) → TCP/UDP. Every read goes through [`ptr_at`], which checks bounds against
//! `data_end` so the verifier can prove each access safe.
//!
//! Also the judge of fragment and extension-header evasion ([`Malformed::drops`]): a first
//! fragment too short for its transport header (RFC 1858, RFC 7112), an IPv4 fragment at offset
//! 1 (RFC 3128) and an IPv6 chain longer than the walk are dropped, not passed as malformed:
//! the stack would reassemble or accept them behind the detector's back.

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use portsentry_common::{
    ethertype,
    ipv6_ext::{AH, DEST_OPTS, FRAGMENT, HOP_BY_HOP, MAX_CHAIN, ROUTING},
    AddrKey, IpProto,
};

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;

/// IPv6 extension headers walked; a longer chain is dropped ([`Malformed::TooManyExtensions`]).
const MAX_IPV6_EXT_HEADERS: usize = MAX_CHAIN;

/// IPv4 fragment offset field: offset (8-byte units) in the low 13 bits, more-fragments flag.
const IPV4_OFFSET_MASK: u16 = 0x1fff;
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;

/// Transport-layer facts the detector needs.
///
/// A plain struct, every field always initialised: with a data-carrying enum LLVM may leave the
/// inactive payload undefined and spill part of a packet pointer into it, which the verifier
/// rejects ("invalid size of register spill").
#[derive(Clone, Copy)]
pub struct L4 {
    /// `L4_NONE` or an [`IpProto`] code.
    pub protocol: u8,
    /// TCP flags byte (0 for UDP).
    pub flags: u8,
    pub dst_port: u16,
}

/// Not TCP/UDP, or a non-first fragment: no ports to look at.
pub const L4_NONE: u8 = 0;

impl Packet {
    /// Nothing parsed yet: what [`parse`] fills in.
    pub const EMPTY: Self = Self {
        src: AddrKey { addr: [0; 16] },
        is_v6: false,
        l3_offset: ETH_HLEN,
        vlan_tagged: false,
        ip_options: false,
        l4: L4::NONE,
        malformed: Malformed::No as u8,
    };
}

impl L4 {
    const NONE: Self = Self {
        protocol: L4_NONE,
        flags: 0,
        dst_port: 0,
    };
}

/// What the pipeline knows about a packet after parsing.
pub struct Packet {
    pub src: AddrKey,
    pub is_v6: bool,
    /// Offset of the IP header (after the Ethernet header and any VLAN tags).
    pub l3_offset: usize,
    /// The frame carried a VLAN tag: the route back then leaves by the VLAN device, not the
    /// device XDP sees, so the path check compares only the neighbour's MAC.
    pub vlan_tagged: bool,
    /// IPv4 header longer than 20 bytes.
    pub ip_options: bool,
    pub l4: L4,
    /// A [`Malformed`] code: something did not parse (truncated header, bad length), or
    /// evasion to drop. The source is still known, so a banned source is dropped anyway. A
    /// plain number, as [`portsentry_transport`] returns it: decoded into enum constants, each
    /// code went through the rest of the pipeline as a verifier state of its own.
    pub malformed: u8,
}

/// Why a packet with a known source counted as malformed or was dropped as evasion (for the
/// counters and the debug log). The codes cross [`portsentry_transport`]'s return value;
/// those from `TooManyExtensions` on are evasion ([`Malformed::drops`]), and `diag.rs` numbers
/// its reasons the same way.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Malformed {
    No = 0,
    /// The IP version field does not match the EtherType, or IPv4's header length is < 20.
    IpHeader = 1,
    /// The TCP or UDP header is cut short.
    TruncatedL4 = 2,
    /// An IPv6 extension header is cut short.
    TruncatedExtension = 3,
    /// Dropped: more IPv6 extension headers than the parser walks (RFC 9098: networks widely
    /// drop long chains; the stack would accept them behind the detector's back).
    TooManyExtensions = 4,
    /// Dropped: an IPv4 first fragment (offset 0, more fragments) whose payload, by its total
    /// length, is too short for the TCP (20) or UDP (8) header: the tiny-fragment trick of
    /// RFC 1858, which hides the flags (or ports) in a later fragment.
    TinyFragment = 5,
    /// Dropped: an IPv4 fragment at offset 1 (8 bytes), which only the overlapping-fragment
    /// trick of RFC 1858/3128 produces (it rewrites the TCP flags of the first fragment).
    OverlappingFragment = 6,
    /// Dropped: an IPv6 first fragment (offset 0) that does not hold the whole header chain up
    /// to and including the TCP or UDP header (RFC 7112).
    IncompleteFirstFragment = 7,
}

impl Malformed {
    /// Whether a code is evasion rather than damage: such packets are dropped (and counted) in
    /// every mode instead of passed, since the stack would reassemble or accept them.
    #[inline(always)]
    pub fn drops(code: u8) -> bool {
        code >= Malformed::TooManyExtensions as u8
    }
}

/// Why a packet has no [`Packet`]: no IP source to act on.
pub enum NoSource {
    /// Not IP (ARP, LLDP, …): pass, not counted as malformed.
    NotIp,
    /// Truncated or invalid before the source address: pass, counted as malformed.
    Malformed,
}

/// A bounds-checked pointer to `len` bytes at `offset` from the start of the packet.
#[inline(always)]
pub fn ptr_at(ctx: &XdpContext, offset: usize, len: usize) -> Option<*const u8> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + len > end {
        return None;
    }
    Some((start + offset) as *const u8)
}

#[inline(always)]
pub fn be16_at(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let p = ptr_at(ctx, offset, 2)?;
    // SAFETY: ptr_at checked that two bytes are in bounds.
    Some(unsafe { u16::from_be_bytes([*p, *p.add(1)]) })
}

#[inline(always)]
pub fn parse(ctx: &XdpContext, pkt: &mut Packet) -> Result<(), NoSource> {
    let mut ether_type = be16_at(ctx, 12).ok_or(NoSource::Malformed)?;
    let mut offset = ETH_HLEN;
    // Up to two VLAN tags (802.1ad outer, 802.1Q inner); a third tag passes as not-IP.
    for _ in 0..2 {
        if ether_type != ethertype::VLAN && ether_type != ethertype::QINQ {
            break;
        }
        ether_type = be16_at(ctx, offset + 2).ok_or(NoSource::Malformed)?;
        offset += VLAN_HLEN;
    }
    pkt.l3_offset = offset;
    pkt.vlan_tagged = offset != ETH_HLEN;
    match ether_type {
        ethertype::IPV4 => parse_ipv4(ctx, offset, pkt),
        ethertype::IPV6 => parse_ipv6(ctx, offset, pkt),
        _ => Err(NoSource::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, offset: usize, pkt: &mut Packet) -> Result<(), NoSource> {
    // The fixed 20-byte header must be there to know the source.
    let hdr = ptr_at(ctx, offset, 20).ok_or(NoSource::Malformed)?;
    // SAFETY: 20 bytes at hdr are in bounds. The source is written in place (an address built
    // in registers and merged across the parser's branches cost a hundred spills per packet).
    let (ver_ihl, frag, protocol) = unsafe {
        let a = &mut pkt.src.addr;
        a[10] = 0xff;
        a[11] = 0xff;
        a[12] = *hdr.add(12);
        a[13] = *hdr.add(13);
        a[14] = *hdr.add(14);
        a[15] = *hdr.add(15);
        (
            *hdr,
            u16::from_be_bytes([*hdr.add(6), *hdr.add(7)]),
            *hdr.add(9),
        )
    };
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    if ver_ihl >> 4 != 4 || ihl < 20 {
        pkt.malformed = Malformed::IpHeader as u8;
        return Ok(());
    }
    pkt.ip_options = ihl > 20;
    // The common case inline (the pass path's cost): no options, not a fragment.
    if ihl == 20 && frag & (IPV4_OFFSET_MASK | IPV4_MORE_FRAGMENTS) == 0 {
        let mut l4 = L4::NONE;
        let ok = parse_l4(ctx, offset + 20, protocol, usize::MAX, &mut l4);
        pkt.l4 = l4;
        // Branch-free, so that both outcomes are one verifier state.
        pkt.malformed = (!ok as u8) * Malformed::TruncatedL4 as u8;
        return Ok(());
    }
    transport(ctx, offset, false, pkt);
    Ok(())
}

/// Fills `pkt.l4` and `pkt.malformed` from [`portsentry_transport`].
#[inline(always)]
fn transport(ctx: &XdpContext, l3_offset: usize, is_v6: bool, pkt: &mut Packet) {
    let found = portsentry_transport(ctx.ctx, l3_offset as u32, u32::from(is_v6));
    pkt.l4 = L4 {
        protocol: (found >> 24) as u8,
        flags: (found >> 16) as u8,
        dst_port: found as u16,
    };
    pkt.malformed = (found >> 32) as u8;
}

/// Everything past the IP header's fixed part, as a global BPF function that the verifier
/// checks once, on its own: IPv4 fragments and the transport header behind the options, the
/// IPv6 extension-header walk and the transport header behind it. Inlined, each of the
/// parser's exits (one per chain length, option length and outcome) went through the rest of
/// the pipeline as a state of its own: with the walk raised to 12 headers that was 330 000
/// instructions verified instead of 90 000.
///
/// Takes the IP header's offset (at most 22: Ethernet and two VLAN tags) and the family (1:
/// IPv6); returns the transport header's destination port (bits 0–15), TCP flags (16–23),
/// protocol (24–31, 0: none or a later fragment) and the [`Malformed`] code (32–39).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn portsentry_transport(ctx: *mut xdp_md, l3_offset: u32, is_v6: u32) -> u64 {
    let ctx = XdpContext::new(ctx);
    let mut l4 = L4::NONE;
    // The mask tells the verifier the bound.
    let l3 = (l3_offset & 0x3f) as usize;
    let why = if is_v6 != 0 {
        walk_ipv6(&ctx, l3, &mut l4)
    } else {
        ipv4_transport(&ctx, l3, &mut l4) as u8
    };
    u64::from(l4.dst_port)
        | u64::from(l4.flags) << 16
        | u64::from(l4.protocol) << 24
        | u64::from(why) << 32
}

#[inline(always)]
fn ipv4_transport(ctx: &XdpContext, l3_offset: usize, l4: &mut L4) -> Malformed {
    let Some(hdr) = ptr_at(ctx, l3_offset, 20) else {
        return Malformed::IpHeader;
    };
    // SAFETY: 20 bytes at hdr are in bounds.
    let (ver_ihl, total_len, frag, protocol) = unsafe {
        (
            *hdr,
            u16::from_be_bytes([*hdr.add(2), *hdr.add(3)]),
            u16::from_be_bytes([*hdr.add(6), *hdr.add(7)]),
            *hdr.add(9),
        )
    };
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    if ihl < 20 {
        return Malformed::IpHeader;
    }
    // Only a first fragment (offset 0) carries the transport header. Offset 1 is no real
    // fragmentation's (a first fragment of 8 bytes needs a 60-byte header at the 68-byte
    // minimum MTU): it is the overlapping-fragment trick.
    match frag & IPV4_OFFSET_MASK {
        0 => {}
        1 => return Malformed::OverlappingFragment,
        _ => return Malformed::No,
    }
    // A first fragment must hold the whole transport header, judged by its total length (a
    // frame padded to Ethernet's 60-byte minimum shows bytes that are not the packet's).
    let first_fragment = frag & IPV4_MORE_FRAGMENTS != 0;
    let room = if first_fragment {
        usize::from(total_len).saturating_sub(ihl)
    } else {
        usize::MAX
    };
    match parse_l4(ctx, l3_offset + ihl, protocol, room, l4) {
        true => Malformed::No,
        false if first_fragment => Malformed::TinyFragment,
        false => Malformed::TruncatedL4,
    }
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, offset: usize, pkt: &mut Packet) -> Result<(), NoSource> {
    let hdr = ptr_at(ctx, offset, IPV6_HLEN).ok_or(NoSource::Malformed)?;
    pkt.is_v6 = true;
    // SAFETY: 40 bytes at hdr are in bounds; the source address is bytes 8..24.
    let version = unsafe {
        for (i, b) in pkt.src.addr.iter_mut().enumerate() {
            *b = *hdr.add(8 + i);
        }
        *hdr >> 4
    };
    if version != 6 {
        pkt.malformed = Malformed::IpHeader as u8;
        return Ok(());
    }
    transport(ctx, offset, true, pkt);
    Ok(())
}

#[inline(always)]
fn walk_ipv6(ctx: &XdpContext, l3_offset: usize, l4: &mut L4) -> u8 {
    let Some(hdr) = ptr_at(ctx, l3_offset, IPV6_HLEN) else {
        return Malformed::IpHeader as u8;
    };
    // SAFETY: 40 bytes at hdr are in bounds: payload length at 4..6, next header at 6.
    let (payload_len, mut next) =
        unsafe { (u16::from_be_bytes([*hdr.add(4), *hdr.add(5)]), *hdr.add(6)) };
    let mut off = l3_offset + IPV6_HLEN;
    // Every header must end within the IPv6 payload: a first fragment must hold the whole
    // chain and the transport header (RFC 7112), and the stack drops any other packet whose
    // headers run past it. A payload length of 0 is a jumbogram's: the frame bounds it.
    let ip_end = if payload_len == 0 {
        usize::MAX
    } else {
        off + usize::from(payload_len)
    };
    // What a header cut by the payload's end is: `TruncatedExtension` until a first
    // fragment's header, `IncompleteFirstFragment` after. Kept as a number the walk never
    // branches on, so the verifier follows one state per chain position, not two.
    let mut cut = Malformed::TruncatedExtension as u8;
    for _ in 0..=MAX_IPV6_EXT_HEADERS {
        if !matches!(next, HOP_BY_HOP | ROUTING | DEST_OPTS | FRAGMENT | AH) {
            let room = ip_end.saturating_sub(off);
            return match parse_l4(ctx, off, next, room, l4) {
                true => Malformed::No as u8,
                // TruncatedExtension + 1 is TruncatedL4 before a fragment header.
                false if cut == Malformed::TruncatedExtension as u8 => Malformed::TruncatedL4 as u8,
                false => cut,
            };
        }
        // Every extension header is at least 8 bytes; one check covers the fields we read. (A
        // one-byte check would be folded by LLVM into `p >= end`, which the verifier ignores.)
        let h = match ptr_at(ctx, off, 8) {
            Some(h) if off + 8 <= ip_end => h,
            _ => return cut,
        };
        // SAFETY: 8 bytes at h are in bounds.
        let (this, len_field, frag_off) =
            unsafe { (next, *h.add(1), u16::from_be_bytes([*h.add(2), *h.add(3)])) };
        // SAFETY: as above.
        next = unsafe { *h };
        off += match this {
            // Fragment offset is the top 13 bits; only offset 0 carries ports.
            FRAGMENT if frag_off & 0xfff8 != 0 => return Malformed::No as u8,
            FRAGMENT => {
                cut = Malformed::IncompleteFirstFragment as u8;
                8
            }
            // AH counts 4-octet units, not counting the first 2.
            AH => (usize::from(len_field) + 2) * 4,
            // Others count 8-octet units, not counting the first.
            _ => (usize::from(len_field) + 1) * 8,
        };
    }
    // A longer chain than we follow: dropped (the stack would walk it and deliver the probe).
    Malformed::TooManyExtensions as u8
}

/// The TCP or UDP header at `offset` into `l4`; it must fit in the frame and in `room` bytes
/// (what the IP length leaves for it; `usize::MAX` when not checked). False: cut short.
#[inline(always)]
fn parse_l4(ctx: &XdpContext, offset: usize, protocol: u8, room: usize, l4: &mut L4) -> bool {
    match IpProto::try_from(protocol) {
        Ok(IpProto::Tcp) => match ptr_at(ctx, offset, TCP_MIN_HLEN) {
            // SAFETY: 20 bytes in bounds; destination port at 2..4, flags at 13.
            Some(p) if room >= TCP_MIN_HLEN => unsafe {
                *l4 = L4 {
                    protocol: IpProto::Tcp as u8,
                    flags: *p.add(13),
                    dst_port: u16::from_be_bytes([*p.add(2), *p.add(3)]),
                };
                true
            },
            _ => false,
        },
        Ok(IpProto::Udp) => match ptr_at(ctx, offset, UDP_HLEN) {
            // SAFETY: 8 bytes in bounds; destination port at 2..4.
            Some(p) if room >= UDP_HLEN => unsafe {
                *l4 = L4 {
                    protocol: IpProto::Udp as u8,
                    flags: 0,
                    dst_port: u16::from_be_bytes([*p.add(2), *p.add(3)]),
                };
                true
            },
            _ => false,
        },
        Err(_) => true,
    }
}
