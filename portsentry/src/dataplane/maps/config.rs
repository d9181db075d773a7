//! The program's configuration (PS_CONFIG) and guarded-port bitmaps (PS_TCP_GUARD,
//! PS_UDP_GUARD), the per-source hit counts (PS_HITS) and the per-CPU counters (PS_STATS,
//! summed into [`Stats`]).

use std::net::IpAddr;

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

impl Maps {
    pub fn set_config(&mut self, config: &Config) -> Result<()> {
        self.config
            .set(0, config, 0)
            .map_err(map_err(defs::PS_CONFIG.name))
    }

    pub fn config(&self) -> Result<Config> {
        self.config
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
