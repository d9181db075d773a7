//! The program's configuration (PS_CONFIG) and guarded-port bitmaps (PS_TCP_GUARD,
//! PS_UDP_GUARD), the per-source hit counts (PS_HITS) and the per-CPU counters (PS_STATS,
//! summed into [`Stats`]).
//!
//! PS_CONFIG has one writer, [`ConfigBlock`]: its parts are set by their owners (the daemon's
//! guard the settings' part and the allowlist's count, the ban book the banned networks'
//! count) and the block is composed and written whole here; nothing reads the map back to
//! change a field of it.

use std::net::IpAddr;

use aya::maps::{Array, MapData};
use portsentry_common::{maps as defs, Config, HitEntry, IpProto, Stat, PORT_BITMAP_WORDS};

use super::{is_not_found, Maps};
use crate::dataplane::{map_err, Result};
use crate::net::{cidr, ports::PortSet};

/// Counters summed over CPUs, indexed like [`Stat`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats(pub [u64; Stat::COUNT]);

impl Stats {
    pub fn get(&self, stat: Stat) -> u64 {
        self.0[stat as usize]
    }
    /// Packets seen while configured: every packet ends passed, dropped (banned source, or a
    /// fragment or extension-header chain dropped as evasion) or turned into the SYN cookie
    /// answering a learned peer's trap SYN.
    pub fn packets(&self) -> u64 {
        self.get(Stat::Passed)
            + self.get(Stat::Dropped)
            + self.get(Stat::CookiesSent)
            + self.get(Stat::FragmentsDropped)
            + self.get(Stat::ExtChainsDropped)
    }
}

/// PS_CONFIG as composed from its parts, each set by its owner:
/// - the settings' part: every field but the two counts, from the live settings and this run's
///   facts (`daemon::guard`, [`Maps::configure`]);
/// - the allowlist trie's entry count (`daemon::guard`, with the settings' part or alone,
///   [`Maps::set_allow_count`]);
/// - the banned-network trie's entry count (the ban book, [`Maps::set_ban_cidr_count`]).
///
/// It starts as the block the kernel holds when the maps are opened: zeros for a fresh load
/// (the program passes everything until configured), an earlier run's block for pins, which the
/// offline CLI keeps while it changes the banned networks. Only this process writes the map
/// (the daemon, or the offline CLI while no daemon runs), so the block last written is the
/// kernel's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ConfigBlock(Config);

impl ConfigBlock {
    /// The block with the settings' part taken from `settings` (its two counts are ignored:
    /// the allowlist's is `allow_cidr_count`, the banned networks' is kept).
    fn with_settings(self, settings: &Config, allow_cidr_count: u32) -> Self {
        Self(Config {
            allow_cidr_count,
            ban_cidr_count: self.0.ban_cidr_count,
            ..*settings
        })
    }

    /// The block with the allowlist trie's entry count `n`.
    fn with_allow_count(self, n: u32) -> Self {
        Self(Config {
            allow_cidr_count: n,
            ..self.0
        })
    }

    /// The block with the banned-network trie's entry count `n`.
    fn with_ban_cidr_count(self, n: u32) -> Self {
        Self(Config {
            ban_cidr_count: n,
            ..self.0
        })
    }

    /// The block as the kernel gets it.
    fn config(&self) -> &Config {
        &self.0
    }
}

/// The handle on PS_CONFIG with the block last written through it.
pub(super) struct ConfigMap {
    map: Array<MapData, Config>,
    written: ConfigBlock,
}

impl ConfigMap {
    /// Takes the handle, reading the block the kernel holds now (the one read of the map this
    /// process makes to change it).
    pub(super) fn new(map: Array<MapData, Config>) -> Result<Self> {
        let held = map.get(&0, 0).map_err(map_err(defs::PS_CONFIG.name))?;
        Ok(Self {
            map,
            written: ConfigBlock(held),
        })
    }

    /// Writes `next` whole; the block last written follows only a write that succeeded.
    fn write(&mut self, next: ConfigBlock) -> Result<()> {
        self.set_config(next.config())?;
        self.written = next;
        Ok(())
    }

    /// The raw map write: [`Self::write`] is its one caller.
    fn set_config(&mut self, config: &Config) -> Result<()> {
        self.map
            .set(0, config, 0)
            .map_err(map_err(defs::PS_CONFIG.name))
    }
}

impl Maps {
    /// Writes the settings' part of the config block (every field of `settings` but the two
    /// counts) with the allowlist trie's entry count, in one write; the banned networks' count
    /// stays the ban book's.
    pub fn configure(&mut self, settings: &Config, allow_cidr_count: u32) -> Result<()> {
        let next = self
            .config
            .written
            .with_settings(settings, allow_cidr_count);
        self.config.write(next)
    }

    /// Sets the allowlist trie's entry count in the config block.
    pub fn set_allow_count(&mut self, n: u32) -> Result<()> {
        let next = self.config.written.with_allow_count(n);
        self.config.write(next)
    }

    /// Sets the banned-network trie's entry count in the config block (the ban book's part);
    /// written only when it changed.
    pub fn set_ban_cidr_count(&mut self, n: u32) -> Result<()> {
        let next = self.config.written.with_ban_cidr_count(n);
        if next == self.config.written {
            return Ok(());
        }
        self.config.write(next)
    }

    /// The config block as the kernel holds it (a read of the map, for `status` and tests).
    pub fn config(&self) -> Result<Config> {
        self.config
            .map
            .get(&0, 0)
            .map_err(map_err(defs::PS_CONFIG.name))
    }

    /// Replaces the guarded-port bitmap of `protocol`, writing only the words that changed.
    pub fn set_guarded_ports(&mut self, protocol: IpProto, ports: &PortSet) -> Result<()> {
        let (name, map) = match protocol {
            IpProto::Tcp => (defs::PS_TCP_GUARD.name, &mut self.tcp_guard),
            IpProto::Udp => (defs::PS_UDP_GUARD.name, &mut self.udp_guard),
        };
        for (i, word) in ports
            .words()
            .iter()
            .enumerate()
            .take(PORT_BITMAP_WORDS as usize)
        {
            let i = i as u32;
            if map.get(&i, 0).ok() != Some(*word) {
                map.set(i, word, 0).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    pub fn hits(&self, addr: IpAddr) -> Result<Option<HitEntry>> {
        match self.hits.get(&cidr::addr_key(addr), 0) {
            Ok(h) => Ok(Some(h)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err(defs::PS_HITS.name)(e)),
        }
    }

    pub fn stats(&self) -> Result<Stats> {
        let mut stats = Stats::default();
        for stat in Stat::ALL {
            let per_cpu = self
                .stats
                .get(&(stat as u32), 0)
                .map_err(map_err(defs::PS_STATS.name))?;
            stats.0[stat as usize] = per_cpu.iter().sum();
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::settings::LiveSettings;

    /// The block is composed, never read back: the settings' part (its peer memory included)
    /// comes whole from the settings, the two counts only from their owners.
    #[test]
    fn the_block_takes_the_settings_part_and_keeps_each_count_from_its_owner() {
        let live = LiveSettings {
            peer_memory: Some(Duration::from_secs(90)),
            scan_trigger: 4,
            ..LiveSettings::default()
        };
        let mut settings = live.kernel_config();
        // Counts in the settings' part are not the settings' to give.
        (settings.ban_cidr_count, settings.allow_cidr_count) = (9, 9);
        let block = ConfigBlock::default()
            .with_ban_cidr_count(2)
            .with_settings(&settings, 3);
        let c = *block.config();
        assert_eq!(c.peer_ttl_ns, live.peer_ttl_ns());
        assert_eq!(c.peer_ttl_ns, 90_000_000_000);
        assert_eq!(
            (c.ban_cidr_count, c.allow_cidr_count, c.scan_trigger),
            (2, 3, 4)
        );
        let c = *block.with_allow_count(5).with_ban_cidr_count(0).config();
        assert_eq!(
            (c.ban_cidr_count, c.allow_cidr_count, c.peer_ttl_ns),
            (0, 5, 90_000_000_000)
        );
        assert_eq!(c.layout_version, portsentry_common::LAYOUT_VERSION);
    }
}
