//! Admission control: whether a ban response may start now, under `max_concurrent` and
//! `max_per_minute`. A response over either limit is skipped, not queued: a distributed scan
//! bans thousands of sources, and a queue would turn that into thousands of processes or hours
//! of backlog. Skips are counted until the runner reports them.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The rolling window of `max_per_minute`.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Why a response was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    OverConcurrency,
    OverRate,
}

/// Skips not reported yet, by limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnreportedSkips {
    pub concurrency: u64,
    pub rate: u64,
}

impl UnreportedSkips {
    pub fn total(&self) -> u64 {
        self.concurrency + self.rate
    }
}

pub struct AdmissionControl {
    permits: Arc<Semaphore>,
    /// The limit `permits` was made for (`max_concurrent`, at least 1).
    permits_for: usize,
    /// Start times of the responses of the last minute, oldest first.
    starts: VecDeque<Instant>,
    unreported: UnreportedSkips,
}

/// `max_concurrent` 0 is clamped to 1 rather than meaning "no hooks ever run", which would
/// silently disable what the admin configured.
fn permit_count(max_concurrent: usize) -> usize {
    max_concurrent.max(1)
}

impl AdmissionControl {
    pub fn new(max_concurrent: usize) -> Self {
        let permits_for = permit_count(max_concurrent);
        Self {
            permits: Arc::new(Semaphore::new(permits_for)),
            permits_for,
            starts: VecDeque::new(),
            unreported: UnreportedSkips::default(),
        }
    }

    /// A new `max_concurrent` applies from the next response on. Running responses hold and
    /// return permits of the old semaphore, so until they end, old and new together may exceed
    /// the new limit.
    pub fn set_max_concurrent(&mut self, max_concurrent: usize) {
        let permits_for = permit_count(max_concurrent);
        if permits_for != self.permits_for {
            self.permits = Arc::new(Semaphore::new(permits_for));
            self.permits_for = permits_for;
        }
    }

    /// The effective `max_concurrent`, for the skip summary.
    pub fn max_concurrent(&self) -> usize {
        self.permits_for
    }

    /// Admits one response starting at `now`: the permit is its slot until it ends. A refusal
    /// is counted as unreported. `max_per_minute` 0 means unlimited.
    pub fn admit(
        &mut self,
        max_per_minute: u32,
        now: Instant,
    ) -> Result<OwnedSemaphorePermit, SkipReason> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.unreported.concurrency += 1;
            return Err(SkipReason::OverConcurrency);
        };
        while self
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.starts.pop_front();
        }
        if max_per_minute > 0 && self.starts.len() >= max_per_minute as usize {
            self.unreported.rate += 1;
            return Err(SkipReason::OverRate);
        }
        self.starts.push_back(now);
        Ok(permit)
    }

    pub fn unreported(&self) -> UnreportedSkips {
        self.unreported
    }

    /// The skips were reported; count afresh.
    pub fn clear_unreported(&mut self) {
        self.unreported = UnreportedSkips::default();
    }
}
