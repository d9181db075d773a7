//! Per-source memories of the event loop.
//!
//! - Responses for sources that trigger but are not banned because their protocol's blocking
//!   is off (`block_tcp`/`block_udp = false` with `[hooks] run_cmd_always`, PortSentry's
//!   `BLOCK_TCP`/`BLOCK_UDP = 2`): `run_cmd` runs once per source per ban period, as 2.x did
//!   with its blocked list, while the source stays unblocked. No ban is made, so nothing in the
//!   kernel or the ban book changes.
//! - The per-source limit on the `ignored: [true]` lines of allowlisted sources.

use std::{collections::HashMap, net::IpAddr};

/// At most this many sources are remembered; a random-source flood beyond it gets no more
/// responses until entries expire (hooks are rate-limited anyway).
const MAX_SOURCES: usize = 65_536;

/// Sources already answered, with when their "ban period" ends (Unix ms; `None` = never).
#[derive(Debug, Default)]
pub struct UnenforcedResponses {
    until: HashMap<IpAddr, Option<u64>>,
}

impl UnenforcedResponses {
    /// Whether `src` gets a response now (not answered within the period `ttl_ms`); records it.
    pub fn first_in_period(&mut self, src: IpAddr, now_ms: u64, ttl_ms: Option<u64>) -> bool {
        if let Some(until) = self.until.get(&src) {
            if until.is_none_or(|t| now_ms < t) {
                return false;
            }
        }
        if self.until.len() >= MAX_SOURCES {
            self.forget_expired(now_ms);
            if self.until.len() >= MAX_SOURCES {
                return false;
            }
        }
        self.until
            .insert(src, ttl_ms.map(|t| now_ms.saturating_add(t)));
        true
    }

    /// Drops the records whose period is over.
    pub fn forget_expired(&mut self, now_ms: u64) {
        self.until
            .retain(|_, until| until.is_none_or(|t| now_ms < t));
    }
}

/// At most one log line per ignored (allowlisted) source per minute: an allowlisted host that
/// probes often must not fill the log (the kernel already throttles the events overall).
#[derive(Debug, Default)]
pub struct IgnoredLines {
    last: HashMap<IpAddr, u64>,
}

impl IgnoredLines {
    const INTERVAL_MS: u64 = 60_000;

    pub fn allow(&mut self, src: IpAddr, now_ms: u64) -> bool {
        if self
            .last
            .get(&src)
            .is_some_and(|t| now_ms.saturating_sub(*t) < Self::INTERVAL_MS)
        {
            return false;
        }
        if self.last.len() >= MAX_SOURCES {
            self.last
                .retain(|_, t| now_ms.saturating_sub(*t) < Self::INTERVAL_MS);
        }
        self.last.insert(src, now_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::{IgnoredLines, UnenforcedResponses};

    #[test]
    fn once_per_source_per_period() {
        let mut r = UnenforcedResponses::default();
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(r.first_in_period(a, 1_000, Some(500)));
        assert!(!r.first_in_period(a, 1_400, Some(500)), "within the period");
        assert!(r.first_in_period(b, 1_400, Some(500)), "another source");
        assert!(r.first_in_period(a, 1_500, Some(500)), "the period is over");
        let mut forever = UnenforcedResponses::default();
        assert!(forever.first_in_period(a, 0, None));
        assert!(!forever.first_in_period(a, u64::MAX, None));
        r.forget_expired(u64::MAX);
        assert!(r.until.values().all(Option::is_none));
    }
    #[test]
    fn ignored_lines_once_a_minute_per_source() {
        let mut g = IgnoredLines::default();
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(g.allow(a, 0));
        assert!(!g.allow(a, 59_999));
        assert!(g.allow(b, 59_999));
        assert!(g.allow(a, 60_000));
    }
}
