//! Loading the embedded object: the load-time options (capacities, pins, compat, log level,
//! component), pinned maps checked and migrated before the load, the program verified as plain
//! XDP or as a dispatcher component, the maps taken and the diagnostics reader set up. Attaching
//! is `attach.rs`'s.

use std::path::PathBuf;

use aya::{
    programs::{Extension, ProgramType, Xdp},
    sys::{is_helper_supported, BpfHelper},
    EbpfLoader,
};
use portsentry_common::{
    maps::{self as defs, Capacity, CapacityOption, MapSpec},
    PROGRAM_NAME, PROGRAM_NAME_COMPAT,
};

use super::{
    dispatcher,
    error::{extension_error, verifier_error},
    kernel, maps, object, pins, Dataplane, DataplaneError, Maps, Result,
};

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
    pub(super) fn capacity(&self, map: &MapSpec) -> Option<u32> {
        match map.capacity {
            Capacity::Fixed(_) => None,
            Capacity::ByOption { option, default } => Some(self.option(option).unwrap_or(default)),
        }
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
