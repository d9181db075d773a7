//! Below the kernels portsentry supports, `portsentry run` refuses in one clear line.
//!
//! Meaningful inside an old kernel: `cargo xtask test --kernel 5.10 -- --test kernel_floor`
//! (Debian 11's kernel, booted in qemu). On a kernel that runs the program, it checks the
//! opposite: the daemon starts and no refusal line is printed.

use std::time::Duration;

use portsentry_tests::{
    case,
    lab::{portsentry_bin, Lab, TempDir},
};

/// (major, minor) of the running kernel.
fn running_kernel() -> (u32, u32, String) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let release = release.trim().to_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).expect("major");
    let minor = parts.next().and_then(|p| p.parse().ok()).expect("minor");
    (major, minor, release)
}

#[test]
fn portsentry_run_on_a_kernel_without_bpf_atomics_exits_with_one_clear_line() {
    let (major, minor, release) = running_kernel();
    let lab = Lab::new(1).expect("lab");
    let dir = TempDir::new("floor").expect("state dir");
    let args = case::cli_args(&lab, &dir)
        .no_pin()
        .ready_within(Duration::from_secs(120));
    if (major, minor) >= (5, 12) {
        eprintln!("Linux {release} runs the program: checking that the daemon starts instead");
        let mut d = args.start().expect("the daemon starts on this kernel");
        assert!(
            !d.has_line(|l| l.contains("cannot run portsentry's XDP program")),
            "{}",
            d.output()
        );
        d.stop().expect("stop");
        return;
    }
    let out = lab
        .protected
        .command("timeout")
        .args(["-s", "KILL", "120"])
        .arg(portsentry_bin())
        .args(args.argv())
        .output()
        .expect("running portsentry");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "exit {:?}; stderr:\n{stderr}stdout:\n{stdout}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(1), "exit status");
    let expected = format!(
        "portsentry: error: this kernel (Linux {release}) cannot run portsentry's XDP program: \
         it lacks BPF atomic instructions (fetch-and-add, xchg, cmpxchg), which came with Linux \
         5.12; portsentry is tested on Linux 6.1 and newer"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines, [expected.as_str()], "one line, no verifier dump");
    assert!(stdout.trim().is_empty(), "nothing on stdout");
}
