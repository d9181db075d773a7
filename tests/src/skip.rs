//! Tests that cannot run on this machine (a kernel without bonding or 802.1Q, say) skip with a
//! reason, never silently: the reason goes to stderr and to the file `cargo xtask test` names in
//! `PORTSENTRY_SKIP_LOG`, which it prints after the run (cargo hides a passing test's stderr).

use std::io::Write;

/// The environment variable naming the skip log.
pub const SKIP_LOG_ENV: &str = "PORTSENTRY_SKIP_LOG";

/// Set (to anything) where every test must run: the kernel lane (`cargo xtask test --kernel`)
/// boots Debian's kernels precisely to run what this host cannot, so a skip there is a failure.
pub const SKIPS_FAIL_ENV: &str = "PORTSENTRY_SKIPS_FAIL";

/// Records that `test` skipped because `why`; panics instead where [`SKIPS_FAIL_ENV`] is set.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os(SKIPS_FAIL_ENV).is_some() {
        panic!("{test} cannot run here ({why}), and {SKIPS_FAIL_ENV} says every test must");
    }
    let line = format!("SKIPPED {test}: {why}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}
