//! Loading, configuring and attaching the XDP program, and typed access to its maps.
//!
//! Maps can be pinned under a directory on bpffs so that the CLI, `bpftool` and a restarted
//! daemon see live state. Pinned maps are reused only if their layout matches this build.
//!
//! Every map is declared once, in `portsentry_common::maps`; nothing here lists maps by hand.
//! This file owns loading the object (capacities, pin paths), the verifier error, attaching and
//! the error type. It does not decide anything about bans: the ban book (`crate::bans`) is the
//! only caller allowed to write bans and banned networks; the dataplane only offers typed access.
//!
//! - [`maps`]: the typed map handles ([`Maps`]) and their accessors.
//! - [`pins`]: pin checks, the layout version and migration out of incompatible pins.
//! - [`trie`]: replacing the contents of an LPM trie ([`TrieWrite`]).
//! - [`peers`]: the cgroup programs that learn peers, attached to the cgroup2 root
//!   ([`PeerLearning`]).
//! - [`dispatcher`]: sharing an interface with other XDP programs through libxdp's dispatcher,
//!   and refusing to replace a program that is not ours.

use std::{net::IpAddr, path::PathBuf};

use aya::{
    maps::{MapData, MapError, RingBuf},
    programs::{Extension, ProgramError, ProgramType, Xdp, XdpMode},
    sys::{is_helper_supported, BpfHelper},
    Ebpf, EbpfError, EbpfLoader,
};
use portsentry_common::{
    maps::{self as defs, Capacity, CapacityOption, MapSpec},
    BanEntry, PROGRAM_NAME, PROGRAM_NAME_COMPAT,
};
use thiserror::Error;

mod batch;
pub mod bpffs;
pub mod dispatcher;
pub mod kernel;
mod maps;
pub mod object;
mod peers;
mod pins;
mod trie;

pub use maps::{Maps, PeerTable, Stats};
pub use peers::{netns_cookie, PeerError, PeerLearning};
pub use trie::TrieWrite;

pub use crate::config::settings::AttachMode;
use crate::net::cidr::Cidr;

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(transparent)]
    MissingObject(#[from] object::MissingObject),
    #[error("loading the XDP object failed")]
    Load(#[source] EbpfError),
    #[error(
        "the kernel verifier rejected the XDP program ({errno}); last verifier lines:\n{tail}"
    )]
    Verifier { errno: String, tail: String },
    /// The load failed because the kernel lacks a feature the program needs: one line, no dump.
    #[error("{0}")]
    KernelTooOld(kernel::TooOld),
    #[error("XDP program")]
    Program(#[source] ProgramError),
    #[error("the XDP object has no map {0} (object and binary out of step?)")]
    NoSuchMap(&'static str),
    #[error("the XDP object has no program `{0}`")]
    NoProgram(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "pinned map {path} does not match this build ({what}); it was made by another portsentry \
         version. Stop the other instance, then remove the directory to start fresh: rm -r {dir}"
    )]
    IncompatiblePin {
        path: PathBuf,
        dir: PathBuf,
        what: String,
    },
    #[error("attaching XDP to {iface}")]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    /// Another XDP program is on the interface, or the dispatcher could not be joined.
    #[error(transparent)]
    Dispatcher(#[from] dispatcher::DispatcherError),
    #[error("xdp_mode = \"multi\" needs the program loaded as a dispatcher component")]
    NotComponent,
    #[error("the {0} table is full")]
    TableFull(&'static str),
    #[error("reading the XDP program's diagnostics (log_level)")]
    Logger(#[source] aya_log::Error),
}

/// Reads the XDP program's aya-log records and hands them to the `log` facade.
pub type KernelLogger = aya_log::EbpfLogger<Facade>;

/// Passes each record to the logger installed when it arrives (`log::logger()`), not the one
/// installed when the program was loaded: the daemon installs its logger after loading.
pub struct Facade;

impl log::Log for Facade {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        log::logger().enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        log::logger().log(record);
    }

    fn flush(&self) {
        log::logger().flush();
    }
}

type Result<T> = std::result::Result<T, DataplaneError>;

/// Load-time settings.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Pin maps here (must be on bpffs) and reuse compatible pins found there.
    pub pin_dir: Option<PathBuf>,
    /// Ban table capacity; `None` keeps the object's default.
    pub max_bans: Option<u32>,
    /// Banned-network trie capacity; `None` keeps the object's default.
    pub max_ban_networks: Option<u32>,
    /// Learned-peer table capacity; `None` keeps the object's default.
    pub max_peers: Option<u32>,
    /// Load the XDP program without the SYN cookie code even where the kernel has the helpers
    /// (what a kernel before 6.0 gets; for tests).
    pub compat: bool,
    /// aya-log level the program's diagnostics run at (0 off, 1 error … 5 trace). Set at load
    /// in a read-only global, so at 0 the verifier removes every diagnostic.
    pub log_level: u8,
    /// Load the program as a libxdp dispatcher component (an freplace extension) instead of a
    /// plain XDP program: [`Dataplane::attach`] then joins each interface's dispatcher.
    pub component: bool,
}

impl LoadOptions {
    /// The value of a capacity option, if set.
    fn option(&self, option: CapacityOption) -> Option<u32> {
        match option {
            CapacityOption::MaxBans => self.max_bans,
            CapacityOption::MaxBanNetworks => self.max_ban_networks,
            CapacityOption::MaxPeers => self.max_peers,
        }
    }

    /// The capacity this load gives `map`, for the maps whose capacity an option sets.
    fn capacity(&self, map: &MapSpec) -> Option<u32> {
        match map.capacity {
            Capacity::Fixed(_) => None,
            Capacity::ByOption { option, default } => Some(self.option(option).unwrap_or(default)),
        }
    }
}

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
    /// Loads the embedded object and verifies the program (does not attach).
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let bytes = object::embedded()?;
        match Self::load_object(bytes, opts) {
            // An older libxdp dispatcher on a kernel that checks what extensions do to the
            // packet: the program without the SYN cookie code (which resizes the packet) joins.
            Err(DataplaneError::Dispatcher(e @ dispatcher::DispatcherError::ChangesPacket))
                if opts.component && !opts.compat =>
            {
                crate::errln!(
                    "portsentry: warning: {e}; joining without the SYN cookie code (learned \
                     peers' trap SYNs pass to the stack, refused, never banned by them)"
                );
                let compat = LoadOptions {
                    compat: true,
                    ..opts.clone()
                };
                Self::load_object(bytes, &compat)
            }
            other => other,
        }
    }

    pub fn load_object(bytes: &[u8], opts: &LoadOptions) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        for map in defs::ALL {
            if let Capacity::ByOption { option, .. } = map.capacity {
                if let Some(n) = opts.option(option) {
                    loader.map_max_entries(map.name, n);
                }
            }
        }
        let mut migrated = None;
        let pin_paths: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => {
                let reasons = pins::mismatches(dir, opts)?;
                if !reasons.is_empty() {
                    migrated = Some(pins::migrate_out(dir, reasons)?);
                }
                defs::ALL
                    .iter()
                    .map(|m| (m.name, dir.join(m.name)))
                    .collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        loader.override_global(aya_log::LEVEL, &opts.log_level, true);
        let program_name = if opts.compat || !syn_cookie_helpers() {
            PROGRAM_NAME_COMPAT
        } else {
            PROGRAM_NAME
        };
        if opts.component {
            loader.extension(program_name);
        }
        let mut ebpf =
            loader
                .load(bytes)
                .map_err(|e| match kernel::explain(&format!("{e:?}")) {
                    Some(too_old) => DataplaneError::KernelTooOld(too_old),
                    None => DataplaneError::Load(e),
                })?;
        if opts.component {
            let template = dispatcher::load_template()?;
            let program: &mut Extension = ebpf
                .program_mut(program_name)
                .ok_or(DataplaneError::NoProgram(program_name))?
                .try_into()
                .map_err(DataplaneError::Program)?;
            program.load(template, "prog0").map_err(extension_error)?;
        } else {
            let program: &mut Xdp = ebpf
                .program_mut(program_name)
                .ok_or(DataplaneError::NoProgram(program_name))?
                .try_into()
                .map_err(DataplaneError::Program)?;
            program.load().map_err(verifier_error)?;
        }
        let mut take = |map: &'static MapSpec| {
            ebpf.take_map(map.name)
                .ok_or(DataplaneError::NoSuchMap(map.name))
        };
        let maps = Maps::open_with(&mut take)?;
        let events = Some(maps::open(&mut take, &defs::PS_EVENTS)?);
        let logger = if opts.log_level > 0 {
            Some(
                aya_log::EbpfLogger::init_with_logger(&mut ebpf, Facade)
                    .map_err(DataplaneError::Logger)?,
            )
        } else {
            None
        };
        Ok(Self {
            ebpf,
            program_name,
            maps,
            events,
            logger,
            migrated,
            component: opts.component,
            joined: Vec::new(),
        })
    }

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

    /// Attaches to `iface`; returns the mode actually used. With `Auto`, native XDP is tried
    /// first and generic XDP is used if the driver has no native support. Loaded as a
    /// dispatcher component, joins (or makes) libxdp's dispatcher there instead. A program that
    /// is not ours is never replaced: [`dispatcher::Refusal`].
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<AttachMode> {
        let ifindex = nix::net::if_::if_nametoindex(iface).map_err(|_| DataplaneError::Attach {
            iface: iface.to_owned(),
            source: ProgramError::UnknownInterface {
                name: iface.to_owned(),
            },
        })?;
        if self.component {
            return self.join(iface, ifindex, mode);
        }
        if mode == AttachMode::Multi {
            return Err(DataplaneError::NotComponent);
        }
        let occupant = dispatcher::occupant(iface, ifindex)?;
        if let Some(refusal) = dispatcher::refusal(iface, &occupant) {
            return Err(dispatcher::DispatcherError::Refused(refusal).into());
        }
        let name = self.program_name;
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::NoProgram(name))?
            .try_into()
            .map_err(DataplaneError::Program)?;
        let attach_err = |source| DataplaneError::Attach {
            iface: iface.to_owned(),
            source,
        };
        let try_mode = |program: &mut Xdp, m: XdpMode| program.attach(iface, m).map(|_| ());
        match mode {
            AttachMode::Native => try_mode(program, XdpMode::Driver)
                .map(|()| AttachMode::Native)
                .map_err(attach_err),
            AttachMode::Generic => try_mode(program, XdpMode::Skb)
                .map(|()| AttachMode::Generic)
                .map_err(attach_err),
            AttachMode::Auto | AttachMode::Multi => match try_mode(program, XdpMode::Driver) {
                Ok(()) => Ok(AttachMode::Native),
                Err(ProgramError::UnknownInterface { name }) => {
                    Err(attach_err(ProgramError::UnknownInterface { name }))
                }
                Err(_) => try_mode(program, XdpMode::Skb)
                    .map(|()| AttachMode::Generic)
                    .map_err(attach_err),
            },
        }
    }

    /// Joins `iface`'s dispatcher (or makes one) with our extension and says where we run.
    fn join(&mut self, iface: &str, ifindex: u32, mode: AttachMode) -> Result<AttachMode> {
        let name = self.program_name;
        let program: &mut Extension = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::NoProgram(name))?
            .try_into()
            .map_err(DataplaneError::Program)?;
        let mut stale = Vec::new();
        let joined = dispatcher::join(iface, ifindex, program, mode, &mut stale)?;
        for id in stale {
            crate::errln!(
                "portsentry: warning: {iface}: replaced portsentry's program {id}, left in \
                 libxdp's dispatcher by an earlier run"
            );
        }
        crate::errln!(
            "portsentry: {iface}: joined libxdp's dispatcher (program {}) at run priority {}, \
             position {} of {}: {}",
            joined.dispatcher_id,
            dispatcher::RUN_PRIORITY,
            joined.slot + 1,
            joined.order.len(),
            joined.order.join(", ")
        );
        let mode = joined.mode;
        self.joined.retain(|j| j.iface != iface);
        self.joined.push(joined);
        Ok(mode)
    }

    /// Takes our program out of every dispatcher we joined, leaving the other programs (and
    /// the dispatcher, if any remain) in place. Runs on drop.
    pub fn leave_dispatchers(&mut self) {
        if self.joined.is_empty() {
            return;
        }
        let our_id = self
            .ebpf
            .program(self.program_name)
            .and_then(|p| p.info().ok())
            .map(|i| i.id());
        for joined in self.joined.drain(..) {
            let Some(id) = our_id else { break };
            if let Err(e) = dispatcher::leave(&joined, id) {
                crate::errln!("portsentry: error: leaving libxdp's dispatcher: {e}");
            }
        }
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

/// A component that fails to load: a kernel that refuses freplace says so in one line.
fn extension_error(e: ProgramError) -> DataplaneError {
    if let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = &e
    {
        if io_error.raw_os_error() == Some(libc::EPERM) {
            return dispatcher::DispatcherError::NoFreplace {
                why: dispatcher::errno_name(io_error),
            }
            .into();
        }
        if verifier_log.to_string().contains("changes packet data") {
            return dispatcher::DispatcherError::ChangesPacket.into();
        }
    }
    verifier_error(e)
}

/// Whether XDP programs may call what the learned-peer branch needs: the SYN cookie helpers
/// (Linux 6.0) and `bpf_xdp_load_bytes` (5.18). A probe that cannot decide counts as yes: the
/// full program's load then reports the real error.
fn syn_cookie_helpers() -> bool {
    [
        BpfHelper::BPF_FUNC_tcp_raw_gen_syncookie_ipv4,
        BpfHelper::BPF_FUNC_tcp_raw_check_syncookie_ipv4,
        BpfHelper::BPF_FUNC_xdp_load_bytes,
    ]
    .into_iter()
    .all(|h| is_helper_supported(ProgramType::Xdp, h).unwrap_or(true))
}

/// A kernel too old for the program gets one line naming what it lacks ([`kernel`]).
/// Otherwise keeps the end of the verifier log, where the reason is; the full log is rarely useful to an
/// administrator and can be megabytes long.
fn verifier_error(e: ProgramError) -> DataplaneError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if let Some(too_old) = kernel::explain(&log) {
                return DataplaneError::KernelTooOld(too_old);
            }
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(12)..].join("\n");
            DataplaneError::Verifier {
                errno: io_error.to_string(),
                tail,
            }
        }
        other => DataplaneError::Program(other),
    }
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}
