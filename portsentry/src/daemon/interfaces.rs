//! The guarded interfaces: attaching XDP, finding out whether SYN cookies sent back with
//! XDP_TX are delivered there, and re-attaching when an interface comes back.
//!
//! Owns which interfaces are guarded, the ifindex each is attached at, and the names by
//! ifindex (events and neighbour flips name their interface through [`Interfaces::name_of`]).

use std::collections::HashMap;

use anyhow::Result;

use crate::{
    dataplane::{AttachMode, Dataplane},
    net::xdp_tx::{self, TxDelivery},
};

/// Each interface attached at start and its XDP mode (`native`, `generic`), for `status`.
pub(super) type Attached = Vec<(String, String)>;

/// The interfaces XDP is attached to.
#[derive(Default)]
pub(super) struct Interfaces {
    names_by_index: HashMap<u32, String>,
    /// Interfaces we protect and the ifindex we are attached to (`None` while it is gone).
    attached: Vec<(String, Option<u32>)>,
}

impl Interfaces {
    /// The name of interface `ifindex`, if it is one we attached to.
    pub fn name_of(&self, ifindex: u32) -> Option<&str> {
        self.names_by_index.get(&ifindex).map(String::as_str)
    }

    /// The ifindexes we are attached at now.
    pub fn guarded(&self) -> Vec<u32> {
        self.attached.iter().filter_map(|(_, i)| *i).collect()
    }

    /// Attaches to each of `interfaces` in turn, saying so; their modes.
    pub fn attach_all(
        &mut self,
        dp: &mut Dataplane,
        interfaces: &[String],
        xdp_mode: AttachMode,
        peer_challenge: bool,
    ) -> Result<Attached> {
        let mut attached = Vec::new();
        for iface in interfaces {
            let mode = self.attach(dp, iface, xdp_mode, peer_challenge)?;
            attached.push((iface.clone(), mode.to_owned()));
            crate::errln!("portsentry: attached to {iface} ({mode} XDP)");
        }
        Ok(attached)
    }

    /// Attaches to `iface` and records where; returns the mode name. With `peer_challenge`,
    /// also checks whether XDP_TX delivers there.
    pub fn attach(
        &mut self,
        dp: &mut Dataplane,
        iface: &str,
        xdp_mode: AttachMode,
        peer_challenge: bool,
    ) -> Result<&'static str> {
        let mode = dp.attach(iface, xdp_mode)?;
        if xdp_mode == AttachMode::Auto && mode == AttachMode::Generic {
            crate::errln!("portsentry: warning: {iface} has no native XDP support; using generic XDP (slower)");
        }
        let index = nix::net::if_::if_nametoindex(iface).ok();
        if let Some(i) = index {
            self.names_by_index.insert(i, iface.to_owned());
            if peer_challenge {
                check_xdp_tx(dp, iface, i, mode == AttachMode::Native);
            }
        }
        match self.attached.iter_mut().find(|(n, _)| n == iface) {
            Some(entry) => entry.1 = index,
            None => self.attached.push((iface.to_owned(), index)),
        }
        Ok(if mode == AttachMode::Native {
            "native"
        } else {
            "generic"
        })
    }

    /// An interface that disappears takes its XDP attachment with it. The daemon keeps running
    /// (bans live in the maps) and attaches again when an interface of that name comes back.
    /// `came_back` is told the guarded ifindexes after each re-attach (the upper devices are
    /// read again then).
    pub fn watch(
        &mut self,
        dp: &mut Dataplane,
        xdp_mode: AttachMode,
        peer_challenge: bool,
        mut came_back: impl FnMut(&mut Dataplane, &[u32]),
    ) {
        for i in 0..self.attached.len() {
            let (name, recorded) = self.attached[i].clone();
            let current = nix::net::if_::if_nametoindex(name.as_str()).ok();
            match (recorded, current) {
                (Some(_), None) => {
                    crate::errln!("portsentry: warning: interface {name} disappeared; it is re-attached when it returns");
                    self.attached[i].1 = None;
                }
                (old, Some(now)) if old != Some(now) => {
                    match self.attach(dp, &name, xdp_mode, peer_challenge) {
                        Ok(mode) => {
                            crate::errln!(
                                "portsentry: interface {name} is back; re-attached ({mode} XDP)"
                            );
                            came_back(dp, &self.guarded());
                        }
                        Err(e) => {
                            crate::errln!("portsentry: error: re-attaching to {name}: {e:#}")
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Finds out whether the SYN cookies this interface sends back with XDP_TX are delivered
/// (`net::xdp_tx`), tells the XDP program (PS_NO_XDP_TX) and, where they are not, says so:
/// learned peers' trap SYNs there then pass to the stack, which refuses them, instead of
/// waiting for a SYN-ACK that never leaves (docs/THREAT-MODEL.md).
fn check_xdp_tx(dp: &mut Dataplane, iface: &str, ifindex: u32, native: bool) {
    let delivery = xdp_tx::check(ifindex, native);
    let delivers = delivery == TxDelivery::Delivers;
    if let Err(e) = dp.set_xdp_tx_delivers(ifindex, delivers) {
        crate::errln!("portsentry: error: {iface}: recording whether XDP_TX delivers: {e:#}");
    }
    let why = match delivery {
        TxDelivery::Delivers => return,
        TxDelivery::Undeliverable { peer } => format!(
            "it is a veth whose peer {peer} runs no XDP program, so frames sent back with \
             XDP_TX are never delivered"
        ),
        TxDelivery::Unknown { why } => {
            format!("cannot tell whether frames sent back with XDP_TX are delivered ({why})")
        }
    };
    crate::errln!(
        "portsentry: warning: {iface}: {why}; learned peers' trap SYNs on {iface} get no SYN \
         cookie: they pass to the stack (refused, never banned by them). Attach an XDP \
         program to the far end, or use xdp_mode = \"generic\", to challenge them"
    );
}
