//! Replacing the contents of an LPM trie (the allowlist and the banned networks) in place.
//!
//! Owns [`TrieWrite`] and [`replace`]: set arithmetic on keys, nothing else. Which networks are
//! banned or allowed is decided by the ban book and the configuration, never here.

use aya::{
    maps::{
        lpm_trie::{Key as LpmKey, LpmTrie},
        MapData, MapError,
    },
    Pod,
};

use super::{map_err, maps::is_not_found, Result};
use crate::net::cidr::Cidr;

/// What writing a trie did: its entry count afterwards and the entries it had no room for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TrieWrite {
    pub count: u32,
    pub refused: Vec<Cidr>,
}

/// Makes `trie` hold exactly `cidrs`: entries no longer wanted are removed first, so a full trie
/// never blocks a removal; an insert with no room left is reported in `refused`, never fatal.
pub(super) fn replace<V: Pod>(
    trie: &mut LpmTrie<MapData, [u8; 16], V>,
    name: &'static str,
    cidrs: &[Cidr],
    value: V,
) -> Result<TrieWrite> {
    use std::collections::HashSet;
    let as_pair = |k: &LpmKey<[u8; 16]>| (k.prefix_len(), k.data());
    let old: HashSet<(u32, [u8; 16])> = trie
        .keys()
        .filter_map(|k| k.ok())
        .map(|k| as_pair(&k))
        .collect();
    let wanted: HashSet<(u32, [u8; 16])> = cidrs
        .iter()
        .map(|c| (c.key_prefix(), c.key().addr))
        .collect();
    let mut count = old.len() as u32;
    for (prefix, data) in old.difference(&wanted) {
        match trie.remove(&LpmKey::new(*prefix, *data)) {
            Ok(()) => count -= 1,
            Err(e) if is_not_found(&e) => count -= 1,
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    let mut refused = Vec::new();
    for c in cidrs {
        let pair = (c.key_prefix(), c.key().addr);
        if old.contains(&pair) {
            continue; // keep its counter
        }
        match trie.insert(&LpmKey::new(pair.0, pair.1), value, 0) {
            Ok(()) => count += 1,
            Err(MapError::SyscallError(e))
                if matches!(
                    e.io_error.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::E2BIG)
                ) =>
            {
                refused.push(*c)
            }
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    Ok(TrieWrite { count, refused })
}
