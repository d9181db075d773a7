//! The ban table (PS_BANS) and its prefilter (PS_BAN_FILTER): writing bans one at a time or
//! in batches (each prefilter bit set before its ban, so no ban exists without its bit), the
//! cached prefilter words, reading and removing bans, and walking the table's keys.

use std::{net::IpAddr, os::fd::AsFd};

use aya::maps::{IterableMap, MapError};
use portsentry_common::{maps as defs, AddrKey, BanEntry};

use super::{is_not_found, Maps};
use crate::dataplane::{batch, map_err, DataplaneError, Result};
use crate::net::cidr;

/// `BPF_NOEXIST` (linux/bpf.h): create only; EEXIST if the key exists.
const BPF_NOEXIST: u64 = 1;
/// Elements per batch lookup when reading a table's keys ([`Maps::ban_keys`]): ~0.5 MiB of
/// buffers, far more than any hash bucket holds (a smaller room than a bucket is ENOSPC).
const KEY_CHUNK: usize = 8192;

impl Maps {
    /// Adds or replaces a ban. Its prefilter bit (PS_BAN_FILTER) is set first, so that from
    /// the moment the ban exists, the XDP program looks it up.
    pub fn insert_ban(&mut self, addr: IpAddr, entry: &BanEntry) -> Result<()> {
        let key = cidr::addr_key(addr);
        self.set_filter_bit(&key)?;
        match self.bans.insert(key, entry, 0) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
                Err(DataplaneError::TableFull("ban"))
            }
            Err(e) => Err(map_err(defs::PS_BANS.name)(e)),
        }
    }

    /// Inserts a ban only if the address has none in the kernel; false if it has one (then
    /// only the prefilter bit may have been written). The common case of a fresh ban costs the
    /// insert and at most one filter write.
    pub fn insert_new_ban(&mut self, addr: IpAddr, entry: &BanEntry) -> Result<bool> {
        let key = cidr::addr_key(addr);
        self.set_filter_bit(&key)?;
        match self.bans.insert(key, entry, BPF_NOEXIST) {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
                Err(DataplaneError::TableFull("ban"))
            }
            Err(e) => Err(map_err(defs::PS_BANS.name)(e)),
        }
    }

    /// Writes fresh bans: every prefilter bit of the batch first (one write per changed
    /// word), then the entries, each replacing any entry the kernel holds for its address. One
    /// call each where the kernel has batch operations, else one per element. Returns how many
    /// entries were written, in order: all of them, or fewer when the table was full at the
    /// next one (the caller makes room for it and goes on with the rest).
    pub fn insert_bans(&mut self, keys: &[AddrKey], entries: &[BanEntry]) -> Result<usize> {
        let n = keys.len().min(entries.len());
        let name = defs::PS_BANS.name;
        self.set_filter_bits(&keys[..n])?;
        if self.batch_ops {
            let fd = IterableMap::map(&self.bans).fd().as_fd();
            match batch::update(fd, &keys[..n], &entries[..n]) {
                Ok(()) => return Ok(n),
                Err((written, e)) if e.raw_os_error() == Some(libc::E2BIG) => return Ok(written),
                Err((0, e)) if batch::unsupported(&e) => self.batch_ops = false,
                Err((_, e)) => return Err(map_err(name)(batch_error(e))),
            }
        }
        for (i, (key, entry)) in keys.iter().zip(entries).take(n).enumerate() {
            match self.bans.insert(key, entry, 0) {
                Ok(()) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::E2BIG) =>
                {
                    return Ok(i)
                }
                Err(e) => return Err(map_err(name)(e)),
            }
        }
        Ok(n)
    }

    /// Whether `addr`'s bit is set in the kernel's ban prefilter (read from the map, not the
    /// cache; for tests).
    pub fn filter_bit(&self, addr: IpAddr) -> Result<bool> {
        let (word, bit) = cidr::addr_key(addr).filter_slot();
        let w = self
            .ban_filter
            .get(&word, 0)
            .map_err(map_err(defs::PS_BAN_FILTER.name))?;
        Ok(w & bit != 0)
    }

    /// The cached PS_BAN_FILTER words, read whole the first time where the kernel can.
    fn filter_words(&mut self) -> &mut Vec<Option<u64>> {
        if self.ban_filter_words.is_empty() {
            let words = portsentry_common::BAN_FILTER_WORDS as usize;
            self.ban_filter_words = vec![None; words];
            if self.batch_ops {
                let mut keys = vec![0u32; words];
                let mut values = vec![0u64; words];
                let fd = IterableMap::map(&self.ban_filter).fd().as_fd();
                match batch::lookup_all(fd, &mut keys, &mut values) {
                    Ok(read) => {
                        for (k, v) in keys.iter().zip(&values).take(read) {
                            if let Some(w) = self.ban_filter_words.get_mut(*k as usize) {
                                *w = Some(*v);
                            }
                        }
                    }
                    Err(e) if batch::unsupported(&e) => self.batch_ops = false,
                    // Read word by word on demand instead.
                    Err(_) => {}
                }
            }
        }
        &mut self.ban_filter_words
    }

    /// Filter word `word` as the kernel holds it.
    fn filter_word(&mut self, word: u32) -> Result<u64> {
        if let Some(Some(w)) = self.filter_words().get(word as usize) {
            return Ok(*w);
        }
        self.ban_filter
            .get(&word, 0)
            .map_err(map_err(defs::PS_BAN_FILTER.name))
    }

    /// Sets `key`'s bit in the ban prefilter, before its ban is written: the XDP program looks
    /// a source up in PS_BANS only when its bit is set, so a ban without its bit would never
    /// drop.
    fn set_filter_bit(&mut self, key: &AddrKey) -> Result<()> {
        self.set_filter_bits(std::slice::from_ref(key))
    }

    /// Sets the prefilter bits of `keys`: each changed word written once (one batch call where
    /// the kernel has them), the cache updated only once the kernel holds the word. Call it
    /// before the bans are written, as [`Maps::insert_ban`] does for one; restoring a million
    /// bans would otherwise write a word per ban.
    pub fn set_filter_bits(&mut self, keys: &[AddrKey]) -> Result<()> {
        let name = defs::PS_BAN_FILTER.name;
        let mut slots: Vec<(u32, u64)> = Vec::with_capacity(keys.len());
        for key in keys {
            let (word, bit) = key.filter_slot();
            let current = self.filter_word(word)?;
            if current & bit == 0 {
                slots.push((word, current | bit));
            }
        }
        slots.sort_unstable_by_key(|(w, _)| *w);
        // Bits of one word from several keys: one value with all of them.
        let mut words: Vec<u32> = Vec::with_capacity(slots.len());
        let mut values: Vec<u64> = Vec::with_capacity(slots.len());
        for (w, v) in slots {
            match (words.last(), values.last_mut()) {
                (Some(last), Some(acc)) if *last == w => *acc |= v,
                _ => {
                    words.push(w);
                    values.push(v);
                }
            }
        }
        let mut written = 0;
        if self.batch_ops && words.len() > 1 {
            let fd = IterableMap::map(&self.ban_filter).fd().as_fd();
            match batch::update(fd, &words, &values) {
                Ok(()) => written = words.len(),
                Err((0, e)) if batch::unsupported(&e) => self.batch_ops = false,
                Err((_, e)) => return Err(map_err(name)(batch_error(e))),
            }
        }
        for (w, v) in words.iter().zip(&values).skip(written) {
            self.ban_filter.set(*w, v, 0).map_err(map_err(name))?;
        }
        let cache = self.filter_words();
        for (w, v) in words.iter().zip(&values) {
            if let Some(slot) = cache.get_mut(*w as usize) {
                *slot = Some(*v);
            }
        }
        Ok(())
    }

    /// Removes a ban; false if there was none.
    pub fn remove_ban(&mut self, addr: IpAddr) -> Result<bool> {
        match self.bans.remove(&cidr::addr_key(addr)) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_err(defs::PS_BANS.name)(e)),
        }
    }

    pub fn ban(&self, addr: IpAddr) -> Result<Option<BanEntry>> {
        match self.bans.get(&cidr::addr_key(addr), 0) {
            Ok(b) => Ok(Some(b)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err(defs::PS_BANS.name)(e)),
        }
    }

    pub fn bans(&self) -> Result<Vec<(IpAddr, BanEntry)>> {
        let mut out = Vec::new();
        for item in self.bans.iter() {
            let (k, v) = item.map_err(map_err(defs::PS_BANS.name))?;
            out.push((cidr::key_addr(&k), v));
        }
        Ok(out)
    }

    /// Every key the ban table holds: a chunk of [`KEY_CHUNK`] per call where the kernel has
    /// batch operations, else one `BPF_MAP_GET_NEXT_KEY` per key. For the restore at start,
    /// which must not overwrite an entry the kernel holds already (pinned or migrated maps).
    ///
    /// An empty table (fresh maps, the usual start) costs one call: a batch lookup locks every
    /// bucket it passes (2 M buckets at 1 M capacity: ~0.3 s here), the first-key walk does not.
    pub fn ban_keys(&mut self) -> Result<Vec<AddrKey>> {
        let Some(first) = self.next_ban_key(None)? else {
            return Ok(Vec::new());
        };
        let fd = IterableMap::map(&self.bans).fd().as_fd();
        if self.batch_ops {
            match batch::lookup_keys::<AddrKey, BanEntry>(fd, KEY_CHUNK) {
                Ok(keys) => return Ok(keys),
                Err(e) if batch::unsupported(&e) => self.batch_ops = false,
                // ENOSPC (a bucket larger than a chunk, never at these sizes) or a table
                // changed under the walk: the exact walk below.
                Err(_) => {}
            }
        }
        let mut keys = Vec::new();
        let mut key = Some(first);
        // A walk restarted by removals elsewhere ends after twice the table.
        let bound = 2 * self.ban_capacity() as usize;
        while let Some(k) = key {
            if keys.len() >= bound {
                break;
            }
            keys.push(k);
            key = self.next_ban_key(Some(&k))?;
        }
        Ok(keys)
    }

    /// Up to `max` addresses of the ban table, from `from` on (`None`: from the start), and
    /// the address to resume from (`None`: the end), for walking a large table a part at a
    /// time. The order is the kernel's; a resume address removed meanwhile restarts the walk
    /// from the start (the kernel's `BPF_MAP_GET_NEXT_KEY`), so callers bound their walk.
    pub fn ban_addrs_from(
        &self,
        from: Option<IpAddr>,
        max: usize,
    ) -> Result<(Vec<IpAddr>, Option<IpAddr>)> {
        let mut out = Vec::new();
        let mut key = from.map(cidr::addr_key);
        if key.is_none() {
            key = self.next_ban_key(None)?;
        }
        while let Some(k) = key {
            if out.len() == max {
                return Ok((out, Some(cidr::key_addr(&k))));
            }
            out.push(cidr::key_addr(&k));
            key = self.next_ban_key(Some(&k))?;
        }
        Ok((out, None))
    }

    /// The ban table's key after `key` (the first with `None`), by `BPF_MAP_GET_NEXT_KEY`,
    /// which aya's key iterator cannot resume from a given key.
    fn next_ban_key(&self, key: Option<&AddrKey>) -> Result<Option<AddrKey>> {
        let fd = IterableMap::map(&self.bans).fd().as_fd();
        batch::next_key(fd, key).map_err(|io_error| {
            map_err(defs::PS_BANS.name)(MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_get_next_key",
                io_error,
            }))
        })
    }

    /// Capacity of the ban table.
    pub fn ban_capacity(&self) -> u32 {
        self.bans.map().info().map_or(0, |i| i.max_entries())
    }
}

fn batch_error(io_error: std::io::Error) -> MapError {
    MapError::SyscallError(aya::sys::SyscallError {
        call: "bpf_map_update_batch",
        io_error,
    })
}
