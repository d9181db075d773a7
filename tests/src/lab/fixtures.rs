//! Fixtures around the lab: throwaway directories and bpffs mounts (removed on drop), the
//! `portsentry` binary under test, and running a tool or a CLI verb to completion.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};

use super::Netns;

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
        let path = std::env::temp_dir().join(format!(
            "portsentry-{tag}-{}-{}",
            std::process::id(),
            super::unique()
        ));
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

    /// Like [`TempDir::write`], mode 0600: portsentry refuses secrets others can read.
    pub fn write_secret(&self, name: &str, text: &str) -> String {
        let p = self.write(name, text);
        private(std::path::Path::new(&p));
        p
    }
}

/// chmod 600, as the README's recipes leave a secret (`umask 077`).
pub fn private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 600 on a test secret");
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A bpffs instance mounted on a fresh directory in the root mount namespace, visible to every
/// `ip netns exec` (they copy the root namespace's mounts). Unmounted and removed on drop.
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    pub fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "portsentry-pins-{}-{}",
            std::process::id(),
            super::unique()
        ));
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

/// The empty XDP program (`baseline`) built with the XDP object by `cargo xtask test`.
pub fn baseline_object() -> PathBuf {
    match std::env::var_os("PORTSENTRY_BASELINE_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => {
            panic!("PORTSENTRY_BASELINE_OBJECT is not set: run the tests with `cargo xtask test`")
        }
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
