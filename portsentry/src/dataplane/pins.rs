//! Pinned maps: whether the pins in a directory fit this build, and moving ban state out of
//! pins that do not so the load can create fresh maps.
//!
//! Owns the compatibility rules (map type, key and value size, layout version, capacity), all
//! checked against `portsentry_common::maps::ALL`, and the unpinning for migration. It reads old
//! bans but never writes any: the ban book puts migrated bans into the fresh maps.

use std::path::Path;

use aya::maps::{lpm_trie::LpmTrie, Array, HashMap, Map, MapData, MapInfo, MapType};
use portsentry_common::{
    maps::{self as defs, MapKind, MapSpec},
    AddrKey, BanEntry, Config, LAYOUT_VERSION,
};

use super::{
    map_err,
    maps::{cidr_from_key, open},
    DataplaneError, LoadOptions, Migrated, Result,
};
use crate::net::cidr;

/// The aya map type of a declared kind.
fn map_type(kind: MapKind) -> MapType {
    match kind {
        MapKind::Array => MapType::Array,
        MapKind::HashMap => MapType::Hash,
        MapKind::LruHashMap => MapType::LruHash,
        MapKind::LpmTrie => MapType::LpmTrie,
        MapKind::PerCpuArray => MapType::PerCpuArray,
        MapKind::RingBuf => MapType::RingBuf,
    }
}

/// The map pinned at `dir/NAME`, as the `Map` variant its actual type calls for.
pub(super) fn open_map(dir: &Path, spec: &'static MapSpec) -> Result<Map> {
    let name = spec.name;
    let data = MapData::from_pin(dir.join(name)).map_err(map_err(name))?;
    Ok(match data.info().and_then(|i| i.map_type()) {
        Ok(MapType::Array) => Map::Array(data),
        Ok(MapType::Hash) => Map::HashMap(data),
        Ok(MapType::LruHash) => Map::LruHashMap(data),
        Ok(MapType::LpmTrie) => Map::LpmTrie(data),
        Ok(MapType::PerCpuArray) => Map::PerCpuArray(data),
        Ok(other) => {
            return Err(DataplaneError::IncompatiblePin {
                path: dir.join(name),
                dir: dir.to_path_buf(),
                what: format!("unexpected map type {other:?}"),
            })
        }
        Err(e) => return Err(map_err(name)(e)),
    })
}

/// Refuses pinned maps whose type or key/value size differ from this build's.
pub(super) fn check(dir: &Path) -> Result<()> {
    for spec in defs::ALL {
        let path = dir.join(spec.name);
        if !path.exists() {
            continue;
        }
        let incompatible = |what: String| DataplaneError::IncompatiblePin {
            path: path.clone(),
            dir: dir.to_path_buf(),
            what,
        };
        let info =
            MapInfo::from_pin(&path).map_err(|e| incompatible(format!("cannot open it: {e}")))?;
        let actual = info
            .map_type()
            .map_err(|e| incompatible(format!("unknown type: {e}")))?;
        let expected = map_type(spec.kind);
        if actual != expected {
            return Err(incompatible(format!(
                "type {actual:?}, expected {expected:?}"
            )));
        }
        let (key, value) = (spec.key_size, spec.value_size);
        if expected != MapType::RingBuf
            && (info.key_size() as usize != key || info.value_size() as usize != value)
        {
            return Err(incompatible(format!(
                "key/value size {}/{}, expected {key}/{value}",
                info.key_size(),
                info.value_size()
            )));
        }
    }
    Ok(())
}

/// The pinned config's layout version must be this build's (0: never configured).
pub(super) fn check_layout_version(dir: &Path) -> Result<()> {
    let path = dir.join(defs::PS_CONFIG.name);
    if !path.exists() {
        return Ok(());
    }
    let config: Array<MapData, Config> = open(&mut |spec| open_map(dir, spec), &defs::PS_CONFIG)?;
    let found = config
        .get(&0, 0)
        .map_err(map_err(defs::PS_CONFIG.name))?
        .layout_version;
    if found != 0 && found != LAYOUT_VERSION {
        return Err(DataplaneError::IncompatiblePin {
            path,
            dir: dir.to_path_buf(),
            what: format!("layout version {found}, this build writes {LAYOUT_VERSION}"),
        });
    }
    Ok(())
}

/// Differences between the pinned maps in `dir` and what this load asks for: another layout
/// version, another map type or key/value size, another capacity. Empty: reuse the pins.
pub(super) fn mismatches(dir: &Path, opts: &LoadOptions) -> Result<Vec<String>> {
    let mut reasons = Vec::new();
    if let Err(DataplaneError::IncompatiblePin { path, what, .. }) = check(dir) {
        reasons.push(format!("{}: {what}", path.display()));
        return Ok(reasons);
    }
    if let Err(DataplaneError::IncompatiblePin { what, .. }) = check_layout_version(dir) {
        reasons.push(what);
    }
    for spec in defs::ALL {
        let (Some(want), path) = (opts.capacity(spec), dir.join(spec.name)) else {
            continue;
        };
        if let Ok(info) = MapInfo::from_pin(&path) {
            if info.max_entries() != want {
                reasons.push(format!(
                    "{} max_entries {} -> {want}",
                    spec.name,
                    info.max_entries()
                ));
            }
        }
    }
    Ok(reasons)
}

/// Reads the bans out of pins that must be replaced, then unpins them so the load creates fresh
/// maps. Old entries are copied only when their key and value sizes match this build (the
/// layout versions so far only gave meaning to padding); otherwise the state file restores them.
pub(super) fn migrate_out(dir: &Path, reasons: Vec<String>) -> Result<Migrated> {
    let mut m = Migrated {
        reasons,
        ..Migrated::default()
    };
    let mut pinned = |spec| open_map(dir, spec);
    if check(dir).is_ok() {
        let bans: Result<HashMap<MapData, AddrKey, BanEntry>> = open(&mut pinned, &defs::PS_BANS);
        if let Ok(bans) = bans {
            m.bans = bans
                .iter()
                .filter_map(|r| r.ok())
                .map(|(k, mut v)| {
                    v._pad = [0; 2];
                    (cidr::key_addr(&k), v)
                })
                .collect();
        }
        let trie: Result<LpmTrie<MapData, [u8; 16], u64>> = open(&mut pinned, &defs::PS_BAN_CIDRS);
        if let Ok(trie) = trie {
            m.networks = trie
                .keys()
                .filter_map(|k| k.ok())
                .map(|k| cidr_from_key(&k))
                .collect();
        }
        m.copied = true;
    }
    for spec in defs::ALL {
        let path = dir.join(spec.name);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| DataplaneError::IncompatiblePin {
                path: path.clone(),
                dir: dir.to_path_buf(),
                what: format!("cannot unpin it for migration: {e}"),
            })?;
        }
    }
    Ok(m)
}
