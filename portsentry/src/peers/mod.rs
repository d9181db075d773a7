//! Learned peers kept across restarts: `state_dir/peers.json`, written atomically, restored into
//! PS_PEERS (outbound peers) and PS_INBOUND_PEERS (inbound ones, only with `learn_inbound`) at
//! start.
//!
//! The cgroup programs (`dataplane::PeerLearning`) record the hosts this one talks to in the
//! kernel maps; this module only carries those maps over a restart: it saves what is in them
//! (address, last-seen time as Unix milliseconds and the `ways` bits; never ports or payload)
//! and puts it back, converting wall-clock time to the kernel's CLOCK_BOOTTIME and dropping
//! peers older than `peer_memory`. One file for both tables, in the format older versions
//! wrote: a peer with the outbound bit goes back into PS_PEERS, one with only the inbound bit
//! into PS_INBOUND_PEERS with `learn_inbound` and nowhere without it (a file from a version
//! that learned every client must not keep protecting them).
//!
//! A room of its own rather than a corner of `bans/`: peers are not bans. The ban book is the
//! one owner of every ban, with precedence rules, table pressure and fleet decisions; none of
//! that applies here, and a peer never becomes a ban or lifts one. Both files go through
//! `crate::state_file` (the atomic write, a damaged or newer file kept aside at start), which
//! keeps them crash-safe the same way without tying their formats together.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use portsentry_common::{peer_ways, PeerEntry};
use serde::{Deserialize, Serialize};

use crate::{
    clock::Now,
    dataplane::{DataplaneError, Maps, PeerTable},
    state_file::{json_version, StateFile, StateFileError, Unfit, Unusable},
};

pub const PEERS_FILE: &str = "peers.json";
pub const PEERS_VERSION: u32 = 1;

/// One learned peer as saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Peer {
    pub addr: IpAddr,
    /// Last time a socket of this host talked to it (Unix milliseconds).
    pub last_seen_ms: u64,
    /// `peer_ways` bits: this host contacted it (1), it contacted this host (2). Files written
    /// before directions were recorded have none: such peers count as contacted by this host.
    #[serde(default = "outbound")]
    pub ways: u32,
}

fn outbound() -> u32 {
    portsentry_common::peer_ways::OUTBOUND
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredFile {
    version: u32,
    peers: Vec<Peer>,
}

/// `state_dir/peers.json`.
#[derive(Clone, Debug)]
pub struct PeerStore {
    file: StateFile,
}

impl PeerStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            file: StateFile::new(dir, PEERS_FILE, "peers file"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.file.path()
    }

    /// Reads the file; a missing file is no peers. Never modifies anything.
    pub fn load(&self) -> Result<Vec<Peer>, StateFileError> {
        Ok(self.file.load(parse)?.unwrap_or_default())
    }

    /// [`load`](Self::load) at the daemon's start: a damaged or too-new file is kept aside
    /// (for the administrator, never deleted).
    pub fn open(&self) -> Result<Vec<Peer>, Unusable> {
        Ok(self.file.open(parse)?.unwrap_or_default())
    }

    /// Writes the file atomically (a crash leaves the old file or the new one).
    pub fn save(&self, peers: &[Peer]) -> Result<(), StateFileError> {
        let file = StoredFile {
            version: PEERS_VERSION,
            peers: peers.to_vec(),
        };
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        self.file.write(text.as_bytes())
    }
}

fn parse(text: &str) -> Result<Vec<Peer>, Unfit> {
    json_version(text, PEERS_VERSION, PEERS_VERSION)?;
    Ok(serde_json::from_str::<StoredFile>(text)?.peers)
}

/// Whether a peer last seen at `last_seen_ms` is still remembered at `now` (`memory` `None`:
/// forever).
fn remembered(last_seen_ms: u64, memory: Option<Duration>, now: &Now) -> bool {
    match memory {
        None => true,
        Some(m) => {
            let memory_ms = u64::try_from(m.as_millis()).unwrap_or(u64::MAX);
            now.unix_ms.saturating_sub(last_seen_ms) < memory_ms
        }
    }
}

/// What [`restore`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Written into the maps.
    pub restored: usize,
    /// Older than `peer_memory`: dropped.
    pub expired: usize,
    /// Inbound-only peers (clients) dropped because `learn_inbound` is off.
    pub inbound_dropped: usize,
}

/// The table a saved peer belongs in, and the ways it keeps there; `None` for an inbound-only
/// peer while `learn_inbound` is off.
fn table_of(ways: u32, learn_inbound: bool) -> Option<(PeerTable, u32)> {
    if ways & peer_ways::OUTBOUND != 0 {
        Some((PeerTable::Outbound, peer_ways::OUTBOUND))
    } else if learn_inbound && ways & peer_ways::INBOUND != 0 {
        Some((PeerTable::Inbound, peer_ways::INBOUND))
    } else {
        None
    }
}

/// Puts saved peers into PS_PEERS and (with `learn_inbound`) PS_INBOUND_PEERS. An entry the map
/// already has (pinned maps survive a restart) keeps the later of the two times. A time before
/// this boot keeps its true age (a negative boot-clock instant), so a peer is forgotten
/// `peer_memory` after it was last seen, whatever the uptime. A peer saved with both bits (a
/// version that kept one table) is restored as outbound only: that is the bit worth keeping.
pub fn restore(
    maps: &mut Maps,
    saved: &[Peer],
    memory: Option<Duration>,
    learn_inbound: bool,
    now: &Now,
) -> Result<Restored, DataplaneError> {
    let mut r = Restored::default();
    for p in saved {
        if !remembered(p.last_seen_ms, memory, now) {
            r.expired += 1;
            continue;
        }
        let Some((table, ways)) = table_of(p.ways, learn_inbound) else {
            r.inbound_dropped += 1;
            continue;
        };
        let last_seen_ns = now.boot_instant(p.last_seen_ms.min(now.unix_ms));
        if let Some(live) = maps.peer_in(table, p.addr)? {
            if live.last_seen_ns >= last_seen_ns {
                r.restored += 1;
                continue;
            }
        }
        let entry = PeerEntry {
            last_seen_ns,
            ways,
            _pad: 0,
        };
        maps.insert_peer_in(table, p.addr, &entry)?;
        r.restored += 1;
    }
    Ok(r)
}

/// The peers worth saving (seen within `memory`), in wall-clock time, sorted: every outbound
/// peer, and the inbound ones with `learn_inbound`. A host in both tables is saved once, with
/// both bits and the later time.
pub fn snapshot(
    maps: &Maps,
    memory: Option<Duration>,
    learn_inbound: bool,
    now: &Now,
) -> Result<Vec<Peer>, DataplaneError> {
    let mut all = maps.peers_in(PeerTable::Outbound)?;
    if learn_inbound {
        all.extend(maps.peers_in(PeerTable::Inbound)?);
    }
    let mut by_addr: std::collections::BTreeMap<IpAddr, Peer> = std::collections::BTreeMap::new();
    for (addr, e) in all {
        let seen = now.instant_to_unix_ms(e.last_seen_ns);
        let p = by_addr.entry(addr).or_insert(Peer {
            addr,
            last_seen_ms: seen,
            ways: 0,
        });
        p.ways |= e.ways;
        p.last_seen_ms = p.last_seen_ms.max(seen);
    }
    let mut peers: Vec<Peer> = by_addr
        .into_values()
        .filter(|p| remembered(p.last_seen_ms, memory, now))
        .collect();
    peers.sort();
    Ok(peers)
}

/// How coarsely a save compares with the last one: last-seen times within the same minute do
/// not make the file worth rewriting (`peer_memory` is days).
const SAVE_RESOLUTION_MS: u64 = 60_000;

/// The daemon's side: the file and what was last written to it, so that an unchanged set of
/// peers is not rewritten every time.
#[derive(Debug)]
pub struct PeerMemory {
    store: PeerStore,
    last_saved: Option<Vec<(IpAddr, u64, u32)>>,
}

impl PeerMemory {
    pub fn new(store: PeerStore) -> Self {
        Self {
            store,
            last_saved: None,
        }
    }

    pub fn store(&self) -> &PeerStore {
        &self.store
    }

    /// Saves the map's peers unless they are what was saved last (to the minute). Returns how
    /// many were written, `None` when nothing needed writing.
    pub fn save(
        &mut self,
        maps: &Maps,
        memory: Option<Duration>,
        learn_inbound: bool,
        now: &Now,
    ) -> anyhow::Result<Option<usize>> {
        let peers = snapshot(maps, memory, learn_inbound, now)?;
        let key: Vec<(IpAddr, u64, u32)> = peers
            .iter()
            .map(|p| (p.addr, p.last_seen_ms / SAVE_RESOLUTION_MS, p.ways))
            .collect();
        if self.last_saved.as_ref() == Some(&key) {
            return Ok(None);
        }
        self.store.save(&peers)?;
        self.last_saved = Some(key);
        Ok(Some(peers.len()))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::state_file::Kept;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ps-peers-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tmpdir("rt");
        let store = PeerStore::new(&dir);
        assert_eq!(store.load().unwrap(), Vec::new(), "missing file: no peers");
        let peers = vec![
            Peer {
                addr: "10.0.0.2".parse().unwrap(),
                last_seen_ms: 1_700_000_000_000,
                ways: portsentry_common::peer_ways::OUTBOUND,
            },
            Peer {
                addr: "2001:db8::2".parse().unwrap(),
                last_seen_ms: 1_700_000_000_001,
                ways: portsentry_common::peer_ways::INBOUND,
            },
        ];
        store.save(&peers).unwrap();
        assert_eq!(store.load().unwrap(), peers);
        let text = fs::read_to_string(store.path()).unwrap();
        assert!(text.contains("\"addr\": \"10.0.0.2\""), "{text}");
        assert!(text.contains("\"last_seen_ms\": 1700000000000"), "{text}");
        // A file from before directions were recorded: its peers count as contacted by us.
        fs::write(
            store.path(),
            r#"{"version":1,"peers":[{"addr":"10.0.0.9","last_seen_ms":5}]}"#,
        )
        .unwrap();
        assert_eq!(
            store.load().unwrap()[0].ways,
            portsentry_common::peer_ways::OUTBOUND
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// Loading reports a bad file and leaves it; opening at start keeps it aside through
    /// `state_file`, byte for byte, with the line every state file gets.
    #[test]
    fn bad_and_newer_files_are_reported_and_kept_aside() {
        let dir = tmpdir("bad");
        fs::create_dir_all(&dir).unwrap();
        let store = PeerStore::new(&dir);
        fs::write(store.path(), "{ not json").unwrap();
        assert!(matches!(store.load(), Err(StateFileError::Corrupt { .. })));
        assert!(store.path().exists(), "loading never moves the file");
        let unusable = store.open().unwrap_err();
        let Kept::Aside(moved) = &unusable.kept else {
            panic!("{unusable:?}");
        };
        assert!(!store.path().exists());
        assert_eq!(fs::read_to_string(moved).unwrap(), "{ not json");
        let line = unusable.line("starting without saved peers");
        let head = format!(
            "portsentry: error: {}: not a portsentry peers file (",
            store.path().display()
        );
        let tail = format!(
            "); kept aside as {}; starting without saved peers",
            moved.display()
        );
        assert!(line.starts_with(&head) && line.ends_with(&tail), "{line}");
        assert!(moved.to_string_lossy().contains("peers.json.corrupt-"));
        fs::write(store.path(), r#"{"version": 9, "peers": []}"#).unwrap();
        assert!(matches!(
            store.load(),
            Err(StateFileError::TooNew { found: 9, .. })
        ));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn saved_peers_go_to_their_table() {
        use peer_ways::{INBOUND, OUTBOUND};
        // Outbound (alone or with the inbound bit of a one-table version) always comes back as
        // outbound; a client only with learn_inbound.
        for learn_inbound in [false, true] {
            assert_eq!(
                table_of(OUTBOUND, learn_inbound),
                Some((PeerTable::Outbound, OUTBOUND))
            );
            assert_eq!(
                table_of(OUTBOUND | INBOUND, learn_inbound),
                Some((PeerTable::Outbound, OUTBOUND))
            );
        }
        assert_eq!(table_of(INBOUND, false), None);
        assert_eq!(table_of(INBOUND, true), Some((PeerTable::Inbound, INBOUND)));
        assert_eq!(table_of(0, true), None);
    }

    #[test]
    fn peer_memory_decides_what_is_remembered() {
        let now = Now {
            boot_ns: 1_000_000_000_000,
            unix_ms: 1_700_000_000_000,
        };
        let day = Duration::from_secs(86_400);
        assert!(remembered(now.unix_ms - 1_000, Some(day), &now));
        assert!(!remembered(now.unix_ms - 86_400_000, Some(day), &now));
        assert!(remembered(0, None, &now), "never forgets without a limit");
        assert!(
            remembered(now.unix_ms + 5_000, Some(day), &now),
            "clock skew"
        );
    }
}
