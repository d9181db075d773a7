//! The interface's XDP slot over rtnetlink: which program is attached and in which mode
//! (`RTM_GETLINK`, `IFLA_XDP`), and attaching or detaching a program there with libxdp's flags
//! (`XDP_FLAGS_UPDATE_IF_NOEXIST` for a first attach, `XDP_FLAGS_REPLACE` with the expected old
//! program for a swap). libxdp attaches its dispatcher this way, not with a bpf_link: a netlink
//! attachment outlives the process that made it and can be swapped atomically by the next
//! libxdp user, which a bpf_link forbids.

use crate::net::rtnl::attrs;
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_EXPECTED_FD: u16 = 8;

pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
pub const XDP_FLAGS_REPLACE: u32 = 1 << 4;

const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;

/// The XDP program attached to an interface (native or generic; offloaded programs are not
/// ours to share and are ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attached {
    pub prog_id: u32,
    /// `XDP_FLAGS_DRV_MODE` or `XDP_FLAGS_SKB_MODE`: the mode a replacement must use.
    pub mode_flags: u32,
}

/// What is attached to `ifindex`, if anything.
pub fn attached(ifindex: u32) -> io::Result<Option<Attached>> {
    let mut req = header(RTM_GETLINK, NLM_F_REQUEST, ifindex, 0);
    finish(&mut req);
    let reply = exchange(&req)?;
    let b = reply.as_slice();
    let msg_type = u16_at(b, 4).ok_or_else(short)?;
    if msg_type == NLMSG_ERROR {
        let errno = u32_at(b, NLMSG_HDRLEN).ok_or_else(short)? as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    if msg_type != RTM_NEWLINK {
        return Err(io::Error::other(format!(
            "unexpected rtnetlink reply type {msg_type}"
        )));
    }
    let total = (u32_at(b, 0).ok_or_else(short)? as usize).min(b.len());
    let (mut mode, mut prog, mut drv, mut skb) = (0u8, 0u32, 0u32, 0u32);
    for (kind, value) in attrs(b.get(NLMSG_HDRLEN + IFINFOMSG_LEN..total).unwrap_or(&[])) {
        if kind != IFLA_XDP {
            continue;
        }
        for (k, v) in attrs(value) {
            match k {
                IFLA_XDP_ATTACHED => mode = v.first().copied().unwrap_or(0),
                IFLA_XDP_PROG_ID => prog = u32_at(v, 0).unwrap_or(0),
                IFLA_XDP_DRV_PROG_ID => drv = u32_at(v, 0).unwrap_or(0),
                IFLA_XDP_SKB_PROG_ID => skb = u32_at(v, 0).unwrap_or(0),
                _ => {}
            }
        }
    }
    // One mode at a time (the kernel refuses native and generic together); with several
    // (a hardware program besides), the per-mode ids say which.
    Ok(match mode {
        XDP_ATTACHED_DRV if prog != 0 => Some(Attached {
            prog_id: prog,
            mode_flags: XDP_FLAGS_DRV_MODE,
        }),
        XDP_ATTACHED_SKB if prog != 0 => Some(Attached {
            prog_id: prog,
            mode_flags: XDP_FLAGS_SKB_MODE,
        }),
        _ if drv != 0 => Some(Attached {
            prog_id: drv,
            mode_flags: XDP_FLAGS_DRV_MODE,
        }),
        _ if skb != 0 => Some(Attached {
            prog_id: skb,
            mode_flags: XDP_FLAGS_SKB_MODE,
        }),
        _ => None,
    })
}

/// Attaches `prog` (or detaches, with `None`) on `ifindex` with `flags`; with `expected`, only
/// if that program is the one attached now (`XDP_FLAGS_REPLACE` is added).
pub fn set(
    ifindex: u32,
    prog: Option<BorrowedFd<'_>>,
    expected: Option<BorrowedFd<'_>>,
    mut flags: u32,
) -> io::Result<()> {
    if expected.is_some() {
        flags |= XDP_FLAGS_REPLACE;
    }
    let mut req = header(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex, 2);
    let mut nested = Vec::new();
    attr(
        &mut nested,
        IFLA_XDP_FD,
        &prog.map_or(-1, |f| f.as_raw_fd()).to_ne_bytes(),
    );
    attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    if let Some(old) = expected {
        attr(
            &mut nested,
            IFLA_XDP_EXPECTED_FD,
            &old.as_raw_fd().to_ne_bytes(),
        );
    }
    attr(&mut req, IFLA_XDP | NLA_F_NESTED, &nested);
    finish(&mut req);
    let reply = exchange(&req)?;
    let b = reply.as_slice();
    match u16_at(b, 4) {
        Some(NLMSG_ERROR) => {
            let errno = u32_at(b, NLMSG_HDRLEN).ok_or_else(short)? as i32;
            if errno == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-errno))
            }
        }
        _ => Err(io::Error::other("no acknowledgement from rtnetlink")),
    }
}

/// nlmsghdr (length filled in by [`finish`]) and ifinfomsg for `ifindex`.
fn header(kind: u16, flags: u16, ifindex: u32, seq: u32) -> Vec<u8> {
    let mut req = Vec::with_capacity(64);
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&kind.to_ne_bytes());
    req.extend_from_slice(&flags.to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
                                                // struct ifinfomsg: family, pad, type, index, flags, change.
    req.extend_from_slice(&[0, 0, 0, 0]);
    req.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req
}

fn finish(req: &mut [u8]) {
    let len = (req.len() as u32).to_ne_bytes();
    req[..4].copy_from_slice(&len);
}

/// Appends one attribute, padded to 4 bytes.
fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + ((4 - len % 4) % 4), 0);
}

fn exchange(req: &[u8]) -> io::Result<Vec<u8>> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    send(fd.as_raw_fd(), req, MsgFlags::empty())?;
    let mut buf = vec![0u8; 32 * 1024];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    buf.truncate(n);
    Ok(buf)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn short() -> io::Error {
    io::Error::other("rtnetlink reply too short")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_pad_to_four_bytes() {
        let mut b = Vec::new();
        attr(&mut b, IFLA_XDP_FD, &(-1i32).to_ne_bytes());
        attr(&mut b, 9, &[1]);
        assert_eq!(b.len(), 8 + 8);
        let a = attrs(&b);
        assert_eq!(a[0], (IFLA_XDP_FD, &(-1i32).to_ne_bytes()[..]));
        assert_eq!(a[1], (9, &[1u8][..]));
    }
}
