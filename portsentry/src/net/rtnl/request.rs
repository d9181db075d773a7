//! One rtnetlink request about one link, and its one reply: the request (netlink header,
//! `ifinfomsg`, attributes) built by [`LinkRequest`], sent on a short-lived socket, and the
//! reply's first message read back ([`link_attributes`] for `RTM_GETLINK`, [`acknowledged`]
//! for a request with `NLM_F_ACK`). Used by `net::xdp_tx` (a veth's peer) and the dataplane's
//! XDP slot (`dataplane::dispatcher::netlink`); dumps and watches are `rtnl.rs`'s.

use std::{io, os::fd::AsRawFd};

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

use super::{NLMSG_ERROR, NLMSG_HDRLEN, RTM_NEWLINK};

pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
pub const NLA_F_NESTED: u16 = 0x8000;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;
const REPLY_LEN: usize = 32 * 1024;

/// A request about interface `ifindex`, attributes appended with [`LinkRequest::attr`].
pub struct LinkRequest(Vec<u8>);

impl LinkRequest {
    pub fn new(kind: u16, flags: u16, ifindex: u32, seq: u32) -> Self {
        let mut req = Vec::with_capacity(64);
        req.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `exchange`
        req.extend_from_slice(&kind.to_ne_bytes());
        req.extend_from_slice(&flags.to_ne_bytes());
        req.extend_from_slice(&seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        req.extend_from_slice(&[0, 0, 0, 0]); // family (all), pad, type
        req.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes()); // flags
        req.extend_from_slice(&0u32.to_ne_bytes()); // change
        Self(req)
    }

    /// Appends one attribute (a nested one's payload is built with [`push_attr`]).
    pub fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        push_attr(&mut self.0, kind, payload);
        self
    }

    /// Sends the request and returns the kernel's first reply datagram.
    pub fn exchange(mut self) -> io::Result<Vec<u8>> {
        let len = (self.0.len() as u32).to_ne_bytes();
        self.0[..4].copy_from_slice(&len);
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        send(fd.as_raw_fd(), &self.0, MsgFlags::empty())?;
        let mut buf = vec![0u8; REPLY_LEN];
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        buf.truncate(n);
        Ok(buf)
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Appends one attribute to `buf`, padded to 4 bytes.
pub fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + ((4 - len % 4) % 4), 0);
}

/// The attributes of an `RTM_GETLINK` reply (walk them with [`super::attrs`]); the kernel's
/// refusal as its errno.
pub fn link_attributes(reply: &[u8]) -> io::Result<&[u8]> {
    match error_code(reply)? {
        Some(0) => Err(io::Error::other(
            "rtnetlink acknowledged instead of answering",
        )),
        Some(errno) => Err(io::Error::from_raw_os_error(-errno)),
        None => {
            let msg_type = u16_at(reply, 4).ok_or_else(short)?;
            if msg_type != RTM_NEWLINK {
                return Err(io::Error::other(format!(
                    "unexpected rtnetlink reply type {msg_type}"
                )));
            }
            let total = (u32_at(reply, 0).ok_or_else(short)? as usize).min(reply.len());
            Ok(reply
                .get(NLMSG_HDRLEN + IFINFOMSG_LEN..total)
                .unwrap_or(&[]))
        }
    }
}

/// Whether the kernel acknowledged a request sent with `NLM_F_ACK`.
pub fn acknowledged(reply: &[u8]) -> io::Result<()> {
    match error_code(reply)? {
        Some(0) => Ok(()),
        Some(errno) => Err(io::Error::from_raw_os_error(-errno)),
        None => Err(io::Error::other("no acknowledgement from rtnetlink")),
    }
}

/// `Some(code)` when the reply is an `NLMSG_ERROR` (0: an acknowledgement).
fn error_code(reply: &[u8]) -> io::Result<Option<i32>> {
    if u16_at(reply, 4).ok_or_else(short)? != NLMSG_ERROR {
        return Ok(None);
    }
    Ok(Some(u32_at(reply, NLMSG_HDRLEN).ok_or_else(short)? as i32))
}

/// The native-endian `u32` at `at`, if `b` holds one there.
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn short() -> io::Error {
    io::Error::other("rtnetlink reply too short")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::rtnl::attrs;

    #[test]
    fn attributes_pad_to_four_bytes() {
        let mut b = Vec::new();
        push_attr(&mut b, 1, &(-1i32).to_ne_bytes());
        push_attr(&mut b, 9, &[1]);
        assert_eq!(b.len(), 8 + 8);
        let a = attrs(&b);
        assert_eq!(a[0], (1, &(-1i32).to_ne_bytes()[..]));
        assert_eq!(a[1], (9, &[1u8][..]));
    }

    #[test]
    fn a_request_is_header_ifinfomsg_then_attributes() {
        let mut req = LinkRequest::new(18, NLM_F_REQUEST, 7, 1);
        req.attr(46, &3i32.to_ne_bytes());
        let b = req.bytes();
        assert_eq!(b.len(), NLMSG_HDRLEN + IFINFOMSG_LEN + 8);
        assert_eq!(u16_at(b, 4), Some(18));
        assert_eq!(u32_at(b, NLMSG_HDRLEN + 4), Some(7));
        assert_eq!(attrs(&b[NLMSG_HDRLEN + IFINFOMSG_LEN..])[0].0, 46);
    }

    #[test]
    fn replies_are_read_without_panicking() {
        let mut err = vec![0u8; NLMSG_HDRLEN + 4];
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[NLMSG_HDRLEN..].copy_from_slice(&(-19i32).to_ne_bytes());
        assert_eq!(link_attributes(&err).unwrap_err().raw_os_error(), Some(19));
        assert_eq!(acknowledged(&err).unwrap_err().raw_os_error(), Some(19));
        err[NLMSG_HDRLEN..].copy_from_slice(&0i32.to_ne_bytes());
        assert!(acknowledged(&err).is_ok());
        for cut in 0..err.len() {
            let _ = link_attributes(&err[..cut]);
            let _ = acknowledged(&err[..cut]);
        }
    }
}
