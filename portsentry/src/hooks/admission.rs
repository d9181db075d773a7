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
//! Verified bans go ahead of unverified ones (the path check could not decide: a forger's may be
//! among them): in the queue they wait ahead of every unverified response, a full queue gives
//! a verified response the place of the newest unverified one, and unverified responses may
//! use only half of `max_per_minute` (rounded up), so forged bans cannot spend the budget a
//! real scanner's response needs.
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
    /// Wait in the queue for a slot (a verified response ahead of the unverified ones).
    Queue,
    /// The queue is full: skip its newest unverified response (counted as a queue-full skip)
    /// and queue this verified one in its place.
    QueueDisplacing,
}

/// Whether the path check proved the banned source real.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    Verified,
    Unverified,
}

/// The queue as admission sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueFill {
    pub total: usize,
    pub unverified: usize,
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
        queued: QueueFill,
        proof: Proof,
        now: Instant,
    ) -> Result<Admitted, SkipReason> {
        while self
            .admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.admitted.pop_front();
        }
        let budget = match proof {
            Proof::Verified => max_per_minute,
            Proof::Unverified => max_per_minute.div_ceil(2),
        };
        if max_per_minute > 0 && self.admitted.len() >= budget as usize {
            self.unreported.rate += 1;
            return Err(SkipReason::OverRate);
        }
        let admitted = if running < self.max_concurrent && queued.total == 0 {
            Admitted::Start
        } else if queued.total < self.queue_max {
            Admitted::Queue
        } else if proof == Proof::Verified && queued.unverified > 0 {
            self.unreported.queue_full += 1;
            Admitted::QueueDisplacing
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

    const V: Proof = Proof::Verified;
    const U: Proof = Proof::Unverified;

    fn fill(total: usize) -> QueueFill {
        QueueFill {
            total,
            unverified: 0,
        }
    }

    #[test]
    fn slots_then_queue_then_skip() {
        let mut a = AdmissionControl::new(2, 3);
        let now = Instant::now();
        assert_eq!(a.admit(0, 0, fill(0), V, now), Ok(Admitted::Start));
        assert_eq!(a.admit(0, 1, fill(0), V, now), Ok(Admitted::Start));
        assert_eq!(a.admit(0, 2, fill(0), V, now), Ok(Admitted::Queue));
        // A free slot does not jump the queue: what waits goes first.
        assert_eq!(a.admit(0, 1, fill(1), V, now), Ok(Admitted::Queue));
        assert_eq!(a.admit(0, 2, fill(2), V, now), Ok(Admitted::Queue));
        assert_eq!(a.admit(0, 2, fill(3), V, now), Err(SkipReason::QueueFull));
        assert_eq!(a.unreported().queue_full, 1);
        let mut none = AdmissionControl::new(0, 0);
        assert_eq!(none.admit(0, 0, fill(0), V, now), Ok(Admitted::Start));
        assert_eq!(
            none.admit(0, 1, fill(0), V, now),
            Err(SkipReason::QueueFull)
        );
    }

    #[test]
    fn the_rate_limit_skips_before_the_queue_and_a_full_queue_costs_no_rate() {
        let mut a = AdmissionControl::new(1, 1);
        let t0 = Instant::now();
        assert_eq!(a.admit(2, 0, fill(0), V, t0), Ok(Admitted::Start));
        assert_eq!(a.admit(2, 1, fill(0), V, t0), Ok(Admitted::Queue));
        assert_eq!(a.admit(2, 1, fill(1), V, t0), Err(SkipReason::OverRate));
        let mut b = AdmissionControl::new(1, 0);
        assert_eq!(b.admit(2, 1, fill(0), V, t0), Err(SkipReason::QueueFull));
        assert_eq!(b.admit(2, 0, fill(0), V, t0), Ok(Admitted::Start));
        assert_eq!(b.admit(2, 0, fill(0), V, t0), Ok(Admitted::Start));
        assert_eq!(b.admit(2, 0, fill(0), V, t0), Err(SkipReason::OverRate));
        assert_eq!(
            b.admit(2, 0, fill(0), V, t0 + RATE_WINDOW),
            Ok(Admitted::Start)
        );
        assert_eq!(
            b.unreported(),
            UnreportedSkips {
                queue_full: 1,
                rate: 1
            }
        );
    }

    /// Issue 25, item 9: unverified responses use half the rate budget at most and give a
    /// verified one their place in a full queue; verified ones have the whole budget.
    #[test]
    fn verified_responses_go_ahead_of_unverified_ones() {
        let t0 = Instant::now();
        let mut a = AdmissionControl::new(1, 8);
        for _ in 0..2 {
            assert_eq!(a.admit(4, 0, fill(0), U, t0), Ok(Admitted::Start));
        }
        assert_eq!(a.admit(4, 0, fill(0), U, t0), Err(SkipReason::OverRate));
        assert_eq!(a.admit(4, 0, fill(0), V, t0), Ok(Admitted::Start));
        assert_eq!(a.admit(4, 0, fill(0), V, t0), Ok(Admitted::Start));
        assert_eq!(a.admit(4, 0, fill(0), V, t0), Err(SkipReason::OverRate));
        // An odd budget rounds up for the unverified: 1 a minute still runs one.
        let mut one = AdmissionControl::new(1, 8);
        assert_eq!(one.admit(1, 0, fill(0), U, t0), Ok(Admitted::Start));
        // A full queue: a verified response displaces an unverified one, never the reverse.
        let mut q = AdmissionControl::new(1, 2);
        let full = QueueFill {
            total: 2,
            unverified: 1,
        };
        assert_eq!(q.admit(0, 1, full, V, t0), Ok(Admitted::QueueDisplacing));
        assert_eq!(q.admit(0, 1, full, U, t0), Err(SkipReason::QueueFull));
        let verified_only = QueueFill {
            total: 2,
            unverified: 0,
        };
        assert_eq!(
            q.admit(0, 1, verified_only, V, t0),
            Err(SkipReason::QueueFull)
        );
        assert_eq!(q.unreported().queue_full, 3);
    }
}
