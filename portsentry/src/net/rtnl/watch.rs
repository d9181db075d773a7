//! The live watch of links and neighbours ([`LinkWatch`]): the rtnetlink groups subscribed,
//! every queued notification read and turned into [`Change`]s, a receive-queue overrun
//! reported as one.

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
};

use nix::{
    errno::Errno,
    sys::socket::{recvfrom, NetlinkAddr},
};
use tokio::io::unix::AsyncFd;

use super::{
    parse::{messages, parse_neighbour},
    subscribe, with_context, Change, BUF_LEN, RTM_DELLINK, RTM_DELNEIGH, RTM_NEWLINK, RTM_NEWNEIGH,
};

/// The multicast groups [`LinkWatch`] listens to.
const GROUPS: u32 = (libc::RTMGRP_LINK | libc::RTMGRP_NEIGH) as u32;

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
