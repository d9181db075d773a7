//! Keeping bans on disk: a debounced save after changes, retries after failures, and the
//! periodic sweep of expired bans (which also saves the learned peers if they changed).

use super::*;

impl Daemon {
    pub(super) fn mark_dirty(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Saves the state if a ban is waiting to be saved, or sweeps on schedule.
    pub(super) fn tick(&mut self) {
        let save_due = self
            .dirty_since
            .is_some_and(|t| t.elapsed() >= SAVE_DEBOUNCE)
            && self.save_retry_at.is_none_or(|t| Instant::now() >= t);
        let sweep_due = self.last_sweep.elapsed() >= SWEEP_INTERVAL;
        if sweep_due {
            self.sweep();
        }
        if save_due || sweep_due {
            self.save();
        }
        if sweep_due {
            self.save_peers();
        }
        self.hooks.flush_skip_summary();
    }

    /// Removes expired bans (they already stopped dropping) and reconciles book and kernel.
    pub(super) fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        match self.book.sweep(&mut self.dp, &Now::read()) {
            Ok(n) if n > 0 => self.mark_dirty(),
            Ok(_) => {}
            Err(e) => eprintln!("portsentry: error: sweeping expired bans: {e:#}"),
        }
    }

    pub(super) fn save(&mut self) {
        if let Some(fleet) = &self.fleet {
            fleet.persist();
        }
        if !self.book.is_dirty() && self.dirty_since.is_none() {
            return;
        }
        match self.book.save() {
            Ok(()) => {
                self.dirty_since = None;
                self.save_retry_at = None;
            }
            // Stay dirty and retry a little later; enforcement is unaffected.
            Err(e) => {
                self.mark_dirty();
                self.save_retry_at = Some(Instant::now() + SAVE_RETRY);
                if self.save_error_report.try_report().is_some() {
                    eprintln!("portsentry: error: saving bans: {e:#} (retrying every {}s; enforcement continues)", SAVE_RETRY.as_secs());
                }
            }
        }
    }
}
