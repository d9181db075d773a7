//! The ban book's file: `state_dir/bans.json`, written atomically, names instead of raw codes.
//! Only the ban book reads and writes it. Version 1 files (numeric codes, networks apart) load.

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::record::{BanRecord, FleetNote, Origin, Trigger};
use crate::net::cidr::Cidr;

pub const STATE_FILE: &str = "bans.json";
pub const STATE_VERSION: u32 = 2;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a portsentry state file ({message})")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{path}: state version {found} is newer than this portsentry understands ({STATE_VERSION})"
    )]
    TooNew { path: PathBuf, found: u32 },
}

/// One ban as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredBan {
    target: Cidr,
    origin: Origin,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    shadow: bool,
    since_ms: u64,
    /// `null`: never expires.
    expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trigger: Option<Trigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fleet: Option<FleetNote>,
    #[serde(default)]
    drops: u64,
}

/// An operator's unban: fleet decisions for the target are refused until `until_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbanned {
    pub target: Cidr,
    pub until_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredFile {
    version: u32,
    bans: Vec<StoredBan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unbanned: Vec<Unbanned>,
}

/// What the file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub bans: Vec<BanRecord>,
    pub unbanned: Vec<Unbanned>,
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Reads the file; a missing file is an empty book. Never modifies anything.
    pub fn load(&self) -> Result<Saved, StateError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::default()),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        parse(&text).map_err(|e| match e {
            ParseError::TooNew(found) => StateError::TooNew { path, found },
            ParseError::Bad(message) => StateError::Corrupt { path, message },
        })
    }

    /// Moves an unreadable or too-new file aside (kept for the administrator, never deleted);
    /// only the daemon does this, so that it can start and save again.
    pub fn keep_aside(&self, why: &str) -> Result<PathBuf, StateError> {
        let path = self.path();
        let moved = path.with_extension(format!("json.{why}-{}", crate::clock::unix_ms()));
        fs::rename(&path, &moved).map_err(|source| StateError::Io { path, source })?;
        Ok(moved)
    }

    /// Writes the file atomically ([`write_atomic`]).
    pub fn save(&self, saved: &Saved) -> Result<(), StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let file = StoredFile {
            version: STATE_VERSION,
            bans: saved.bans.iter().map(StoredBan::from).collect(),
            unbanned: saved.unbanned.clone(),
        };
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        write_atomic(&self.dir, STATE_FILE, text.as_bytes()).map_err(io(&self.path()))
    }
}

impl From<&BanRecord> for StoredBan {
    fn from(r: &BanRecord) -> Self {
        Self {
            target: r.target,
            origin: r.origin,
            shadow: r.shadow,
            since_ms: r.since_ms,
            expires_ms: r.expires_ms,
            trigger: r.trigger,
            fleet: r.fleet.clone(),
            drops: r.drops,
        }
    }
}

impl From<StoredBan> for BanRecord {
    fn from(b: StoredBan) -> Self {
        Self {
            target: b.target,
            origin: b.origin,
            shadow: b.shadow,
            since_ms: b.since_ms,
            expires_ms: b.expires_ms,
            trigger: b.trigger,
            fleet: b.fleet,
            drops: b.drops,
        }
    }
}

enum ParseError {
    TooNew(u32),
    Bad(String),
}

fn parse(text: &str) -> Result<Saved, ParseError> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let v: Version = serde_json::from_str(text).map_err(|e| ParseError::Bad(e.to_string()))?;
    match v.version {
        1 => serde_json::from_str::<v1::File>(text)
            .map(v1::File::into_saved)
            .map_err(|e| ParseError::Bad(e.to_string())),
        STATE_VERSION => {
            let f: StoredFile =
                serde_json::from_str(text).map_err(|e| ParseError::Bad(e.to_string()))?;
            Ok(Saved {
                bans: f.bans.into_iter().map(BanRecord::from).collect(),
                unbanned: f.unbanned,
            })
        }
        n if n > STATE_VERSION => Err(ParseError::TooNew(n)),
        n => Err(ParseError::Bad(format!("unknown version {n}"))),
    }
}

/// Version 1: numeric codes, addresses and networks in separate lists, fleet notes apart.
mod v1 {
    use std::net::IpAddr;

    use serde::Deserialize;

    use super::super::record::{BanRecord, FleetNote, Origin, OriginRules, Trigger};
    use super::Saved;
    use crate::net::cidr::Cidr;

    #[derive(Deserialize)]
    pub struct File {
        bans: Vec<Ban>,
        #[serde(default)]
        cidr_bans: Vec<Network>,
        #[serde(default)]
        fleet: Vec<Note>,
    }

    #[derive(Deserialize)]
    struct Ban {
        addr: IpAddr,
        banned_at_ms: u64,
        expires_at_ms: Option<u64>,
        port: u16,
        proto: u8,
        scan_type: u8,
        origin: u8,
        drops: u64,
    }

    #[derive(Deserialize)]
    struct Network {
        cidr: String,
        added_at_ms: u64,
        expires_at_ms: Option<u64>,
        #[serde(default = "manual")]
        origin: u8,
    }

    fn manual() -> u8 {
        Origin::Manual as u8
    }

    #[derive(Deserialize)]
    struct Note {
        target: String,
        origin: String,
        scenario: String,
    }

    impl File {
        pub fn into_saved(self) -> Saved {
            let note = |t: &Cidr| {
                self.fleet
                    .iter()
                    .find(|n| n.target == t.to_string())
                    .map(|n| FleetNote {
                        origin: n.origin.clone(),
                        scenario: n.scenario.clone(),
                    })
            };
            let mut bans: Vec<BanRecord> = self
                .bans
                .iter()
                .map(|b| {
                    let target = Cidr::host(b.addr);
                    let origin = Origin::from_code(b.origin);
                    BanRecord {
                        target,
                        origin,
                        shadow: false,
                        since_ms: b.banned_at_ms,
                        expires_ms: b.expires_at_ms,
                        trigger: Trigger::from_kernel(b.proto, b.port, b.scan_type),
                        fleet: (origin == Origin::Fleet).then(|| note(&target)).flatten(),
                        drops: b.drops,
                    }
                })
                .collect();
            bans.extend(self.cidr_bans.iter().filter_map(|n| {
                let target: Cidr = n.cidr.parse().ok()?;
                let origin = Origin::from_code(n.origin);
                Some(BanRecord {
                    target,
                    origin,
                    shadow: false,
                    since_ms: n.added_at_ms,
                    expires_ms: n.expires_at_ms,
                    trigger: None,
                    fleet: (origin == Origin::Fleet).then(|| note(&target)).flatten(),
                    drops: 0,
                })
            }));
            Saved {
                bans,
                unbanned: Vec::new(),
            }
        }
    }
}

/// Replaces `dir/name` atomically: a temporary file in the same directory, fsync, rename, fsync
/// of the directory. A crash leaves either the old or the new file, never half of one.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bans::record::{ScanKey, TriggerProto};

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ps-store-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn record(target: &str, origin: Origin) -> BanRecord {
        BanRecord {
            target: target.parse().unwrap(),
            origin,
            shadow: origin == Origin::Detected,
            since_ms: 1_000,
            expires_ms: Some(5_000),
            trigger: Some(Trigger {
                proto: TriggerProto::Tcp,
                port: 111,
                scan: ScanKey::Syn,
            }),
            fleet: None,
            drops: 3,
        }
    }

    #[test]
    fn round_trip_with_names_not_codes() {
        let dir = tmpdir("rt");
        let store = StateStore::new(&dir);
        assert_eq!(
            store.load().unwrap(),
            Saved::default(),
            "missing file is empty"
        );
        let mut fleet = record("10.9.0.0/16", Origin::Fleet);
        fleet.fleet = Some(FleetNote {
            origin: "cscli".into(),
            scenario: "manual 'ban' from 'm1'".into(),
        });
        let saved = Saved {
            bans: vec![record("10.0.0.2", Origin::Detected), fleet],
            unbanned: vec![Unbanned {
                target: "2001:db8::/64".parse().unwrap(),
                until_ms: 9,
            }],
        };
        store.save(&saved).unwrap();
        assert_eq!(store.load().unwrap(), saved);
        let text = fs::read_to_string(store.path()).unwrap();
        for name in [
            "\"detected\"",
            "\"crowdsec\"",
            "\"tcp\"",
            "\"syn\"",
            "\"shadow\": true",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn version_1_files_load() {
        let old = r#"{"version":1,"bans":[{"addr":"10.0.0.2","banned_at_ms":1,"expires_at_ms":null,"port":111,"proto":6,"scan_type":1,"origin":1,"drops":4}],
            "cidr_bans":[{"cidr":"10.9.0.0/16","added_at_ms":1,"expires_at_ms":2,"origin":4}],
            "fleet":[{"target":"10.9.0.0/16","origin":"cscli","scenario":"s"}]}"#;
        let s = parse(old).ok().unwrap();
        assert_eq!(s.bans.len(), 2);
        assert_eq!(s.bans[0].origin, Origin::Detected);
        assert_eq!(
            s.bans[0].trigger.unwrap().text(),
            "TCP/111 TCP SYN/Normal scan"
        );
        assert_eq!(s.bans[1].origin, Origin::Fleet);
        assert_eq!(s.bans[1].fleet.as_ref().unwrap().origin, "cscli");
    }

    #[test]
    fn corrupt_and_newer_files_are_errors_and_loading_never_moves_them() {
        let dir = tmpdir("bad");
        fs::create_dir_all(&dir).unwrap();
        let store = StateStore::new(&dir);
        fs::write(store.path(), "{ not json").unwrap();
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
        assert_eq!(fs::read_to_string(store.path()).unwrap(), "{ not json");
        fs::write(store.path(), r#"{"version": 99, "bans": []}"#).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, StateError::TooNew { found: 99, .. }), "{err}");
        let moved = store.keep_aside("newer").unwrap();
        assert!(moved.exists() && !store.path().exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
