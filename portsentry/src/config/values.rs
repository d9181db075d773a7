//! How each kind of config value is read and written: durations with "never", port lists,
//! argv lists, paths where "" means unset, bounded integers. Used through `#[serde(with)]` on
//! the settings fields, so a field's type and its file syntax are declared together.
//!
//! Every reader validates while it reads, so an error carries the span of the offending value
//! (toml_edit attaches it) and the parser only has to name the key.

use std::path::PathBuf;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::net::{cidr::Cidr, ports::PortSet};

pub use super::durations::{
    bounded_duration, check_duration, format_duration, limit, parse_duration, poll_interval,
    MAX_DURATION,
};

/// An integer within `MIN..=MAX`, with an error that says the range.
pub fn int_in<'de, D, T, const MIN: i64, const MAX: i64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let n = i64::deserialize(d)?;
    if !(MIN..=MAX).contains(&n) {
        return Err(de::Error::custom(format!(
            "{n} is out of range ({MIN}-{MAX})"
        )));
    }
    T::try_from(n).map_err(|_| de::Error::custom(format!("{n} is out of range ({MIN}-{MAX})")))
}

/// Wider IPv6 prefix lengths, each shorter than the one before it (`[56, 48]`).
pub fn wider_prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let list = Vec::<i64>::deserialize(d)?;
    let mut out: Vec<u8> = Vec::with_capacity(list.len());
    for n in list {
        let len = u8::try_from(n)
            .ok()
            .filter(|l| (1..=127).contains(l))
            .ok_or_else(|| de::Error::custom(format!("{n} is not a prefix length (1-127)")))?;
        if let Some(prev) = out.last() {
            if len >= *prev {
                return Err(de::Error::custom(format!(
                    "/{len} is not wider than /{prev} before it: list the prefixes widest last"
                )));
            }
        }
        out.push(len);
    }
    Ok(out)
}

/// Advanced mode's port limit: 0 is off (`None`).
pub mod port_limit {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        let n: u16 = int_in::<D, u16, 0, 65535>(d)?;
        Ok((n > 0).then_some(n))
    }

    pub fn serialize<S: Serializer>(v: &Option<u16>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(v.unwrap_or(0))
    }
}

/// One element of a port list: a port number or an "a-b" range string. Read by its own
/// visitor (not an untagged enum, which would buffer the value and lose its span) so an error
/// points at the element itself.
struct PortEntry(PortSet);

impl<'de> Deserialize<'de> for PortEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;
        impl de::Visitor<'_> for Entry {
            type Value = PortEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port number or a range such as \"6000-6063\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<PortEntry, E> {
                let mut set = PortSet::default();
                match u16::try_from(n) {
                    Ok(p) if p > 0 => set.insert(p),
                    _ => return Err(E::custom(format!("{n} is not a port number (1-65535)"))),
                }
                Ok(PortEntry(set))
            }
            fn visit_str<E: de::Error>(self, t: &str) -> Result<PortEntry, E> {
                let mut set = PortSet::default();
                set.add_entry(t.trim()).map_err(E::custom)?;
                Ok(PortEntry(set))
            }
        }
        d.deserialize_any(Entry)
    }
}

/// A port list: "1,11,6000-6063" or [1, 11, "6000-6063"].
pub mod ports {
    use super::*;

    struct List;

    impl<'de> de::Visitor<'de> for List {
        type Value = PortSet;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a port list such as \"1,11,6000-6063\" or [1, 11, \"6000-6063\"]")
        }
        fn visit_str<E: de::Error>(self, t: &str) -> Result<PortSet, E> {
            PortSet::parse(t).map_err(E::custom)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<PortSet, A::Error> {
            let mut set = PortSet::default();
            while let Some(PortEntry(part)) = seq.next_element()? {
                for p in part.iter() {
                    set.insert(p);
                }
            }
            Ok(set)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PortSet, D::Error> {
        d.deserialize_any(List)
    }

    pub fn serialize<S: Serializer>(v: &PortSet, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
}

/// A list of addresses and networks, duplicates dropped (first kept).
pub mod cidrs {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
        let mut out: Vec<Cidr> = Vec::new();
        for c in Vec::<Cidr>::deserialize(d)? {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }

    pub fn serialize<S: Serializer>(v: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
}

/// Interface names: one string or a list.
pub mod interfaces {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a list of interface names such as [\"eth0\"]")]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let list = match Raw::deserialize(d)? {
            Raw::One(n) => vec![n],
            Raw::Many(l) => l,
        };
        if let Some(bad) = list
            .iter()
            .find(|n| n.is_empty() || n.len() > 15 || n.contains(['/', ' ', '\0']))
        {
            return Err(de::Error::custom(format!(
                "`{bad}` is not a valid interface name"
            )));
        }
        Ok(list)
    }

    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
}

/// A path; "" is unset (`None`).
pub mod optional_path {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let s = String::deserialize(d)?;
        if s.contains('\0') {
            return Err(de::Error::custom("a path cannot contain a NUL character"));
        }
        Ok((!s.is_empty()).then(|| PathBuf::from(s)))
    }

    pub fn serialize<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&v.as_deref().unwrap_or(std::path::Path::new("")).display())
    }
}

/// An `address:port` to listen on (`127.0.0.1:9650`, `[::1]:9650`); "" = off (`None`).
pub mod optional_listen {
    use super::*;
    use std::net::SocketAddr;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|_| {
            de::Error::custom(format!(
                "{s:?} is not an address:port (e.g. \"127.0.0.1:9650\" or \"[::1]:9650\"; \"\" = off)"
            ))
        })
    }

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }
}

/// A path that must be set.
pub mod required_path {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        optional_path::deserialize(d)?.ok_or_else(|| de::Error::custom("must not be empty"))
    }

    pub fn serialize<S: Serializer>(v: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&v.display())
    }
}

/// Whether a hook template names the banned address.
pub fn has_target(s: &str) -> bool {
    s.contains("$TARGET$") || s.contains("{target}")
}

const ARGV_NOT_STRING: &str = "must be a list of strings (argv), e.g. [\"/usr/local/bin/notify\", \"$TARGET$\"]: commands are never run through a shell";

fn read_argv<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a list of strings (argv)")]
    enum Raw {
        List(Vec<String>),
        // Only the shape matters: a shell line is refused whatever it says.
        Text(#[allow(dead_code)] String),
    }
    let argv = match Raw::deserialize(d)? {
        Raw::List(l) => l,
        Raw::Text(_) => return Err(de::Error::custom(ARGV_NOT_STRING)),
    };
    match argv.first() {
        None => Ok(None),
        Some(p) if p.trim().is_empty() => Err(de::Error::custom(
            "the program (first element) must not be empty",
        )),
        Some(_) => Ok(Some(argv)),
    }
}

/// A command as argv, never a shell line; `[]` is no command (`None`).
pub mod argv {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        read_argv(d)
    }

    pub fn serialize<S: Serializer>(v: &Option<Vec<String>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_deref().unwrap_or_default().serialize(s)
    }
}

/// A blocking command (kill_route): argv that must name the target, or it blocks nothing.
pub mod targeted_argv {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        let argv = read_argv(d)?;
        if argv
            .as_ref()
            .is_some_and(|a| !a.iter().any(|x| has_target(x)))
        {
            return Err(de::Error::custom(
                "must contain $TARGET$ (or {target}): a route for no address blocks nothing",
            ));
        }
        Ok(argv)
    }

    pub use super::argv::serialize;
}

/// The hosts.deny line: one line naming the target; "" is none.
pub mod hosts_deny_line {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let line = String::deserialize(d)?;
        if line.is_empty() {
            return Ok(None);
        }
        if !has_target(&line) {
            return Err(de::Error::custom(
                "must contain $TARGET$ (or {target}), e.g. \"ALL: $TARGET$ : DENY\"",
            ));
        }
        if line.contains('\n') {
            return Err(de::Error::custom("must be a single line"));
        }
        Ok(Some(line))
    }

    pub fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_deref().unwrap_or(""))
    }
}

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
