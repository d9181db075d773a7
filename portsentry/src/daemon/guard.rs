//! What the daemon writes into the kernel from the live settings, bans aside: the guarded
//! ports (advanced mode skips ports with a listening socket now or within
//! `service_port_memory`), the allowlist trie and the config block's settings part (with the
//! allowlist's count), handed to PS_CONFIG's one writer (`Maps::configure`). The data-plane
//! tests program the XDP program through these same functions.
//! Bans are the ban book's: nothing here writes PS_BANS, PS_BAN_CIDRS or the banned-network
//! count in the config block.

use portsentry_common::{config_flags, Config, IpProto};

use crate::{
    config::settings::LiveSettings,
    dataplane::{DataplaneError, Maps, TrieWrite},
    net::{cidr::Cidr, listening, synack::SynAckShape},
};

type Result<T> = std::result::Result<T, DataplaneError>;

/// What the config block holds beyond the settings: facts of this run, fixed at start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelExtras {
    /// The peer-learning programs are attached: trap probes from learned peers are challenged
    /// (`config_flags::PEER_CHALLENGE`). False without them, since nothing would learn peers.
    pub peer_challenge: bool,
    /// The network namespace whose sockets teach peers (`Config::netns_cookie`).
    pub netns_cookie: u64,
    /// How this host's SYN-ACKs look (its TCP sysctls): the trap SYN-ACK copies it.
    pub synack: SynAckShape,
}

impl KernelExtras {
    fn apply(&self, config: &mut Config) {
        if self.peer_challenge {
            config.flags |= config_flags::PEER_CHALLENGE;
        }
        config.netns_cookie = self.netns_cookie;
        self.synack.apply(config);
    }
}

/// Writes ports, allowlist and the config block's settings part (with the allowlist's count);
/// the banned-network count in the block stays the ban book's (`Maps::configure`).
pub fn write(
    maps: &mut Maps,
    live: &LiveSettings,
    allow: &[Cidr],
    sockets: &listening::Listening,
    remembered: &listening::Listening,
    extras: &KernelExtras,
) -> Result<TrieWrite> {
    let written = maps.set_allowlist(allow)?;
    write_ports(maps, live, sockets, remembered)?;
    maps.configure(&settings_config(live, extras), written.count)?;
    Ok(written)
}

/// The config block's settings part: the live settings with this run's facts.
fn settings_config(live: &LiveSettings, extras: &KernelExtras) -> Config {
    let mut config = live.kernel_config();
    extras.apply(&mut config);
    config
}

/// Replaces the allowlist trie and its count in the config block.
pub fn write_allowlist(maps: &mut Maps, allow: &[Cidr]) -> Result<TrieWrite> {
    let written = maps.set_allowlist(allow)?;
    maps.set_allow_count(written.count)?;
    Ok(written)
}

/// The guarded ports: the configured lists plus advanced mode's ports that have no listener
/// and had none within `service_port_memory` (`remembered`, see `net::service_ports`).
pub fn write_ports(
    maps: &mut Maps,
    live: &LiveSettings,
    sockets: &listening::Listening,
    remembered: &listening::Listening,
) -> Result<()> {
    let tcp = listening::guarded(
        &live.tcp_ports,
        live.advanced_tcp_below,
        &live.advanced_exclude_tcp,
        &sockets.tcp,
        &remembered.tcp,
    );
    let udp = listening::guarded(
        &live.udp_ports,
        live.advanced_udp_below,
        &live.advanced_exclude_udp,
        &sockets.udp,
        &remembered.udp,
    );
    maps.set_guarded_ports(IpProto::Tcp, &tcp)?;
    maps.set_guarded_ports(IpProto::Udp, &udp)?;
    Ok(())
}
