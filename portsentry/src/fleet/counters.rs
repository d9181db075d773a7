//! Fleet mode's counters since start, as `status` and the metrics endpoint show them.

use serde::Serialize;

/// What fleet mode did since start, for `status` and the metrics endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FleetCounters {
    /// Decision pulls LAPI answered, and pulls that failed (bouncer role).
    pub pulls: u64,
    pub pull_errors: u64,
    /// Wall clock (Unix ms) of the last answered pull; `None` before the first (or without
    /// the bouncer role).
    pub last_pull_ms: Option<u64>,
    /// Local bans queued as alerts (verified sources, within the cap).
    pub alerts_queued: u64,
    /// Alerts waiting for LAPI now.
    pub alert_queue: u64,
    /// Alerts LAPI accepted.
    pub alerts_pushed: u64,
    /// Push requests LAPI accepted, and push requests that failed.
    pub pushes: u64,
    pub push_errors: u64,
    /// Alerts dropped by `max_alerts_per_minute`.
    pub alerts_capped: u64,
    /// Local bans kept local: unverified or link-local source.
    pub alerts_not_shared: u64,
    /// Fleet decisions refused (each counted once), by reason.
    pub refused_bogus: u64,
    pub refused_learned_peer: u64,
    pub refused_allowlisted: u64,
}

impl FleetCounters {
    /// `(name, value)` in display order; the names are the JSON keys.
    pub fn rows(&self) -> [(&'static str, u64); 12] {
        [
            ("pulls", self.pulls),
            ("pull_errors", self.pull_errors),
            ("alerts_queued", self.alerts_queued),
            ("alert_queue", self.alert_queue),
            ("alerts_pushed", self.alerts_pushed),
            ("pushes", self.pushes),
            ("push_errors", self.push_errors),
            ("alerts_capped", self.alerts_capped),
            ("alerts_not_shared", self.alerts_not_shared),
            ("refused_bogus", self.refused_bogus),
            ("refused_learned_peer", self.refused_learned_peer),
            ("refused_allowlisted", self.refused_allowlisted),
        ]
    }
}
