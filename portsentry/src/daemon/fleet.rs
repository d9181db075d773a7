//! Fleet mode in the daemon (`[crowdsec]`): the decisions pulled from LAPI applied through the
//! ban book a step per loop turn, and the local bans pushed as alerts.
//!
//! Owns the [`Fleet`] and the update being applied. Borrows the ban book and the maps per
//! step; the lines it hands back the daemon writes.

use std::path::Path;

use anyhow::Result;

use crate::{
    bans::{BanBook, BanNotice, FleetBatch},
    config::settings::CrowdsecSettings,
    dataplane::Dataplane,
    detect::logging::LogFn,
    fleet::{crowdsec::decisions::FleetUpdate, Fleet, FleetCounters},
};

/// What one step of a pulled update did.
pub(super) enum Stepped {
    /// No update is being applied.
    Idle,
    /// A step was applied (the book may have changed); the update's lines once it is done.
    Applied(Vec<String>),
}

/// Fleet mode, when configured.
#[derive(Default)]
pub(super) struct FleetLink {
    fleet: Option<Fleet>,
    /// The pulled update being applied, a step per loop turn; the next is received after it.
    batch: Option<FleetBatch>,
}

impl FleetLink {
    /// Starts fleet mode and says how it runs.
    pub fn start(&mut self, c: &CrowdsecSettings, state_dir: &Path, log: LogFn) -> Result<()> {
        let fleet = Fleet::start(c, state_dir, log)?;
        crate::errln!("{}", fleet.describe());
        self.fleet = Some(fleet);
        Ok(())
    }

    /// An update is being applied.
    pub fn busy(&self) -> bool {
        self.batch.is_some()
    }

    /// Waits for the next pulled update, or forever without a bouncer.
    pub async fn next_update(&mut self) -> Option<FleetUpdate> {
        match self.fleet.as_mut().and_then(|f| f.updates.as_mut()) {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Starts enforcing decisions pulled from LAPI; [`Self::step`] applies them a step per
    /// loop turn. A large update's announcement line, if any.
    pub fn begin(&mut self, update: FleetUpdate) -> Option<String> {
        let fleet = self.fleet.as_mut()?;
        let (batch, line) = fleet.begin(update);
        self.batch = Some(batch);
        line
    }

    /// Applies the next step of the update in progress (a bounded amount of work: the loop
    /// serves probes, signals and the control socket between steps). Decisions covering a
    /// learned peer current within `peer_ttl_ns` (the settings' `peer_memory`) are refused.
    pub fn step(&mut self, book: &mut BanBook, dp: &mut Dataplane, peer_ttl_ns: u64) -> Stepped {
        let (Some(fleet), Some(batch)) = (self.fleet.as_mut(), self.batch.as_mut()) else {
            self.batch = None;
            return Stepped::Idle;
        };
        match fleet.step(book, dp, batch, peer_ttl_ns) {
            Ok(None) => Stepped::Applied(Vec::new()),
            Ok(Some(lines)) => {
                self.batch = None;
                Stepped::Applied(lines)
            }
            Err(e) => {
                self.batch = None;
                crate::errln!("portsentry: error: crowdsec: applying decisions: {e:#}");
                Stepped::Applied(Vec::new())
            }
        }
    }

    /// A local ban, for the fleet's alert (verified sources only, within its cap).
    pub fn on_local_ban(&mut self, notice: &BanNotice) {
        if let Some(fleet) = &mut self.fleet {
            fleet.on_local_ban(notice);
        }
    }

    pub fn counters(&self) -> Option<FleetCounters> {
        self.fleet.as_ref().map(Fleet::counters)
    }

    /// Writes the alert queue if it changed (with every save of the book).
    pub fn persist(&self) {
        if let Some(fleet) = &self.fleet {
            fleet.persist();
        }
    }

    /// Says how many alerts the cap held back, when due.
    pub fn flush_cap_report(&mut self) {
        if let Some(fleet) = self.fleet.as_mut() {
            fleet.flush_cap_report();
        }
    }

    /// Stops the fleet's workers (at stop).
    pub fn stop(&mut self) {
        if let Some(fleet) = self.fleet.as_mut() {
            fleet.stop();
        }
    }
}
