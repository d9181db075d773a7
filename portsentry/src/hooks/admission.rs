//! Admission control: whether a ban response may run, under `max_per_minute`, `max_concurrent`
//! and `queue`. In that order:
//!
//! 1. **Rate**: at most `max_per_minute` responses are admitted per rolling minute; more are
//!    skipped, never queued. The rate limit bounds how many processes a ban storm may cause; a
//!    queue behind it would only defer them (256 queued at 60 a minute is four minutes late, and
//!    a response to a scanner that late, like a forged source's, is worth little).
//! 2. **Slots and queue**: an admitted response starts at once when fewer than `max_concurrent`
//!    run, otherwise it waits in a FIFO queue of `queue` entries for a free slot. Only a full
//!    queue skips it. So a burst of quick bans (a few forged probes and a real scanner) is
//!    answered in ban order, every one of them while the queue has room.
//!
//! Skips are counted by reason until the runner reports them.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// The rolling window of `max_per_minute`.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Why a response was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Every slot busy and the queue full.
    QueueFull,
    OverRate,
}

/// What to do with an admitted response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// A slot is free: start it now.
    Start,
    /// Wait in the queue for a slot.
    Queue,
}

/// Skips not reported yet, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnreportedSkips {
    pub queue_full: u64,
    pub rate: u64,
}

impl UnreportedSkips {
    pub fn total(&self) -> u64 {
        self.queue_full + self.rate
    }
}

/// The limits and the rate window; the runner owns the running count and the queue itself.
pub struct AdmissionControl {
    /// `max_concurrent`, at least 1.
    max_concurrent: usize,
    /// Responses that may wait for a slot; 0 skips whatever finds every slot busy.
    queue_max: usize,
    /// Admission times of the responses of the last minute, oldest first.
    admitted: VecDeque<Instant>,
    unreported: UnreportedSkips,
}

/// `max_concurrent` 0 is clamped to 1 rather than meaning "no hooks ever run", which would
/// silently disable what the admin configured.
fn slot_count(max_concurrent: usize) -> usize {
    max_concurrent.max(1)
}

impl AdmissionControl {
    pub fn new(max_concurrent: usize, queue_max: usize) -> Self {
        Self {
            max_concurrent: slot_count(max_concurrent),
            queue_max,
            admitted: VecDeque::new(),
            unreported: UnreportedSkips::default(),
        }
    }

    /// New limits apply from the next admission on. Running responses finish; with a lower
    /// `max_concurrent`, slots retire as they finish until the new limit holds. A smaller
    /// queue keeps what already waits.
    pub fn set_limits(&mut self, max_concurrent: usize, queue_max: usize) {
        self.max_concurrent = slot_count(max_concurrent);
        self.queue_max = queue_max;
    }

    /// The effective `max_concurrent`.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    pub fn queue_max(&self) -> usize {
        self.queue_max
    }

    /// Admits one response at `now`, with `running` responses running and `queued` waiting.
    /// A refusal is counted as unreported. `max_per_minute` 0 means unlimited.
    pub fn admit(
        &mut self,
        max_per_minute: u32,
        running: usize,
        queued: usize,
        now: Instant,
    ) -> Result<Admitted, SkipReason> {
        while self
            .admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.admitted.pop_front();
        }
        if max_per_minute > 0 && self.admitted.len() >= max_per_minute as usize {
            self.unreported.rate += 1;
            return Err(SkipReason::OverRate);
        }
        let admitted = if running < self.max_concurrent && queued == 0 {
            Admitted::Start
        } else if queued < self.queue_max {
            Admitted::Queue
        } else {
            self.unreported.queue_full += 1;
            return Err(SkipReason::QueueFull);
        };
        self.admitted.push_back(now);
        Ok(admitted)
    }

    pub fn unreported(&self) -> UnreportedSkips {
        self.unreported
    }

    /// The skips were reported; count afresh.
    pub fn clear_unreported(&mut self) {
        self.unreported = UnreportedSkips::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_then_queue_then_skip() {
        let mut a = AdmissionControl::new(2, 3);
        let now = Instant::now();
        assert_eq!(a.admit(0, 0, 0, now), Ok(Admitted::Start));
        assert_eq!(a.admit(0, 1, 0, now), Ok(Admitted::Start));
        assert_eq!(a.admit(0, 2, 0, now), Ok(Admitted::Queue));
        // A free slot does not jump the queue: what waits goes first.
        assert_eq!(a.admit(0, 1, 1, now), Ok(Admitted::Queue));
        assert_eq!(a.admit(0, 2, 2, now), Ok(Admitted::Queue));
        assert_eq!(a.admit(0, 2, 3, now), Err(SkipReason::QueueFull));
        assert_eq!(a.unreported().queue_full, 1);
        let mut none = AdmissionControl::new(0, 0);
        assert_eq!(none.admit(0, 0, 0, now), Ok(Admitted::Start));
        assert_eq!(none.admit(0, 1, 0, now), Err(SkipReason::QueueFull));
    }

    #[test]
    fn the_rate_limit_skips_before_the_queue_and_a_full_queue_costs_no_rate() {
        let mut a = AdmissionControl::new(1, 1);
        let t0 = Instant::now();
        assert_eq!(a.admit(2, 0, 0, t0), Ok(Admitted::Start));
        assert_eq!(a.admit(2, 1, 0, t0), Ok(Admitted::Queue));
        assert_eq!(a.admit(2, 1, 1, t0), Err(SkipReason::OverRate));
        let mut b = AdmissionControl::new(1, 0);
        assert_eq!(b.admit(2, 1, 0, t0), Err(SkipReason::QueueFull));
        assert_eq!(b.admit(2, 0, 0, t0), Ok(Admitted::Start));
        assert_eq!(b.admit(2, 0, 0, t0), Ok(Admitted::Start));
        assert_eq!(b.admit(2, 0, 0, t0), Err(SkipReason::OverRate));
        assert_eq!(b.admit(2, 0, 0, t0 + RATE_WINDOW), Ok(Admitted::Start));
        assert_eq!(
            b.unreported(),
            UnreportedSkips {
                queue_full: 1,
                rate: 1
            }
        );
    }
}
