//! Time: the kernel stamps bans with CLOCK_BOOTTIME nanoseconds; people and the state file need
//! wall-clock time. Conversions go through "now" on both clocks.
//!
//! The boot clock starts at this boot, but saved records (bans, peers) come from the machine's
//! earlier lives: a time in the past converts to a signed [`BootInstant`], negative when it lies
//! before the boot, and keeps its true age whatever the uptime. Only expiries (always ahead, or
//! already past and so expired) use the unsigned form with 0 for "never".

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Local};
use nix::time::{clock_gettime, ClockId};
use portsentry_common::BootInstant;

/// CLOCK_BOOTTIME now, in nanoseconds (what `bpf_ktime_get_boot_ns` returns).
pub fn boot_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| {
            (t.tv_sec() as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(t.tv_nsec() as u64)
        })
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating (a TTL of centuries is still "very long").
pub fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Wall-clock now in milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A pair of "now" readings, taken once, for converting many timestamps consistently.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub boot_ns: u64,
    pub unix_ms: u64,
}

impl Now {
    pub fn read() -> Self {
        Self {
            boot_ns: boot_ns(),
            unix_ms: unix_ms(),
        }
    }

    /// Wall-clock milliseconds as a boot-clock instant, exact on either side of the boot: a
    /// record from before this boot is negative, never clamped to the boot (which would make it
    /// look only as old as the uptime and live that much longer than its memory or TTL says).
    pub fn boot_instant(&self, unix_ms: u64) -> BootInstant {
        let now = i128::from(self.boot_ns);
        let delta_ns = (i128::from(unix_ms) - i128::from(self.unix_ms)) * 1_000_000;
        let t = now + delta_ns;
        BootInstant::try_from(t).unwrap_or(if t < 0 {
            BootInstant::MIN
        } else {
            BootInstant::MAX
        })
    }

    /// A boot-clock instant (negative: before this boot) as wall-clock milliseconds.
    pub fn instant_to_unix_ms(&self, instant: BootInstant) -> u64 {
        let delta_ms = (i128::from(instant) - i128::from(self.boot_ns)) / 1_000_000;
        u64::try_from((i128::from(self.unix_ms) + delta_ms).max(0)).unwrap_or(u64::MAX)
    }

    /// A kernel timestamp as wall-clock milliseconds.
    pub fn boot_to_unix_ms(&self, boot_ns: u64) -> u64 {
        if boot_ns >= self.boot_ns {
            self.unix_ms
                .saturating_add((boot_ns - self.boot_ns) / 1_000_000)
        } else {
            self.unix_ms
                .saturating_sub((self.boot_ns - boot_ns) / 1_000_000)
        }
    }

    /// A wall-clock expiry as a kernel expiry (`BanEntry::expires_at_ns`). An expiry before this
    /// boot is long past and saturates at 1 ns, still expired (0 means "never"); a time in the
    /// past that must keep its age is a [`Now::boot_instant`] instead.
    pub fn expiry_to_boot(&self, unix_ms: u64) -> u64 {
        let t = if unix_ms >= self.unix_ms {
            self.boot_ns
                .saturating_add((unix_ms - self.unix_ms).saturating_mul(1_000_000))
        } else {
            self.boot_ns
                .saturating_sub((self.unix_ms - unix_ms).saturating_mul(1_000_000))
        };
        t.max(1)
    }
}

/// ISO-8601 local time with milliseconds and offset: `2026-11-25T00:21:22.071+0000`.
pub fn iso_local_ms(unix_ms: u64) -> String {
    format_local(unix_ms, "%Y-%m-%dT%H:%M:%S%.3f%z")
}

/// PortSentry 1.2's history stamp: `<epoch seconds> - MM/DD/YYYY HH:MM:SS` in local time.
pub fn classic_local(unix_ms: u64) -> String {
    format!(
        "{} - {}",
        unix_ms / 1000,
        format_local(unix_ms, "%m/%d/%Y %H:%M:%S")
    )
}

/// ISO-8601 local time to the second, for listings.
pub fn iso_local(unix_ms: u64) -> String {
    format_local(unix_ms, "%Y-%m-%dT%H:%M:%S%z")
}

/// Never panics: a time beyond what the calendar code represents (a hand-edited state file)
/// prints as `@<unix ms>`.
fn format_local(unix_ms: u64, format: &str) -> String {
    i64::try_from(unix_ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map(|t| t.with_timezone(&Local).format(format).to_string())
        .unwrap_or_else(|| format!("@{unix_ms}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        let now = Now {
            boot_ns: 5_000_000_000,
            unix_ms: 1_700_000_000_000,
        };
        assert_eq!(now.boot_to_unix_ms(6_000_000_000), 1_700_000_001_000);
        assert_eq!(now.boot_to_unix_ms(4_000_000_000), 1_699_999_999_000);
        assert_eq!(now.expiry_to_boot(1_700_000_002_000), 7_000_000_000);
        // An expiry long before boot saturates to 1 ns (expired), never 0 ("never expires").
        assert_eq!(now.expiry_to_boot(1_000), 1);
    }

    #[test]
    fn instants_older_than_the_uptime_keep_their_age() {
        // Up 9 minutes; a record from 2 h ago lies 111 minutes before the boot.
        let now = Now {
            boot_ns: 540_000_000_000,
            unix_ms: 1_700_000_000_000,
        };
        let two_hours_ago = now.unix_ms - 7_200_000;
        let t = now.boot_instant(two_hours_ago);
        assert_eq!(t, -6_660_000_000_000);
        assert_eq!(
            portsentry_common::boot_age_ns(now.boot_ns, t),
            7_200_000_000_000
        );
        assert_eq!(now.instant_to_unix_ms(t), two_hours_ago);
        // After the boot and ahead of now, exact as before.
        assert_eq!(now.boot_instant(now.unix_ms - 1_000), 539_000_000_000);
        assert_eq!(now.boot_instant(now.unix_ms + 1_000), 541_000_000_000);
        // Absurd inputs saturate instead of wrapping or panicking.
        assert_eq!(now.boot_instant(u64::MAX), BootInstant::MAX);
        assert_eq!(now.boot_instant(0), -1_699_999_460_000_000_000);
        assert_eq!(now.instant_to_unix_ms(BootInstant::MIN), 0);
    }

    #[test]
    fn far_future_times_print_without_panicking() {
        assert!(iso_local(u64::MAX).starts_with('@'));
        assert!(!iso_local(4_102_444_800_000).is_empty()); // 2100
    }

    #[test]
    fn iso_format_has_millis_and_offset() {
        let s = iso_local_ms(1_700_000_000_071);
        assert_eq!(s.len(), "2023-11-14T22:13:20.071+0000".len(), "{s}");
        assert!(s.contains(".071"), "{s}");
    }
}
