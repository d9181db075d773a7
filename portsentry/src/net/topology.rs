//! Which upper devices a guarded interface feeds: the bridge a port belongs to, the bond a
//! slave is in, the VLAN device of a tag, and their masters in turn. A probe that arrived on
//! `eth0` (a port of `br0`) is routed back via `br0`: for the path check that route counts as
//! `eth0`. Computed from rtnetlink's links ([`super::rtnl::Link`]) into PS_UPPER_LINKS entries
//! ([`Uppers::entries`]) and the lines `portsentry run` prints at attach ([`Uppers::describe`]).
//!
//! Pure: no sockets, no maps.

use std::collections::{BTreeMap, HashMap};

use portsentry_common::{LinkKey, UpperLinks, UPPER_LINKS_MAX};

use super::rtnl::Link;

/// How many masters above an interface are followed (eth0 → bond0 → br0 is two).
const MAX_DEPTH: usize = 4;

/// The upper devices of the guarded interfaces, per ingress interface and VLAN tags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uppers {
    /// (ingress, outer tag, inner tag) → the interfaces a route back may leave by, besides the
    /// ingress itself, in order of discovery.
    by_key: BTreeMap<(u32, u16, u16), Vec<u32>>,
    /// The lines describing it.
    lines: Vec<String>,
}

impl Uppers {
    /// The upper devices of each interface in `guarded` (indexes) among `links`.
    pub fn compute(links: &[Link], guarded: &[u32]) -> Uppers {
        let by_index: HashMap<u32, &Link> = links.iter().map(|l| (l.index, l)).collect();
        let name = |i: u32| {
            by_index
                .get(&i)
                .map_or_else(|| format!("#{i}"), |l| l.name.clone())
        };
        let mut out = Uppers::default();
        for &g in guarded {
            let Some(link) = by_index.get(&g) else {
                continue;
            };
            // The interface and its masters: untagged frames are handed up that chain.
            let chain = masters(&by_index, g);
            if chain.len() > 1 {
                out.by_key.insert((g, 0, 0), chain[1..].to_vec());
                let via: Vec<String> = chain[1..].iter().map(|i| name(*i)).collect();
                let roles: Vec<String> = chain[1..]
                    .iter()
                    .map(|i| format!("{} {}", role(by_index.get(i)), name(*i)))
                    .collect();
                out.lines.push(format!(
                    "portsentry: {} is {}: routes via {} count as {}",
                    link.name,
                    roles.join(", "),
                    via.join(", "),
                    link.name
                ));
            }
            // VLAN devices on any device of the chain: a frame tagged with their ID is theirs.
            for &lower in &chain {
                for vlan in links.iter().filter(|l| l.link == lower && l.vlan.is_some()) {
                    let Some((vid, _)) = vlan.vlan else { continue };
                    let up = masters(&by_index, vlan.index);
                    add(&mut out.by_key, (g, vid, 0), &up);
                    out.lines.push(format!(
                        "portsentry: {} carries VLAN {vid} for {}: routes via {} count as {} for frames tagged {vid}",
                        link.name,
                        vlan.name,
                        up.iter().map(|i| name(*i)).collect::<Vec<_>>().join(", "),
                        link.name
                    ));
                    // A VLAN device on the VLAN device: double-tagged frames (802.1ad, 802.1Q).
                    for inner in links
                        .iter()
                        .filter(|l| l.link == vlan.index && l.vlan.is_some())
                    {
                        let Some((inner_vid, _)) = inner.vlan else {
                            continue;
                        };
                        add(
                            &mut out.by_key,
                            (g, vid, inner_vid),
                            &masters(&by_index, inner.index),
                        );
                    }
                }
            }
        }
        out
    }

    /// The PS_UPPER_LINKS entries; a key with more uppers than a value holds keeps the first
    /// [`UPPER_LINKS_MAX`] (the nearest devices).
    pub fn entries(&self) -> BTreeMap<LinkKey, UpperLinks> {
        self.by_key
            .iter()
            .map(|(&(ifindex, outer_vid, inner_vid), ups)| {
                let mut v = UpperLinks::default();
                for (slot, i) in v.ifindex.iter_mut().zip(ups.iter().take(UPPER_LINKS_MAX)) {
                    *slot = *i;
                }
                (
                    LinkKey {
                        ifindex,
                        outer_vid,
                        inner_vid,
                    },
                    v,
                )
            })
            .collect()
    }

    /// What was recognised, one line per guarded interface with masters and per VLAN device.
    pub fn describe(&self) -> &[String] {
        &self.lines
    }
}

/// `i` and the masters above it, nearest first, without loops.
fn masters(by_index: &HashMap<u32, &Link>, i: u32) -> Vec<u32> {
    let mut chain = vec![i];
    let mut at = i;
    for _ in 0..MAX_DEPTH {
        let Some(m) = by_index.get(&at).map(|l| l.master).filter(|m| *m != 0) else {
            break;
        };
        if chain.contains(&m) {
            break;
        }
        chain.push(m);
        at = m;
    }
    chain
}

fn add(by_key: &mut BTreeMap<(u32, u16, u16), Vec<u32>>, key: (u32, u16, u16), ups: &[u32]) {
    let entry = by_key.entry(key).or_default();
    for u in ups {
        if !entry.contains(u) {
            entry.push(*u);
        }
    }
}

/// How an interface relates to the master `m`.
fn role(m: Option<&&Link>) -> &'static str {
    match m.map(|l| l.kind.as_str()) {
        Some("bridge") => "a port of",
        Some("bond") | Some("team") => "a slave of",
        Some("vrf") => "in VRF",
        _ => "enslaved to",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, kind: &str, master: u32, lower: u32) -> Link {
        Link {
            index,
            name: name.into(),
            master,
            link: lower,
            kind: kind.into(),
            vlan: None,
        }
    }

    fn vlan(index: u32, name: &str, lower: u32, id: u16, master: u32) -> Link {
        Link {
            vlan: Some((id, false)),
            ..link(index, name, "vlan", master, lower)
        }
    }

    #[test]
    fn a_bridge_port_routes_via_its_bridge() {
        let links = [
            link(1, "lo", "", 0, 0),
            link(2, "eth0", "", 3, 0),
            link(3, "br0", "bridge", 0, 0),
            link(4, "eth1", "", 0, 0),
        ];
        let u = Uppers::compute(&links, &[2, 4]);
        let e = u.entries();
        assert_eq!(e.len(), 1, "only the bridge port has uppers: {e:?}");
        let key = LinkKey {
            ifindex: 2,
            outer_vid: 0,
            inner_vid: 0,
        };
        assert_eq!(e[&key].ifindex[..2], [3, 0]);
        assert_eq!(
            u.describe(),
            ["portsentry: eth0 is a port of br0: routes via br0 count as eth0"]
        );
    }

    #[test]
    fn a_bond_slave_in_a_bridge_and_vlans_on_the_bond() {
        let links = [
            link(2, "eth0", "", 5, 0),
            link(5, "bond0", "bond", 6, 0),
            link(6, "br0", "bridge", 0, 0),
            vlan(7, "bond0.100", 5, 100, 0),
            vlan(8, "eth0.7", 2, 7, 9),
            link(9, "br7", "bridge", 0, 0),
            vlan(10, "bond0.100.5", 7, 5, 0),
        ];
        let u = Uppers::compute(&links, &[2]);
        let e = u.entries();
        let key = |o, i| LinkKey {
            ifindex: 2,
            outer_vid: o,
            inner_vid: i,
        };
        assert_eq!(e[&key(0, 0)].ifindex[..3], [5, 6, 0]);
        assert_eq!(e[&key(100, 0)].ifindex[..2], [7, 0]);
        assert_eq!(e[&key(7, 0)].ifindex[..3], [8, 9, 0]);
        assert_eq!(e[&key(100, 5)].ifindex[..2], [10, 0]);
        assert_eq!(
            u.describe()[0],
            "portsentry: eth0 is a slave of bond0, a port of br0: routes via bond0, br0 count as eth0"
        );
        assert!(u
            .describe()
            .iter()
            .any(|l| l.contains("eth0 carries VLAN 100 for bond0.100")));
    }

    #[test]
    fn master_loops_and_unknown_interfaces_end() {
        let links = [link(2, "a", "", 3, 0), link(3, "b", "bridge", 2, 0)];
        let u = Uppers::compute(&links, &[2, 99]);
        assert_eq!(u.entries().len(), 1);
        assert!(Uppers::compute(&[], &[2]).entries().is_empty());
    }
}
