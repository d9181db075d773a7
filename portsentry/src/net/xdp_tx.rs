//! Whether a frame the XDP program sends back out of an interface with XDP_TX (the SYN cookie
//! answering a learned peer) is delivered.
//!
//! Physical NICs in native mode and every interface in generic mode deliver it. A veth in
//! native mode hands it to its peer's receive queue, which runs only when the peer itself has
//! a native XDP program: otherwise the frame is never delivered (a container's veth, a plain
//! lab pair). This asks rtnetlink (`RTM_GETLINK`) for the interface's kind and peer (IFLA_LINK,
//! in the namespace IFLA_LINK_NETNSID names) and for the peer's XDP attachment (IFLA_XDP).
//!
//! Owns one thing: the question and its answer. It opens its own short-lived netlink socket and
//! never writes a map or a setting; the daemon decides what to do with the answer.

use std::io;

use super::rtnl::{
    attrs,
    request::{link_attributes, u32_at, LinkRequest, NLM_F_REQUEST},
};

// linux/rtnetlink.h, linux/if_link.h.
const RTM_GETLINK: u16 = 18;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_XDP: u16 = 43;
const IFLA_TARGET_NETNSID: u16 = 46;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_MULTI: u8 = 4;

/// What XDP_TX does on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxDelivery {
    /// Frames go out (a NIC, generic XDP, a veth whose peer runs native XDP).
    Delivers,
    /// A veth in native mode whose peer (`peer`, its name or index) runs no native XDP
    /// program: frames are never delivered.
    Undeliverable { peer: String },
    /// The question could not be answered (`why`).
    Unknown { why: String },
}

/// Asks about interface `ifindex`, attached in native mode (`native`) or generic.
pub fn check(ifindex: u32, native: bool) -> TxDelivery {
    if !native {
        return TxDelivery::Delivers;
    }
    match query(ifindex) {
        Ok(d) => d,
        Err(e) => TxDelivery::Unknown { why: e.to_string() },
    }
}

fn query(ifindex: u32) -> io::Result<TxDelivery> {
    let link = get_link(ifindex, None)?;
    if link.kind.as_deref() != Some("veth") {
        return Ok(TxDelivery::Delivers);
    }
    let Some(peer_index) = link.link else {
        return Err(io::Error::other("the veth reports no peer (IFLA_LINK)"));
    };
    let peer = get_link(peer_index, link.link_netnsid)?;
    let name = peer.name.unwrap_or_else(|| format!("ifindex {peer_index}"));
    let native = peer.xdp_attached == Some(XDP_ATTACHED_DRV)
        || (peer.xdp_attached == Some(XDP_ATTACHED_MULTI) && peer.xdp_drv_prog_id != 0);
    Ok(if native {
        TxDelivery::Delivers
    } else {
        TxDelivery::Undeliverable { peer: name }
    })
}

/// The attributes of one link we read.
#[derive(Debug, Default)]
struct Link {
    name: Option<String>,
    kind: Option<String>,
    link: Option<u32>,
    link_netnsid: Option<i32>,
    xdp_attached: Option<u8>,
    xdp_drv_prog_id: u32,
}

/// `RTM_GETLINK` for `ifindex`, in the namespace with id `netnsid` (as this namespace numbers
/// it) or this one.
fn get_link(ifindex: u32, netnsid: Option<i32>) -> io::Result<Link> {
    let mut req = LinkRequest::new(RTM_GETLINK, NLM_F_REQUEST, ifindex, 1);
    if let Some(id) = netnsid {
        req.attr(IFLA_TARGET_NETNSID, &id.to_ne_bytes());
    }
    parse_reply(&req.exchange()?)
}

fn parse_reply(b: &[u8]) -> io::Result<Link> {
    let mut link = Link::default();
    for (kind, value) in attrs(link_attributes(b)?) {
        match kind {
            IFLA_IFNAME => link.name = Some(c_string(value)),
            IFLA_LINK => link.link = u32_at(value, 0),
            IFLA_LINK_NETNSID => link.link_netnsid = u32_at(value, 0).map(|v| v as i32),
            IFLA_LINKINFO => {
                for (k, v) in attrs(value) {
                    if k == IFLA_INFO_KIND {
                        link.kind = Some(c_string(v));
                    }
                }
            }
            IFLA_XDP => {
                for (k, v) in attrs(value) {
                    match k {
                        IFLA_XDP_ATTACHED => link.xdp_attached = v.first().copied(),
                        IFLA_XDP_DRV_PROG_ID => link.xdp_drv_prog_id = u32_at(v, 0).unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(link)
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_nest_and_align() {
        // IFLA_IFNAME "ab" (len 7, padded to 8), then IFLA_XDP holding IFLA_XDP_ATTACHED = 1.
        let mut b = Vec::new();
        b.extend_from_slice(&7u16.to_ne_bytes());
        b.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        b.extend_from_slice(b"ab\0\0");
        b.extend_from_slice(&16u16.to_ne_bytes());
        b.extend_from_slice(&(IFLA_XDP | 0x8000).to_ne_bytes());
        b.extend_from_slice(&5u16.to_ne_bytes());
        b.extend_from_slice(&IFLA_XDP_ATTACHED.to_ne_bytes());
        b.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        let a = attrs(&b);
        assert_eq!(a.len(), 2);
        assert_eq!(c_string(a[0].1), "ab");
        assert_eq!(a[1].0, IFLA_XDP);
        assert_eq!(attrs(a[1].1), vec![(IFLA_XDP_ATTACHED, &[1u8][..])]);
    }
}
