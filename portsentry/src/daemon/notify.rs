//! The notifier's wiring: hands it what only the daemon knows when a digest window closes
//! (each source's ban from the book, bans no probe here explains, the kernel's and the fleet's
//! counters over the window). The notifier itself (`crate::notify`) decides and sends.

use super::*;
use crate::notify::digest::{BanFacts, Closing, Totals};

impl Daemon {
    /// The counters a digest reports as differences over its window.
    fn notify_counters(&self) -> Totals {
        Totals {
            events_held_back: self.kernel_events_suppressed(),
            fleet_in: self.book.made(Origin::Fleet),
            fleet_out: self
                .fleet
                .as_ref()
                .map_or(0, |f| f.counters().alerts_pushed),
        }
    }

    /// At start and after each digest: where the next window's counters begin.
    pub(super) fn notify_mark(&mut self) {
        self.notify_baseline = self.notify_counters();
    }

    /// Closes the digest window when it is due.
    pub(super) fn notify_tick(&mut self) {
        let now_ms = crate::clock::unix_ms();
        if !self.notifier.digest_due(now_ms) {
            return;
        }
        if let Err(e) = self.book.refresh_drops(&self.dp) {
            crate::errln!(
                "portsentry: warning: notify: reading drop counters for the digest: {e:#}"
            );
        }
        let now = self.notify_counters();
        let base = &self.notify_baseline;
        let totals = Totals {
            events_held_back: now.events_held_back.saturating_sub(base.events_held_back),
            fleet_in: now.fleet_in.saturating_sub(base.fleet_in),
            fleet_out: now.fleet_out.saturating_sub(base.fleet_out),
        };
        let start = self.notifier.window_start_ms();
        let facts = |r: &crate::bans::BanRecord| BanFacts {
            origin: match (r.origin, &r.fleet) {
                (Origin::Fleet, Some(n)) => format!("fleet ({})", n.origin),
                (Origin::Fleet, None) => "fleet".to_owned(),
                (Origin::Manual, _) => "manual".to_owned(),
                _ => "local".to_owned(),
            },
            expires_ms: r.expires_ms,
            drops: r.drops,
            since_ms: r.since_ms,
        };
        let other_bans: Vec<(String, BanFacts)> = self
            .book
            .records()
            .filter(|r| {
                r.since_ms >= start
                    && !r.shadow
                    && matches!(r.origin, Origin::Manual | Origin::Fleet)
            })
            .take(1000)
            .map(|r| (r.target.to_string(), facts(r)))
            .collect();
        let book = &self.book;
        let ban_of = |a: IpAddr| book.get(&Cidr::host(a)).map(facts);
        let host = self.notifier.host().to_owned();
        let closing = Closing {
            host: &host,
            end_ms: now_ms,
            totals,
            ban_of: &ban_of,
            other_bans,
            alert_cap: self.notifier.alert_cap(),
        };
        self.notifier.close_digest(&closing);
        self.notify_baseline = now;
    }
}
