//! Interfaces and sockets: attaching XDP, re-attaching when an interface comes back, and
//! advanced mode's guarded ports following the listening sockets and the service-port memory.

use super::*;
use crate::net::xdp_tx::{self, TxDelivery};

impl Daemon {
    /// Recomputes the guarded ports from the settings, the listening sockets and the ports
    /// remembered as services.
    pub(super) fn refresh_ports(&mut self) -> Result<()> {
        guard::write_ports(
            &mut self.dp,
            &self.settings.live,
            &self.listening,
            &self.remembered,
        )?;
        Ok(())
    }

    /// The ports the service-port memory counts as services now.
    pub(super) fn recompute_remembered(&mut self) -> bool {
        let remembered = self.service_ports.remembered(
            self.settings.live.service_port_memory,
            crate::clock::unix_ms(),
        );
        let changed = remembered != self.remembered;
        self.remembered = remembered;
        changed
    }

    pub(super) fn poll_listening(&mut self) {
        let now = Listening::read();
        if self.service_ports.observe(&now, crate::clock::unix_ms()) {
            self.service_ports_new.get_or_insert_with(Instant::now);
        }
        let remembered_changed = self.recompute_remembered();
        if now != self.listening || remembered_changed {
            self.listening = now;
            if let Err(e) = self.refresh_ports() {
                crate::errln!("portsentry: error: updating guarded ports: {e:#}");
            }
        }
    }

    /// Attaches to `iface` and records where; returns the mode name.
    pub(super) fn attach(&mut self, iface: &str) -> Result<&'static str> {
        let mode = self.dp.attach(iface, self.settings.startup.xdp_mode)?;
        if self.settings.startup.xdp_mode == AttachMode::Auto && mode == AttachMode::Generic {
            crate::errln!("portsentry: warning: {iface} has no native XDP support; using generic XDP (slower)");
        }
        let index = nix::net::if_::if_nametoindex(iface).ok();
        if let Some(i) = index {
            self.names_by_index.insert(i, iface.to_owned());
            if self.extras.peer_challenge {
                self.check_xdp_tx(iface, i, mode == AttachMode::Native);
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

    /// Finds out whether the SYN cookies this interface sends back with XDP_TX are delivered
    /// (`net::xdp_tx`), tells the XDP program (PS_NO_XDP_TX) and, where they are not, says so:
    /// learned peers' trap SYNs there then pass to the stack, which refuses them, instead of
    /// waiting for a SYN-ACK that never leaves (docs/THREAT-MODEL.md).
    fn check_xdp_tx(&mut self, iface: &str, ifindex: u32, native: bool) {
        let delivery = xdp_tx::check(ifindex, native);
        let delivers = delivery == TxDelivery::Delivers;
        if let Err(e) = self.dp.set_xdp_tx_delivers(ifindex, delivers) {
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

    /// An interface that disappears takes its XDP attachment with it. The daemon keeps running
    /// (bans live in the maps) and attaches again when an interface of that name comes back.
    pub(super) fn watch_interfaces(&mut self) {
        for i in 0..self.attached.len() {
            let (name, recorded) = self.attached[i].clone();
            let current = nix::net::if_::if_nametoindex(name.as_str()).ok();
            match (recorded, current) {
                (Some(_), None) => {
                    crate::errln!("portsentry: warning: interface {name} disappeared; it is re-attached when it returns");
                    self.attached[i].1 = None;
                }
                (old, Some(now)) if old != Some(now) => match self.attach(&name) {
                    Ok(mode) => {
                        crate::errln!(
                            "portsentry: interface {name} is back; re-attached ({mode} XDP)"
                        );
                        self.refresh_uppers();
                    }
                    Err(e) => crate::errln!("portsentry: error: re-attaching to {name}: {e:#}"),
                },
                _ => {}
            }
        }
    }
}
