//! The hook values' syntax: commands as argv lists (never a shell line), the blocking command
//! that must name its target, the hosts.deny line.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

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
