//! Tools `cargo xtask test` stages under target/ (never installed on the host): finding them,
//! and running a tool to completion with its output in the error when it fails.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

/// The directory `cargo xtask test` names in the environment variable `env`. Refuses one
/// outside a `target/` directory: the tests must never depend on (or start) a tool installed
/// on the host.
pub fn dir(env: &str) -> Result<PathBuf> {
    let root = std::env::var_os(env)
        .map(PathBuf::from)
        .with_context(|| format!("{env} is not set: run these tests with `cargo xtask test`"))?;
    if !root.components().any(|c| c.as_os_str() == "target") {
        bail!("{} is not staged under target/", root.display());
    }
    Ok(root)
}

/// Runs `cmd` (`what` in errors: the tool and its arguments) to completion: its stdout, or an
/// error with its exit status, stdout and stderr.
pub fn stdout_of(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}
