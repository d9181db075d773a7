//! rtnetlink links and neighbours, parsed: a dump of every link or neighbour entry
//! ([`dump_links`], [`dump_neighbours`]) and a live subscription to their changes
//! ([`LinkWatch`]). Messages are decoded into [`Link`] and [`Neighbour`] values here and
//! nowhere else; deciding what they mean (upper devices, MAC flips) is `net::topology`'s and
//! `net::neighbours`' job.
//!
//! This file opens the sockets (a dump's, [`subscribe`]'s); `parse` decodes what they read
//! (and holds the attribute walk, [`attrs`], every rtnetlink reply in the crate uses), `watch`
//! is the live [`LinkWatch`], `request` one request about one link and its reply (built,
//! exchanged and checked there for `net::xdp_tx` and the dataplane's XDP slot).
//!
//! Must not touch maps, settings or logs. Only messages from the kernel (port id 0) count.

use std::{
    io,
    net::IpAddr,
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

mod parse;
pub mod request;
mod watch;

use self::parse::{messages, parse_link, parse_neighbour};
pub use self::{parse::attrs, watch::LinkWatch};

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

fn with_context(e: Errno, what: &str) -> io::Error {
    let err = io::Error::from(e);
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

#[cfg(test)]
mod tests;
