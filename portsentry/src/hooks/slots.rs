//! The slots that run ban responses: a task per slot runs the response it was started for, then
//! queued ones, until the queue is empty; a slot over a lowered `max_concurrent` retires.

use std::sync::{atomic::Ordering, Arc};

use super::{lock, Job, RunnerShared};

/// One slot: a task running responses, the one it was started for and then queued ones, until
/// the queue is empty. Holds its place in the running count until it releases it, or until the
/// task ends some other way (a panic, the runtime dropping it).
struct Slot {
    shared: Arc<RunnerShared>,
    released: bool,
}

impl Slot {
    /// The next queued response for this slot, or `None` after giving the slot up: decided
    /// under the lock with admission, so a response is never left waiting with no slot to
    /// take it. A slot over a lowered `max_concurrent` retires.
    fn next(&mut self) -> Option<Job> {
        let shared = self.shared.clone();
        let mut g = lock(&shared.guarded);
        let running = shared.running.load(Ordering::SeqCst);
        if running <= g.admission.max_concurrent() {
            if let Some(job) = g.queue.pop_front() {
                g.stats.started += 1;
                return Some(job);
            }
        }
        self.release();
        None
    }

    fn release(&mut self) {
        if !std::mem::replace(&mut self.released, true)
            && self.shared.running.fetch_sub(1, Ordering::SeqCst) == 1
        {
            self.shared.became_idle.notify_waiters();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.released {
            let shared = self.shared.clone();
            {
                let _g = lock(&shared.guarded);
                self.release();
            }
            // The task ended early (a panic): what waits still gets a slot.
            fill_slots(&shared);
        }
    }
}

/// Starts a slot for each queued response while slots are free, oldest response first.
pub(super) fn fill_slots(shared: &Arc<RunnerShared>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    loop {
        let (job, slot) = {
            let mut g = lock(&shared.guarded);
            if shared.running.load(Ordering::SeqCst) >= g.admission.max_concurrent() {
                return;
            }
            let Some(job) = g.queue.pop_front() else {
                return;
            };
            g.stats.started += 1;
            shared.running.fetch_add(1, Ordering::SeqCst);
            let slot = Slot {
                shared: shared.clone(),
                released: false,
            };
            (job, slot)
        };
        runtime.spawn(async move {
            let mut slot = slot;
            let mut job = Some(job);
            while let Some((settings, ban)) = job.take() {
                slot.shared.respond(&settings, &ban).await;
                job = slot.next();
            }
        });
    }
}
