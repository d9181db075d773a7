//! The eBPF toolchain, made ready idempotently: nightly `rust-src` (for `-Z build-std=core`) and
//! `bpf-linker` built against the nightly's own libLLVM. When everything is there this costs a
//! couple of process spawns, well under a second.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// The nightly toolchain that builds the eBPF object.
pub const NIGHTLY: &str = "nightly";
/// bpf-linker release line we build and accept.
const BPF_LINKER_REQ: &str = "^0.13";
const BPF_LINKER_PREFIX: &str = "bpf-linker 0.13.";

pub struct Tools {
    pub bpf_linker: PathBuf,
    /// Directory to put first on PATH so rustc finds `bpf-linker`.
    pub bin_dir: PathBuf,
}

pub fn ensure() -> Result<Tools> {
    let sysroot = nightly_sysroot()?;
    ensure_rust_src(&sysroot)?;
    let bin_dir = cargo_home()?.join("bin");
    let bpf_linker = bin_dir.join("bpf-linker");
    if !bpf_linker_ok(&bpf_linker) {
        install_bpf_linker(&sysroot)?;
        if !bpf_linker_ok(&bpf_linker) {
            bail!(
                "bpf-linker was installed but `{} --version` does not report {BPF_LINKER_PREFIX}x; \
                 remove it and rerun",
                bpf_linker.display()
            );
        }
    }
    Ok(Tools {
        bpf_linker,
        bin_dir,
    })
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args([&format!("+{NIGHTLY}"), "--print", "sysroot"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .context("running `rustc +nightly --print sysroot` (is rustup installed?)")?;
    if !out.status.success() {
        bail!(
            "the nightly toolchain is missing: install it with `rustup toolchain install {NIGHTLY}` \
             ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn ensure_rust_src(sysroot: &Path) -> Result<()> {
    let core = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if core.exists() {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for the {NIGHTLY} toolchain");
    let status = Command::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", NIGHTLY])
        .status()
        .context("running rustup")?;
    if !status.success() || !core.exists() {
        bail!("rust-src is missing: run `rustup component add rust-src --toolchain {NIGHTLY}`");
    }
    Ok(())
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// True if the binary runs (its libLLVM still resolves) and is of the accepted line.
fn bpf_linker_ok(path: &Path) -> bool {
    Command::new(path)
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with(BPF_LINKER_PREFIX)
        })
        .unwrap_or(false)
}

/// Builds bpf-linker against the nightly's own libLLVM, so no system LLVM is needed.
fn install_bpf_linker(sysroot: &Path) -> Result<()> {
    let lib_dir = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .find_map(|name| {
            name.strip_prefix("lib")
                .and_then(|n| n.strip_suffix(".so"))
                .filter(|n| n.starts_with("LLVM-"))
                .map(str::to_owned)
        })
        .with_context(|| {
            format!(
                "no libLLVM-*.so in {}: this nightly does not ship its LLVM as a shared library, \
                 so bpf-linker cannot be built against it",
                lib_dir.display()
            )
        })?;
    let major = llvm
        .strip_prefix("LLVM-")
        .and_then(|v| v.split(['-', '.']).next())
        .context("cannot read the LLVM major version")?;
    eprintln!("xtask: building bpf-linker against the nightly's lib{llvm}.so (about a minute)");
    let lib = lib_dir.display();
    let status = Command::new("cargo")
        .args([
            &format!("+{NIGHTLY}"),
            "install",
            "bpf-linker",
            "--locked",
            "--force",
        ])
        .args(["--version", BPF_LINKER_REQ, "--no-default-features"])
        .args(["--features", &format!("llvm-{major},no-llvm-linking")])
        .env(
            "RUSTFLAGS",
            format!("-L {lib} -l dylib={llvm} -C link-arg=-Wl,-rpath,{lib}"),
        )
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("running cargo install bpf-linker")?;
    if !status.success() {
        bail!(
            "building bpf-linker failed; try by hand: RUSTFLAGS=\"-L {lib} -l dylib={llvm} \
             -C link-arg=-Wl,-rpath,{lib}\" cargo +{NIGHTLY} install bpf-linker \
             --no-default-features --features llvm-{major},no-llvm-linking"
        );
    }
    Ok(())
}

/// Debian client tools the end-to-end tests and benchmarks drive, with why; installed with
/// `apt-get install --no-install-recommends` when the command is missing. No server is ever
/// installed on the host: see [`stage_deb`].
const TEST_PACKAGES: &[(&str, &str, &str)] = &[
    (
        "ip",
        "iproute2",
        "network namespaces and veth pairs for the labs",
    ),
    (
        "bpftool",
        "bpftool",
        "reading pinned maps as an operator would",
    ),
    (
        "setpriv",
        "util-linux",
        "running the daemon with the unit's capability set",
    ),
    ("nmap", "nmap", "real scans against the lab"),
    (
        "openssl",
        "openssl",
        "certificates for the fleet test of TLS to LAPI",
    ),
    ("hping3", "hping3", "crafted and forged probes"),
    (
        "getent",
        "libc-bin",
        "glibc's resolver path in the learned-peer tests",
    ),
    ("masscan", "masscan", "fast scans"),
    ("tcpdump", "tcpdump", "counting answers leaked to a scanner"),
    ("nft", "nftables", "the benchmarks' nftables baselines"),
    ("trafgen", "netsniff-ng", "the benchmarks' packet flood"),
    (
        "ethtool",
        "ethtool",
        "veth offload settings in the benchmarks",
    ),
    (
        "lockfile-create",
        "lockfile-progs",
        "the staged logcheck refuses to run without /usr/bin/lockfile-create",
    ),
    // Found by a command of the full package: perl-base and python3-minimal also provide
    // /usr/bin/perl and /usr/bin/python3, without the standard modules the tests need.
    (
        "perldoc",
        "perl",
        "Perl's standard modules (Getopt::Std) for logcheck's logtail2",
    ),
    (
        "pydoc3",
        "python3",
        "Python's standard library (socketserver) for the README recipe's mail sink, and fail2ban-regex",
    ),
];

pub fn ensure_test_packages() -> Result<()> {
    ensure_packages(TEST_PACKAGES)
}

/// Installs the packages of `list` (command, package, why) whose command is missing.
pub fn ensure_packages(list: &[(&str, &str, &str)]) -> Result<()> {
    let missing: Vec<_> = list.iter().filter(|(cmd, _, _)| !on_path(cmd)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing client tools with apt-get (--no-install-recommends):");
    for (cmd, pkg, why) in &missing {
        eprintln!("xtask:   {pkg} (for `{cmd}`): {why}");
    }
    let names: Vec<&str> = missing.iter().map(|(_, pkg, _)| *pkg).collect();
    let update = Command::new("apt-get").args(["update", "-qq"]).status();
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&names)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    match (update, install) {
        (Ok(u), Ok(i)) if u.success() && i.success() => Ok(()),
        _ => bail!(
            "could not install {}: run `apt-get install --no-install-recommends {}` as root",
            names.join(" "),
            names.join(" ")
        ),
    }
}

/// Stages Debian's `crowdsec` package (the LAPI server and `cscli`) under
/// `target/test-tools/crowdsec`: see [`stage_deb`]. The fleet tests run it from there with
/// throwaway configs. Returns the directory holding the binaries.
pub fn stage_crowdsec(target: &Path) -> Result<PathBuf> {
    let root = stage_deb(
        target,
        "crowdsec",
        "the fleet tests' LAPI",
        &["usr/bin/crowdsec", "usr/bin/cscli"],
    )?;
    Ok(root.join("usr/bin"))
}

/// Stages Debian's `fail2ban` package under `target/test-tools/fail2ban`: the compatibility
/// tests run its `fail2ban-regex` with its stock `portsentry` filter against our history file.
/// Returns the package root (usr/bin, usr/lib/python3/dist-packages, etc/fail2ban).
pub fn stage_fail2ban(target: &Path) -> Result<PathBuf> {
    stage_deb(
        target,
        "fail2ban",
        "fail2ban-regex and the stock portsentry filter, for the history-format tests",
        &[
            "usr/bin/fail2ban-regex",
            "etc/fail2ban/filter.d/portsentry.conf",
        ],
    )
}

/// Stages Debian's `prometheus` package under `target/test-tools/prometheus` for its
/// `promtool`, which the metrics tests use to validate the exposition (`promtool check
/// metrics`); the server in the package is never run. Returns the path of `promtool`.
pub fn stage_promtool(target: &Path) -> Result<PathBuf> {
    let root = stage_deb(
        target,
        "prometheus",
        "`promtool check metrics` for the metrics tests",
        &["usr/bin/promtool"],
    )?;
    Ok(root.join("usr/bin/promtool"))
}

/// Stages Debian's `logcheck`, `logcheck-database` and `logtail` (its `logtail2`) under
/// `target/test-tools/`: the notify tests run the real logcheck, as an unprivileged user, with
/// the stock rules and ours on the daemon's lines. Returns `target/test-tools`.
pub fn stage_logcheck(target: &Path) -> Result<PathBuf> {
    let why = "logcheck's report on our log lines, for the notify tests";
    stage_deb(target, "logcheck", why, &["usr/sbin/logcheck"])?;
    stage_deb(
        target,
        "logcheck-database",
        why,
        &["etc/logcheck/ignore.d.server/systemd"],
    )?;
    stage_deb(target, "logtail", why, &["usr/sbin/logtail2"])?;
    Ok(target.join("test-tools"))
}

/// Stages Debian's `libxdp1` package under `target/test-tools/libxdp1` for the XDP programs of
/// xdp-filter (`xdpfilt_*.o`, which `xdp-filter load` attaches): the data-plane bench runs them
/// as peers of our pass path. Nothing is attached or installed. Returns the directory of the
/// objects.
pub fn stage_xdp_filter(target: &Path) -> Result<PathBuf> {
    let dir = format!("usr/lib/{}-linux-gnu/bpf", std::env::consts::ARCH);
    let root = stage_deb(
        target,
        "libxdp1",
        "xdp-filter's XDP programs, peer rows of the data-plane bench",
        &[
            &format!("{dir}/xdpfilt_alw_all.o"),
            &format!("{dir}/xdpfilt_alw_ip.o"),
            &format!("{dir}/xdpfilt_dny_all.o"),
        ],
    )?;
    Ok(root.join(dir))
}

/// Stages Debian's `xdp-tools` (xdp-loader, xdp-filter) and `libxdp1` (libxdp.so.1 and its
/// dispatcher object, xdp-dispatcher.o) under `target/test-tools/`: the coexistence tests load
/// xdp-filter beside portsentry and read `xdp-loader status` (they set LD_LIBRARY_PATH and
/// LIBXDP_OBJECT_PATH to the staged copies). Returns `target/test-tools`.
pub fn stage_xdp_tools(target: &Path) -> Result<PathBuf> {
    let why = "xdp-filter and xdp-loader beside portsentry, for the coexistence tests";
    stage_deb(
        target,
        "xdp-tools",
        why,
        &["usr/sbin/xdp-loader", "usr/sbin/xdp-filter"],
    )?;
    stage_deb(
        target,
        "libxdp1",
        why,
        &["usr/lib/x86_64-linux-gnu/bpf/xdp-dispatcher.o"],
    )?;
    Ok(target.join("test-tools"))
}

/// Stages a Debian package under `target/test-tools/<package>` with `apt-get download` +
/// `dpkg-deb -x`, without installing it: no service is registered, enabled or started, and no
/// package on the host changes. `expect` are paths the package must yield. Returns the root.
fn stage_deb(target: &Path, package: &str, why: &str, expect: &[&str]) -> Result<PathBuf> {
    let root = target.join("test-tools").join(package);
    if expect.iter().all(|p| root.join(p).is_file()) {
        return Ok(root);
    }
    let debs = target.join("test-tools/debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    eprintln!(
        "xtask: staging {package} ({why}) under {}: apt-get download + dpkg-deb -x, never installed",
        root.display()
    );
    let download = || {
        Command::new("apt-get")
            .args(["download", "-qq", package])
            .current_dir(&debs)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !download() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        if !download() {
            bail!("`apt-get download {package}` failed: the tests need Debian's {package} package ({why})");
        }
    }
    let prefix = format!("{package}_");
    let deb = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .with_context(|| format!("apt-get download left no {prefix}*.deb"))?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .context("running dpkg-deb")?;
    if let Some(missing) = expect.iter().find(|p| !root.join(p).is_file()) {
        bail!("dpkg-deb -x {} did not yield {missing}", deb.display());
    }
    if !status.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    Ok(root)
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}
