//! Durations in the config and on the command line: "24h", "90s", "7d", whole seconds, and
//! "never" (or 0) for no limit; at most 100 years, so every date stays printable.

use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serializer};

/// The longest finite duration accepted anywhere (a ban, a window, a timeout): beyond it dates
/// stop being printable, and "never" says what is meant.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600); // humantime's year: 365.25 days

/// Refuses durations beyond [`MAX_DURATION`].
pub fn check_duration(d: Duration, text: &str) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!(
            "`{text}` is too long: at most 100 years; use \"never\" for no limit"
        ));
    }
    Ok(d)
}

/// Parses "24h", "90s", "1h30m"; "0" and "never" mean no limit (`None`). At most 100 years.
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let t = s.trim();
    if t == "0" || t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    match humantime::parse_duration(t) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) => check_duration(d, s).map(Some),
        Err(e) => Err(format!(
            "`{s}` is not a duration ({e}); use e.g. 90s, 15m, 24h, 7d, or never"
        )),
    }
}

/// "24h", "90s", "7d"; humantime's form ("1h 30m 5s") when no single unit is exact.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return humantime::format_duration(d).to_string();
    }
    match secs {
        s if s % 86_400 == 0 && s >= 2 * 86_400 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A duration as written in the file: a string ("24h", "never") or whole seconds.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a duration such as \"24h\" or \"never\"")]
enum DurationText {
    Text(String),
    Seconds(i64),
}

fn read_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match DurationText::deserialize(d)? {
        DurationText::Text(t) => parse_duration(&t).map_err(de::Error::custom),
        DurationText::Seconds(n) => {
            let secs = u64::try_from(n).map_err(|_| {
                de::Error::custom(format!("{n} is negative: use a duration or \"never\""))
            })?;
            check_duration(Duration::from_secs(secs), &n.to_string())
                .map(|d| (!d.is_zero()).then_some(d))
                .map_err(de::Error::custom)
        }
    }
}

/// `Option<Duration>`: `None` is "never" (no limit).
pub mod limit {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        read_limit(d)
    }

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.map_or_else(|| "never".to_owned(), format_duration))
    }
}

/// A duration that must end: hook timeouts.
pub mod bounded_duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        read_limit(d)?.ok_or_else(|| {
            de::Error::custom(
                "must be a positive duration such as \"10s\": a hook may not run forever",
            )
        })
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*v))
    }
}

/// A polling interval: at least 100 ms, so a typo cannot hammer the LAPI.
pub mod poll_interval {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        read_limit(d)?
            .filter(|d| *d >= Duration::from_millis(100))
            .ok_or_else(|| de::Error::custom("must be a duration of at least 100ms, e.g. \"2s\""))
    }

    pub use super::bounded_duration::serialize;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Some(Duration::from_secs(86400))));
        assert_eq!(parse_duration("never"), Ok(None));
        assert_eq!(parse_duration("0"), Ok(None));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("100y").is_ok());
        let huge = parse_duration("600000000y").unwrap_err();
        assert!(huge.contains("100 years"), "{huge}");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
    }
}
