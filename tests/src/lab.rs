//! A two-host lab on one machine: a protected namespace and a scanner namespace joined by a veth
//! pair. Names are unique per lab; everything is removed on drop, also when a test panics.
//! Traffic never leaves these namespaces.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr, TcpListener},
    os::fd::AsFd,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A veth pair from `a_dev` in namespace `a_ns` to `b_dev` in `b_ns`, both ends up.
pub fn veth_pair(a_ns: &str, a_dev: &str, b_ns: &str, b_dev: &str) -> Result<()> {
    ip(&[
        "link", "add", a_dev, "netns", a_ns, "type", "veth", "peer", "name", b_dev, "netns", b_ns,
    ])?;
    ip(&["-n", a_ns, "link", "set", a_dev, "up"])?;
    ip(&["-n", b_ns, "link", "set", b_dev, "up"])
}

/// A named network namespace.
#[derive(Clone, Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Runs `f` on a thread that has entered this namespace; sockets it makes live there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let ns = File::open(&path).expect("netns file");
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread panicked")
    }

    /// `ip netns exec NAME ARGS…` as a command to configure further.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Attempts a TCP connect from `src` (an address of this namespace) to `dst`.
    pub fn tcp_connect(&self, src: IpAddr, dst: SocketAddr, timeout: Duration) -> bool {
        self.run(move || {
            use socket2::{Domain, Socket, Type};
            let domain = if dst.is_ipv4() {
                Domain::IPV4
            } else {
                Domain::IPV6
            };
            let Ok(sock) = Socket::new(domain, Type::STREAM, None) else {
                return false;
            };
            if sock.bind(&SocketAddr::new(src, 0).into()).is_err() {
                return false;
            }
            sock.connect_timeout(&dst.into(), timeout).is_ok()
        })
    }

    /// A TCP service that accepts and closes connections until the returned guard drops.
    pub fn tcp_service(&self, addr: SocketAddr) -> Service {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        let path = format!("/run/netns/{}", self.name);
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let ns = File::open(&path).expect("netns file");
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
            let listener = TcpListener::bind(addr).expect("bind test service");
            listener.set_nonblocking(true).expect("nonblocking");
            tx.send(()).ok();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("service started");
        Service { stop, accepted }
    }
}

/// A running test service; stops on drop.
pub struct Service {
    stop: Arc<AtomicBool>,
    pub accepted: Arc<AtomicUsize>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Two namespaces and a veth pair: `protected` (10.77.N.1, fd77:N::1) and `scanner`
/// (10.77.N.2.., fd77:N::2..) with each other as default route.
pub struct Lab {
    pub protected: Netns,
    pub scanner: Netns,
    /// The protected side's interface.
    pub iface: String,
    /// The scanner side's interface.
    pub scanner_iface: String,
    pub protected_v4: IpAddr,
    pub protected_v6: IpAddr,
    /// Scanner addresses: index 0 is the primary; more are aliases so cases do not share a ban.
    pub scanner_v4: Vec<IpAddr>,
    pub scanner_v6: Vec<IpAddr>,
}

impl Lab {
    /// A lab whose scanner has `aliases` IPv4 and IPv6 addresses.
    pub fn new(aliases: usize) -> Result<Self> {
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}x{n}", std::process::id() % 100_000);
        let lab = Self {
            protected: Netns {
                name: format!("psp{id}"),
            },
            scanner: Netns {
                name: format!("pss{id}"),
            },
            iface: format!("vp{id}"),
            scanner_iface: format!("vs{id}"),
            protected_v4: "10.77.0.1".parse()?,
            protected_v6: "fd77::1".parse()?,
            scanner_v4: (0..aliases.max(1))
                .map(|i| format!("10.77.0.{}", i + 2).parse())
                .collect::<Result<_, _>>()?,
            scanner_v6: (0..aliases.max(1))
                .map(|i| format!("fd77::{:x}", i + 2).parse())
                .collect::<Result<_, _>>()?,
        };
        // From here on, Drop cleans up whatever was created.
        lab.create()?;
        Ok(lab)
    }

    fn create(&self) -> Result<()> {
        let (p, s) = (&self.protected.name, &self.scanner.name);
        let peer = self.scanner_iface.clone();
        ip(&["netns", "add", p])?;
        ip(&["netns", "add", s])?;
        for ns in [p, s] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        veth_pair(p, &self.iface, s, &peer)?;
        ip(&["-n", p, "addr", "add", "10.77.0.1/24", "dev", &self.iface])?;
        ip(&[
            "-n",
            p,
            "addr",
            "add",
            "fd77::1/64",
            "dev",
            &self.iface,
            "nodad",
        ])?;
        for a in &self.scanner_v4 {
            ip(&["-n", s, "addr", "add", &format!("{a}/24"), "dev", &peer])?;
        }
        for a in &self.scanner_v6 {
            ip(&[
                "-n",
                s,
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                &peer,
                "nodad",
            ])?;
        }
        ip(&["-n", p, "route", "add", "default", "via", "10.77.0.2"])?;
        ip(&["-n", s, "route", "add", "default", "via", "10.77.0.1"])?;
        self.pin_neighbours()?;
        self.wait_until_up()
    }

    /// Waits until both ends can carry traffic: carrier up and a real qdisc attached. Until the
    /// kernel's link watcher has run, a fresh veth has the `noop` qdisc, which silently drops
    /// everything, so a test's first SYN could be lost and its connect time out.
    fn wait_until_up(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for (ns, dev) in [
            (&self.protected.name, &self.iface),
            (&self.scanner.name, &self.scanner_iface),
        ] {
            loop {
                let out = Command::new("ip")
                    .args(["-n", ns, "link", "show", "dev", dev])
                    .output()?;
                let text = String::from_utf8_lossy(&out.stdout);
                if text.contains("state UP") && !text.contains("qdisc noop") {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("{dev} in {ns} did not come up within 5 s: {text}");
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Permanent neighbour entries on the scanner side for the protected addresses. A banned
    /// IPv6 source cannot complete neighbour discovery (its solicitations are dropped too), so
    /// without this a scanner could not even send the probes a test wants to see unanswered.
    fn pin_neighbours(&self) -> Result<()> {
        let out = Command::new("ip")
            .args(["-n", &self.protected.name, "link", "show", &self.iface])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .context("protected interface has no MAC address")?
            .to_owned();
        for addr in [self.protected_v4, self.protected_v6] {
            let a = addr.to_string();
            ip(&[
                "-n",
                &self.scanner.name,
                "neigh",
                "replace",
                &a,
                "lladdr",
                &mac,
                "dev",
                &self.scanner_iface,
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    /// Re-creates the veth pair after `remove_link` (same names and addresses).
    pub fn recreate_link(&self) -> Result<()> {
        let (p, s) = (&self.protected.name, &self.scanner.name);
        veth_pair(p, &self.iface, s, &self.scanner_iface)?;
        ip(&["-n", p, "addr", "add", "10.77.0.1/24", "dev", &self.iface])?;
        for a in &self.scanner_v4 {
            ip(&[
                "-n",
                s,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                &self.scanner_iface,
            ])?;
        }
        ip(&["-n", p, "route", "add", "default", "via", "10.77.0.2"])?;
        ip(&["-n", s, "route", "add", "default", "via", "10.77.0.1"])?;
        self.pin_neighbours()?;
        self.wait_until_up()
    }

    /// Points the protected side's default route at `via` (a new gateway, as a DHCP renewal or
    /// a failover would): `ip -n <protected> route replace default via VIA`.
    pub fn route_replace_default(&self, via: IpAddr) -> Result<()> {
        ip(&[
            "-n",
            &self.protected.name,
            "route",
            "replace",
            "default",
            "via",
            &via.to_string(),
        ])
    }

    /// Deletes the veth pair (both ends).
    pub fn remove_link(&self) -> Result<()> {
        ip(&["-n", &self.protected.name, "link", "del", &self.iface])
    }

    /// Whether an XDP program is attached to the protected interface.
    pub fn xdp_attached(&self) -> Result<bool> {
        let out = Command::new("ip")
            .args(["-n", &self.protected.name, "link", "show", &self.iface])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).contains("xdp"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the peer.
        let _ = ip(&["netns", "del", &self.protected.name]);
        let _ = ip(&["netns", "del", &self.scanner.name]);
    }
}

/// A bpffs instance mounted on a fresh directory in the root mount namespace, visible to every
/// `ip netns exec` (they copy the root namespace's mounts). Unmounted and removed on drop.
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    pub fn new() -> Result<Self> {
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("portsentry-pins-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        nix::mount::mount(
            Some("bpf"),
            &path,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .context("mounting bpffs for the test")?;
        Ok(Self { path })
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The `portsentry` binary built by `cargo xtask test`.
pub fn portsentry_bin() -> PathBuf {
    match std::env::var_os("PORTSENTRY_BIN") {
        Some(p) => PathBuf::from(p),
        None => panic!("PORTSENTRY_BIN is not set: run the tests with `cargo xtask test`"),
    }
}

/// A `portsentry run` process in a namespace, its output collected line by line.
pub struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `portsentry ARGS` in `ns` and waits until it reports being active.
    pub fn start(ns: &Netns, args: &[&str]) -> Result<Self> {
        Self::start_program(ns, &portsentry_bin().to_string_lossy(), args)
    }

    /// Starts `PROGRAM ARGS` (a wrapper that ends up running portsentry) in `ns`.
    pub fn start_program(ns: &Netns, program: &str, args: &[&str]) -> Result<Self> {
        check_state_dir(args)?;
        let mut child = ns
            .command(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting portsentry")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(line);
                }
            });
        }
        let mut d = Self { child, lines };
        if !d.wait_for_line(
            |l| l == "Portsentry is now active and listening.",
            Duration::from_secs(20),
        ) {
            bail!("portsentry did not become active; output:\n{}", d.output());
        }
        Ok(d)
    }

    pub fn output(&self) -> String {
        self.lines.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    pub fn has_line(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.lines
            .lock()
            .map(|l| l.iter().any(|x| pred(x)))
            .unwrap_or(false)
    }

    /// Waits until a line satisfies `pred` or the process exits.
    pub fn wait_for_line(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.has_line(&pred) {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                thread::sleep(Duration::from_millis(100)); // let the readers catch up
                return self.has_line(&pred);
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends SIGTERM and waits for exit; returns the exit code.
    pub fn stop(&mut self) -> Result<Option<i32>> {
        use nix::{
            sys::signal::{kill, Signal},
            unistd::Pid,
        };
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                thread::sleep(Duration::from_millis(100));
                return Ok(status.code());
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        bail!("portsentry did not stop within 10 s of SIGTERM")
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

/// A test daemon must keep its bans in its own directory: the default state_dir
/// (/var/lib/portsentry) would leak bans into the next test run, and into the host's real
/// daemon.
fn check_state_dir(args: &[&str]) -> Result<()> {
    if !args.contains(&"run") || args.contains(&"--state-dir") {
        return Ok(());
    }
    let config = args
        .iter()
        .position(|a| *a == "--config")
        .and_then(|i| args.get(i + 1));
    match config {
        Some(path) if std::fs::read_to_string(path)?.contains("state_dir") => Ok(()),
        _ => bail!("test daemon without --state-dir or a config setting state_dir: {args:?}"),
    }
}

/// Socket address helper.
pub fn sock(addr: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(addr, port)
}

/// A fresh directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("portsentry-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `text` to `name` in this directory and returns its path as a string.
    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.path.join(name);
        std::fs::write(&p, text).expect("writing test file");
        p.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs `PROGRAM ARGS` in `ns` to completion, bounded by `timeout`; returns (exit code, stdout).
pub fn run_in(ns: &Netns, program: &str, args: &[&str], timeout: Duration) -> (i32, String) {
    let secs = format!("{}", timeout.as_secs().max(1));
    let out = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "timeout", "-s", "KILL", &secs, program,
        ])
        .args(args)
        .output()
        .expect("running a tool in a namespace");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Runs `portsentry ARGS` to completion (in the root namespace) and returns exit code, stdout,
/// stderr.
pub fn portsentry(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(portsentry_bin())
        .args(args)
        .output()
        .expect("running portsentry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Daemon {
    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
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

    /// Lines that satisfy `pred`, in order.
    pub fn lines_matching(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().filter(|x| pred(x)).cloned().collect())
            .unwrap_or_default()
    }
}
