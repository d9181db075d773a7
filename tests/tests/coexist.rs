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
    lab::{baseline_object, ip, portsentry_bin, run_in, sock, DaemonArgs, Lab, PinDir, TempDir},
    skip::skip,
};

const SERVICE_PORT: u16 = 8080;
/// xdp-filter drops this destination port.
const FILTERED_PORT: u16 = 8081;
const TRAP_PORT: u16 = 111;
/// xdp-filter and portsentry in a VM under software emulation take seconds per step.
const TOOL_TIMEOUT: Duration = Duration::from_secs(180);

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
    fn portsentry(&self, lab: &Lab, pins: &PinDir, args: &[&str]) -> (i32, String) {
        let mut argv = self.wrapper(pins);
        argv.push(portsentry_bin().display().to_string());
        argv.push("run".into());
        argv.extend(args.iter().map(|a| a.to_string()));
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

/// The flags a daemon in the lab needs besides its wrapper.
fn daemon_flags(state: &str) -> Vec<String> {
    [
        "--tcp-ports",
        &TRAP_PORT.to_string(),
        "--no-pin",
        "--no-auto-allow",
        "--state-dir",
        state,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A plain XDP program attached with iproute2 (the empty `baseline`) is not ours: `portsentry
/// run` refuses with one line naming the interface, the program and what to do, exits non-zero
/// and leaves the program attached. (The code before this refused too, but with "attaching XDP
/// to IF: `bpf_link_create` failed: File exists".)
#[test]
fn a_foreign_program_is_never_replaced() {
    let lab = Lab::new(1).expect("lab");
    let dir = TempDir::new("coexist-foreign").expect("state dir");
    let state = dir.path.display().to_string();
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

    let mut args = vec!["run".to_owned(), "--iface".into(), lab.iface.clone()];
    args.extend(daemon_flags(&state));
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
    let Some(tools) = XdpTools::staged(test) else {
        return;
    };
    let lab = Lab::new(2).expect("lab");
    let pins = PinDir::new().expect("bpffs");
    let dir = TempDir::new("coexist-filter").expect("state dir");
    let state = dir.path.display().to_string();
    let service = lab
        .protected
        .tcp_service(sock(lab.protected_v4, SERVICE_PORT));
    let filtered = lab
        .protected
        .tcp_service(sock(lab.protected_v4, FILTERED_PORT));
    let (code, out) = tools.run(&lab, &pins, "xdp-filter", &["load", &lab.iface]);
    assert_eq!(code, 0, "xdp-filter load: {out}");
    let (code, out) = tools.run(
        &lab,
        &pins,
        "xdp-filter",
        &["port", &FILTERED_PORT.to_string()],
    );
    assert_eq!(code, 0, "xdp-filter port: {out}");
    let (filter_id, filter_name) = attached_program(&lab).expect("xdp-filter attached");

    let scanner = lab.scanner_v4[0];
    let bystander = lab.scanner_v4[1];
    let short = Duration::from_secs(2);
    let reach = |src, port| {
        lab.scanner
            .tcp_connect(src, sock(lab.protected_v4, port), short)
    };
    assert!(reach(bystander, SERVICE_PORT), "service reachable");
    assert!(
        !reach(bystander, FILTERED_PORT),
        "xdp-filter drops its port"
    );

    if filter_name != "xdp_dispatcher" {
        // No dispatcher here: libxdp fell back to attaching xdp-filter's program alone.
        let mut flags = vec!["--iface".to_owned(), lab.iface.clone()];
        flags.extend(daemon_flags(&state));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let (code, output) = tools.portsentry(&lab, &pins, &flags);
        assert_ne!(code, 0, "portsentry must refuse; output:\n{output}");
        let line = format!(
            "portsentry: error: {} already runs XDP program {filter_id} ({filter_name}), which \
             is not portsentry's: refusing to replace it. This kernel refuses freplace programs",
            lab.iface
        );
        assert_eq!(
            output.lines().filter(|l| l.starts_with(&line)).count(),
            1,
            "one refusal line saying the kernel cannot share; output:\n{output}"
        );
        let mut multi = flags.clone();
        multi.extend(["--xdp-mode", "multi"]);
        let (code, output) = tools.portsentry(&lab, &pins, &multi);
        assert_ne!(code, 0, "multi must refuse too; output:\n{output}");
        assert!(
            output.lines().any(|l| l.starts_with(
                "portsentry: error: this kernel refuses freplace (BPF_PROG_TYPE_EXT) programs"
            )),
            "multi says the kernel cannot run the dispatcher; output:\n{output}"
        );
        assert_eq!(
            attached_program(&lab),
            Some((filter_id, filter_name)),
            "xdp-filter's program is untouched"
        );
        assert!(!reach(bystander, FILTERED_PORT), "xdp-filter still filters");
        skip(
            &format!("{test} (dispatcher half)"),
            "this kernel cannot run libxdp's dispatcher (freplace refused); the refusal half ran",
        );
        drop((service, filtered));
        return;
    }

    let mut daemon = DaemonArgs::new(&lab)
        .wrapped_in(
            "sh",
            &tools
                .wrapper(&pins)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .iface()
        .args(daemon_flags(&state))
        .ready_within(TOOL_TIMEOUT)
        .start()
        .expect("portsentry joins the dispatcher");
    assert!(
        daemon.has_line(|l| l.contains("joined libxdp's dispatcher")
            && l.contains("xdpfilt_")
            && l.contains("portsentry")),
        "says where it runs; output:\n{}",
        daemon.output()
    );
    let (code, status) = tools.run(&lab, &pins, "xdp-loader", &["status", &lab.iface]);
    assert_eq!(code, 0, "xdp-loader status: {status}");
    assert!(
        status.contains("xdpfilt_") && status.contains("portsentry"),
        "xdp-loader status lists both; got:\n{status}"
    );
    eprintln!("xdp-loader status with both programs:\n{status}");

    assert!(reach(bystander, SERVICE_PORT), "innocent traffic passes");
    assert!(
        !reach(bystander, FILTERED_PORT),
        "xdp-filter still drops its port"
    );
    assert!(!reach(scanner, TRAP_PORT), "trap port times out");
    let ban_line = format!(
        "attackalert: Host {scanner} has been blocked via XDP drop on interface: \"{}\"",
        lab.iface
    );
    assert!(
        daemon.wait_for_line(|l| l == ban_line, Duration::from_secs(30)),
        "ban line; output:\n{}",
        daemon.output()
    );
    assert!(
        !reach(scanner, SERVICE_PORT),
        "the banned scanner is dropped"
    );
    assert!(reach(bystander, SERVICE_PORT), "others still pass");

    assert_eq!(
        daemon.stop().unwrap(),
        Some(0),
        "clean exit; output:\n{}",
        daemon.output()
    );
    let (code, status) = tools.run(&lab, &pins, "xdp-loader", &["status", &lab.iface]);
    assert_eq!(code, 0, "xdp-loader status: {status}");
    assert!(
        status.contains("xdpfilt_") && !status.contains("portsentry"),
        "after portsentry stops, xdp-filter is still attached and we are gone; got:\n{status}"
    );
    assert!(
        !reach(bystander, FILTERED_PORT),
        "xdp-filter still drops its port"
    );
    assert!(reach(scanner, SERVICE_PORT), "our ban left with us");
    drop((service, filtered));
}

/// `xdp_mode = "multi"`: portsentry makes the dispatcher itself, xdp-filter loaded afterwards
/// joins it (libxdp re-links our program into its new dispatcher), both verdicts hold, and when
/// portsentry stops only its program leaves: xdp-filter keeps running. On a kernel without
/// freplace, the other test covers the refusal; this one skips.
#[test]
fn multi_mode_lets_xdp_filter_join_after_us() {
    let test = "multi_mode_lets_xdp_filter_join_after_us";
    let Some(tools) = XdpTools::staged(test) else {
        return;
    };
    let lab = Lab::new(2).expect("lab");
    let pins = PinDir::new().expect("bpffs");
    let dir = TempDir::new("coexist-multi").expect("state dir");
    let state = dir.path.display().to_string();
    let service = lab
        .protected
        .tcp_service(sock(lab.protected_v4, SERVICE_PORT));
    let filtered = lab
        .protected
        .tcp_service(sock(lab.protected_v4, FILTERED_PORT));
    let started = DaemonArgs::new(&lab)
        .wrapped_in(
            "sh",
            &tools
                .wrapper(&pins)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .iface()
        .args(daemon_flags(&state))
        .args(["--xdp-mode", "multi"])
        .ready_within(TOOL_TIMEOUT)
        .start();
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
    let (code, status) = tools.run(&lab, &pins, "xdp-loader", &["status", &lab.iface]);
    assert_eq!(code, 0, "xdp-loader status: {status}");
    assert!(
        status.contains("xdp_dispatcher") && status.contains("portsentry"),
        "portsentry runs in its own dispatcher; got:\n{status}"
    );
    let (code, out) = tools.run(&lab, &pins, "xdp-filter", &["load", &lab.iface]);
    assert_eq!(code, 0, "xdp-filter load beside portsentry: {out}");
    let (code, out) = tools.run(
        &lab,
        &pins,
        "xdp-filter",
        &["port", &FILTERED_PORT.to_string()],
    );
    assert_eq!(code, 0, "xdp-filter port: {out}");
    let (code, status) = tools.run(&lab, &pins, "xdp-loader", &["status", &lab.iface]);
    assert_eq!(code, 0, "xdp-loader status: {status}");
    assert!(
        status.contains("xdpfilt_") && status.contains("portsentry"),
        "xdp-loader status lists both; got:\n{status}"
    );
    eprintln!("xdp-loader status, xdp-filter added after portsentry:\n{status}");

    let scanner = lab.scanner_v4[0];
    let bystander = lab.scanner_v4[1];
    let short = Duration::from_secs(2);
    let reach = |src, port| {
        lab.scanner
            .tcp_connect(src, sock(lab.protected_v4, port), short)
    };
    assert!(reach(bystander, SERVICE_PORT), "innocent traffic passes");
    assert!(
        !reach(bystander, FILTERED_PORT),
        "xdp-filter drops its port"
    );
    assert!(!reach(scanner, TRAP_PORT), "trap port times out");
    let ban_line = format!(
        "attackalert: Host {scanner} has been blocked via XDP drop on interface: \"{}\"",
        lab.iface
    );
    assert!(
        daemon.wait_for_line(|l| l == ban_line, Duration::from_secs(30)),
        "ban line; output:\n{}",
        daemon.output()
    );
    assert!(
        !reach(scanner, SERVICE_PORT),
        "the banned scanner is dropped"
    );
    assert_eq!(
        daemon.stop().unwrap(),
        Some(0),
        "clean exit; output:\n{}",
        daemon.output()
    );
    let (code, status) = tools.run(&lab, &pins, "xdp-loader", &["status", &lab.iface]);
    assert_eq!(code, 0, "xdp-loader status: {status}");
    assert!(
        status.contains("xdpfilt_") && !status.contains("portsentry"),
        "after portsentry stops, xdp-filter stays and we are gone; got:\n{status}"
    );
    assert!(
        !reach(bystander, FILTERED_PORT),
        "xdp-filter still drops its port"
    );
    assert!(reach(scanner, SERVICE_PORT), "our ban left with us");
    drop((service, filtered));
}
