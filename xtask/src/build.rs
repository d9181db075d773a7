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

fn target_dir() -> PathBuf {
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

/// Builds the XDP object and returns its path. Always optimised: the verifier needs it.
pub fn ebpf(tools: &Tools) -> Result<PathBuf> {
    let dir = target_dir().join("ebpf");
    let mut path = OsString::from(&tools.bin_dir);
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    // Same flags aya-build uses, plus BPF ISA v3 for atomic fetch/xchg/cmpxchg.
    let rustflags = [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
        "-Ctarget-cpu=v3",
    ]
    .join("\x1f");
    let status = Command::new("cargo")
        .arg(format!("+{NIGHTLY}"))
        .args(["build", "--package", "portsentry-ebpf", "--bins", "--release"])
        .args(["--target", BPF_TARGET, "-Z", "build-std=core", "--target-dir"])
        .arg(&dir)
        .current_dir(workspace_root())
        .env("PATH", path)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO")
        .status()
        .context("running cargo +nightly build for the eBPF object")?;
    if !status.success() {
        bail!("building the eBPF object failed");
    }
    let object = dir.join(BPF_TARGET).join("release").join("portsentry");
    if !object.is_file() {
        bail!("eBPF build succeeded but {} is missing", object.display());
    }
    Ok(object)
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
