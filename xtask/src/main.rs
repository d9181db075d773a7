//! `cargo xtask`: the one entry point for building, running and testing portsentry.
//!
//! Every command first makes sure the eBPF toolchain is there (see `toolchain.rs`).

mod build;
mod install;
mod layers;
mod toolchain;
mod vm;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test portsentry")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the XDP object and the `portsentry` binary with the object embedded.
    Build {
        /// Optimised build (target/release/portsentry).
        #[arg(long)]
        release: bool,
    },
    /// Build, then run `portsentry run ARGS`. Without ARGS it protects the interface of the
    /// default route with the embedded default configuration. Use inside a network namespace:
    /// `ip netns exec NS cargo xtask run`.
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for `portsentry run`, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests, data-plane tests (BPF_PROG_TEST_RUN) and end-to-end tests in
    /// network namespaces. Installs the client tools the tests need if they are missing (it
    /// prints which and why) and stages the crowdsec LAPI, promtool, fail2ban-regex, logcheck
    /// and xdp-tools (with libxdp1) under target/test-tools, never installing or starting a
    /// server on the host.
    Test {
        /// Run the selected test binaries inside Debian's kernel VERSION instead (5.10, 6.1,
        /// 6.12, newest = trixie-backports, or all = 6.1, 6.12 and newest), booted in qemu with
        /// the host's root read-only; the kernel is fetched under target/kernels (never
        /// installed). Prints the result and the time per kernel.
        #[arg(long, value_name = "VERSION")]
        kernel: Option<String>,
        /// With --kernel: fetch the kernel(s) and install the VM's client tools, boot nothing
        /// (so parallel runs that follow only boot).
        #[arg(long, requires = "kernel")]
        fetch_only: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks (root, network namespaces): data-plane cost per packet against an
    /// empty XDP program and xdp-filter's programs (Debian's libxdp1, staged under
    /// target/test-tools, never installed), flood drop cost against nftables, leak after detection against the
    /// classic architecture, scale and start-up, fleet decisions at scale. Prints a markdown table and writes
    /// target/bench/results.json.
    Bench {
        /// Smoke run: fewer repetitions and smaller sizes (under 2 minutes).
        #[arg(long)]
        quick: bool,
        /// Only these sections: dataplane, flood, leak, scale, fleet (repeatable).
        #[arg(long)]
        only: Vec<String>,
    },
    /// The import check of portsentry/src (no circle, layering of docs/ARCHITECTURE.md), rustfmt
    /// check and clippy with -D warnings, userspace and eBPF crates.
    Lint,
    /// Build a release binary and install it with the systemd unit, the example config (an
    /// existing config is never overwritten), the man pages and the shell completions.
    Install {
        /// Installation prefix: binary in PREFIX/sbin, unit in PREFIX/lib/systemd/system, man
        /// pages in PREFIX/share/man/man8, completions in PREFIX/share/{bash-completion,zsh,fish}.
        #[arg(long, default_value = "/usr/local")]
        prefix: std::path::PathBuf,
        /// Where the config goes [default: /etc for /usr and /usr/local, else PREFIX/etc].
        #[arg(long)]
        sysconfdir: Option<std::path::PathBuf>,
    },
    /// Generate the man pages (section 8) and the bash, zsh and fish completions from the
    /// command-line definitions: OUT/man8/*.8 and OUT/completions/.
    Man {
        /// Output directory.
        #[arg(long, default_value = "target/docs")]
        out: std::path::PathBuf,
    },
    /// Only check (and if needed install) the eBPF toolchain: nightly rust-src and bpf-linker.
    Toolchain,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let tools = toolchain::ensure()?;
    match cli.command {
        Cmd::Toolchain => {
            println!(
                "eBPF toolchain ready: bpf-linker at {}",
                tools.bpf_linker.display()
            );
            Ok(())
        }
        Cmd::Lint => build::lint(&tools),
        Cmd::Install { prefix, sysconfdir } => {
            let bin = build::portsentry(&tools, true)?;
            install::install(&bin, &prefix, sysconfdir.as_deref())
        }
        Cmd::Man { out } => {
            let bin = build::portsentry(&tools, false)?;
            let out = build::workspace_root().join(out);
            install::generate_docs(&bin, &out)?;
            println!(
                "man pages in {0}/man8, completions in {0}/completions",
                out.display()
            );
            Ok(())
        }
        Cmd::Build { release } => {
            let bin = build::portsentry(&tools, release)?;
            println!("built {}", bin.display());
            Ok(())
        }
        Cmd::Run { release, args } => {
            let bin = build::portsentry(&tools, release)?;
            let status = Command::new(&bin)
                .arg("run")
                .args(&args)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            exit_like(status)
        }
        Cmd::Bench { quick, only } => {
            toolchain::ensure_test_packages()?;
            let crowdsec = toolchain::stage_crowdsec(&build::target_dir())?;
            let xdp_filter = toolchain::stage_xdp_filter(&build::target_dir())?;
            let object = build::ebpf(&tools)?;
            let baseline = object.with_file_name("baseline");
            let forward = object.with_file_name("forward");
            let bin = build::portsentry(&tools, true)?;
            let out = build::workspace_root().join("target/bench/results.json");
            let mut cmd = build::cargo();
            cmd.args([
                "run",
                "--quiet",
                "--package",
                "portsentry-tests",
                "--bin",
                "portsentry-bench",
                "--",
            ]);
            if quick {
                cmd.arg("--quick");
            }
            for section in &only {
                cmd.args(["--only", section]);
            }
            let status = cmd
                .env(build::OBJECT_ENV, &object)
                .env("PORTSENTRY_BIN", &bin)
                .env("PORTSENTRY_BASELINE_OBJECT", &baseline)
                .env("PORTSENTRY_FORWARD_OBJECT", &forward)
                .env("PORTSENTRY_BENCH_OUT", &out)
                .env(
                    "PORTSENTRY_BENCH_CHARTS",
                    build::workspace_root().join("docs/bench"),
                )
                .env(CROWDSEC_ENV, &crowdsec)
                .env(XDP_FILTER_ENV, &xdp_filter)
                .status()
                .context("running the benchmarks")?;
            exit_like(status)
        }
        Cmd::Test {
            kernel,
            fetch_only,
            args,
        } => {
            toolchain::ensure_test_packages()?;
            let env = test_env(&tools)?;
            match kernel {
                None => {
                    // Tests this machine cannot run say so here, never silently (tests/src/skip.rs).
                    let skips = build::target_dir().join("test-skips.txt");
                    let _ = std::fs::remove_file(&skips);
                    let status = build::cargo()
                        .args(["test", "--workspace", "--exclude", "portsentry-ebpf"])
                        .args(&args)
                        .env(SKIP_LOG_ENV, &skips)
                        .envs(env.iter().map(|(k, v)| (k, v)))
                        .status()
                        .context("running cargo test")?;
                    if let Ok(text) = std::fs::read_to_string(&skips) {
                        for line in text.lines() {
                            println!("xtask: {line}");
                        }
                    }
                    exit_like(status)
                }
                Some(kernel) if fetch_only => fetch_kernels(&kernel),
                Some(kernel) => test_in_kernels(&kernel, &args, env),
            }
        }
    }
}

/// The environment `cargo xtask test` gives the test binaries: the object, the binary and the
/// staged tools (built and staged here).
fn test_env(tools: &toolchain::Tools) -> Result<Vec<(String, String)>> {
    let target = build::target_dir();
    let crowdsec = toolchain::stage_crowdsec(&target)?;
    let fail2ban = toolchain::stage_fail2ban(&target)?;
    let promtool = toolchain::stage_promtool(&target)?;
    let logcheck = toolchain::stage_logcheck(&target)?;
    let xdp_tools = toolchain::stage_xdp_tools(&target)?;
    let object = build::ebpf(tools)?;
    let bin = build::portsentry(tools, false)?;
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    Ok(vec![
        (build::OBJECT_ENV.into(), path(&object)),
        (
            "PORTSENTRY_BASELINE_OBJECT".into(),
            path(&object.with_file_name("baseline")),
        ),
        ("PORTSENTRY_BIN".into(), path(&bin)),
        (CROWDSEC_ENV.into(), path(&crowdsec)),
        (FAIL2BAN_ENV.into(), path(&fail2ban)),
        (PROMTOOL_ENV.into(), path(&promtool)),
        (LOGCHECK_ENV.into(), path(&logcheck)),
        (XDP_TOOLS_ENV.into(), path(&xdp_tools)),
    ])
}

/// `cargo xtask test --kernel K --fetch-only`: the kernels and the VM's tools, ready to boot.
fn fetch_kernels(name: &str) -> Result<()> {
    toolchain::ensure_packages(vm::VM_PACKAGES)?;
    let target = build::target_dir();
    for kernel in vm::select(name)? {
        let fetched = vm::fetch(kernel, &target)?;
        println!(
            "xtask: kernel {} ({}) is ready",
            kernel.label, fetched.version
        );
    }
    Ok(())
}

/// `cargo xtask test --kernel K -- ARGS`: the binaries `cargo test ARGS` selects, run inside
/// each selected kernel; prints one result line per kernel and fails if any failed.
fn test_in_kernels(name: &str, args: &[String], env: Vec<(String, String)>) -> Result<()> {
    let kernels = vm::select(name)?;
    toolchain::ensure_packages(vm::VM_PACKAGES)?;
    let (cargo_args, bin_args) = vm::split_args(args);
    let binaries = vm::test_binaries(&cargo_args, &env)?;
    let run = vm::Run {
        binaries,
        args: bin_args,
        env,
    };
    let target = build::target_dir();
    let mut results = Vec::new();
    for kernel in kernels {
        let fetched = vm::fetch(kernel, &target)?;
        let outcome = vm::run_in(kernel, &fetched, &run, &target)?;
        results.push((kernel.label, outcome));
    }
    let mut failed = Vec::new();
    for (label, o) in &results {
        println!(
            "xtask: kernel {label} ({}): {} in {}m{:02}s",
            o.version,
            if o.passed { "passed" } else { "FAILED" },
            o.seconds / 60,
            o.seconds % 60
        );
        if !o.passed {
            failed.push(*label);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("tests failed on kernel {}", failed.join(", "))
    }
}

/// Where the tests record what they skipped (`portsentry_tests::skip`).
pub const SKIP_LOG_ENV: &str = "PORTSENTRY_SKIP_LOG";

/// Set in the kernel lane: a test that would skip fails instead (`portsentry_tests::skip`).
pub const SKIPS_FAIL_ENV: &str = "PORTSENTRY_SKIPS_FAIL";

/// The directory with the staged `crowdsec` and `cscli` binaries, for the fleet tests.
const CROWDSEC_ENV: &str = "PORTSENTRY_CROWDSEC_BIN";
/// The directory of the staged xdp-filter XDP objects (`xdpfilt_*.o`), for the bench's peer
/// rows.
const XDP_FILTER_ENV: &str = "PORTSENTRY_XDP_FILTER_OBJECTS";
/// The root of the staged fail2ban package, for the history-format tests.
const FAIL2BAN_ENV: &str = "PORTSENTRY_FAIL2BAN_ROOT";
/// The staged `promtool`, for the metrics tests.
const PROMTOOL_ENV: &str = "PORTSENTRY_PROMTOOL";
/// The directory holding the staged logcheck, logcheck-database and logtail packages.
const LOGCHECK_ENV: &str = "PORTSENTRY_LOGCHECK_TOOLS";
/// The directory holding the staged xdp-tools and libxdp1 packages, for the coexistence tests.
const XDP_TOOLS_ENV: &str = "PORTSENTRY_XDP_TOOLS";

fn exit_like(status: std::process::ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        anyhow::bail!("{status}")
    }
}
