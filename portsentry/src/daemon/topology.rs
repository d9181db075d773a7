//! Links and neighbours followed live from rtnetlink: the upper devices of the guarded
//! interfaces (PS_UPPER_LINKS, so the path check accepts a route back via a bridge, bond or
//! VLAN device the interface feeds) and neighbour MAC flips (PS_CONTESTED, and the
//! `portsentry: neighbour flip:` line).
//!
//! Owns the daemon's [`NeighbourMemory`] and the last [`Uppers`] written; the parsing is
//! `net::rtnl`'s, the rules `net::topology`'s and `net::neighbours`'. A flip is handed back
//! ([`LinkChanges`]); [`contest`] contests it and words its line, which the daemon routes to
//! the log and the notifier.

use crate::{
    config::settings::LiveSettings,
    dataplane::Dataplane,
    net::{
        neighbours::{mac_text, Flip, NeighbourMemory},
        rtnl::{self, Change},
        topology::Uppers,
    },
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

/// What a batch of link and neighbour notifications asks for.
#[derive(Default)]
pub(super) struct LinkChanges {
    /// Neighbours whose MAC changed, in the order seen.
    pub flips: Vec<Flip>,
    /// Links changed: the upper devices are read again.
    pub links: bool,
}

impl Topology {
    /// Re-reads the links and rewrites PS_UPPER_LINKS for the `guarded` interfaces; says what
    /// it recognised when that changed (at attach, and when a port joins or leaves a bridge).
    pub fn refresh_uppers(&mut self, dp: &mut Dataplane, guarded: &[u32]) {
        let links = match rtnl::dump_links() {
            Ok(l) => l,
            Err(e) => {
                crate::errln!("portsentry: warning: cannot read the interfaces' upper devices ({e}); routes via a bridge, bond or VLAN device do not count as the guarded interface");
                return;
            }
        };
        let uppers = Uppers::compute(&links, guarded);
        if self.uppers.as_ref() == Some(&uppers) {
            return;
        }
        if let Err(e) = dp.set_upper_links(&uppers.entries()) {
            crate::errln!("portsentry: error: writing the upper devices: {e:#}");
            return;
        }
        for line in uppers.describe() {
            crate::errln!("{line}");
        }
        self.uppers = Some(uppers);
    }

    /// Learns the neighbour table as it is now; returns the flips against what was remembered
    /// (after a lost notification).
    pub fn learn_neighbours(&mut self) -> Vec<Flip> {
        match rtnl::dump_neighbours() {
            Ok(table) => self.neighbours.learn(&table),
            Err(e) => {
                crate::errln!(
                    "portsentry: warning: cannot read the neighbour table ({e}); MAC flips of hosts known before now go unnoticed"
                );
                Vec::new()
            }
        }
    }

    pub fn on_changes(&mut self, changes: Vec<Change>) -> LinkChanges {
        let mut out = LinkChanges::default();
        for change in changes {
            match change {
                Change::Links => out.links = true,
                Change::NewNeighbour(n) => {
                    if let Some(flip) = self.neighbours.observe(&n) {
                        out.flips.push(flip);
                    }
                }
                // Remembered on: an entry re-learned with another MAC is a flip too.
                Change::DelNeighbour(_) => {}
                Change::Overrun => {
                    out.links = true;
                    out.flips.extend(self.learn_neighbours());
                }
            }
        }
        out
    }
}

/// Contests the flipped address (`neighbour_contest`) and words the line saying so; `known`
/// is the interface's name if XDP is attached there.
pub(super) fn contest(
    flip: &Flip,
    known: Option<&str>,
    dp: &mut Dataplane,
    live: &LiveSettings,
) -> String {
    let iface = known
        .map(str::to_owned)
        .or_else(|| {
            nix::net::if_::if_indextoname(flip.ifindex)
                .ok()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| format!("#{}", flip.ifindex));
    let what = match live.neighbour_contest {
        Some(window) => {
            let until = crate::clock::boot_ns()
                .saturating_add(u64::try_from(window.as_nanos()).unwrap_or(u64::MAX));
            if let Err(e) = dp.contest(flip.addr, until, flip.new) {
                crate::errln!("portsentry: error: contesting {}: {e:#}", flip.addr);
            }
            format!(
                "contested for {}: its probes do not ban and it gets no SYN cookie",
                humantime::format_duration(window)
            )
        }
        None => "not contested (neighbour_contest = 0)".to_owned(),
    };
    format!(
        "{FLIP_PREFIX}{} on {iface} moved from {} to {}; {what}",
        flip.addr,
        mac_text(&flip.old),
        mac_text(&flip.new),
    )
}
