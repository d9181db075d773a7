//! The service-port keeper: advanced mode's guarded ports follow the listening sockets and the
//! service-port memory (`state_dir/service_ports.json`: every port seen listening and when),
//! loaded at start, written soon after a new port is seen, otherwise every few minutes and at
//! stop.
//!
//! Owns the sockets last read, the memory, the ports it counts as services and when it was
//! last written. Writes the guarded ports through `guard`; the rules are
//! `net::service_ports`' and `net::listening`'s.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{guard, persist::SAVE_DEBOUNCE};
use crate::{
    bans::store::write_atomic,
    config::settings::LiveSettings,
    dataplane::Dataplane,
    net::{
        listening::Listening,
        service_ports::{self, ServicePorts},
    },
    report::ReportGate,
};

/// The service-port memory is written soon after a new port, otherwise (refreshed times only)
/// at most this often, and at stop.
const SERVICE_PORTS_REFRESH: Duration = Duration::from_secs(600);

/// The listening sockets and the service-port memory.
pub(super) struct ServicePortKeeper {
    state_dir: PathBuf,
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
        let mut service_ports = load_service_ports(state_dir);
        service_ports.observe(&listening, crate::clock::unix_ms());
        Self {
            state_dir: state_dir.to_owned(),
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
        let dir = self.state_dir.clone();
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
                if errors.try_report().is_some() {
                    crate::errln!(
                        "portsentry: error: saving the service-port memory to {}: {e} (kept in memory; retried)",
                        path.display()
                    );
                }
            }
        }
    }
}

/// The service-port memory of the last run; a damaged file is kept aside (with an error line)
/// and the memory starts empty, as a damaged `bans.json` does not stop the daemon either.
fn load_service_ports(state_dir: &Path) -> ServicePorts {
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
