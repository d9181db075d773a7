//! Past instants on the kernel's boot clock for tests, exact at any uptime.
//!
//! The boot clock starts at this boot, and CI machines may have booted minutes ago: "a peer not
//! heard from for 2 h" as `boot_now - 2 h` in unsigned arithmetic saturates at the boot there,
//! and the peer looks only as old as the machine. Tests build such instants here, signed, as
//! the daemon does ([`portsentry_common::BootInstant`]). And they ask for ages that lie before
//! this boot *on every machine* with [`before_boot`], so a test of "older than the uptime"
//! runs as on a freshly booted machine wherever it runs, and the next clock-origin assumption
//! fails everywhere, not only on young machines.

use std::time::Duration;

use portsentry_common::BootInstant;

/// How long this machine has been up (CLOCK_BOOTTIME, the clock the data plane stamps with).
pub fn uptime() -> Duration {
    Duration::from_nanos(portsentry::clock::boot_ns())
}

/// An age that reaches `beyond` further back than this boot, whatever the uptime.
pub fn before_boot(beyond: Duration) -> Duration {
    uptime() + beyond
}

/// The boot-clock instant `ago` before now: negative when it lies before this boot.
pub fn instant_ago(ago: Duration) -> BootInstant {
    let now = i128::from(portsentry::clock::boot_ns());
    let t = now - i128::try_from(ago.as_nanos()).unwrap_or(i128::MAX);
    BootInstant::try_from(t).unwrap_or(BootInstant::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_before_the_boot_are_negative_instants() {
        let t = instant_ago(before_boot(Duration::from_secs(60)));
        assert!(t < -59_000_000_000, "{t}");
        assert!(instant_ago(Duration::ZERO) > 0);
        assert_eq!(instant_ago(Duration::MAX), BootInstant::MIN);
    }
}
