//! [`DaemonArgs`]: the one builder of a test daemon's command line, so every suite spells
//! `portsentry run` the same way and [`DaemonArgs::start`] can check what every test daemon
//! needs (its own state directory).
//!
//! ```no_run
//! # use portsentry_tests::lab::{DaemonArgs, Lab, TempDir};
//! # let lab = Lab::new(1).unwrap();
//! # let dir = TempDir::new("doc").unwrap();
//! let d = DaemonArgs::new(&lab)
//!     .iface()
//!     .tcp_ports("111")
//!     .no_auto_allow()
//!     .state_dir(&dir.path)
//!     .no_pin()
//!     .args(["--ban-ttl", "3s"])
//!     .start()
//!     .unwrap();
//! ```

use std::{path::Path, time::Duration};

use anyhow::{bail, Result};

use super::{portsentry_bin, Daemon, Lab, Netns};

/// How long [`DaemonArgs::start`] waits for READY=1 unless told otherwise.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// `portsentry run` and its flags, in the order given, for a daemon in a lab's protected
/// namespace.
#[derive(Clone, Debug)]
pub struct DaemonArgs {
    ns: Netns,
    iface: String,
    /// A program (and its arguments) that runs portsentry, e.g. `setpriv …`; empty: none.
    wrapper: Vec<String>,
    /// After `run`.
    args: Vec<String>,
    ready_within: Duration,
}

impl DaemonArgs {
    /// `portsentry run` in `lab`'s protected namespace, no flags yet.
    pub fn new(lab: &Lab) -> Self {
        Self {
            ns: lab.protected.clone(),
            iface: lab.iface.clone(),
            wrapper: Vec::new(),
            args: Vec::new(),
            ready_within: READY_WITHIN,
        }
    }

    /// `--iface IF` with the lab's protected interface.
    pub fn iface(self) -> Self {
        let iface = self.iface.clone();
        self.args(["--iface", &iface])
    }

    /// `--config PATH`.
    pub fn config(self, path: impl AsRef<Path>) -> Self {
        self.args(["--config", &path.as_ref().display().to_string()])
    }

    /// `--tcp-ports LIST`.
    pub fn tcp_ports(self, list: &str) -> Self {
        self.args(["--tcp-ports", list])
    }

    /// `--udp-ports LIST`.
    pub fn udp_ports(self, list: &str) -> Self {
        self.args(["--udp-ports", list])
    }

    /// `--no-auto-allow`.
    pub fn no_auto_allow(self) -> Self {
        self.arg("--no-auto-allow")
    }

    /// `--state-dir DIR`.
    pub fn state_dir(self, dir: impl AsRef<Path>) -> Self {
        self.args(["--state-dir", &dir.as_ref().display().to_string()])
    }

    /// `--pin-dir DIR`, or `--no-pin` for `None`.
    pub fn pin_dir(self, dir: Option<&Path>) -> Self {
        match dir {
            Some(dir) => self.args(["--pin-dir", &dir.display().to_string()]),
            None => self.no_pin(),
        }
    }

    /// `--no-pin`.
    pub fn no_pin(self) -> Self {
        self.arg("--no-pin")
    }

    /// `--history-file PATH`.
    pub fn history_file(self, path: impl AsRef<Path>) -> Self {
        self.args(["--history-file", &path.as_ref().display().to_string()])
    }

    /// One more argument, as is.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More arguments, as they are.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs portsentry as `PROGRAM ARGS… portsentry run …` (e.g. `setpriv` with capability
    /// options).
    pub fn wrapped_in(mut self, program: &str, args: &[&str]) -> Self {
        self.wrapper = std::iter::once(program)
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        self
    }

    /// How long [`DaemonArgs::start`] waits for READY=1 (default 20 s).
    pub fn ready_within(mut self, timeout: Duration) -> Self {
        self.ready_within = timeout;
        self
    }

    /// portsentry's own arguments: `run` and the flags.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once("run".to_owned())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// Starts the daemon and waits until it sends READY=1; fails with its exit status and
    /// output if it exits first, or with its output after the timeout.
    pub fn start(&self) -> Result<Daemon> {
        self.check_state_dir()?;
        let bin = portsentry_bin().display().to_string();
        let (program, mut args) = match self.wrapper.split_first() {
            Some((program, pre)) => (program.clone(), [pre, &[bin]].concat()),
            None => (bin, Vec::new()),
        };
        args.extend(self.argv());
        Daemon::spawn(&self.ns, &program, &args, self.ready_within)
    }

    /// A test daemon must keep its bans in its own directory: the default state_dir
    /// (/var/lib/portsentry) would leak bans into the next test run, and into the host's real
    /// daemon.
    fn check_state_dir(&self) -> Result<()> {
        if self.args.iter().any(|a| a == "--state-dir") {
            return Ok(());
        }
        let config = self
            .args
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| self.args.get(i + 1));
        match config {
            Some(path) if std::fs::read_to_string(path)?.contains("state_dir") => Ok(()),
            _ => bail!(
                "test daemon without --state-dir or a config setting state_dir: {:?}",
                self.argv()
            ),
        }
    }
}
