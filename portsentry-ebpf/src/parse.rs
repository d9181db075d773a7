//! Header parsing: Ethernet (up to two VLAN tags) → IPv4/IPv6 (options, extension headers,
//! fragments) → TCP/UDP. Every read goes through [`ptr_at`], which checks bounds against
//! `data_end` so the verifier can prove each access safe.

use aya_ebpf::programs::XdpContext;
use portsentry_common::{
    ethertype,
    ipv6_ext::{AH, DEST_OPTS, FRAGMENT, HOP_BY_HOP, ROUTING},
    AddrKey, IpProto,
};

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;

/// IPv6 extension headers walked before giving up (the packet then passes as malformed).
const MAX_IPV6_EXT_HEADERS: usize = 6;

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
    /// Something did not parse (truncated header, bad length, too many extension headers).
    /// The source is still known, so a banned source is dropped anyway.
    pub malformed: Malformed,
}

/// Why a packet with a known source counted as malformed (for the debug log).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Malformed {
    No = 0,
    /// The IP version field does not match the EtherType, or IPv4's header length is < 20.
    IpHeader,
    /// The TCP or UDP header is cut short.
    TruncatedL4,
    /// An IPv6 extension header is cut short.
    TruncatedExtension,
    /// More IPv6 extension headers than the parser walks.
    TooManyExtensions,
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
pub fn parse(ctx: &XdpContext) -> Result<Packet, NoSource> {
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
    let mut pkt = match ether_type {
        ethertype::IPV4 => parse_ipv4(ctx, offset),
        ethertype::IPV6 => parse_ipv6(ctx, offset),
        _ => Err(NoSource::NotIp),
    }?;
    pkt.l3_offset = offset;
    pkt.vlan_tagged = offset != ETH_HLEN;
    Ok(pkt)
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, offset: usize) -> Result<Packet, NoSource> {
    // The fixed 20-byte header must be there to know the source.
    let hdr = ptr_at(ctx, offset, 20).ok_or(NoSource::Malformed)?;
    // SAFETY: 20 bytes at hdr are in bounds.
    let (ver_ihl, frag, protocol, src) = unsafe {
        (
            *hdr,
            u16::from_be_bytes([*hdr.add(6), *hdr.add(7)]),
            *hdr.add(9),
            [*hdr.add(12), *hdr.add(13), *hdr.add(14), *hdr.add(15)],
        )
    };
    let mut pkt = Packet {
        src: AddrKey::from_v4(src),
        is_v6: false,
        l3_offset: offset,
        vlan_tagged: false,
        ip_options: false,
        l4: L4::NONE,
        malformed: Malformed::No,
    };
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    if ver_ihl >> 4 != 4 || ihl < 20 {
        pkt.malformed = Malformed::IpHeader;
        return Ok(pkt);
    }
    pkt.ip_options = ihl > 20;
    // Only a first fragment (offset 0) carries the transport header.
    if frag & 0x1fff != 0 {
        return Ok(pkt);
    }
    parse_l4(ctx, offset + ihl, protocol, &mut pkt);
    Ok(pkt)
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, offset: usize) -> Result<Packet, NoSource> {
    let hdr = ptr_at(ctx, offset, IPV6_HLEN).ok_or(NoSource::Malformed)?;
    let mut src = [0u8; 16];
    // SAFETY: 40 bytes at hdr are in bounds; the source address is bytes 8..24.
    let (version, mut next) = unsafe {
        for (i, b) in src.iter_mut().enumerate() {
            *b = *hdr.add(8 + i);
        }
        (*hdr >> 4, *hdr.add(6))
    };
    let mut pkt = Packet {
        src: AddrKey::from_v6(src),
        is_v6: true,
        l3_offset: offset,
        vlan_tagged: false,
        ip_options: false,
        l4: L4::NONE,
        malformed: Malformed::No,
    };
    if version != 6 {
        pkt.malformed = Malformed::IpHeader;
        return Ok(pkt);
    }
    let mut off = offset + IPV6_HLEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !matches!(next, HOP_BY_HOP | ROUTING | DEST_OPTS | FRAGMENT | AH) {
            parse_l4(ctx, off, next, &mut pkt);
            return Ok(pkt);
        }
        // Every extension header is at least 8 bytes; one check covers the fields we read. (A
        // one-byte check would be folded by LLVM into `p >= end`, which the verifier ignores.)
        let Some(h) = ptr_at(ctx, off, 8) else {
            pkt.malformed = Malformed::TruncatedExtension;
            return Ok(pkt);
        };
        // SAFETY: 8 bytes at h are in bounds.
        let (this, len_field, frag_off) =
            unsafe { (next, *h.add(1), u16::from_be_bytes([*h.add(2), *h.add(3)])) };
        // SAFETY: as above.
        next = unsafe { *h };
        off += match this {
            // Fragment offset is the top 13 bits; only offset 0 carries ports.
            FRAGMENT if frag_off & 0xfff8 != 0 => return Ok(pkt),
            FRAGMENT => 8,
            // AH counts 4-octet units, not counting the first 2.
            AH => (usize::from(len_field) + 2) * 4,
            // Others count 8-octet units, not counting the first.
            _ => (usize::from(len_field) + 1) * 8,
        };
    }
    // Too many extension headers to follow: fail open.
    pkt.malformed = Malformed::TooManyExtensions;
    Ok(pkt)
}

#[inline(always)]
fn parse_l4(ctx: &XdpContext, offset: usize, protocol: u8, pkt: &mut Packet) {
    match IpProto::try_from(protocol) {
        Ok(IpProto::Tcp) => match ptr_at(ctx, offset, TCP_MIN_HLEN) {
            // SAFETY: 20 bytes in bounds; destination port at 2..4, flags at 13.
            Some(p) => unsafe {
                pkt.l4 = L4 {
                    protocol: IpProto::Tcp as u8,
                    flags: *p.add(13),
                    dst_port: u16::from_be_bytes([*p.add(2), *p.add(3)]),
                };
            },
            None => pkt.malformed = Malformed::TruncatedL4,
        },
        Ok(IpProto::Udp) => match ptr_at(ctx, offset, UDP_HLEN) {
            // SAFETY: 8 bytes in bounds; destination port at 2..4.
            Some(p) => unsafe {
                pkt.l4 = L4 {
                    protocol: IpProto::Udp as u8,
                    flags: 0,
                    dst_port: u16::from_be_bytes([*p.add(2), *p.add(3)]),
                };
            },
            None => pkt.malformed = Malformed::TruncatedL4,
        },
        Err(_) => {}
    }
}
