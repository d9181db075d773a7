//! How this host's own SYN-ACKs look, from its TCP sysctls, so the XDP program's trap SYN-ACK
//! (the SYN cookie answering a learned peer) carries the same options: a peer must not be able
//! to sort trap ports from services by the options they answer with.
//!
//! Owns [`SynAckShape`]: read once at start from the daemon's network namespace (every sysctl
//! here is per namespace), written into the config block by `daemon::guard`. What the XDP
//! program does with it: docs/DATAPLANE.md, "Learned peers and SYN cookies".

use std::fs;

use portsentry_common::{synack_flags, Config};

const TCP_MAX_WSCALE: u32 = 14;

/// The options and header fields a SYN-ACK of this host carries (when the SYN offered them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynAckShape {
    /// `synack_flags::*`.
    pub flags: u8,
    pub wscale: u8,
    pub ttl: u8,
    pub hop_limit: u8,
    /// The listener's receive space the initial window is cut from.
    pub space: u32,
    /// Key of the per-address-pair TSval offset, random per run.
    pub ts_key: u32,
}

impl SynAckShape {
    /// Reads the sysctls of the calling thread's network namespace. A sysctl that cannot be
    /// read keeps Linux's default.
    pub fn read() -> Self {
        let mut shape = Self::from_sysctls(|name| {
            fs::read_to_string(format!("/proc/sys/{}", name.replace('.', "/"))).ok()
        });
        shape.ts_key = random_u32();
        shape
    }

    /// The shape `sysctl` (a name such as `net.ipv4.tcp_sack` → its text, `None` if absent)
    /// describes, as `tcp_openreq_init_rwin` and `tcp_synack_options` would build it.
    pub fn from_sysctls(sysctl: impl Fn(&str) -> Option<String>) -> Self {
        let num = |name: &str, default: u64| {
            sysctl(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(default)
        };
        let mut flags = 0;
        if num("net.ipv4.tcp_sack", 1) != 0 {
            flags |= synack_flags::SACK;
        }
        match num("net.ipv4.tcp_timestamps", 1) {
            0 => {}
            1 => flags |= synack_flags::TIMESTAMPS | synack_flags::TS_OFFSET,
            _ => flags |= synack_flags::TIMESTAMPS,
        }
        if num("net.ipv4.tcp_window_scaling", 1) != 0 {
            flags |= synack_flags::WSCALE;
        }
        // tcp_rmem: min, default (a listener's receive buffer), max.
        let rmem: Vec<u64> = sysctl("net.ipv4.tcp_rmem")
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let rmem_default = rmem.get(1).copied().unwrap_or(131_072);
        let rmem_max = rmem.get(2).copied().unwrap_or(6_291_456);
        // tcp_full_space: half the buffer is window (the default scaling ratio, or
        // tcp_adv_win_scale 1 before 6.6).
        let space = u32::try_from(rmem_default / 2).unwrap_or(u32::MAX);
        let biggest = u64::from(space)
            .max(rmem_max)
            .max(num("net.core.rmem_max", 0));
        let wscale = (biggest.max(1).ilog2().saturating_sub(15)).min(TCP_MAX_WSCALE) as u8;
        let byte = |name: &str| u8::try_from(num(name, 64)).unwrap_or(64);
        Self {
            flags,
            wscale,
            ttl: byte("net.ipv4.ip_default_ttl"),
            hop_limit: byte("net.ipv6.conf.default.hop_limit"),
            space,
            ts_key: 0,
        }
    }

    pub fn apply(&self, config: &mut Config) {
        config.synack_flags = self.flags;
        config.synack_wscale = self.wscale;
        config.synack_ttl = self.ttl;
        config.synack_hop_limit = self.hop_limit;
        config.synack_space = self.space;
        config.synack_ts_key = self.ts_key;
    }
}

/// Four random bytes from the kernel (0 if it has none to give: the offsets are then only
/// not random, never wrong).
fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: writes at most 4 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_defaults_give_linux_s_syn_ack() {
        let s = SynAckShape::from_sysctls(|_| None);
        assert_eq!(
            s.flags,
            synack_flags::SACK
                | synack_flags::TIMESTAMPS
                | synack_flags::TS_OFFSET
                | synack_flags::WSCALE
        );
        // 131072 / 2 = 65536; ilog2(6291456) = 22 → scale 7, as `ss -ti` shows on any Linux.
        assert_eq!((s.space, s.wscale, s.ttl, s.hop_limit), (65_536, 7, 64, 64));
    }

    #[test]
    fn each_sysctl_switches_its_option() {
        let s = SynAckShape::from_sysctls(|n| match n {
            "net.ipv4.tcp_sack" | "net.ipv4.tcp_window_scaling" => Some("0\n".into()),
            "net.ipv4.tcp_timestamps" => Some("2\n".into()),
            "net.ipv4.tcp_rmem" => Some("4096\t87380\t174760\n".into()),
            "net.ipv4.ip_default_ttl" => Some("128".into()),
            _ => None,
        });
        assert_eq!(s.flags, synack_flags::TIMESTAMPS);
        assert_eq!((s.space, s.wscale, s.ttl), (43_690, 2, 128));
    }
}
