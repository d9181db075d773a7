//! A `portsentry run` process in a namespace, started by [`DaemonArgs::start`].
//!
//! Readiness is systemd's protocol, not a log line: the test binds a unix datagram socket in a
//! temporary directory and passes it as `NOTIFY_SOCKET` (`ip netns exec` and wrappers such as
//! `setpriv` keep the environment; a path socket works across network namespaces). The daemon
//! sends READY=1 once every interface is attached, the maps are configured and its control
//! socket listens, and STOPPING=1 when shutdown begins. A daemon that exits before READY=1 is
//! reported with its exit status and output.
//!
//! [`DaemonArgs::start`]: super::DaemonArgs::start

use std::{
    io::ErrorKind,
    os::unix::net::UnixDatagram,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use super::{output::Output, Netns, TempDir};

/// A running `portsentry run`, its output collected line by line; killed on drop.
pub struct Daemon {
    child: Child,
    output: Output,
    notify: NotifySocket,
}

impl Daemon {
    /// Starts `PROGRAM ARGS` in `ns` with a notify socket and waits up to `ready_within` for
    /// READY=1.
    pub(super) fn spawn(
        ns: &Netns,
        program: &str,
        args: &[String],
        ready_within: Duration,
    ) -> Result<Self> {
        let notify = NotifySocket::new()?;
        let mut child = ns
            .command(program)
            .args(args)
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting portsentry")?;
        let output = match Output::capture(&mut child) {
            Ok(o) => o,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let mut d = Self {
            child,
            output,
            notify,
        };
        d.wait_ready(ready_within)
            .with_context(|| format!("{program} {}", args.join(" ")))?;
        Ok(d)
    }

    /// Waits for READY=1, failing early if the process exits first.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.notify.receive();
            if self.notify.has("READY=1") {
                // Every line written before READY=1 is in the pipes now: take it in.
                self.output.sync();
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "portsentry exited before it was ready ({status}); output:\n{}",
                    self.output()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "portsentry sent no READY=1 within {timeout:?}; notifications {:?}; output:\n{}",
                    self.notify.received,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the daemon sent on its notify socket so far, one `VARIABLE=value` each
    /// (`READY=1`, `STATUS=…`, `STOPPING=1`), in order.
    pub fn notifications(&mut self) -> Vec<String> {
        self.notify.receive();
        self.notify.received.clone()
    }

    pub fn output(&self) -> String {
        self.output.with_lines(|l| l.join("\n"))
    }

    pub fn has_line(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.output.with_lines(|l| l.iter().any(|x| pred(x)))
    }

    /// Lines that satisfy `pred`, in order.
    pub fn lines_matching(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        self.output
            .with_lines(|l| l.iter().filter(|x| pred(x)).cloned().collect())
    }

    /// Waits until a line satisfies `pred` or the process exits. For log events (a ban, a
    /// reload); readiness is READY=1, which `start` already waited for.
    pub fn wait_for_line(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.has_line(&pred) {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                thread::sleep(Duration::from_millis(100)); // output of processes it started
                return self.has_line(&pred);
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends SIGTERM and waits for exit; returns the exit code.
    pub fn stop(&mut self) -> Result<Option<i32>> {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        bail!("portsentry did not stop within 10 s of SIGTERM")
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the daemon with SIGKILL (no cleanup runs) and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident memory of the daemon in KiB (VmRSS).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The socket a daemon sends its notifications to (`$NOTIFY_SOCKET`), in a directory of its
/// own that goes with it.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    received: Vec<String>,
    _dir: TempDir,
}

impl NotifySocket {
    fn new() -> Result<Self> {
        let dir = TempDir::new("notify")?;
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path)
            .with_context(|| format!("binding the notify socket {}", path.display()))?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            path,
            received: Vec::new(),
            _dir: dir,
        })
    }

    /// Takes in every datagram already queued (each is newline-separated assignments).
    fn receive(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => self.received.extend(
                    String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned),
                ),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn has(&self, assignment: &str) -> bool {
        self.received.iter().any(|l| l == assignment)
    }
}
