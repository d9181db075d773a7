//! What the live settings mean to the kernel: the trigger as it applies it, the prefix
//! trigger's probe count, and the PS_CONFIG block's settings part built from them
//! (written by `dataplane::maps::config`'s one writer, never here).

use std::time::Duration;

use portsentry_common::{config_flags, Config, LAYOUT_VERSION};

use super::{LiveSettings, Mode};

impl LiveSettings {
    /// The trigger as the kernel applies it.
    pub fn effective_trigger(&self) -> u64 {
        u64::from(portsentry_common::effective_trigger(self.scan_trigger))
    }

    /// Probes from one prefix within `window` that make the kernel's prefix trigger: as many
    /// as banning `prefix_threshold` of its addresses takes (trigger × threshold); 0 when
    /// prefix aggregation is off for both families.
    pub fn prefix_hits(&self) -> u32 {
        let on = |len: u8, full: u8| len != 0 && len < full;
        if !on(self.ipv6_prefix, 128) && !on(self.ipv4_prefix, 32) {
            return 0;
        }
        portsentry_common::effective_trigger(self.scan_trigger)
            .saturating_mul(self.prefix_threshold)
    }

    /// `peer_memory` as the kernel applies it (`Config::peer_ttl_ns`, nanoseconds; 0 = forever).
    pub fn peer_ttl_ns(&self) -> u64 {
        nanos(self.peer_memory)
    }

    /// The kernel-side config block's settings part; its two trie counts are zero here (the
    /// maps' config writer keeps the allowlist's and the ban book's).
    pub fn kernel_config(&self) -> Config {
        let mut flags = 0;
        if self.mode == Mode::Block {
            flags |= config_flags::ENFORCE;
        }
        if self.block_tcp {
            flags |= config_flags::BLOCK_TCP;
        }
        if self.block_udp {
            flags |= config_flags::BLOCK_UDP;
        }
        if self.path_check {
            flags |= config_flags::PATH_CHECK;
        }
        if self.learn_inbound {
            flags |= config_flags::LEARN_INBOUND;
        }
        Config {
            layout_version: LAYOUT_VERSION,
            flags,
            scan_trigger: self.scan_trigger,
            window_ns: nanos(self.window),
            ban_ttl_ns: nanos(self.ban_ttl),
            peer_ttl_ns: self.peer_ttl_ns(),
            contest_ns: nanos(self.neighbour_contest),
            prefix_hits: self.prefix_hits(),
            ipv6_prefix: self.ipv6_prefix,
            ipv4_prefix: self.ipv4_prefix,
            event_burst: portsentry_common::EVENT_BURST,
            event_interval_ns: portsentry_common::EVENT_INTERVAL_NS,
            // Padding, and any field the kernel adds later, start as zero.
            ..Config::default()
        }
    }
}

/// A duration as the kernel keeps it: nanoseconds, saturating; `None` (off, forever) is 0.
fn nanos(d: Option<Duration>) -> u64 {
    d.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_config_flags() {
        let s = LiveSettings {
            mode: Mode::Detect,
            block_udp: false,
            ..Default::default()
        };
        let c = s.kernel_config();
        assert_eq!(c.flags, config_flags::BLOCK_TCP | config_flags::PATH_CHECK);
        assert_eq!(c.ban_ttl_ns, 86_400_000_000_000);
    }

    #[test]
    fn a_trigger_of_0_means_the_first_probe() {
        let at = |scan_trigger| LiveSettings {
            scan_trigger,
            ..Default::default()
        };
        assert_eq!(at(0).effective_trigger(), 1);
        assert_eq!(at(1).effective_trigger(), 1);
        assert_eq!(at(3).effective_trigger(), 3);
        assert_eq!(at(0).prefix_hits(), 4, "1 × prefix_threshold");
        assert_eq!(at(3).prefix_hits(), 12);
    }
}
