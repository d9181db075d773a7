//! The service-port keeper: advanced mode's guarded ports follow the listening sockets and the
//! service-port memory (`state_dir/service_ports.json`: every port seen listening and when),
//! loaded at start, written soon after a new port is seen, otherwise every few minutes and at
//! stop.
//!
//! Owns the sockets last read, the memory, the ports it counts as services and when it was
//! last written. Writes the guarded ports through `guard`; the rules are
//! `net::service_ports`' and `net::listening`'s; writing the file and keeping aside a damaged
//! or newer one at start are `crate::state_file`'s.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{guard, persist::SAVE_DEBOUNCE};
use crate::{
    config::settings::LiveSettings,
    dataplane::Dataplane,
    net::{
        listening::Listening,
        service_ports::{self, ServicePorts},
    },
    report::ReportGate,
    state_file::{json_version, StateFile, Unfit},
};

/// The service-port memory is written soon after a new port, otherwise (refreshed times only)
/// at most this often, and at stop.
const SERVICE_PORTS_REFRESH: Duration = Duration::from_secs(600);

/// The listening sockets and the service-port memory.
pub(super) struct ServicePortKeeper {
    /// `state_dir/service_ports.json`.
    file: StateFile,
    listening: Listening,
    /// Every port seen listening and when (advanced mode's service-port memory), and the ports
    /// it currently counts as services.
    service_ports: ServicePorts,
    remembered: Listening,
    /// A port was first seen since the memory was last written.
    service_ports_new: Option<Instant>,
    /// When the memory was last written, and what.
    service_ports_written: Option<(Instant, String)>,
}

impl ServicePortKeeper {
    /// The last run's memory and the sockets listening now.
    pub fn start(state_dir: &Path) -> Self {
        let listening = Listening::read();
        let file = StateFile::new(state_dir, service_ports::FILE, "service-port memory");
        // Never fatal (a damaged bans.json is not either): the memory starts empty.
        let mut service_ports = file
            .open(parse)
            .unwrap_or_else(|unusable| {
                crate::errln!(
                    "{}",
                    unusable.line("advanced mode starts without remembered service ports")
                );
                None
            })
            .unwrap_or_default();
        service_ports.observe(&listening, crate::clock::unix_ms());
        Self {
            file,
            listening,
            service_ports,
            remembered: Listening::default(),
            service_ports_new: None,
            service_ports_written: None,
        }
    }

    /// The sockets listening at the last poll.
    pub fn listening(&self) -> &Listening {
        &self.listening
    }

    /// The ports the memory counts as services (at the last recomputation).
    pub fn remembered(&self) -> &Listening {
        &self.remembered
    }

    /// Recomputes the ports the service-port memory counts as services now; true if they
    /// changed.
    pub fn recompute_remembered(&mut self, live: &LiveSettings) -> bool {
        let remembered = self
            .service_ports
            .remembered(live.service_port_memory, crate::clock::unix_ms());
        let changed = remembered != self.remembered;
        self.remembered = remembered;
        changed
    }

    /// Reads the listening sockets; when they or the remembered services changed, rewrites the
    /// guarded ports.
    pub fn poll(&mut self, dp: &mut Dataplane, live: &LiveSettings) {
        let now = Listening::read();
        if self.service_ports.observe(&now, crate::clock::unix_ms()) {
            self.service_ports_new.get_or_insert_with(Instant::now);
        }
        let remembered_changed = self.recompute_remembered(live);
        if now != self.listening || remembered_changed {
            self.listening = now;
            if let Err(e) = self.write_ports(dp, live) {
                crate::errln!("portsentry: error: updating guarded ports: {e:#}");
            }
        }
    }

    /// Recomputes the guarded ports from the settings, the listening sockets and the ports
    /// remembered as services.
    fn write_ports(&self, dp: &mut Dataplane, live: &LiveSettings) -> Result<()> {
        guard::write_ports(dp, live, &self.listening, &self.remembered)?;
        Ok(())
    }

    /// Whether the memory is due for writing: a new port, or the refresh at a sweep.
    pub fn save_due(&self, sweep_due: bool) -> bool {
        self.service_ports_new
            .is_some_and(|t| t.elapsed() >= SAVE_DEBOUNCE)
            || (sweep_due
                && self
                    .service_ports_written
                    .as_ref()
                    .is_none_or(|(t, _)| t.elapsed() >= SERVICE_PORTS_REFRESH))
    }

    /// Writes the service-port memory if it changed since the last write, forgetting first the
    /// ports not seen within `service_port_memory`; a failure is reported through `errors`.
    pub fn save(&mut self, live: &LiveSettings, errors: &mut ReportGate) {
        self.service_ports
            .forget_older(live.service_port_memory, crate::clock::unix_ms());
        let text = self.service_ports.to_json();
        let unchanged = self
            .service_ports_written
            .as_ref()
            .is_some_and(|(_, t)| *t == text);
        // Nothing to remember and no file: none is made.
        let result = if unchanged || (self.service_ports.is_empty() && !self.file.path().exists()) {
            Ok(())
        } else {
            self.file.write(text.as_bytes())
        };
        match result {
            Ok(()) => {
                self.service_ports_new = None;
                self.service_ports_written = Some((Instant::now(), text));
            }
            Err(e) => {
                self.service_ports_new = Some(Instant::now());
                if errors.try_report().is_some() {
                    // `e` starts with the file's path.
                    crate::errln!(
                        "portsentry: error: saving the service-port memory to {e} (kept in memory; retried)"
                    );
                }
            }
        }
    }
}

/// The service-port memory's text (`net::service_ports`' format, version checked here so that a
/// newer file is kept aside as one).
fn parse(text: &str) -> Result<ServicePorts, Unfit> {
    json_version(text, service_ports::VERSION, service_ports::VERSION)?;
    ServicePorts::from_json(text).map_err(Unfit::Corrupt)
}
