//! libxdp's dispatcher protocol, version 2 (xdp-tools' lib/libxdp/protocol.org): its constants
//! and the config layout in the dispatcher's frozen `.rodata`, finding the dispatcher object
//! libxdp ships, loading a dispatcher with a given config, and the throwaway template our
//! program is verified against when it is loaded as an extension.

use std::{fs, path::PathBuf};

use aya::{
    programs::{ProgramFd, Xdp},
    Ebpf, EbpfLoader, Pod,
};

use super::error::{errno_of, DispatcherError, Result};

/// Our run priority in the dispatcher: libxdp's default (lower runs first). xdp-filter's
/// programs declare 10, so a packet it drops never reaches us and one it passes does.
pub const RUN_PRIORITY: u32 = 50;
/// We let the next program run when we pass a packet (XDP_PASS = 2), as libxdp's default.
pub(super) const CHAIN_ON_PASS: u32 = 1 << 2;
/// What the stubs return: always chained, so a slot whose program went away is skipped.
pub(super) const RETVAL_BIT: u32 = 1 << 31;
pub(super) const MAGIC: u8 = 236;
pub(super) const VERSION: u8 = 2;
pub(super) const MAX_PROGRAMS: usize = 10;
pub(super) const DISPATCHER_NAME: &str = "xdp_dispatcher";
pub(super) const OBJECT_FILE: &str = "xdp-dispatcher.o";

/// The dispatcher's `conf` (struct xdp_dispatcher_config, version 2): 124 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Config {
    pub(super) magic: u8,
    pub(super) dispatcher_version: u8,
    pub(super) num_progs_enabled: u8,
    pub(super) is_xdp_frags: u8,
    pub(super) chain_call_actions: [u32; MAX_PROGRAMS],
    pub(super) run_prios: [u32; MAX_PROGRAMS],
    pub(super) program_flags: [u32; MAX_PROGRAMS],
}

// SAFETY: plain integers and arrays of them, no padding (4 bytes then u32 arrays).
unsafe impl Pod for Config {}

/// libxdp's dispatcher object: `$LIBXDP_OBJECT_PATH`, then the directories libxdp is built
/// with on the common distributions.
pub(super) fn object() -> Result<Vec<u8>> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("LIBXDP_OBJECT_PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    for d in [
        format!("/usr/lib/{triplet}/bpf"),
        "/usr/lib/bpf".to_owned(),
        "/usr/lib64/bpf".to_owned(),
        "/usr/local/lib/bpf".to_owned(),
        "/usr/local/lib/x86_64-linux-gnu/bpf".to_owned(),
    ] {
        dirs.push(PathBuf::from(d));
    }
    for d in &dirs {
        if let Ok(bytes) = fs::read(d.join(OBJECT_FILE)) {
            return Ok(bytes);
        }
    }
    Err(DispatcherError::NoObject {
        looked: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Loads a dispatcher with `config`; returns the object (its config map), the program's fd
/// and its id.
pub(super) fn load_dispatcher(
    iface: &str,
    bytes: &[u8],
    config: &Config,
) -> Result<(Ebpf, ProgramFd, u32)> {
    let fail = |what: &str, detail: String| DispatcherError::Bpf {
        iface: iface.to_owned(),
        what: what.to_owned(),
        detail,
    };
    let mut ebpf = EbpfLoader::new()
        .override_global("conf", config, true)
        .load(bytes)
        .map_err(|e| fail("loading libxdp's dispatcher object", format!("{e:#}")))?;
    let program: &mut Xdp = ebpf
        .program_mut(DISPATCHER_NAME)
        .ok_or_else(|| {
            fail(
                "loading libxdp's dispatcher",
                format!("no {DISPATCHER_NAME}"),
            )
        })?
        .try_into()
        .map_err(|e| fail("loading libxdp's dispatcher", format!("{e}")))?;
    program
        .load()
        .map_err(|e| fail("loading libxdp's dispatcher", errno_of(&e)))?;
    let fd = program
        .fd()
        .and_then(|f| f.try_clone().map_err(Into::into))
        .map_err(|e| fail("loading libxdp's dispatcher", format!("{e}")))?;
    let id = program
        .info()
        .map_err(|e| fail("reading the dispatcher's id", format!("{e}")))?
        .id();
    Ok((ebpf, fd, id))
}

/// Loads the throwaway dispatcher our program is verified against when it is loaded as an
/// extension (the kernel wants a target at load; it may then attach to any dispatcher's
/// slot, all slots having the same signature).
pub fn load_template() -> Result<ProgramFd> {
    let bytes = object()?;
    let mut config = Config {
        magic: MAGIC,
        dispatcher_version: VERSION,
        num_progs_enabled: 1,
        ..Config::default()
    };
    config.chain_call_actions[0] = CHAIN_ON_PASS | RETVAL_BIT;
    config.run_prios[0] = RUN_PRIORITY;
    // The object (its config map) may go: the program lives on through `fd`.
    let (_object, fd, _id) = load_dispatcher("(template)", &bytes, &config)?;
    Ok(fd)
}
