//! The digest: what happened in one window, per source and in all, as text and as JSON.
//!
//! Owns the window's accumulator (fed from the event loop, bounded) and its rendering
//! (`render`: subject, text, JSON). The daemon adds at closing time what only the ban book and
//! the kernel know (ban expiry, origin, drops, counters), through [`Closing`].

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use crate::detect::events::{EventKind, ProbeEvent, Protocol};

/// Sources remembered per window; more are counted, not listed.
const MAX_SOURCES: usize = 10_000;
/// Ports remembered per source.
const MAX_PORTS: usize = 4096;
/// Sources listed in one digest; the rest are one "and N more" line.
const LISTED: usize = 100;

/// What one source did in the window.
#[derive(Clone, Debug, Default)]
pub struct SourceFacts {
    pub first_ms: u64,
    pub last_ms: u64,
    pub probes: u64,
    pub tcp_ports: BTreeSet<u16>,
    pub udp_ports: BTreeSet<u16>,
    pub scans: BTreeSet<&'static str>,
    /// A ban event was seen, and whether it was enforced.
    pub banned: Option<bool>,
    pub ignored: bool,
    /// The path check proved the source (None: no ban, nothing to say).
    pub verified: Option<bool>,
    /// Its would-be ban was refused: `spoofed` (it did not arrive the way this host routes
    /// back) or `contested` (its neighbour's MAC changed moments ago).
    pub refused: Option<&'static str>,
}

/// How a source's ban looks at closing time (from the ban book).
#[derive(Clone, Debug)]
pub struct BanFacts {
    /// `local`, `manual`, `fleet (cscli)` …
    pub origin: String,
    /// Unix ms; `None`: never.
    pub expires_ms: Option<u64>,
    pub drops: u64,
    pub since_ms: u64,
}

/// The window so far.
#[derive(Default)]
pub struct Window {
    pub start_ms: u64,
    pub sources: HashMap<IpAddr, SourceFacts>,
    pub sources_not_listed: u64,
    pub probes: u64,
    pub bans: u64,
    pub spoofed: u64,
    /// Would-be bans refused because the source's neighbour MAC changed moments ago.
    pub contested: u64,
    pub bogus: u64,
    pub trap_ports: HashMap<(Protocol, u16), u64>,
    /// New bans not alerted because of `max_alerts_per_hour`.
    pub alerts_folded: u64,
    /// Neighbour MAC changes (ARP/ND "flip flop", itself an attack), as the daemon logged
    /// them; the first [`MAX_FLIPS`], the rest counted.
    pub flips: Vec<String>,
    pub flips_not_listed: u64,
}

/// Neighbour flips listed in one digest.
pub const MAX_FLIPS: usize = 50;

impl Window {
    pub fn new(start_ms: u64) -> Self {
        Self {
            start_ms,
            ..Default::default()
        }
    }

    pub fn record(&mut self, ev: &ProbeEvent, now_ms: u64) {
        // A refusal names an address that may not be the sender's: it is counted, and marks a
        // source only if that source's own probes are already listed.
        let refused = match ev.kind {
            EventKind::Spoofed => {
                self.spoofed += 1;
                Some("spoofed")
            }
            EventKind::Contested => {
                self.contested += 1;
                Some("contested")
            }
            _ => None,
        };
        if let Some(why) = refused {
            if let Some(f) = self.sources.get_mut(&ev.src) {
                if f.banned != Some(true) {
                    f.refused = Some(why);
                }
            }
            return;
        }
        match ev.kind {
            EventKind::Spoofed | EventKind::Contested => return,
            EventKind::Bogus => {
                self.bogus += 1;
                return;
            }
            EventKind::PrefixTrigger | EventKind::BanTableFull => return,
            EventKind::Probe | EventKind::Ban | EventKind::Ignored | EventKind::PeerProbe => {}
        }
        if ev.kind != EventKind::Ignored {
            self.probes += 1;
            *self
                .trap_ports
                .entry((ev.protocol, ev.dst_port))
                .or_default() += 1;
        }
        if ev.kind == EventKind::Ban {
            self.bans += 1;
        }
        let full = self.sources.len() >= MAX_SOURCES;
        let f = match self.sources.get_mut(&ev.src) {
            Some(f) => f,
            None if full => {
                self.sources_not_listed += 1;
                return;
            }
            None => self.sources.entry(ev.src).or_insert_with(|| SourceFacts {
                first_ms: now_ms,
                ..Default::default()
            }),
        };
        f.last_ms = now_ms;
        if ev.kind == EventKind::Ignored {
            f.ignored = true;
            return;
        }
        f.probes += 1;
        let ports = match ev.protocol {
            Protocol::Tcp => &mut f.tcp_ports,
            Protocol::Udp => &mut f.udp_ports,
        };
        if ports.len() < MAX_PORTS {
            ports.insert(ev.dst_port);
        }
        f.scans.insert(ev.scan.name());
        if ev.kind == EventKind::Ban {
            let enforced = ev.is_blocked();
            f.banned = Some(f.banned.unwrap_or(false) || enforced);
            f.verified = Some(!ev.unverified && !ev.link_local);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
            && self.probes == 0
            && self.spoofed == 0
            && self.contested == 0
            && self.bogus == 0
            && self.alerts_folded == 0
            && self.flips.is_empty()
    }

    /// A neighbour's MAC changed (the daemon's `neighbour flip` line).
    pub fn record_flip(&mut self, line: &str) {
        if self.flips.len() < MAX_FLIPS {
            self.flips.push(line.to_owned());
        } else {
            self.flips_not_listed += 1;
        }
    }
}

/// Counters of the whole window that the daemon reads at closing time.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Events the kernel held back (flood budget) in the window.
    pub events_held_back: u64,
    /// Fleet decisions taken in, local alerts pushed out.
    pub fleet_in: u64,
    pub fleet_out: u64,
}

/// What the daemon hands over when the window closes.
pub struct Closing<'a> {
    pub host: &'a str,
    pub end_ms: u64,
    pub totals: Totals,
    /// The ban of a source, if the book holds one.
    pub ban_of: &'a dyn Fn(IpAddr) -> Option<BanFacts>,
    /// Bans made in the window that no probe here explains (manual, fleet): target and facts.
    pub other_bans: Vec<(String, BanFacts)>,
    /// `max_alerts_per_hour`, for the "N more" line.
    pub alert_cap: u32,
}

mod render;
pub use render::{clock, port_ranges, render, stamp};

#[cfg(test)]
mod tests;
