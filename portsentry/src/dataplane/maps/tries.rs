//! The two LPM tries: the allowlist (PS_ALLOW_CIDRS, with its prefilter PS_ALLOW_FILTER set
//! before any entry is written) and the banned networks (PS_BAN_CIDRS, with their drop
//! counters); their capacities.

use aya::maps::{lpm_trie::Key as LpmKey, IterableMap};
use portsentry_common::maps as defs;

use super::{cidr_from_key, Maps};
use crate::dataplane::{map_err, trie, Result, TrieWrite};
use crate::net::cidr::Cidr;

impl Maps {
    /// Replaces the allowlist trie; the count goes into `Config`. The prefilter bits of every
    /// entry are set first (PS_ALLOW_FILTER, never cleared): the XDP program looks a probe's
    /// source up in the trie only when its bit is set, so an entry without its bits would not
    /// protect anyone.
    pub fn set_allowlist(&mut self, cidrs: &[Cidr]) -> Result<TrieWrite> {
        self.set_allow_filter_bits(cidrs)?;
        trie::replace(&mut self.allow_cidrs, defs::PS_ALLOW_CIDRS.name, cidrs, 1u8)
    }

    /// Writes `cidr` into the allowlist trie WITHOUT its prefilter bits: only for tests that
    /// prove the XDP program consults the prefilter (such an entry must not protect a source
    /// whose bit is clear). Never call it elsewhere.
    #[doc(hidden)]
    pub fn insert_allow_trie_only_for_tests(&mut self, cidr: &Cidr) -> Result<()> {
        self.allow_cidrs
            .insert(&LpmKey::new(cidr.key_prefix(), cidr.key().addr), 1u8, 0)
            .map_err(map_err(defs::PS_ALLOW_CIDRS.name))
    }

    /// ORs the allowlist prefilter bits of `cidrs` into PS_ALLOW_FILTER, each changed word
    /// written once. At most 2 048 words, read and written only on a configuration change.
    fn set_allow_filter_bits(&mut self, cidrs: &[Cidr]) -> Result<()> {
        let name = defs::PS_ALLOW_FILTER.name;
        let mut wanted = vec![0u64; portsentry_common::ALLOW_FILTER_WORDS as usize];
        for c in cidrs {
            portsentry_common::allow_filter_marks(c.key_prefix(), &c.key().addr, |w, b| {
                if let Some(slot) = wanted.get_mut(w as usize) {
                    *slot |= b;
                }
            });
        }
        for (w, bits) in (0u32..).zip(&wanted) {
            if *bits == 0 {
                continue;
            }
            let current = self.allow_filter.get(&w, 0).map_err(map_err(name))?;
            if current | bits != current {
                self.allow_filter
                    .set(w, current | bits, 0)
                    .map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    /// Replaces the banned-network trie (only the ban book calls this). Entries that stay keep
    /// their drop counters.
    pub fn set_ban_cidrs(&mut self, cidrs: &[Cidr]) -> Result<TrieWrite> {
        trie::replace(&mut self.ban_cidrs, defs::PS_BAN_CIDRS.name, cidrs, 0u64)
    }

    /// Capacity of the allowlist trie.
    pub fn allow_capacity(&self) -> u32 {
        self.allow_cidrs.map().info().map_or(0, |i| i.max_entries())
    }

    /// Capacity of the banned-network trie.
    pub fn ban_network_capacity(&self) -> u32 {
        self.ban_cidrs.map().info().map_or(0, |i| i.max_entries())
    }

    /// Banned networks with their drop counters.
    pub fn ban_cidrs(&self) -> Result<Vec<(Cidr, u64)>> {
        let mut out = Vec::new();
        for item in self.ban_cidrs.iter() {
            let (k, drops) = item.map_err(map_err(defs::PS_BAN_CIDRS.name))?;
            out.push((cidr_from_key(&k), drops));
        }
        Ok(out)
    }
}
