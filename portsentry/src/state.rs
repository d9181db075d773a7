//! Bans that last: a JSON snapshot in `state_dir`, written atomically, restored into the kernel
//! at start. Times are wall-clock milliseconds, so a ban's expiry survives a reboot.

use std::{
    fs::{self, File},
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
};

use portsentry_common::{ban_origin, BanEntry, ScanType};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    cidr::Cidr,
    clock::Now,
    dataplane::{DataplaneError, Maps},
};

pub const STATE_FILE: &str = "bans.json";
const STATE_VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a portsentry state file ({message}); it was moved aside to {moved}")]
    Corrupt {
        path: PathBuf,
        message: String,
        moved: PathBuf,
    },
    #[error(
        "{path}: state version {found} is newer than this portsentry understands ({STATE_VERSION})"
    )]
    TooNew { path: PathBuf, found: u32 },
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

type Result<T> = std::result::Result<T, StateError>;

/// One banned address as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBan {
    pub addr: IpAddr,
    pub banned_at_ms: u64,
    /// `None`: never expires.
    pub expires_at_ms: Option<u64>,
    pub port: u16,
    pub proto: u8,
    pub scan_type: u8,
    pub origin: u8,
    pub drops: u64,
}

/// One banned network as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCidrBan {
    pub cidr: String,
    pub added_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    /// `ban_origin::*`; files from before fleet mode only had manual networks.
    #[serde(default = "manual_origin")]
    pub origin: u8,
}

fn manual_origin() -> u8 {
    ban_origin::MANUAL
}

/// Where a fleet ban came from, for `portsentry list` (the kernel entry only says "fleet").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetNote {
    /// The address or network, as `Cidr` prints it.
    pub target: String,
    /// CrowdSec's origin: `cscli`, `crowdsec`, `CAPI`, `portsentry`, …
    pub origin: String,
    pub scenario: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub bans: Vec<SavedBan>,
    #[serde(default)]
    pub cidr_bans: Vec<SavedCidrBan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fleet: Vec<FleetNote>,
}

impl SavedBan {
    pub fn from_entry(addr: IpAddr, e: &BanEntry, now: &Now) -> Self {
        Self {
            addr,
            banned_at_ms: now.boot_to_unix_ms(e.banned_at_ns),
            expires_at_ms: (e.expires_at_ns != 0).then(|| now.boot_to_unix_ms(e.expires_at_ns)),
            port: e.port,
            proto: e.proto,
            scan_type: e.scan_type,
            origin: e.origin,
            drops: e.drops,
        }
    }

    /// The kernel entry for a restored ban (origin kept, drop counter carried over).
    pub fn to_entry(&self, now: &Now) -> BanEntry {
        BanEntry {
            banned_at_ns: now.unix_ms_to_boot(self.banned_at_ms),
            expires_at_ns: self
                .expires_at_ms
                .map(|t| now.unix_ms_to_boot(t))
                .unwrap_or(0),
            drops: self.drops,
            port: self.port,
            proto: self.proto,
            scan_type: self.scan_type,
            origin: self.origin,
            _pad: [0; 3],
        }
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }
}

impl SavedCidrBan {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }
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

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Reads the state; a missing file is an empty state. A file that does not parse is moved
    /// aside (kept for the administrator, never deleted) and reported as an error.
    pub fn load(&self) -> Result<State> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: STATE_VERSION,
                    ..State::default()
                })
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        match serde_json::from_str::<State>(&text) {
            Ok(s) if s.version > STATE_VERSION => Err(StateError::TooNew {
                path,
                found: s.version,
            }),
            Ok(s) => Ok(s),
            Err(e) => {
                let moved =
                    path.with_extension(format!("json.corrupt-{}", crate::clock::unix_ms()));
                fs::rename(&path, &moved).map_err(|source| StateError::Io {
                    path: path.clone(),
                    source,
                })?;
                Err(StateError::Corrupt {
                    path,
                    message: e.to_string(),
                    moved,
                })
            }
        }
    }

    /// Writes the state atomically ([`write_atomic`]).
    pub fn save(&self, state: &State) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let mut text = serde_json::to_string_pretty(state).unwrap_or_default();
        text.push('\n');
        write_atomic(&self.dir, STATE_FILE, text.as_bytes()).map_err(io(&self.path()))
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

/// The kernel's bans and banned networks as a state snapshot. `cidr_meta` supplies the times of
/// banned networks (the kernel stores only their drop counters); unknown ones get "now".
pub fn snapshot(maps: &Maps, cidr_meta: &[SavedCidrBan], now: &Now) -> Result<State> {
    let mut bans: Vec<SavedBan> = maps
        .bans()?
        .into_iter()
        .map(|(addr, e)| SavedBan::from_entry(addr, &e, now))
        .filter(|b| !b.is_expired(now.unix_ms))
        .collect();
    bans.sort_by_key(|b| b.addr);
    let cidr_bans = maps
        .ban_cidrs()?
        .into_iter()
        .map(|(c, _)| {
            let text = c.to_string();
            cidr_meta
                .iter()
                .find(|m| m.cidr == text)
                .cloned()
                .unwrap_or(SavedCidrBan {
                    cidr: text,
                    added_at_ms: now.unix_ms,
                    expires_at_ms: None,
                    origin: ban_origin::MANUAL,
                })
        })
        .filter(|c| !c.is_expired(now.unix_ms))
        .collect();
    Ok(State {
        version: STATE_VERSION,
        bans,
        cidr_bans,
        fleet: Vec::new(),
    })
}

/// What restoring did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub bans: usize,
    pub expired: usize,
    /// Bans already in the (pinned) kernel table: the kernel's entry wins.
    pub already_present: usize,
    pub cidrs: Vec<Cidr>,
    pub failed: Vec<String>,
}

/// Puts saved bans that have not expired back into the kernel. Bans already present in a reused
/// pinned table are left as they are (they are newer than any snapshot).
pub fn restore(maps: &mut Maps, state: &State, now: &Now) -> Result<Restored> {
    let mut r = Restored::default();
    for ban in &state.bans {
        if ban.is_expired(now.unix_ms) {
            r.expired += 1;
            continue;
        }
        if maps.ban(ban.addr)?.is_some() {
            r.already_present += 1;
            continue;
        }
        let mut entry = ban.to_entry(now);
        if entry.origin == ban_origin::DETECTED {
            entry.origin = ban_origin::RESTORED;
        }
        match maps.insert_ban(ban.addr, &entry) {
            Ok(()) => r.bans += 1,
            Err(e) => r.failed.push(format!("{}: {e}", ban.addr)),
        }
    }
    for c in &state.cidr_bans {
        if c.is_expired(now.unix_ms) {
            r.expired += 1;
            continue;
        }
        match c.cidr.parse::<Cidr>() {
            Ok(cidr) => r.cidrs.push(cidr),
            Err(e) => r.failed.push(format!("{}: {e}", c.cidr)),
        }
    }
    Ok(r)
}

/// Human name of a ban's trigger, e.g. "TCP/111 TCP SYN/Normal scan" or "manual".
pub fn trigger_text(proto: u8, port: u16, scan_type: u8) -> String {
    let scan = ScanType::from_u8(scan_type);
    match (scan, proto) {
        (ScanType::Manual, _) | (_, 0) => "manual".to_owned(),
        (_, 6) => format!("TCP/{port} {}", scan.name()),
        (_, 17) => format!("UDP/{port} {}", scan.name()),
        _ => format!("{proto}/{port}"),
    }
}

pub fn origin_text(origin: u8) -> &'static str {
    match origin {
        ban_origin::DETECTED => "detected",
        ban_origin::MANUAL => "manual",
        ban_origin::RESTORED => "restored",
        ban_origin::FLEET => "crowdsec",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ps-state-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn ban(addr: &str, expires: Option<u64>) -> SavedBan {
        SavedBan {
            addr: addr.parse().unwrap(),
            banned_at_ms: 1_000,
            expires_at_ms: expires,
            port: 111,
            proto: 6,
            scan_type: 1,
            origin: ban_origin::DETECTED,
            drops: 3,
        }
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tmpdir("rt");
        let store = StateStore::new(&dir);
        assert_eq!(
            store.load().unwrap().bans,
            vec![],
            "missing file is empty state"
        );
        let state = State {
            version: STATE_VERSION,
            bans: vec![ban("10.0.0.2", None), ban("2001:db8::2", Some(5))],
            cidr_bans: vec![SavedCidrBan {
                cidr: "10.9.0.0/16".into(),
                added_at_ms: 1,
                expires_at_ms: Some(2),
                origin: ban_origin::FLEET,
            }],
            fleet: vec![FleetNote {
                target: "10.9.0.0/16".into(),
                origin: "cscli".into(),
                scenario: "manual 'ban' from 'm1'".into(),
            }],
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_from_before_fleet_mode_still_load() {
        let old = r#"{"version":1,"bans":[],"cidr_bans":[{"cidr":"10.0.0.0/8","added_at_ms":1,"expires_at_ms":null}]}"#;
        let s: State = serde_json::from_str(old).unwrap();
        assert_eq!(s.cidr_bans[0].origin, ban_origin::MANUAL);
        assert!(s.fleet.is_empty());
    }

    #[test]
    fn corrupt_state_is_moved_aside_not_lost() {
        let dir = tmpdir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(STATE_FILE), "{ not json").unwrap();
        let err = StateStore::new(&dir).load().unwrap_err();
        let StateError::Corrupt { moved, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(fs::read_to_string(moved).unwrap(), "{ not json");
        assert!(err.to_string().contains("moved aside"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn entries_convert_through_wall_clock() {
        let now = Now {
            boot_ns: 10_000_000_000,
            unix_ms: 1_700_000_000_000,
        };
        let saved = ban("10.0.0.2", Some(1_700_000_060_000));
        let entry = saved.to_entry(&now);
        assert_eq!(entry.expires_at_ns, 70_000_000_000);
        assert_eq!(
            SavedBan::from_entry(saved.addr, &entry, &now).expires_at_ms,
            saved.expires_at_ms
        );
        assert!(saved.is_expired(1_700_000_060_000) && !saved.is_expired(1_700_000_059_999));
    }
}
