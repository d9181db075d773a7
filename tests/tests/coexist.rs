//! Sharing the interface with other XDP programs (docs/DATAPLANE.md "Sharing the interface"):
//! a program that is not ours is never replaced, and where the kernel runs libxdp's
//! multi-program dispatcher, portsentry joins it beside xdp-filter (Debian's xdp-tools, staged
//! by `cargo xtask test` under target/test-tools) and leaves only its own program at exit.
//!
//! Which half runs depends on the kernel: this machine's 6.18 refuses freplace programs, so
//! xdp-filter attaches on its own and portsentry must refuse with one line; the VM kernels
//! (`cargo xtask test --kernel 6.1 -- --test coexist`) run the dispatcher and both programs.

use std::{path::PathBuf, time::Duration};

use portsentry_tests::{
    case::{self, SERVICE, TRAP},
    lab::{
        baseline_object, ip, portsentry_bin, run_in, sock, Daemon, DaemonArgs, Lab, PinDir,
        Service, TempDir,
    },
    skip::skip,
};

/// xdp-filter drops this destination port.
const FILTERED_PORT: u16 = 8081;
/// xdp-filter and portsentry in a VM under software emulation take seconds per step.
const TOOL_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a connect may take before it counts as dropped (seconds under emulation too).
const REACH_TIMEOUT: Duration = Duration::from_secs(2);

/// One xdp-tools command at a time: xdp-filter keeps a lock file outside bpffs, and two
/// started at once (tests run in parallel) fail with "Unable to read PID from lockfile".
static ONE_TOOL_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The staged xdp-tools and libxdp1 (`PORTSENTRY_XDP_TOOLS`).
struct XdpTools {
    sbin: PathBuf,
    lib: PathBuf,
    objects: PathBuf,
}

impl XdpTools {
    fn staged(test: &str) -> Option<Self> {
        let Some(root) = std::env::var_os("PORTSENTRY_XDP_TOOLS").map(PathBuf::from) else {
            skip(
                test,
                "PORTSENTRY_XDP_TOOLS is not set: run the tests with `cargo xtask test`",
            );
            return None;
        };
        let lib = root.join("libxdp1/usr/lib/x86_64-linux-gnu");
        Some(Self {
            sbin: root.join("xdp-tools/usr/sbin"),
            objects: lib.join("bpf"),
            lib,
        })
    }

    /// `sh -c SCRIPT` arguments that bind the lab's own bpffs onto /sys/fs/bpf (every `ip
    /// netns exec` mounts a fresh /sys, so this is how xdp-filter, xdp-loader and portsentry
    /// see one bpffs, as they would on a host) and run the rest with the staged libxdp.
    fn wrapper(&self, pins: &PinDir) -> Vec<String> {
        vec![
            "-c".into(),
            format!(
                "mount --bind \"$0\" /sys/fs/bpf && exec env LD_LIBRARY_PATH={} \
                 LIBXDP_OBJECT_PATH={} \"$@\"",
                self.lib.display(),
                self.objects.display()
            ),
            pins.path.display().to_string(),
        ]
    }

    /// Runs an xdp-tools program (`xdp-filter`, `xdp-loader`) in the protected namespace.
    fn run(&self, lab: &Lab, pins: &PinDir, tool: &str, args: &[&str]) -> (i32, String) {
        let mut argv = self.wrapper(pins);
        argv.push(self.sbin.join(tool).display().to_string());
        argv.extend(args.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let _one = ONE_TOOL_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        run_in(&lab.protected, "sh", &argv, TOOL_TIMEOUT)
    }

    /// `portsentry run ARGS` to completion (it is expected to refuse), in the same setting.
    fn portsentry(&self, lab: &Lab, pins: &PinDir, args: &DaemonArgs) -> (i32, String) {
        let mut argv = self.wrapper(pins);
        argv.push(portsentry_bin().display().to_string());
        argv.extend(args.argv());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        run_in(&lab.protected, "sh", &argv, TOOL_TIMEOUT)
    }
}

/// The id and name of the XDP program on the protected interface (`prog/xdp id N name X`).
fn attached_program(lab: &Lab) -> Option<(u32, String)> {
    let out = std::process::Command::new("ip")
        .args(["-n", &lab.protected.name, "link", "show", &lab.iface])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "prog/xdp")?;
    let id = words.get(at + 2)?.parse().ok()?;
    let name = words
        .iter()
        .position(|w| *w == "name")
        .and_then(|i| words.get(i + 1))
        .map_or_else(String::new, |n| n.to_string());
    Some((id, name))
}

/// The flags a daemon in the lab needs besides its wrapper: the case baseline as flags
/// (`--iface`, `--tcp-ports 111`, `--no-auto-allow`, `--state-dir`) and `--no-pin`.
fn daemon_args(lab: &Lab, dir: &TempDir) -> DaemonArgs {
    case::cli_args(lab, dir).no_pin()
}

/// A two-address lab with the xdp-tools staged, one bpffs that xdp-filter, xdp-loader and
/// portsentry all see, a state directory, and services on [`SERVICE`] and [`FILTERED_PORT`].
struct FilterLab {
    tools: XdpTools,
    lab: Lab,
    pins: PinDir,
    dir: TempDir,
    _services: [Service; 2],
}

impl FilterLab {
    /// `None` (the test skips, saying why) where the xdp-tools are not staged.
    fn new(test: &str, tag: &str) -> Option<Self> {
        let tools = XdpTools::staged(test)?;
        let lab = Lab::new(2).expect("lab");
        let pins = PinDir::new().expect("bpffs");
        let dir = TempDir::new(tag).expect("state dir");
        let _services = [SERVICE, FILTERED_PORT]
            .map(|port| lab.protected.tcp_service(sock(lab.protected_v4, port)));
        Some(Self {
            tools,
            lab,
            pins,
            dir,
            _services,
        })
    }

    /// `xdp-filter load IF`, then `xdp-filter port FILTERED_PORT`: both succeed.
    fn load_filter(&self) {
        let (code, out) = self.tool("xdp-filter", &["load", &self.lab.iface]);
        assert_eq!(code, 0, "xdp-filter load: {out}");
        let (code, out) = self.tool("xdp-filter", &["port", &FILTERED_PORT.to_string()]);
        assert_eq!(code, 0, "xdp-filter port: {out}");
    }

    /// Runs an xdp-tools program in the protected namespace.
    fn tool(&self, tool: &str, args: &[&str]) -> (i32, String) {
        self.tools.run(&self.lab, &self.pins, tool, args)
    }

    /// `xdp-loader status IF`, which succeeds.
    fn status(&self) -> String {
        let (code, status) = self.tool("xdp-loader", &["status", &self.lab.iface]);
        assert_eq!(code, 0, "xdp-loader status: {status}");
        status
    }

    /// `xdp-loader status` lists xdp-filter's program and ours; printed, labelled `when`.
    fn status_lists_both(&self, when: &str) {
        let status = self.status();
        assert!(
            status.contains("xdpfilt_") && status.contains("portsentry"),
            "xdp-loader status lists both; got:\n{status}"
        );
        eprintln!("xdp-loader status, {when}:\n{status}");
    }

    /// The daemon's flags ([`daemon_args`]).
    fn daemon_args(&self) -> DaemonArgs {
        daemon_args(&self.lab, &self.dir)
    }

    /// The daemon's flags, run inside the wrapper ([`XdpTools::wrapper`]) and given
    /// [`TOOL_TIMEOUT`] to be ready.
    fn wrapped_daemon(&self) -> DaemonArgs {
        let wrapper = self.tools.wrapper(&self.pins);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        self.daemon_args()
            .wrapped_in("sh", &wrapper)
            .ready_within(TOOL_TIMEOUT)
    }

    /// The scanner's first address (the one that gets banned) and its second (a bystander).
    fn scanner_and_bystander(&self) -> (std::net::IpAddr, std::net::IpAddr) {
        (self.lab.scanner_v4[0], self.lab.scanner_v4[1])
    }

    /// Whether a connect from `src` to the protected side's `port` completes.
    fn reach(&self, src: std::net::IpAddr, port: u16) -> bool {
        self.lab
            .scanner
            .tcp_connect(src, sock(self.lab.protected_v4, port), REACH_TIMEOUT)
    }

    /// With both programs on the interface: innocent traffic passes, xdp-filter drops its
    /// port, a probe of the trap port from the scanner times out and bans it (the ban line,
    /// within 30 s), and then its traffic to the service is dropped.
    fn both_verdicts_hold(&self, daemon: &mut Daemon) {
        let (scanner, bystander) = self.scanner_and_bystander();
        assert!(self.reach(bystander, SERVICE), "innocent traffic passes");
        assert!(
            !self.reach(bystander, FILTERED_PORT),
            "xdp-filter still drops its port"
        );
        assert!(!self.reach(scanner, TRAP), "trap port times out");
        let ban_line = format!(
            "attackalert: Host {scanner} has been blocked via XDP drop on interface: \"{}\"",
            self.lab.iface
        );
        daemon.expect_line_within("ban line", Duration::from_secs(30), |l| l == ban_line);
        assert!(
            !self.reach(scanner, SERVICE),
            "the banned scanner is dropped"
        );
    }

    /// Stops `daemon` (a clean exit); then only xdp-filter is on the interface, still dropping
    /// its port, and the scanner's ban left with portsentry.
    fn stop_leaves_only_xdp_filter(&self, mut daemon: Daemon) {
        daemon.stop_cleanly();
        let status = self.status();
        assert!(
            status.contains("xdpfilt_") && !status.contains("portsentry"),
            "after portsentry stops, xdp-filter is still attached and we are gone; got:\n{status}"
        );
        let (scanner, bystander) = self.scanner_and_bystander();
        assert!(
            !self.reach(bystander, FILTERED_PORT),
            "xdp-filter still drops its port"
        );
        assert!(self.reach(scanner, SERVICE), "our ban left with us");
    }
}

/// A plain XDP program attached with iproute2 (the empty `baseline`) is not ours: `portsentry
/// run` refuses with one line naming the interface, the program and what to do, exits non-zero
/// and leaves the program attached. (The code before this refused too, but with "attaching XDP
/// to IF: `bpf_link_create` failed: File exists".)
#[test]
fn a_foreign_program_is_never_replaced() {
    let lab = Lab::new(1).expect("lab");
    let dir = TempDir::new("coexist-foreign").expect("state dir");
    ip(&[
        "-n",
        &lab.protected.name,
        "link",
        "set",
        "dev",
        &lab.iface,
        "xdpdrv",
        "obj",
        &baseline_object().display().to_string(),
        "sec",
        "xdp",
    ])
    .expect("attaching the foreign program");
    let (id, name) = attached_program(&lab).expect("foreign program attached");
    assert_eq!(name, "baseline");

    let args = daemon_args(&lab, &dir).argv();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bin = portsentry_bin().display().to_string();
    let (code, output) = run_in(&lab.protected, &bin, &args, TOOL_TIMEOUT);
    assert_ne!(code, 0, "portsentry must refuse; output:\n{output}");
    let prefix = format!(
        "portsentry: error: {} already runs XDP program {id} (baseline), which is not \
         portsentry's: refusing to replace it. ",
        lab.iface
    );
    let refusal: Vec<&str> = output.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(refusal.len(), 1, "one refusal line; output:\n{output}");
    assert!(
        refusal[0].contains(&format!("ip link set dev {} xdp off", lab.iface)),
        "says what to do: {}",
        refusal[0]
    );
    assert!(
        !output.contains("File exists"),
        "no bare errno; output:\n{output}"
    );
    assert_eq!(
        attached_program(&lab),
        Some((id, "baseline".to_owned())),
        "the foreign program is still attached"
    );
}

/// xdp-filter first (dropping one port), then portsentry on the same interface. Where the kernel
/// runs libxdp's dispatcher: both run (`xdp-loader status` lists both), a scan is banned by us,
/// the filtered port stays blocked, innocent traffic passes, and when portsentry stops
/// xdp-filter is still there. Where it cannot (this machine's kernel refuses freplace):
/// portsentry refuses in one line saying so, in `auto` and `multi` alike, and xdp-filter's
/// program is untouched.
#[test]
fn shares_the_interface_with_xdp_filter() {
    let test = "shares_the_interface_with_xdp_filter";
    let Some(fl) = FilterLab::new(test, "coexist-filter") else {
        return;
    };
    fl.load_filter();
    let (filter_id, filter_name) = attached_program(&fl.lab).expect("xdp-filter attached");
    let (_, bystander) = fl.scanner_and_bystander();
    assert!(fl.reach(bystander, SERVICE), "service reachable");
    assert!(
        !fl.reach(bystander, FILTERED_PORT),
        "xdp-filter drops its port"
    );

    if filter_name != "xdp_dispatcher" {
        // No dispatcher here: libxdp fell back to attaching xdp-filter's program alone.
        let (code, output) = fl.tools.portsentry(&fl.lab, &fl.pins, &fl.daemon_args());
        assert_ne!(code, 0, "portsentry must refuse; output:\n{output}");
        let line = format!(
            "portsentry: error: {} already runs XDP program {filter_id} ({filter_name}), which \
             is not portsentry's: refusing to replace it. This kernel refuses freplace programs",
            fl.lab.iface
        );
        assert_eq!(
            output.lines().filter(|l| l.starts_with(&line)).count(),
            1,
            "one refusal line saying the kernel cannot share; output:\n{output}"
        );
        let multi = fl.daemon_args().args(["--xdp-mode", "multi"]);
        let (code, output) = fl.tools.portsentry(&fl.lab, &fl.pins, &multi);
        assert_ne!(code, 0, "multi must refuse too; output:\n{output}");
        assert!(
            output.lines().any(|l| l.starts_with(
                "portsentry: error: this kernel refuses freplace (BPF_PROG_TYPE_EXT) programs"
            )),
            "multi says the kernel cannot run the dispatcher; output:\n{output}"
        );
        assert_eq!(
            attached_program(&fl.lab),
            Some((filter_id, filter_name)),
            "xdp-filter's program is untouched"
        );
        assert!(
            !fl.reach(bystander, FILTERED_PORT),
            "xdp-filter still filters"
        );
        skip(
            &format!("{test} (dispatcher half)"),
            "this kernel cannot run libxdp's dispatcher (freplace refused); the refusal half ran",
        );
        return;
    }

    let mut daemon = fl
        .wrapped_daemon()
        .start()
        .expect("portsentry joins the dispatcher");
    assert!(
        daemon.has_line(|l| l.contains("joined libxdp's dispatcher")
            && l.contains("xdpfilt_")
            && l.contains("portsentry")),
        "says where it runs; output:\n{}",
        daemon.output()
    );
    fl.status_lists_both("with both programs");

    fl.both_verdicts_hold(&mut daemon);
    assert!(fl.reach(bystander, SERVICE), "others still pass");
    fl.stop_leaves_only_xdp_filter(daemon);
}

/// `xdp_mode = "multi"`: portsentry makes the dispatcher itself, xdp-filter loaded afterwards
/// joins it (libxdp re-links our program into its new dispatcher), both verdicts hold, and when
/// portsentry stops only its program leaves: xdp-filter keeps running. On a kernel without
/// freplace, the other test covers the refusal; this one skips.
#[test]
fn multi_mode_lets_xdp_filter_join_after_us() {
    let test = "multi_mode_lets_xdp_filter_join_after_us";
    let Some(fl) = FilterLab::new(test, "coexist-multi") else {
        return;
    };
    let started = fl.wrapped_daemon().args(["--xdp-mode", "multi"]).start();
    let mut daemon = match started {
        Ok(d) => d,
        Err(e) if format!("{e:#}").contains("refuses freplace") => {
            skip(
                test,
                "this kernel cannot run libxdp's dispatcher (freplace refused)",
            );
            return;
        }
        Err(e) => panic!("portsentry with xdp_mode multi: {e:#}"),
    };
    let status = fl.status();
    assert!(
        status.contains("xdp_dispatcher") && status.contains("portsentry"),
        "portsentry runs in its own dispatcher; got:\n{status}"
    );
    fl.load_filter();
    fl.status_lists_both("xdp-filter added after portsentry");

    fl.both_verdicts_hold(&mut daemon);
    fl.stop_leaves_only_xdp_filter(daemon);
}
