//! Building the XDP object (nightly, build-std, bpf-linker, BTF) and the userspace binary that
//! embeds it.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::toolchain::{Tools, NIGHTLY};

/// Environment variable naming the eBPF object that `portsentry`'s build script embeds.
pub const OBJECT_ENV: &str = "PORTSENTRY_BPF_OBJECT";
const BPF_TARGET: &str = "bpfel-unknown-none";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A `cargo` command for the stable (userspace) toolchain, run at the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// `cargo +nightly SUBCOMMAND` for the eBPF crate, with the flags aya-build uses plus BPF ISA v3
/// (atomic fetch/xchg/cmpxchg). Always the release profile: the verifier needs optimised code.
fn ebpf_cargo(tools: &Tools, subcommand: &str) -> Command {
    let mut path = OsString::from(&tools.bin_dir);
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    let rustflags = [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
        "-Ctarget-cpu=v3",
    ]
    .join("\x1f");
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{NIGHTLY}"))
        .args([
            subcommand,
            "--package",
            "portsentry-ebpf",
            "--bins",
            "--release",
        ])
        .args([
            "--target",
            BPF_TARGET,
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(ebpf_target_dir())
        .current_dir(workspace_root())
        .env("PATH", path)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO");
    cmd
}

fn ebpf_target_dir() -> PathBuf {
    target_dir().join("ebpf")
}

/// Builds the XDP object and returns its path.
pub fn ebpf(tools: &Tools) -> Result<PathBuf> {
    let status = ebpf_cargo(tools, "build")
        .status()
        .context("running cargo +nightly build for the eBPF object")?;
    if !status.success() {
        bail!("building the eBPF object failed");
    }
    let object = ebpf_target_dir()
        .join(BPF_TARGET)
        .join("release")
        .join("portsentry");
    if !object.is_file() {
        bail!("eBPF build succeeded but {} is missing", object.display());
    }
    Ok(object)
}

/// rustfmt and clippy (`-D warnings`) over every crate, the eBPF one with its own toolchain.
pub fn lint(tools: &Tools) -> Result<()> {
    crate::layers::check(&workspace_root().join("portsentry/src"))?;
    eprintln!("xtask: portsentry/src imports: no circle, layering kept");
    let steps: [(&str, Command); 3] = [
        ("cargo fmt --check", {
            let mut c = cargo();
            c.args(["fmt", "--all", "--check"]);
            c
        }),
        ("clippy (userspace)", {
            let mut c = cargo();
            c.args([
                "clippy",
                "--workspace",
                "--exclude",
                "portsentry-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]);
            c
        }),
        ("clippy (eBPF)", {
            let mut c = ebpf_cargo(tools, "clippy");
            c.args(["--", "-D", "warnings"]);
            c
        }),
    ];
    for (name, mut cmd) in steps {
        let status = cmd.status().with_context(|| format!("running {name}"))?;
        if !status.success() {
            bail!("{name} failed");
        }
    }
    Ok(())
}

/// Builds the eBPF object, then `portsentry` with it embedded; returns the binary's path.
pub fn portsentry(tools: &Tools, release: bool) -> Result<PathBuf> {
    let object = ebpf(tools)?;
    let mut cmd = cargo();
    cmd.args(["build", "--package", "portsentry", "--bin", "portsentry"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .env(OBJECT_ENV, &object)
        .status()
        .context("running cargo build for portsentry")?;
    if !status.success() {
        bail!("building portsentry failed");
    }
    let bin = target_dir()
        .join(if release { "release" } else { "debug" })
        .join("portsentry");
    Ok(bin)
}
