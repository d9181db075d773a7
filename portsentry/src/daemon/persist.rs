//! Keeping bans on disk: a debounced save after changes, retries after failures, and the
//! periodic sweep of expired bans (which also saves the learned peers if they changed). Also
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
            && self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= SAVE_DEBOUNCE)
            && self.save_retry_at.is_none_or(|t| Instant::now() >= t)
            && self
                .last_save
                .is_none_or(|(at, took)| at.elapsed() >= took * SAVE_COST_FACTOR);
        let sweep_due = !busy && self.last_sweep.elapsed() >= SWEEP_INTERVAL;
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
            &self.settings.live.recidive_policy(),
            crate::clock::unix_ms(),
        );
        match self.book.sweep(&mut self.dp, &Now::read()) {
            Ok(n) if n > 0 => self.mark_dirty(),
            Ok(_) => {}
            Err(e) => crate::errln!("portsentry: error: sweeping expired bans: {e:#}"),
        }
    }

    pub(super) fn save(&mut self) {
        if let Some(fleet) = &self.fleet {
            fleet.persist();
        }
        if !self.book.is_dirty() && self.dirty_since.is_none() {
            return;
        }
        let started = Instant::now();
        let saved = self.book.save();
        self.last_save = Some((Instant::now(), started.elapsed()));
        match saved {
            Ok(()) => {
                self.dirty_since = None;
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
    }
}
