//! What the interfaces' topology feeds the XDP program: the upper-link table
//! (PS_UPPER_LINKS, from `net::topology`), contested neighbour addresses (PS_CONTESTED) and the
//! interfaces where XDP_TX frames are not delivered (PS_NO_XDP_TX).

use std::{collections::BTreeMap, net::IpAddr};

use portsentry_common::{maps as defs, ContestedEntry, LinkKey, UpperLinks};

use super::{is_not_found, Maps};
use crate::dataplane::{map_err, Result};
use crate::net::cidr;

impl Maps {
    /// Records whether a frame sent with XDP_TX is delivered on interface `ifindex` (PS_NO_XDP_TX
    /// holds the ones where it is not): learned peers' trap SYNs there get no SYN cookie.
    pub fn set_xdp_tx_delivers(&mut self, ifindex: u32, delivers: bool) -> Result<()> {
        let name = defs::PS_NO_XDP_TX.name;
        if delivers {
            match self.no_xdp_tx.remove(&ifindex) {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(map_err(name)(e)),
            }
        } else {
            self.no_xdp_tx.insert(ifindex, 1, 0).map_err(map_err(name))
        }
    }

    /// The interfaces where XDP_TX is known not to deliver (PS_NO_XDP_TX).
    pub fn xdp_tx_undeliverable(&self) -> Result<Vec<u32>> {
        self.no_xdp_tx
            .keys()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(map_err(defs::PS_NO_XDP_TX.name))
    }

    /// Replaces PS_UPPER_LINKS with `entries` (`net::topology`): writes every entry, then
    /// deletes the keys that are no longer in it.
    pub fn set_upper_links(&mut self, entries: &BTreeMap<LinkKey, UpperLinks>) -> Result<()> {
        let name = defs::PS_UPPER_LINKS.name;
        for (k, v) in entries {
            self.upper_links.insert(k, v, 0).map_err(map_err(name))?;
        }
        let stale: Vec<LinkKey> = self
            .upper_links
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !entries.contains_key(k))
            .collect();
        for k in stale {
            match self.upper_links.remove(&k) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_err(name)(e)),
            }
        }
        Ok(())
    }

    /// Every PS_UPPER_LINKS entry.
    pub fn upper_links(&self) -> Result<Vec<(LinkKey, UpperLinks)>> {
        self.upper_links
            .iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(map_err(defs::PS_UPPER_LINKS.name))
    }

    /// Marks `addr` contested until `until_ns` (boot clock), claimed by `mac`.
    pub fn contest(&mut self, addr: IpAddr, until_ns: u64, mac: [u8; 6]) -> Result<()> {
        let entry = ContestedEntry {
            until_ns,
            mac,
            _pad: [0; 2],
        };
        self.contested
            .insert(cidr::addr_key(addr), entry, 0)
            .map_err(map_err(defs::PS_CONTESTED.name))
    }

    /// The contested entry of `addr`, current or not.
    pub fn contested(&self, addr: IpAddr) -> Result<Option<ContestedEntry>> {
        match self.contested.get(&cidr::addr_key(addr), 0) {
            Ok(e) => Ok(Some(e)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err(defs::PS_CONTESTED.name)(e)),
        }
    }
}
