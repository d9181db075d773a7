//! Neighbour MAC flips (arpwatch's "flip flop"): the MAC each neighbour address last had, and
//! the change when rtnetlink reports another one. One ARP request "who-has <this host> tell
//! <victim>" from an attacker's MAC repoints the victim's entry at the attacker; a forged probe
//! in the victim's name would then pass the path check. The daemon contests such an address
//! for a while and logs the flip.
//!
//! The memory outlives the kernel's entry (a deleted entry re-learned with another MAC is a
//! flip too) and is bounded: beyond [`CAPACITY`] addresses the least recently seen is forgotten.
//! Pure: no sockets, no maps.

use std::{collections::HashMap, net::IpAddr};

use super::rtnl::Neighbour;

/// Addresses remembered at most.
pub const CAPACITY: usize = 65_536;

/// `NUD_*` states whose link-layer address is not a neighbour's claim: not yet resolved
/// (INCOMPLETE, FAILED) or no ARP at all (NOARP: multicast, point-to-point).
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_FAILED: u16 = 0x20;
const NUD_NOARP: u16 = 0x40;

/// A neighbour whose MAC changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flip {
    pub addr: IpAddr,
    pub ifindex: u32,
    pub old: [u8; 6],
    pub new: [u8; 6],
}

/// The MAC each (interface, address) last had.
#[derive(Default)]
pub struct NeighbourMemory {
    macs: HashMap<(u32, IpAddr), ([u8; 6], u64)>,
    /// Observations so far (the recency of each entry).
    seen: u64,
}

impl NeighbourMemory {
    /// Learns the current table (a dump) without reporting flips: what was there before the
    /// daemon started is nobody's news. Returns the flips among entries already remembered.
    pub fn learn(&mut self, table: &[Neighbour]) -> Vec<Flip> {
        table.iter().filter_map(|n| self.observe(n)).collect()
    }

    /// A new or changed entry; `Some` if it names another MAC than the one remembered.
    pub fn observe(&mut self, n: &Neighbour) -> Option<Flip> {
        let mac = n.mac?;
        if n.state & (NUD_INCOMPLETE | NUD_FAILED | NUD_NOARP) != 0 || mac == [0; 6] {
            return None;
        }
        self.seen += 1;
        let key = (n.ifindex, n.addr);
        let old = self.macs.insert(key, (mac, self.seen));
        if old.is_none() && self.macs.len() > CAPACITY {
            self.forget_oldest();
        }
        match old {
            Some((old, _)) if old != mac => Some(Flip {
                addr: n.addr,
                ifindex: n.ifindex,
                old,
                new: mac,
            }),
            _ => None,
        }
    }

    fn forget_oldest(&mut self) {
        if let Some(key) = self
            .macs
            .iter()
            .min_by_key(|(_, (_, seen))| *seen)
            .map(|(k, _)| *k)
        {
            self.macs.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.macs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.macs.is_empty()
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(addr: &str, mac: u8, state: u16) -> Neighbour {
        Neighbour {
            ifindex: 2,
            addr: addr.parse().unwrap(),
            mac: Some([2, 0, 0, 0, 0, mac]),
            state,
        }
    }

    #[test]
    fn a_new_mac_for_a_known_address_is_a_flip() {
        let mut m = NeighbourMemory::default();
        assert!(m.learn(&[n("10.0.0.3", 1, 2)]).is_empty());
        assert_eq!(m.observe(&n("10.0.0.3", 1, 4)), None, "same MAC, new state");
        let flip = m.observe(&n("10.0.0.3", 9, 4)).expect("a flip");
        assert_eq!((flip.old[5], flip.new[5]), (1, 9));
        // And back again: a flip flop is two flips.
        assert!(m.observe(&n("10.0.0.3", 1, 2)).is_some());
        // Unresolved entries claim nothing.
        assert_eq!(m.observe(&n("10.0.0.3", 7, NUD_FAILED)), None);
        assert_eq!(m.observe(&n("10.0.0.4", 7, 4)), None, "first sight");
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut m = NeighbourMemory::default();
        for i in 0..(CAPACITY as u32 + 10) {
            let addr = IpAddr::V4(i.into());
            m.observe(&Neighbour {
                ifindex: 1,
                addr,
                mac: Some([2, 0, 0, 0, 0, 1]),
                state: 2,
            });
        }
        assert_eq!(m.len(), CAPACITY);
    }
}
