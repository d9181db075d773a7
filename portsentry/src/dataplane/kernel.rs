//! Telling an administrator, in one line, that the running kernel is too old for the XDP
//! program, instead of a verifier dump.
//!
//! This module owns the table of kernel features the program needs that older kernels refuse
//! with an obscure verifier message, and the check made when a load fails. It never refuses a
//! kernel by its version alone (distributions backport features): only a load that failed is
//! explained, by the verifier's own words or, failing that, by a version below every feature's.

use std::fmt;

/// The oldest kernel portsentry's test suites pass on (`cargo xtask test --kernel`); named in
/// the refusal so the administrator knows what to upgrade to.
pub const TESTED_MINIMUM: &str = "6.1";

/// A feature of the BPF instruction set or runtime the program uses.
struct Feature {
    /// What the verifier of a kernel without it says.
    verifier_says: &'static str,
    what: &'static str,
    /// The first Linux release with it.
    since: (u32, u32),
}

const FEATURES: &[Feature] = &[Feature {
    verifier_says: "BPF_STX uses reserved fields",
    what: "BPF atomic instructions (fetch-and-add, xchg, cmpxchg)",
    since: (5, 12),
}];

/// Why this kernel cannot run the program.
#[derive(Debug)]
pub struct TooOld {
    release: String,
    what: &'static str,
    since: (u32, u32),
}

impl fmt::Display for TooOld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this kernel (Linux {}) cannot run portsentry's XDP program: it lacks {}, which came \
             with Linux {}.{}; portsentry is tested on Linux {} and newer",
            self.release, self.what, self.since.0, self.since.1, TESTED_MINIMUM
        )
    }
}

/// After a failed load: the missing feature, if the verifier named one (`log`) or the kernel
/// predates one; `None` when the failure is something else.
pub fn explain(log: &str) -> Option<TooOld> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    explain_for(release.trim(), log)
}

fn explain_for(release: &str, log: &str) -> Option<TooOld> {
    let version = version_of(release);
    FEATURES
        .iter()
        .find(|f| log.contains(f.verifier_says))
        .or_else(|| {
            FEATURES
                .iter()
                .find(|f| version.is_some_and(|v| v < f.since))
        })
        .map(|f| TooOld {
            release: release.to_owned(),
            what: f.what,
            since: f.since,
        })
}

/// (major, minor) of a release string such as "5.10.0-46-amd64".
fn version_of(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifiers_words_or_an_old_version_name_the_feature() {
        let e = explain_for(
            "5.10.0-46-amd64",
            "0: R1=ctx\nBPF_STX uses reserved fields\n",
        )
        .unwrap()
        .to_string();
        assert_eq!(
            e,
            "this kernel (Linux 5.10.0-46-amd64) cannot run portsentry's XDP program: it lacks \
             BPF atomic instructions (fetch-and-add, xchg, cmpxchg), which came with Linux 5.12; \
             portsentry is tested on Linux 6.1 and newer"
        );
        assert!(!e.contains('\n'));
        // An old kernel that fails elsewhere in the log is still explained.
        assert!(explain_for("5.4.0-150-generic", "invalid argument").is_some());
        // A new kernel failing for another reason is not blamed on its age.
        assert!(explain_for("6.1.0-57-amd64", "R2 invalid mem access").is_none());
        assert!(explain_for("garbage", "R2 invalid mem access").is_none());
    }
}
