//! Rate-limited reporting of conditions that repeat: a failing disk, an unreachable LAPI, a
//! flood of skipped hooks. The first report goes out at once, so a problem is never hidden;
//! repeats within the interval are held back and counted, so a problem that lasts hours fills
//! neither the journal nor the history file.

use std::time::{Duration, Instant};

/// How often a condition that keeps happening is reported.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// Decides whether a report may go out now, and counts the ones held back.
#[derive(Clone, Debug)]
pub struct ReportGate {
    interval: Duration,
    last_report: Option<Instant>,
    held_back: u64,
}

impl ReportGate {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_report: None,
            held_back: 0,
        }
    }

    /// `Some(n)` if a report may go out now, `n` being the reports held back since the last one
    /// that went out; `None` if this one is held back (and counted).
    pub fn try_report(&mut self) -> Option<u64> {
        self.try_report_at(Instant::now())
    }

    /// [`Self::try_report`] at a given time; tests pass a time instead of sleeping.
    pub fn try_report_at(&mut self, now: Instant) -> Option<u64> {
        if self
            .last_report
            .is_some_and(|t| now.saturating_duration_since(t) < self.interval)
        {
            self.held_back += 1;
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }

    /// The condition is over: the next occurrence is news again, reported at once, and what
    /// was held back belongs to the old one.
    pub fn reset(&mut self) {
        self.last_report = None;
        self.held_back = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_passes_repeats_wait_for_the_interval_and_are_counted() {
        let t0 = Instant::now();
        let mut gate = ReportGate::new(REPORT_INTERVAL);
        assert_eq!(gate.try_report_at(t0), Some(0));
        assert_eq!(gate.try_report_at(t0), None);
        assert_eq!(gate.try_report_at(t0 + Duration::from_secs(59)), None);
        assert_eq!(gate.try_report_at(t0 + REPORT_INTERVAL), Some(2));
        // The interval runs from the last report that went out, not from the first.
        assert_eq!(gate.try_report_at(t0 + Duration::from_secs(100)), None);
        assert_eq!(gate.try_report_at(t0 + Duration::from_secs(120)), Some(1));
    }

    #[test]
    fn reset_reports_the_next_occurrence_at_once() {
        let t0 = Instant::now();
        let mut gate = ReportGate::new(Duration::from_secs(10));
        assert_eq!(gate.try_report_at(t0), Some(0));
        assert_eq!(gate.try_report_at(t0), None);
        gate.reset();
        assert_eq!(gate.try_report_at(t0), Some(0));
    }

    #[test]
    fn a_time_before_the_last_report_is_still_within_the_interval() {
        let t0 = Instant::now();
        let mut gate = ReportGate::new(Duration::from_secs(10));
        assert_eq!(gate.try_report_at(t0 + Duration::from_secs(5)), Some(0));
        assert_eq!(gate.try_report_at(t0), None);
    }
}
