//! A local ban's way to the fleet: queued as an alert for the pusher unless it is not to be
//! shared (`share`) or the per-minute cap is reached; the alerts the cap drops are reported at
//! once, then at most once a minute.

use std::time::Instant;

use crate::{bans::BanNotice, fleet::crowdsec::alerts::Alert, report::ReportGate};

use super::{share, Fleet};

/// Alerts dropped by the cap and not reported yet; reported at once, then once a minute.
pub(super) struct CapReport {
    pub(super) gate: ReportGate,
    pub(super) pending: u64,
    pub(super) latest: Option<std::net::IpAddr>,
}

impl Fleet {
    /// Queues an alert for a local ban (a push under a lock the network never holds), unless
    /// its source is unverified or link-local, or the cap is reached.
    pub fn on_local_ban(&mut self, ban: &BanNotice) {
        self.on_local_ban_at(ban, Instant::now());
    }

    pub(super) fn on_local_ban_at(&mut self, ban: &BanNotice, now: Instant) {
        let Some(outbox) = self.outbox.clone() else {
            return;
        };
        if let Some(why) = share::not_shared_reason(ban) {
            self.counters.alerts_not_shared += 1;
            (self.log)(format!(
                "portsentry: crowdsec: ban of {} not shared with the fleet: {why}",
                ban.source
            ));
            return;
        }
        if !self.cap.try_take(now) {
            self.counters.alerts_capped += 1;
            self.cap_report.pending += 1;
            self.cap_report.latest = Some(ban.source);
            self.flush_cap_report_at(now);
            return;
        }
        self.counters.alerts_queued += 1;
        let alert = Alert::from_ban(ban, &self.scenario, &self.host);
        if outbox.push(alert) > 0 {
            (self.log)(format!(
                "portsentry: error: crowdsec: alert queue full ({} alerts): dropped the oldest; raise crowdsec.queue_max or bring LAPI back",
                outbox.len()
            ));
        }
    }

    /// Reports alerts dropped by the cap: the first at once, then at most once a minute (the
    /// daemon calls this on its tick, so a count held back is told when the minute is over).
    pub fn flush_cap_report(&mut self) {
        self.flush_cap_report_at(Instant::now());
    }

    pub(super) fn flush_cap_report_at(&mut self, now: Instant) {
        let r = &mut self.cap_report;
        // The gate is asked only when there is something to say.
        if r.pending == 0 || r.gate.try_report_at(now).is_none() {
            return;
        }
        (self.log)(format!(
            "portsentry: warning: crowdsec: alert cap reached (crowdsec.max_alerts_per_minute = {}): {} alert(s) not pushed since the last report (latest: {}); {} dropped in total",
            self.cap.per_minute(),
            r.pending,
            r.latest.map_or_else(|| "?".into(), |a| a.to_string()),
            self.counters.alerts_capped,
        ));
        r.pending = 0;
    }
}
