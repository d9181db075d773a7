//! Loading, configuring and attaching the XDP program, and typed access to its maps.
//!
//! Maps can be pinned under a directory on bpffs so that the CLI, `bpftool` and a restarted
//! daemon see live state. Pinned maps are reused only if their layout matches this build.
//!
//! Every map is declared once, in `portsentry_common::maps`; nothing here lists maps by hand.
//! This file owns the loaded program ([`Dataplane`]: its maps, event ring and diagnostics
//! reader) and the ban state migrated out of old pins ([`Migrated`]). It does not decide
//! anything about bans: the ban book (`crate::bans`) is the only caller allowed to write bans
//! and banned networks; the dataplane only offers typed access.
//!
//! - `load`: loading the object ([`LoadOptions`]: capacities, pin paths, compat, log level).
//! - `attach`: attaching to an interface, plain or through libxdp's dispatcher, and leaving.
//! - `error`: [`DataplaneError`] and the verifier's log cut to its reason.
//! - [`maps`]: the typed map handles ([`Maps`]) and their accessors.
//! - [`pins`]: pin checks, the layout version and migration out of incompatible pins.
//! - [`trie`]: replacing the contents of an LPM trie ([`TrieWrite`]).
//! - [`peers`]: the cgroup programs that learn peers, attached to the cgroup2 root
//!   ([`PeerLearning`]).
//! - [`dispatcher`]: sharing an interface with other XDP programs through libxdp's dispatcher,
//!   and refusing to replace a program that is not ours.

use std::net::IpAddr;

use aya::{
    maps::{MapData, RingBuf},
    programs::Xdp,
    Ebpf,
};
use portsentry_common::{maps as defs, BanEntry, PROGRAM_NAME};

mod attach;
mod batch;
pub mod bpffs;
pub mod dispatcher;
mod error;
pub mod kernel;
mod load;
mod maps;
pub mod object;
mod peers;
mod pins;
mod trie;

pub use error::DataplaneError;
use error::{map_err, Result};
pub use load::{Facade, KernelLogger, LoadOptions};
pub use maps::{Maps, PeerTable, Stats};
pub use peers::{netns_cookie, PeerError, PeerLearning};
pub use trie::TrieWrite;

pub use crate::config::settings::AttachMode;
use crate::net::cidr::Cidr;

/// Ban state read out of pinned maps that had to be replaced (another layout version or a
/// changed capacity). The ban book puts it into the fresh maps.
#[derive(Debug, Default)]
pub struct Migrated {
    /// Why, e.g. "PS_BANS max_entries 64 -> 128".
    pub reasons: Vec<String>,
    pub bans: Vec<(IpAddr, BanEntry)>,
    pub networks: Vec<Cidr>,
    /// False when the old layout could not be read; bans then come from the state file.
    pub copied: bool,
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    /// `PROGRAM_NAME`, or `PROGRAM_NAME_COMPAT` on a kernel without the SYN cookie helpers.
    program_name: &'static str,
    maps: Maps,
    events: Option<RingBuf<MapData>>,
    /// The diagnostics reader, when `log_level` is above 0.
    logger: Option<KernelLogger>,
    /// Set when pinned maps were replaced at load.
    pub migrated: Option<Migrated>,
    /// Loaded as a dispatcher component (an extension), not as a plain XDP program.
    component: bool,
    /// The dispatchers we joined; we leave them on drop.
    joined: Vec<dispatcher::Joined>,
}

impl std::ops::Deref for Dataplane {
    type Target = Maps;
    fn deref(&self) -> &Maps {
        &self.maps
    }
}

impl std::ops::DerefMut for Dataplane {
    fn deref_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }
}

impl Dataplane {
    /// Whether the loaded XDP program answers learned peers' trap SYNs with SYN cookies (the
    /// kernel has the helpers). Without it, learning peers is pointless.
    pub fn syn_cookies(&self) -> bool {
        self.program_name == PROGRAM_NAME
    }

    /// The loaded program, for attaching or BPF_PROG_TEST_RUN.
    pub fn program(&self) -> Result<&Xdp> {
        self.ebpf
            .program(self.program_name)
            .ok_or(DataplaneError::NoProgram(self.program_name))?
            .try_into()
            .map_err(DataplaneError::Program)
    }

    /// Takes the diagnostics reader (once), if diagnostics are on.
    pub fn take_logger(&mut self) -> Option<KernelLogger> {
        self.logger.take()
    }

    /// Takes the event ring buffer (once) for the event reader.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        self.events
            .take()
            .ok_or(DataplaneError::NoSuchMap(defs::PS_EVENTS.name))
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.leave_dispatchers();
    }
}
