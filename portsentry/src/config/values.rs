//! How each kind of config value is read and written: durations with "never", port lists,
//! argv lists, paths where "" means unset, bounded integers. Used through `#[serde(with)]` on
//! the settings fields, so a field's type and its file syntax are declared together.
//!
//! Every reader validates while it reads, so an error carries the span of the offending value
//! (toml_edit attaches it) and the parser only has to name the key.
//!
//! Numbers, ports, addresses and paths are read here; the hooks' commands in `commands`,
//! strings, secrets, URLs and mail addresses in `text`, durations in `config::durations`.

use std::path::PathBuf;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::net::{cidr::Cidr, ports::PortSet};

mod commands;
mod text;

pub use self::{
    commands::{argv, has_target, hosts_deny_line, targeted_argv},
    text::{interval_or_off, lapi_url, mailboxes, non_empty, optional_text, scenario, secret},
};
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
