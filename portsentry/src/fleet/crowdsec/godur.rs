//! Go `time.Duration` text, the format CrowdSec speaks: `"3h59m58.805s"`, `"-92.4ms"`, `"24h"`.
//!
//! LAPI reports a decision's remaining lifetime this way (hours never roll into days, the value
//! can be negative once the decision has expired, units go down to `ns`), and reads the
//! duration of a pushed decision with Go's `time.ParseDuration`, which has no day unit.

use std::time::Duration;

/// A parsed Go duration: the remaining time of a decision, or `Expired` when it is zero or
/// negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remaining {
    For(Duration),
    Expired,
}

/// Parses Go duration text. `None` if it is not one.
pub fn parse(text: &str) -> Option<Remaining> {
    let s = text.trim();
    let (negative, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(Remaining::Expired);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() {
            return None;
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut part = whole.checked_mul(unit_ns)?;
        // Fractions: at most the digits that still mean something at nanosecond resolution.
        let mut scale = unit_ns;
        for d in frac.chars().take(18) {
            let d = u128::from(d.to_digit(10)?);
            scale /= 10;
            part = part.checked_add(d * scale)?;
        }
        total_ns = total_ns.checked_add(part)?;
    }
    if negative || total_ns == 0 {
        return Some(Remaining::Expired);
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).unwrap_or(u64::MAX);
    Some(Remaining::For(Duration::new(
        secs,
        (total_ns % 1_000_000_000) as u32,
    )))
}

/// Formats a duration for `time.ParseDuration` (whole seconds; Go has no day unit).
pub fn format(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(text: &str) -> f64 {
        match parse(text) {
            Some(Remaining::For(d)) => d.as_secs_f64(),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn what_lapi_sends() {
        assert!((secs("3h59m58.805129969s") - 14_398.805_129_969).abs() < 1e-6);
        assert!((secs("99h59m59.979812833s") - 359_999.979_812_833).abs() < 1e-6);
        assert!((secs("2.35348907s") - 2.353_489_07).abs() < 1e-9);
        assert_eq!(secs("24h"), 86_400.0);
        assert_eq!(secs("1h30m"), 5_400.0);
        assert!((secs("1.5µs") - 1.5e-6).abs() < 1e-12);
        assert!((secs("12ms") - 0.012).abs() < 1e-12);
        assert_eq!(parse("-92.445121ms"), Some(Remaining::Expired));
        assert_eq!(parse("-18.898002799s"), Some(Remaining::Expired));
        assert_eq!(parse("0"), Some(Remaining::Expired));
        assert_eq!(parse("0s"), Some(Remaining::Expired));
    }

    #[test]
    fn not_durations() {
        for bad in [
            "", "-", "1d", "h", "1", "1.2.3s", "abc", "1h-2m", "s1", "..s",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn formatting_is_parseable_by_go_and_us() {
        assert_eq!(format(Duration::from_secs(86_400)), "86400s");
        assert_eq!(format(Duration::from_millis(10)), "1s");
        assert_eq!(secs(&format(Duration::from_secs(7 * 86_400))), 604_800.0);
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }

        #[test]
        fn round_trips_go_style_text(h in 0u64..1_000_000, m in 0u64..60, s in 0u64..60, ns in 0u32..1_000_000_000) {
            let text = format!("{h}h{m}m{s}.{ns:09}s");
            let want = Duration::new(h * 3600 + m * 60 + s, ns);
            prop_assert_eq!(parse(&text), Some(if want.is_zero() { Remaining::Expired } else { Remaining::For(want) }));
        }
    }
}
