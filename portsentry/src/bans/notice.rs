//! The facts of one local ban, as its responses (hooks, the fleet alert) need them. Built once
//! per ban by the daemon, so every response describes the same ban the same way.

use std::{net::IpAddr, time::Duration};

use chrono::{DateTime, Utc};

use crate::detect::events::{ProbeEvent, Protocol};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanNotice {
    pub source: IpAddr,
    pub dst_port: u16,
    pub protocol: Protocol,
    /// The scan type's name (`TCP SYN/Normal scan`); text, because hooks paste it verbatim.
    pub scan: String,
    /// Probes that triggered the ban.
    pub probes: u64,
    /// The source is dropped here (block mode, blocking on for this protocol). An unenforced
    /// ban must stay unenforced: blocking hooks skip it, the fleet alert is a simulation.
    pub enforced: bool,
    /// The source was shown to be real (path verified or handshake confirmed, not link-local):
    /// only such bans are shared with the fleet (`ProbeEvent::is_shareable`).
    pub shareable: bool,
    /// The path check proved the source real (or a handshake did): such responses go ahead of
    /// unverified ones in the hook queue and budget.
    pub verified: bool,
    /// `None`: the ban never expires.
    pub ttl: Option<Duration>,
    /// The interface the probes came in on (`?` if the daemon does not know its name).
    pub interface: String,
    /// When the daemon learned of the ban.
    pub at: DateTime<Utc>,
}

impl BanNotice {
    /// A test fixture: an enforced, shareable TCP ban of `source` on port 111.
    #[cfg(test)]
    pub fn example(source: &str) -> Self {
        Self {
            source: source.parse().expect("test address"),
            dst_port: 111,
            protocol: crate::detect::events::Protocol::Tcp,
            scan: "TCP SYN/Normal scan".into(),
            probes: 1,
            enforced: true,
            shareable: true,
            verified: true,
            ttl: None,
            interface: "eth0".into(),
            at: chrono::Utc::now(),
        }
    }

    pub fn from_event(
        ev: &ProbeEvent,
        interface: &str,
        ttl: Option<Duration>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            source: ev.src,
            dst_port: ev.dst_port,
            protocol: ev.protocol,
            scan: ev.scan.name().to_owned(),
            probes: ev.count,
            enforced: ev.is_blocked(),
            shareable: ev.is_shareable(),
            verified: !ev.unverified,
            ttl,
            interface: interface.to_owned(),
            at,
        }
    }
}
