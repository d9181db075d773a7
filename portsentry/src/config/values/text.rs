//! Text values: non-empty strings, secrets that are never printed, the LAPI URL, a scenario
//! name, mail addresses, and an interval that may be "off".

use serde::{de, Deserialize, Deserializer, Serializer};

use super::{format_duration, parse_duration};

/// A string that must not be blank; stored trimmed.
pub mod non_empty {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let text = String::deserialize(d)?;
        let text = text.trim();
        if text.is_empty() {
            return Err(de::Error::custom("must not be empty"));
        }
        Ok(text.to_owned())
    }

    pub fn serialize<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }
}

/// A secret: read like any non-empty string, never printed (check-config output ends up in
/// tickets and chat).
pub mod secret {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        non_empty::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(_: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("(hidden)")
    }
}

/// An optional non-empty string (a login name).
pub mod optional_text {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        non_empty::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_deref().unwrap_or(""))
    }
}

/// The LAPI base URL: http:// or https://, stored without a trailing slash.
pub mod lapi_url {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let url = non_empty::deserialize(d)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(de::Error::custom(format!(
                "`{url}` is not an http:// or https:// URL, e.g. \"http://127.0.0.1:8080\""
            )));
        }
        Ok(url.trim_end_matches('/').to_owned())
    }

    pub use super::non_empty::serialize;
}

/// A CrowdSec scenario name: one word such as "portsentry/port-scan".
pub mod scenario {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let name = non_empty::deserialize(d)?;
        if name.contains(char::is_whitespace) {
            return Err(de::Error::custom(
                "must not contain spaces, e.g. \"portsentry/port-scan\"",
            ));
        }
        Ok(name)
    }

    pub use super::non_empty::serialize;
}

/// Mail addresses (`["root@example.org"]`), each checked as RFC 5322 mailbox.
pub fn mailboxes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for a in &list {
        if let Err(e) = a.parse::<lettre::message::Mailbox>() {
            return Err(de::Error::custom(format!(
                "`{a}` is not a mail address: {e}"
            )));
        }
    }
    Ok(list)
}

/// An interval of at least a second, or "off" (`None`).
pub mod interval_or_off {
    use super::*;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        match parse_duration(&text).map_err(de::Error::custom)? {
            Some(d) if d >= Duration::from_secs(1) => Ok(Some(d)),
            _ => Err(de::Error::custom(format!(
                "`{text}` is not an interval of at least 1s, e.g. \"1h\", or \"off\""
            ))),
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.map_or_else(|| "off".to_owned(), format_duration))
    }
}
