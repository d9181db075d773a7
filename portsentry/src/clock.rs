//! Time: the kernel stamps bans with CLOCK_BOOTTIME nanoseconds; people and the state file need
//! wall-clock time. Conversions go through "now" on both clocks.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Local};
use nix::time::{clock_gettime, ClockId};

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

    /// Wall-clock milliseconds as a kernel timestamp (saturating at 1 ns: 0 means "never").
    pub fn unix_ms_to_boot(&self, unix_ms: u64) -> u64 {
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
        assert_eq!(now.unix_ms_to_boot(1_700_000_002_000), 7_000_000_000);
        // Long before boot saturates to 1 ns, never 0 ("never expires").
        assert_eq!(now.unix_ms_to_boot(1_000), 1);
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
