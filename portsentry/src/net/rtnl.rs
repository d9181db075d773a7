//! rtnetlink links and neighbours, parsed: a dump of every link or neighbour entry
//! ([`dump_links`], [`dump_neighbours`]) and a live subscription to their changes
//! ([`LinkWatch`]). Messages are decoded into [`Link`] and [`Neighbour`] values here and
//! nowhere else; deciding what they mean (upper devices, MAC flips) is `net::topology`'s and
//! `net::neighbours`' job.
//!
//! Must not touch maps, settings or logs. Only messages from the kernel (port id 0) count.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, OwnedFd},
};

use nix::{
    errno::Errno,
    sys::socket::{
        bind, recvfrom, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
        SockProtocol, SockType,
    },
};
use tokio::io::{unix::AsyncFd, Interest};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VLAN_ID: u16 = 1;
const IFLA_VLAN_PROTOCOL: u16 = 5;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// Attribute types carry flag bits above these.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// The multicast groups [`LinkWatch`] listens to.
const GROUPS: u32 = (libc::RTMGRP_LINK | libc::RTMGRP_NEIGH) as u32;
const BUF_LEN: usize = 64 * 1024;

/// One network interface as rtnetlink describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The master it is enslaved to (bridge, bond, team, VRF), 0 for none.
    pub master: u32,
    /// The device it sits on (a VLAN device's parent), 0 for none.
    pub link: u32,
    /// `IFLA_INFO_KIND`: "bridge", "bond", "vlan", "veth", … ("" for a plain NIC).
    pub kind: String,
    /// A VLAN device's tag, and whether it is 802.1ad (an outer, service tag).
    pub vlan: Option<(u16, bool)>,
}

/// One neighbour entry (ARP or ND).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub addr: IpAddr,
    /// The link-layer address, if the entry has one of Ethernet's length.
    pub mac: Option<[u8; 6]>,
    /// `NUD_*` bits.
    pub state: u16,
}

/// A change rtnetlink reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A link appeared, changed or went away: recompute what depends on links.
    Links,
    NewNeighbour(Neighbour),
    DelNeighbour(Neighbour),
    /// Notifications were lost (receive queue overrun): dump again.
    Overrun,
}

/// Every link in this network namespace.
pub fn dump_links() -> io::Result<Vec<Link>> {
    let mut links = Vec::new();
    dump(RTM_GETLINK, 16, |kind, body| {
        if kind == RTM_NEWLINK {
            if let Some(l) = parse_link(body) {
                links.push(l);
            }
        }
    })?;
    Ok(links)
}

/// Every neighbour entry in this network namespace.
pub fn dump_neighbours() -> io::Result<Vec<Neighbour>> {
    let mut neighbours = Vec::new();
    dump(RTM_GETNEIGH, 12, |kind, body| {
        if kind == RTM_NEWNEIGH {
            if let Some(n) = parse_neighbour(body) {
                neighbours.push(n);
            }
        }
    })?;
    Ok(neighbours)
}

/// Sends a dump request of `kind` (with a zeroed family header of `header_len` bytes: all
/// families) and hands every message of the answer to `each`.
fn dump(kind: u16, header_len: usize, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| with_context(e, "opening an rtnetlink socket"))?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
        .map_err(|e| with_context(e, "binding an rtnetlink socket"))?;
    let seq = 1u32;
    let len = NLMSG_HDRLEN + header_len;
    let mut req = vec![0u8; len];
    req[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&kind.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    sendto(
        fd.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(|e| with_context(e, "sending an rtnetlink dump request"))?;
    let mut buf = vec![0u8; BUF_LEN];
    loop {
        let (n, from) = match recvfrom::<NetlinkAddr>(fd.as_raw_fd(), &mut buf) {
            Ok(r) => r,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(with_context(e, "reading an rtnetlink dump")),
        };
        if from.is_none_or(|a| a.pid() != 0) {
            continue;
        }
        for (kind, body) in messages(&buf[..n]) {
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let code = body
                        .get(0..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if code != 0 {
                        return Err(io::Error::other(format!(
                            "rtnetlink dump refused: {}",
                            io::Error::from_raw_os_error(-code)
                        )));
                    }
                    return Ok(());
                }
                _ => each(kind, body),
            }
        }
    }
}

/// A non-blocking rtnetlink socket subscribed to the multicast `groups` (`RTMGRP_*`) and
/// registered with the tokio reactor for reading; `what` names the groups in errors. Outside a
/// tokio runtime (whose reactor it needs) it is an error, not a panic.
pub fn subscribe(groups: u32, what: &str) -> io::Result<AsyncFd<OwnedFd>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(format!(
            "subscribing to rtnetlink {what} needs a tokio runtime"
        )));
    }
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| with_context(e, "opening the rtnetlink socket"))?;
    // Port id 0: the kernel assigns one.
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))
        .map_err(|e| with_context(e, &format!("subscribing to rtnetlink {what}")))?;
    // SAFETY: the `OwnedFd` is a valid open socket that the `AsyncFd` owns from here on;
    // nothing replaces or closes it while registered.
    Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?)
}

/// An rtnetlink subscription to link and neighbour changes, registered with tokio.
pub struct LinkWatch {
    fd: AsyncFd<OwnedFd>,
    buf: Box<[u8]>,
}

impl LinkWatch {
    /// Opens and subscribes the socket; must be called inside a tokio runtime.
    pub fn new() -> io::Result<LinkWatch> {
        Ok(LinkWatch {
            fd: subscribe(GROUPS, "link and neighbour groups")?,
            buf: vec![0; BUF_LEN].into_boxed_slice(),
        })
    }

    /// Waits for changes and returns everything queued (at least one change). Cancel-safe.
    pub async fn changes(&mut self) -> io::Result<Vec<Change>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let raw = guard.get_inner().as_raw_fd();
            let mut out = Vec::new();
            loop {
                match recvfrom::<NetlinkAddr>(raw, &mut self.buf) {
                    Ok((n, from)) => {
                        if from.is_none_or(|a| a.pid() != 0) {
                            continue;
                        }
                        for (kind, body) in messages(&self.buf[..n]) {
                            match kind {
                                RTM_NEWLINK | RTM_DELLINK if out.last() != Some(&Change::Links) => {
                                    out.push(Change::Links);
                                }
                                RTM_NEWNEIGH => {
                                    out.extend(parse_neighbour(body).map(Change::NewNeighbour))
                                }
                                RTM_DELNEIGH => {
                                    out.extend(parse_neighbour(body).map(Change::DelNeighbour))
                                }
                                _ => {}
                            }
                        }
                    }
                    Err(Errno::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(Errno::EINTR) => {}
                    Err(Errno::ENOBUFS) => out.push(Change::Overrun),
                    Err(e) => return Err(with_context(e, "reading rtnetlink notifications")),
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
}

/// The messages in one datagram: (type, body after the netlink header). A truncated or
/// malformed message ends the walk.
fn messages(buf: &[u8]) -> Vec<(u16, &[u8])> {
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

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(0..4)?.try_into().ok()?))
}

/// An RTM_NEWLINK body: `ifinfomsg` (16 bytes), then attributes.
fn parse_link(body: &[u8]) -> Option<Link> {
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
fn parse_neighbour(body: &[u8]) -> Option<Neighbour> {
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

fn with_context(e: Errno, what: &str) -> io::Error {
    let err = io::Error::from(e);
    io::Error::new(err.kind(), format!("{what}: {err}"))
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

#[cfg(test)]
mod tests;
