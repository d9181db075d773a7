//! What a local ban may send to the fleet. Only bans whose source was shown to be real are
//! shared: an unverified (the path check could not decide) or link-local source stays a local
//! matter. And at most `max_alerts_per_minute` alerts go out, so a forging campaign that gets
//! bans past the checks here still cannot flood every other host's ban table.

use std::time::Instant;

use crate::bans::BanNotice;

/// Why a ban is not shared, for its log line.
pub fn not_shared_reason(ban: &BanNotice) -> Option<&'static str> {
    if ban.shareable {
        None
    } else if crate::net::cidr::is_link_local(ban.source) {
        Some("link-local source")
    } else {
        Some("unverified source")
    }
}

/// Milliseconds in a minute: one alert is worth this many units of the bucket.
const UNITS_PER_ALERT: u64 = 60_000;

/// A token bucket of `per_minute` alerts, refilled continuously at `per_minute` a minute: a
/// burst of up to `per_minute` goes out at once, then one every `60 s / per_minute`. Integer
/// arithmetic in milliseconds, so it neither drifts nor rounds a slow rate to zero.
#[derive(Clone, Debug)]
pub struct AlertCap {
    per_minute: u64,
    units: u64,
    last: Option<Instant>,
}

impl AlertCap {
    pub fn new(per_minute: u32) -> Self {
        let per_minute = u64::from(per_minute.max(1));
        Self {
            per_minute,
            units: per_minute * UNITS_PER_ALERT,
            last: None,
        }
    }

    pub fn per_minute(&self) -> u64 {
        self.per_minute
    }

    /// Takes one alert's worth at `now`; false if the cap is reached.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let capacity = self.per_minute * UNITS_PER_ALERT;
        if let Some(last) = self.last {
            let ms =
                u64::try_from(now.saturating_duration_since(last).as_millis()).unwrap_or(u64::MAX);
            self.units = self
                .units
                .saturating_add(ms.saturating_mul(self.per_minute))
                .min(capacity);
        }
        if self.last.is_none_or(|l| now > l) {
            self.last = Some(now);
        }
        if self.units >= UNITS_PER_ALERT {
            self.units -= UNITS_PER_ALERT;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn notice(source: &str, shareable: bool) -> BanNotice {
        BanNotice {
            shareable,
            ..BanNotice::example(source)
        }
    }

    #[test]
    fn only_verified_bans_are_shared() {
        assert_eq!(not_shared_reason(&notice("192.0.2.7", true)), None);
        assert_eq!(
            not_shared_reason(&notice("192.0.2.7", false)),
            Some("unverified source")
        );
        assert_eq!(
            not_shared_reason(&notice("169.254.3.4", false)),
            Some("link-local source")
        );
        assert_eq!(
            not_shared_reason(&notice("fe80::1", false)),
            Some("link-local source")
        );
    }

    #[test]
    fn the_cap_allows_a_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut cap = AlertCap::new(3);
        assert!(cap.try_take(t0) && cap.try_take(t0) && cap.try_take(t0));
        assert!(
            !cap.try_take(t0),
            "the fourth in the same minute is dropped"
        );
        // 3 a minute: one more every 20 s.
        assert!(!cap.try_take(t0 + Duration::from_secs(19)));
        assert!(cap.try_take(t0 + Duration::from_secs(20)));
        assert!(!cap.try_take(t0 + Duration::from_secs(21)));
        // A quiet hour refills to the burst size, no more.
        let later = t0 + Duration::from_secs(3600);
        assert!(cap.try_take(later) && cap.try_take(later) && cap.try_take(later));
        assert!(!cap.try_take(later));
    }

    #[test]
    fn no_more_than_the_cap_in_any_first_minute() {
        let t0 = Instant::now();
        let mut cap = AlertCap::new(60);
        let sent = (0..1000)
            .filter(|i| cap.try_take(t0 + Duration::from_millis(i * 10)))
            .count();
        // 60 at once, then one a second over the ten seconds that follow.
        assert_eq!(sent, 60 + 9);
    }
}
