//! Keeping bans on disk: a debounced save after changes, retries after failures, and the
//! periodic sweep of expired bans (which also saves the learned peers if they changed). A save
//! copies the book a step per loop turn ([`crate::bans::Snapshot`]) and hands the copy to the
//! writer thread (`saver`); its outcome comes back to the loop ([`Daemon::on_saved`]). Also
//! advanced mode's service-port memory (`state_dir/service_ports.json`): loaded at start,
//! written soon after a new port is seen, otherwise every few minutes and at stop.

use std::path::Path;

use super::*;
use crate::{bans::store::write_atomic, net::service_ports};

/// The service-port memory of the last run; a damaged file is kept aside (with an error line)
/// and the memory starts empty, as a damaged `bans.json` does not stop the daemon either.
pub(super) fn load_service_ports(state_dir: &Path) -> ServicePorts {
    let path = state_dir.join(service_ports::FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ServicePorts::default(),
        Err(e) => {
            crate::errln!(
                "portsentry: error: reading {}: {e}; advanced mode starts without remembered service ports",
                path.display()
            );
            return ServicePorts::default();
        }
    };
    match ServicePorts::from_json(&text) {
        Ok(m) => m,
        Err(why) => {
            let moved = path.with_extension(format!("json.corrupt-{}", crate::clock::unix_ms()));
            let kept = match std::fs::rename(&path, &moved) {
                Ok(()) => format!("kept aside as {}", moved.display()),
                Err(e) => format!("could not keep it aside ({e})"),
            };
            crate::errln!(
                "portsentry: error: {}: not a service-port memory ({why}); {kept}; advanced mode starts without remembered service ports",
                path.display()
            );
            ServicePorts::default()
        }
    }
}

impl Daemon {
    pub(super) fn mark_dirty(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Saves the state if a ban is waiting to be saved, or sweeps on schedule.
    pub(super) fn tick(&mut self) {
        self.flush_line_budget(crate::clock::unix_ms());
        // While a fleet update is applied, neither: it finishes within seconds, and a save per
        // second of a growing book is the cost this avoids. A save waits at least
        // SAVE_COST_FACTOR times as long as the last one took, so saving a large book never
        // takes more than a small share of the loop's time.
        let busy = self.fleet_batch.is_some();
        let save_due = !busy
            && self.snapshot.is_none()
            && !self.saver.busy()
            && self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= SAVE_DEBOUNCE)
            && self.save_retry_at.is_none_or(|t| Instant::now() >= t)
            && self
                .last_save
                .is_none_or(|(at, took)| at.elapsed() >= took * SAVE_COST_FACTOR);
        let sweep_due =
            !busy && self.sweep.is_none() && self.last_sweep.elapsed() >= SWEEP_INTERVAL;
        if sweep_due {
            self.sweep();
        }
        if save_due || sweep_due {
            self.save();
        }
        if sweep_due {
            self.save_peers();
        }
        let ports_due = self
            .service_ports_new
            .is_some_and(|t| t.elapsed() >= SAVE_DEBOUNCE)
            || (sweep_due
                && self
                    .service_ports_written
                    .as_ref()
                    .is_none_or(|(t, _)| t.elapsed() >= SERVICE_PORTS_REFRESH));
        if ports_due {
            self.save_service_ports();
        }
        self.hooks.flush_skip_summary();
        if let Some(fleet) = self.fleet.as_mut() {
            fleet.flush_cap_report();
        }
    }

    /// Writes the service-port memory if it changed since the last write, forgetting first the
    /// ports not seen within `service_port_memory`.
    pub(super) fn save_service_ports(&mut self) {
        self.service_ports.forget_older(
            self.settings.live.service_port_memory,
            crate::clock::unix_ms(),
        );
        let text = self.service_ports.to_json();
        let unchanged = self
            .service_ports_written
            .as_ref()
            .is_some_and(|(_, t)| *t == text);
        let dir = self.settings.startup.state_dir.clone();
        let path = dir.join(service_ports::FILE);
        // Nothing to remember and no file: none is made.
        let result = if unchanged || (self.service_ports.is_empty() && !path.exists()) {
            Ok(())
        } else {
            std::fs::create_dir_all(&dir)
                .and_then(|()| write_atomic(&dir, service_ports::FILE, text.as_bytes()))
        };
        match result {
            Ok(()) => {
                self.service_ports_new = None;
                self.service_ports_written = Some((Instant::now(), text));
            }
            Err(e) => {
                self.service_ports_new = Some(Instant::now());
                if self.save_error_report.try_report().is_some() {
                    crate::errln!(
                        "portsentry: error: saving the service-port memory to {}: {e} (kept in memory; retried)",
                        path.display()
                    );
                }
            }
        }
    }

    /// Removes expired bans (they already stopped dropping) and reconciles book and kernel.
    pub(super) fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        self.unenforced.forget_expired(crate::clock::unix_ms());
        self.classic_history.forget_expired(crate::clock::unix_ms());
        self.prefixes
            .forget_stale(crate::clock::unix_ms(), self.prefix_rule().window_ms);
        self.book.forget_offences(
            &crate::bans::RecidivePolicy::from(&self.settings.live),
            crate::clock::unix_ms(),
        );
        // The ban book's part goes on a step per loop turn ([`Daemon::sweep_step`]).
        self.sweep.get_or_insert_with(Default::default);
        self.sweep_step();
    }

    /// The next part of the ban book's sweep, if one is under way.
    pub(super) fn sweep_step(&mut self) {
        let Some(s) = self.sweep.as_mut() else {
            return;
        };
        match self
            .book
            .sweep_step(&mut self.dp, &Now::read(), s, SWEEP_STEP)
        {
            Ok(None) => {}
            Ok(Some(n)) => {
                self.sweep = None;
                // Adopted kernel bans and dropped unbans change the book without expiring
                // anything: saved now too, not at the next sweep.
                if n > 0 || self.book.is_dirty() {
                    self.mark_dirty();
                }
            }
            Err(e) => {
                self.sweep = None;
                crate::errln!("portsentry: error: sweeping expired bans: {e:#}");
            }
        }
    }

    /// Starts a save if the book changed since the last one: the copy begins now (a small book
    /// is copied at once) and goes on a step per loop turn ([`Daemon::snapshot_step`]).
    pub(super) fn save(&mut self) {
        if let Some(fleet) = &self.fleet {
            fleet.persist();
        }
        if self.snapshot.is_some() || (!self.book.is_dirty() && self.dirty_since.is_none()) {
            return;
        }
        self.copies_begun += 1;
        self.snapshot = Some((self.copies_begun, self.book.begin_snapshot()));
        self.dirty_since = None;
        self.snapshot_step();
    }

    /// Copies the next part of the book; a finished copy goes to the writer thread.
    pub(super) fn snapshot_step(&mut self) {
        let Some((generation, s)) = self.snapshot.as_mut() else {
            return;
        };
        let Some(saved) = self.book.snapshot_step(s, SNAPSHOT_STEP) else {
            return;
        };
        let generation = *generation;
        self.snapshot = None;
        self.saver.submit(generation, saved);
        if std::mem::take(&mut self.copy_again) {
            self.mark_dirty();
            self.save();
        }
    }

    /// Saves what the book holds now and answers `reply` once it is written: a verb's change
    /// must survive a crash right after the answer. The loop goes on meanwhile.
    pub(super) fn save_then_reply(
        &mut self,
        reply: tokio::sync::oneshot::Sender<crate::control::Reply>,
        answer: crate::control::Reply,
    ) {
        let generation = if self.snapshot.is_some() {
            // The copy under way may have passed the change: another one follows it.
            self.copy_again = true;
            self.copies_begun + 1
        } else {
            self.mark_dirty();
            self.save();
            self.copies_begun
        };
        self.save_waiters.push((generation, reply, answer));
    }

    /// A write ended: errors are logged (once per report interval) and the save retried later;
    /// answers waiting for this copy are sent.
    pub(super) fn on_saved(&mut self, done: super::saver::SaveDone) {
        self.last_save = Some((done.ended, done.took));
        match done.result {
            Ok(()) => {
                self.save_retry_at = None;
            }
            // Stay dirty and retry a little later; enforcement is unaffected.
            Err(e) => {
                self.mark_dirty();
                self.save_retry_at = Some(Instant::now() + SAVE_RETRY);
                if self.save_error_report.try_report().is_some() {
                    crate::errln!("portsentry: error: saving bans: {e:#} (retrying every {}s; enforcement continues)", SAVE_RETRY.as_secs());
                }
            }
        }
        let (ready, waiting) = std::mem::take(&mut self.save_waiters)
            .into_iter()
            .partition(|(g, _, _)| *g <= done.generation);
        self.save_waiters = waiting;
        for (_, reply, answer) in ready {
            let _ = reply.send(answer);
        }
    }

    /// At stop: saves the whole book at once if it changed (a copy under way is taken again in
    /// full), and returns when the writer thread has written it and ended.
    pub(super) fn save_and_finish(
        &mut self,
        done: &mut tokio::sync::mpsc::UnboundedReceiver<super::saver::SaveDone>,
    ) {
        if let Some(fleet) = &self.fleet {
            fleet.persist();
        }
        if self.snapshot.take().is_some() || self.book.is_dirty() || self.dirty_since.is_some() {
            self.copies_begun += 1;
            let saved = self.book.snapshot();
            self.dirty_since = None;
            self.saver.submit(self.copies_begun, saved);
        }
        self.saver.finish();
        while let Ok(d) = done.try_recv() {
            self.on_saved(d);
        }
        for (_, reply, answer) in std::mem::take(&mut self.save_waiters) {
            let _ = reply.send(answer);
        }
    }
}
