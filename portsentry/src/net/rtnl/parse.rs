//! Decoding rtnetlink: the messages of a datagram, the attribute walk every rtnetlink reply in
//! this crate goes through ([`attrs`]), and link and neighbour bodies into [`Link`] and
//! [`Neighbour`]. Pure: bytes in, values out; a truncated or malformed message or attribute
//! ends its walk.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Link, Neighbour, NLMSG_HDRLEN};

pub(super) const IFLA_IFNAME: u16 = 3;
pub(super) const IFLA_LINK: u16 = 5;
pub(super) const IFLA_MASTER: u16 = 10;
pub(super) const IFLA_LINKINFO: u16 = 18;
pub(super) const IFLA_INFO_KIND: u16 = 1;
pub(super) const IFLA_INFO_DATA: u16 = 2;
pub(super) const IFLA_VLAN_ID: u16 = 1;
pub(super) const IFLA_VLAN_PROTOCOL: u16 = 5;
pub(super) const NDA_DST: u16 = 1;
pub(super) const NDA_LLADDR: u16 = 2;
/// Attribute types carry flag bits above these.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The messages in one datagram: (type, body after the netlink header). A truncated or
/// malformed message ends the walk.
pub(super) fn messages(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        out.push((kind, &buf[at + NLMSG_HDRLEN..at + len]));
        at += align4(len);
    }
    out
}

pub(super) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(0..4)?.try_into().ok()?))
}

/// An RTM_NEWLINK body: `ifinfomsg` (16 bytes), then attributes.
pub(super) fn parse_link(body: &[u8]) -> Option<Link> {
    let index = u32_of(body.get(4..8)?)?;
    let mut link = Link {
        index,
        name: String::new(),
        master: 0,
        link: 0,
        kind: String::new(),
        vlan: None,
    };
    for (kind, value) in attrs(body.get(16..)?) {
        match kind {
            IFLA_IFNAME => {
                let text = value.split(|b| *b == 0).next().unwrap_or_default();
                link.name = String::from_utf8_lossy(text).into_owned();
            }
            IFLA_MASTER => link.master = u32_of(value).unwrap_or(0),
            IFLA_LINK => link.link = u32_of(value).unwrap_or(0),
            IFLA_LINKINFO => {
                let mut id = None;
                let mut outer = false;
                for (k, v) in attrs(value) {
                    match k {
                        IFLA_INFO_KIND => {
                            let text = v.split(|b| *b == 0).next().unwrap_or_default();
                            link.kind = String::from_utf8_lossy(text).into_owned();
                        }
                        IFLA_INFO_DATA => {
                            for (dk, dv) in attrs(v) {
                                match (dk, dv) {
                                    (IFLA_VLAN_ID, [a, b, ..]) => {
                                        id = Some(u16::from_ne_bytes([*a, *b]))
                                    }
                                    // Network byte order: 0x88a8 is 802.1ad.
                                    (IFLA_VLAN_PROTOCOL, [a, b, ..]) => {
                                        outer = u16::from_be_bytes([*a, *b]) == 0x88a8
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if link.kind == "vlan" {
                    link.vlan = id.map(|id| (id, outer));
                }
            }
            _ => {}
        }
    }
    Some(link)
}

/// An RTM_NEWNEIGH / RTM_DELNEIGH body: `ndmsg` (12 bytes), then attributes.
pub(super) fn parse_neighbour(body: &[u8]) -> Option<Neighbour> {
    let family = *body.first()?;
    let ifindex = u32_of(body.get(4..8)?)?;
    let state = u16::from_ne_bytes(body.get(8..10)?.try_into().ok()?);
    let mut addr = None;
    let mut mac = None;
    for (kind, value) in attrs(body.get(12..)?) {
        match kind {
            NDA_DST => {
                addr = match (i32::from(family), value.len()) {
                    (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(
                        value[0], value[1], value[2], value[3],
                    ))),
                    (libc::AF_INET6, 16) => {
                        let o: [u8; 16] = value.try_into().ok()?;
                        Some(IpAddr::V6(Ipv6Addr::from(o)))
                    }
                    _ => None,
                }
            }
            NDA_LLADDR => mac = value.try_into().ok(),
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex,
        addr: addr?,
        mac,
        state,
    })
}

/// The netlink attributes in `b`: (type without flags, payload). Stops at the first attribute
/// whose length does not fit. Shared by every rtnetlink reply this crate reads.
pub fn attrs(b: &[u8]) -> Vec<(u16, &[u8])> {
    let u16_at = |at: usize| Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(kind)) = (u16_at(at), u16_at(at + 2)) {
        let len = usize::from(len);
        if len < 4 || at + len > b.len() {
            break;
        }
        out.push((kind & NLA_TYPE_MASK, &b[at + 4..at + len]));
        at += (len + 3) & !3;
    }
    out
}
