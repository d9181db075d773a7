//! Links and neighbours followed live from rtnetlink: the upper devices of the guarded
//! interfaces (PS_UPPER_LINKS, so the path check accepts a route back via a bridge, bond or
//! VLAN device the interface feeds) and neighbour MAC flips (PS_CONTESTED, and the
//! `portsentry: neighbour flip:` line).
//!
//! Owns the daemon's [`NeighbourMemory`] and the last [`Uppers`] written; the parsing is
//! `net::rtnl`'s, the rules `net::topology`'s and `net::neighbours`'.

use super::*;
use crate::net::{
    neighbours::{mac_text, Flip, NeighbourMemory},
    rtnl::{self, Change},
    topology::Uppers,
};

/// The prefix of the line logged for every neighbour MAC flip: stable, so another module (the
/// administrator's notifications) can pick the line up.
pub const FLIP_PREFIX: &str = "portsentry: neighbour flip: ";

/// What the daemon keeps about links and neighbours.
#[derive(Default)]
pub(super) struct Topology {
    /// The upper devices last written to PS_UPPER_LINKS.
    uppers: Option<Uppers>,
    neighbours: NeighbourMemory,
}

/// Waits for the next link or neighbour change, or forever without a watch.
pub(super) async fn next_link_change(
    watch: &mut Option<rtnl::LinkWatch>,
) -> std::io::Result<Vec<Change>> {
    match watch.as_mut() {
        Some(w) => w.changes().await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    /// Re-reads the links and rewrites PS_UPPER_LINKS for the attached interfaces; says what
    /// it recognised when that changed (at attach, and when a port joins or leaves a bridge).
    pub(super) fn refresh_uppers(&mut self) {
        let links = match rtnl::dump_links() {
            Ok(l) => l,
            Err(e) => {
                crate::errln!("portsentry: warning: cannot read the interfaces' upper devices ({e}); routes via a bridge, bond or VLAN device do not count as the guarded interface");
                return;
            }
        };
        let guarded: Vec<u32> = self.attached.iter().filter_map(|(_, i)| *i).collect();
        let uppers = Uppers::compute(&links, &guarded);
        if self.topology.uppers.as_ref() == Some(&uppers) {
            return;
        }
        if let Err(e) = self.dp.set_upper_links(&uppers.entries()) {
            crate::errln!("portsentry: error: writing the upper devices: {e:#}");
            return;
        }
        for line in uppers.describe() {
            crate::errln!("{line}");
        }
        self.topology.uppers = Some(uppers);
    }

    /// Learns the neighbour table as it is now; flips against what was remembered are
    /// reported (after a lost notification).
    pub(super) fn learn_neighbours(&mut self) {
        match rtnl::dump_neighbours() {
            Ok(table) => {
                for flip in self.topology.neighbours.learn(&table) {
                    self.on_flip(&flip);
                }
            }
            Err(e) => crate::errln!(
                "portsentry: warning: cannot read the neighbour table ({e}); MAC flips of hosts known before now go unnoticed"
            ),
        }
    }

    pub(super) fn on_link_changes(&mut self, changes: Vec<Change>) {
        let mut links = false;
        for change in changes {
            match change {
                Change::Links => links = true,
                Change::NewNeighbour(n) => {
                    if let Some(flip) = self.topology.neighbours.observe(&n) {
                        self.on_flip(&flip);
                    }
                }
                // Remembered on: an entry re-learned with another MAC is a flip too.
                Change::DelNeighbour(_) => {}
                Change::Overrun => {
                    links = true;
                    self.learn_neighbours();
                }
            }
        }
        if links {
            self.refresh_uppers();
        }
    }

    /// Contests the flipped address and says so.
    fn on_flip(&mut self, flip: &Flip) {
        let iface = self
            .names_by_index
            .get(&flip.ifindex)
            .cloned()
            .or_else(|| {
                nix::net::if_::if_indextoname(flip.ifindex)
                    .ok()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| format!("#{}", flip.ifindex));
        let what = match self.settings.live.neighbour_contest {
            Some(window) => {
                let until = crate::clock::boot_ns()
                    .saturating_add(u64::try_from(window.as_nanos()).unwrap_or(u64::MAX));
                if let Err(e) = self.dp.contest(flip.addr, until, flip.new) {
                    crate::errln!("portsentry: error: contesting {}: {e:#}", flip.addr);
                }
                format!(
                    "contested for {}: its probes do not ban and it gets no SYN cookie",
                    humantime::format_duration(window)
                )
            }
            None => "not contested (neighbour_contest = 0)".to_owned(),
        };
        let line = format!(
            "{FLIP_PREFIX}{} on {iface} moved from {} to {}; {what}",
            flip.addr,
            mac_text(&flip.old),
            mac_text(&flip.new),
        );
        self.sink.line(&line);
        // It is itself an attack (or a replaced host): the administrator hears of it.
        self.notifier.on_neighbour_flip(&line);
    }
}
