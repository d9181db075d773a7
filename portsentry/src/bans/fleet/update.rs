//! What one pull from the fleet brings to the ban book ([`FleetBan`], [`FleetUpdate`], as
//! `fleet::crowdsec::decisions` classifies LAPI's answer) and why the book refuses a decision
//! ([`Refusal`], with its wording for the log and its name for `status`).
//!
//! Values only: weighing them is `decide`'s, applying them `super`'s.

use std::{collections::BTreeMap, fmt, net::IpAddr, sync::Arc, time::Duration};

use crate::net::cidr::Cidr;

/// A ban decision to enforce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetBan {
    pub target: Cidr,
    pub remaining: Duration,
    /// Who decided: `cscli`, `crowdsec`, `CAPI`, `portsentry`, … (one shared copy per text).
    pub origin: Arc<str>,
    pub scenario: Arc<str>,
}

/// One pull from the fleet, classified (`fleet::crowdsec::decisions` reads LAPI's answer into
/// it): what the book weighs and applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetUpdate {
    /// The full state (first pull of this process, or a resync after an error): every fleet ban
    /// not listed in `bans` is stale.
    pub startup: bool,
    pub bans: Vec<FleetBan>,
    pub lifted: Vec<Cidr>,
    /// Decisions not enforced, by reason (`captcha/Ip`, `ban/Country`, `bad value`, `expired`).
    pub ignored: BTreeMap<String, usize>,
}

impl FleetUpdate {
    pub fn is_empty(&self) -> bool {
        !self.startup && self.bans.is_empty() && self.lifted.is_empty() && self.ignored.is_empty()
    }
}

/// Why a fleet decision is not enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It reaches into this bogus range.
    Bogus(Cidr),
    /// It overlaps this allow entry (own address, gateway, resolver, LAPI host, `allow`, …).
    Allowlisted(Cidr),
    /// It covers this learned peer, a host this one has really talked to.
    LearnedPeer(IpAddr),
}

impl Refusal {
    /// The reason's name, as counted in `status`.
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::Bogus(_) => "bogus",
            Refusal::Allowlisted(_) => "allowlisted",
            Refusal::LearnedPeer(_) => "learned_peer",
        }
    }
}

impl Refusal {
    /// Why, as a clause of a log line.
    pub fn explain(&self) -> String {
        match self {
            Refusal::Bogus(_) => format!("it reaches into the {self} (no real peer is there)"),
            Refusal::Allowlisted(a) if a.is_host() => {
                format!("it covers the {self}; the fleet must not cut this host off")
            }
            Refusal::Allowlisted(_) => {
                format!("it overlaps the {self}; the fleet must not cut this host off")
            }
            Refusal::LearnedPeer(_) => format!(
                "it covers the {self}, a host this one talks to (a forged scan in its name must not cut it off)"
            ),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Bogus(r) => write!(f, "bogus range {r}"),
            Refusal::Allowlisted(a) if a.is_host() => write!(f, "allowlisted host {a}"),
            Refusal::Allowlisted(a) => write!(f, "allowlisted network {a}"),
            Refusal::LearnedPeer(p) => write!(f, "learned peer {p}"),
        }
    }
}
