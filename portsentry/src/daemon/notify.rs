//! The notifier's wiring: hands it what only the daemon knows when a digest window closes
//! (each source's ban from the book, bans no probe here explains, the kernel's and the fleet's
//! counters over the window). The notifier itself (`crate::notify`) decides and sends.
//!
//! Owns the counters at the start of the digest window.

use std::net::IpAddr;

use crate::{
    bans::{BanBook, BanRecord, Origin},
    dataplane::Dataplane,
    fleet::FleetCounters,
    net::cidr::Cidr,
    notify::{
        digest::{BanFacts, Closing, Totals},
        Notifier,
    },
};

/// The counters a digest reports as differences over its window: the kernel's held-back
/// events, bans pulled from the fleet, alerts pushed to it.
pub(super) fn counters(book: &BanBook, dp: &Dataplane, fleet: Option<FleetCounters>) -> Totals {
    Totals {
        events_held_back: super::probes::kernel_events_suppressed(dp),
        fleet_in: book.made(Origin::Fleet),
        fleet_out: fleet.map_or(0, |f| f.alerts_pushed),
    }
}

/// Where the digest window's counters began.
#[derive(Default)]
pub(super) struct DigestWindow {
    baseline: Totals,
}

impl DigestWindow {
    /// At start and after each digest: where the next window's counters begin.
    pub fn mark(&mut self, now: Totals) {
        self.baseline = now;
    }

    /// Closes the digest window when it is due; `now` reads the counters (after the drop
    /// counters are refreshed).
    pub fn tick(
        &mut self,
        notifier: &mut Notifier,
        book: &mut BanBook,
        dp: &Dataplane,
        now: impl Fn(&BanBook) -> Totals,
    ) {
        let now_ms = crate::clock::unix_ms();
        if !notifier.digest_due(now_ms) {
            return;
        }
        if let Err(e) = book.refresh_drops(dp) {
            crate::errln!(
                "portsentry: warning: notify: reading drop counters for the digest: {e:#}"
            );
        }
        let now = now(book);
        let base = &self.baseline;
        let totals = Totals {
            events_held_back: now.events_held_back.saturating_sub(base.events_held_back),
            fleet_in: now.fleet_in.saturating_sub(base.fleet_in),
            fleet_out: now.fleet_out.saturating_sub(base.fleet_out),
        };
        let start = notifier.window_start_ms();
        let facts = |r: &BanRecord| BanFacts {
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
        let other_bans: Vec<(String, BanFacts)> = book
            .records()
            .filter(|r| {
                r.since_ms >= start
                    && !r.shadow
                    && matches!(r.origin, Origin::Manual | Origin::Fleet)
            })
            .take(1000)
            .map(|r| (r.target.to_string(), facts(r)))
            .collect();
        let book = &*book;
        let ban_of = |a: IpAddr| book.get(&Cidr::host(a)).map(facts);
        let host = notifier.host().to_owned();
        let closing = Closing {
            host: &host,
            end_ms: now_ms,
            totals,
            ban_of: &ban_of,
            other_bans,
            alert_cap: notifier.alert_cap(),
        };
        notifier.close_digest(&closing);
        self.baseline = now;
    }
}
