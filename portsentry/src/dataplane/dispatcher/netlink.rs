//! The interface's XDP slot over rtnetlink: which program is attached and in which mode
//! (`RTM_GETLINK`, `IFLA_XDP`), and attaching or detaching a program there with libxdp's flags
//! (`XDP_FLAGS_UPDATE_IF_NOEXIST` for a first attach, `XDP_FLAGS_REPLACE` with the expected old
//! program for a swap). libxdp attaches its dispatcher this way, not with a bpf_link: a netlink
//! attachment outlives the process that made it and can be swapped atomically by the next
//! libxdp user, which a bpf_link forbids.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use crate::net::rtnl::{
    attrs,
    request::{
        acknowledged, link_attributes, push_attr, u32_at, LinkRequest, NLA_F_NESTED, NLM_F_ACK,
        NLM_F_REQUEST,
    },
};

const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
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
    let reply = LinkRequest::new(RTM_GETLINK, NLM_F_REQUEST, ifindex, 0).exchange()?;
    let (mut mode, mut prog, mut drv, mut skb) = (0u8, 0u32, 0u32, 0u32);
    for (kind, value) in attrs(link_attributes(&reply)?) {
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
    let mut nested = Vec::new();
    push_attr(
        &mut nested,
        IFLA_XDP_FD,
        &prog.map_or(-1, |f| f.as_raw_fd()).to_ne_bytes(),
    );
    push_attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    if let Some(old) = expected {
        push_attr(
            &mut nested,
            IFLA_XDP_EXPECTED_FD,
            &old.as_raw_fd().to_ne_bytes(),
        );
    }
    let mut req = LinkRequest::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex, 2);
    req.attr(IFLA_XDP | NLA_F_NESTED, &nested);
    acknowledged(&req.exchange()?)
}
