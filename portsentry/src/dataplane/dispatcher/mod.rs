//! Sharing an interface with other XDP programs: libxdp's multi-program dispatcher protocol
//! (xdp-tools' lib/libxdp/protocol.org, version 2), implemented here with aya's `Extension`
//! (freplace) programs and the dispatcher object libxdp ships (`xdp-dispatcher.o`, Debian's
//! libxdp1), so `xdp-loader status` and every other libxdp user see portsentry as one of the
//! interface's programs and keep it when they add or remove theirs.
//!
//! Owns: recognising what occupies an interface's XDP slot ([`occupant`]), the refusal to
//! replace a program that is not ours ([`Refusal`]), whether this kernel can run a dispatcher
//! at all ([`kernel_runs_dispatcher`]), joining ([`join`]) and leaving ([`leave`]).
//!
//! The protocol in short: a dispatcher is an XDP program named `xdp_dispatcher` whose frozen
//! `.rodata` holds a config (magic 236, version 2, the number of programs, and per slot the
//! chain-call actions, run priority and flags); its stub functions `prog0`..`prog9` are replaced
//! by the component programs (freplace). Changing the set means building a new dispatcher with
//! every component re-linked into it in run-priority order, pinning the links and programs
//! under `/sys/fs/bpf/xdp/dispatch-IFINDEX-ID/progN-{link,prog}` (the pins keep them attached
//! after the process exits), swapping it in atomically with `XDP_FLAGS_REPLACE`, then unpinning
//! the old one, all under an exclusive flock on `/sys/fs/bpf/xdp`. We never copy libxdp code;
//! we read its protocol and interoperate with its files.

use std::{
    fmt, fs, io,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, Map, MapData},
    programs::{links::FdLink, loaded_programs, Extension, ProgramFd, ProgramInfo, Xdp},
    Ebpf, EbpfLoader, Pod,
};
use portsentry_common::{PROGRAM_NAME, PROGRAM_NAME_COMPAT};
use thiserror::Error;

use super::AttachMode;

pub mod netlink;

/// Our run priority in the dispatcher: libxdp's default (lower runs first). xdp-filter's
/// programs declare 10, so a packet it drops never reaches us and one it passes does.
pub const RUN_PRIORITY: u32 = 50;
/// We let the next program run when we pass a packet (XDP_PASS = 2), as libxdp's default.
const CHAIN_ON_PASS: u32 = 1 << 2;
/// What the stubs return: always chained, so a slot whose program went away is skipped.
const RETVAL_BIT: u32 = 1 << 31;
const MAGIC: u8 = 236;
const VERSION: u8 = 2;
const MAX_PROGRAMS: usize = 10;
const DISPATCHER_NAME: &str = "xdp_dispatcher";
const OBJECT_FILE: &str = "xdp-dispatcher.o";

/// The dispatcher's `conf` (struct xdp_dispatcher_config, version 2): 124 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Config {
    magic: u8,
    dispatcher_version: u8,
    num_progs_enabled: u8,
    is_xdp_frags: u8,
    chain_call_actions: [u32; MAX_PROGRAMS],
    run_prios: [u32; MAX_PROGRAMS],
    program_flags: [u32; MAX_PROGRAMS],
}

// SAFETY: plain integers and arrays of them, no padding (4 bytes then u32 arrays).
unsafe impl Pod for Config {}

#[derive(Debug, Error)]
pub enum DispatcherError {
    #[error(
        "libxdp's dispatcher object {OBJECT_FILE} was not found (looked in {looked}); install \
         Debian's libxdp1 (or xdp-tools), or set LIBXDP_OBJECT_PATH to its directory"
    )]
    NoObject { looked: String },
    #[error(
        "this kernel refuses freplace (BPF_PROG_TYPE_EXT) programs ({why}), which libxdp's \
         multi-program dispatcher needs: XDP programs cannot share an interface here"
    )]
    NoFreplace { why: String },
    #[error("{0}")]
    Refused(Refusal),
    /// Linux 6.13+ refuses an extension that resizes the packet in place of a stub that does
    /// not; libxdp's dispatcher stubs do since libxdp 1.5.5.
    #[error(
        "this kernel refuses freplace programs that change packet data in place of libxdp's \
         dispatcher stubs that do not (libxdp before 1.5.5; its {OBJECT_FILE} is used here)"
    )]
    ChangesPacket,
    #[error("{iface}: cannot join libxdp's dispatcher (program {id}): {why}")]
    Incompatible { iface: String, id: u32, why: String },
    #[error("{iface}: libxdp's dispatcher already holds {MAX_PROGRAMS} programs, the most it can")]
    Full { iface: String },
    #[error("{iface}: {what}: {source}")]
    Io {
        iface: String,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{iface}: {what}: {detail}")]
    Bpf {
        iface: String,
        what: String,
        detail: String,
    },
}

type Result<T> = std::result::Result<T, DispatcherError>;

/// Why we do not attach to an interface: a program that is not ours is there and we cannot
/// (or may not) join it. Displays as one line naming the interface, the program and what to do.
#[derive(Debug)]
pub struct Refusal {
    pub iface: String,
    pub prog_id: u32,
    pub prog_name: String,
    /// Why sharing is impossible and what the administrator can do.
    pub hint: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} already runs XDP program {} ({}), which is not portsentry's: refusing to replace \
             it. {}",
            self.iface, self.prog_id, self.prog_name, self.hint
        )
    }
}

/// What occupies an interface's XDP slot.
#[derive(Debug)]
pub enum Occupant {
    Empty,
    /// libxdp's dispatcher, with its components' names in run order, or why we cannot read
    /// them (its pins are not where we look, or it is another version).
    Dispatcher {
        id: u32,
        programs: std::result::Result<Vec<String>, String>,
    },
    /// A program attached on its own (not through a dispatcher); `ours` if it is portsentry's.
    Single {
        id: u32,
        name: String,
        ours: bool,
    },
}

/// Looks at `iface`'s XDP slot.
pub fn occupant(iface: &str, ifindex: u32) -> Result<Occupant> {
    let Some(att) = netlink::attached(ifindex).map_err(io_err(iface, "reading its XDP program"))?
    else {
        return Ok(Occupant::Empty);
    };
    let info = program_info(iface, att.prog_id)?;
    let name = info.name_as_str().unwrap_or("?").to_owned();
    if name == DISPATCHER_NAME {
        return Ok(Occupant::Dispatcher {
            id: att.prog_id,
            programs: Existing::read(iface, ifindex, att)
                .map(|e| e.components.iter().map(|c| c.name.clone()).collect())
                .map_err(|e| e.to_string()),
        });
    }
    Ok(Occupant::Single {
        id: att.prog_id,
        ours: is_ours(&name),
        name,
    })
}

/// The refusal for a program found on `iface` when we attach on our own (not as a
/// component): says why the programs cannot share the interface and what to do.
pub fn refusal(iface: &str, occupant: &Occupant) -> Option<Refusal> {
    let unload = format!(
        "Unload it (`xdp-loader unload {iface} --all`, or `ip link set dev {iface} xdp off`)"
    );
    let (id, name, hint) = match occupant {
        Occupant::Empty => return None,
        Occupant::Dispatcher {
            id,
            programs: Ok(programs),
        } => (
            *id,
            format!("{DISPATCHER_NAME} holding {}", programs.join(", ")),
            "It is libxdp's dispatcher, which appeared after portsentry started: restart \
             portsentry to join it"
                .to_owned(),
        ),
        Occupant::Dispatcher {
            id,
            programs: Err(why),
        } => (
            *id,
            DISPATCHER_NAME.to_owned(),
            format!(
                "It is libxdp's dispatcher, but portsentry cannot join it: {why}. Run portsentry \
                 where xdp-loader runs (the same bpffs at /sys/fs/bpf, or the same LIBXDP_BPFFS)"
            ),
        ),
        Occupant::Single {
            id,
            name,
            ours: true,
        } => (
            *id,
            name.clone(),
            format!(
                "It is portsentry's own program, attached by another portsentry or left by one \
                 that did not stop cleanly: stop that one, or detach it (`ip link set dev {iface} \
                 xdp off`)"
            ),
        ),
        Occupant::Single { id, name, .. } => {
            let hint = match kernel_runs_dispatcher() {
                Err(DispatcherError::NoFreplace { why }) => format!(
                    "This kernel refuses freplace programs ({why}), so libxdp's dispatcher \
                     cannot share {iface} between XDP programs here. {unload} to let portsentry \
                     guard {iface}"
                ),
                Err(DispatcherError::NoObject { .. }) => format!(
                    "It was attached without libxdp's dispatcher and libxdp's {OBJECT_FILE} is \
                     not installed here (Debian: libxdp1). {unload}, or install libxdp and load \
                     both through its dispatcher (xdp_mode = \"multi\", then xdp-loader)"
                ),
                _ => format!(
                    "It was attached without libxdp's dispatcher, so the two cannot share \
                     {iface}. {unload}, or load both through libxdp's dispatcher: start \
                     portsentry with xdp_mode = \"multi\", then load the other with xdp-loader"
                ),
            };
            (*id, name.clone(), hint)
        }
    };
    Some(Refusal {
        iface: iface.to_owned(),
        prog_id: id,
        prog_name: name,
        hint,
    })
}

/// Whether portsentry should load its program as a dispatcher component: `xdp_mode =
/// "multi"`, or libxdp's dispatcher already runs on one of the interfaces.
pub fn wanted(mode: AttachMode, interfaces: &[String]) -> bool {
    mode == AttachMode::Multi
        || interfaces.iter().any(|iface| {
            nix::net::if_::if_nametoindex(iface.as_str())
                .ok()
                .and_then(|i| occupant(iface, i).ok())
                .is_some_and(|o| matches!(o, Occupant::Dispatcher { .. }))
        })
}

/// Whether the kernel can run libxdp's dispatcher: freplace programs load and attach (libxdp
/// tries the same with the dispatcher object's `xdp_pass`).
pub fn kernel_runs_dispatcher() -> Result<()> {
    let bytes = object()?;
    let no = |why: String| DispatcherError::NoFreplace { why };
    let mut target = EbpfLoader::new()
        .load(&bytes)
        .map_err(|e| no(format!("loading {OBJECT_FILE}: {e}")))?;
    let pass: &mut Xdp = target
        .program_mut("xdp_pass")
        .ok_or_else(|| no(format!("{OBJECT_FILE} has no xdp_pass")))?
        .try_into()
        .map_err(|e| no(format!("{e}")))?;
    pass.load()
        .map_err(|e| no(format!("loading xdp_pass: {e}")))?;
    let target_fd = pass
        .fd()
        .and_then(|f| f.try_clone().map_err(Into::into))
        .map_err(|e| no(format!("{e}")))?;
    let mut test = EbpfLoader::new()
        .extension("xdp_pass")
        .load(&bytes)
        .map_err(|e| no(format!("loading {OBJECT_FILE}: {e}")))?;
    let ext: &mut Extension = test
        .program_mut("xdp_pass")
        .ok_or_else(|| no(format!("{OBJECT_FILE} has no xdp_pass")))?
        .try_into()
        .map_err(|e| no(format!("{e}")))?;
    ext.load(target_fd, "xdp_pass")
        .map_err(|e| no(errno_of(&e)))?;
    ext.attach().map_err(|e| no(errno_of(&e)))?;
    Ok(())
}

/// The short reason in a program error: the errno, not the whole chain.
fn errno_of(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { io_error, .. } => errno_name(io_error),
        aya::programs::ProgramError::SyscallError(s) => {
            format!("{}: {}", s.call, errno_name(&s.io_error))
        }
        other => other.to_string(),
    }
}

/// "EPERM: Operation not permitted" rather than "Operation not permitted (os error 1)".
pub(crate) fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let errno = nix::errno::Errno::from_raw(n);
            format!("{errno:?}: {}", errno.desc())
        }
        None => e.to_string(),
    }
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

/// What [`join`] did, for [`leave`] and the log.
#[derive(Debug)]
pub struct Joined {
    pub iface: String,
    pub ifindex: u32,
    /// The dispatcher we swapped in (its id names the pin directory).
    pub dispatcher_id: u32,
    /// "native" or "generic".
    pub mode: AttachMode,
    /// Component names in run order, ours included.
    pub order: Vec<String>,
    /// Our slot in `order`.
    pub slot: usize,
}

/// Attaches `ours` (loaded as an extension) to `iface` through libxdp's dispatcher: joins the
/// dispatcher there, or makes one (in `mode`: native, generic, or native falling back to
/// generic). A program that is not a dispatcher is never replaced ([`Refusal`]). A component of
/// ours left by an earlier run is replaced (`stale` gets its id).
pub fn join(
    iface: &str,
    ifindex: u32,
    ours: &mut Extension,
    mode: AttachMode,
    stale: &mut Vec<u32>,
) -> Result<Joined> {
    let bytes = object()?;
    let our_id = ours
        .info()
        .map_err(bpf_err(iface, "reading our program's id"))?
        .id();
    let _lock = Lock::acquire(iface)?;
    let mut last_race = None;
    for _attempt in 0..3 {
        let current =
            netlink::attached(ifindex).map_err(io_err(iface, "reading its XDP program"))?;
        let existing = match current {
            None => None,
            Some(att) => {
                let info = program_info(iface, att.prog_id)?;
                let name = info.name_as_str().unwrap_or("?").to_owned();
                if name != DISPATCHER_NAME {
                    let occ = Occupant::Single {
                        id: att.prog_id,
                        ours: is_ours(&name),
                        name,
                    };
                    let refusal = refusal(iface, &occ).ok_or_else(|| DispatcherError::Bpf {
                        iface: iface.to_owned(),
                        what: "reading its XDP program".into(),
                        detail: "it changed while we looked".into(),
                    })?;
                    return Err(DispatcherError::Refused(refusal));
                }
                Some(Existing::read(iface, ifindex, att)?)
            }
        };
        let mut slots: Vec<Slot> = Vec::new();
        if let Some(e) = &existing {
            for c in &e.components {
                if c.id == our_id {
                    continue;
                }
                if is_ours(&c.name) {
                    stale.push(c.id);
                    continue;
                }
                slots.push(Slot::Theirs(c.clone_meta()));
            }
        }
        slots.push(Slot::Ours);
        if slots.len() > MAX_PROGRAMS {
            return Err(DispatcherError::Full {
                iface: iface.to_owned(),
            });
        }
        let our_name = ours
            .info()
            .ok()
            .and_then(|i| i.name_as_str().map(str::to_owned))
            .unwrap_or_else(|| PROGRAM_NAME.to_owned());
        sort_slots(&mut slots, &our_name);
        let mode_flags = match (&existing, mode) {
            (Some(e), _) => vec![e.attached.mode_flags],
            (None, AttachMode::Native) => vec![netlink::XDP_FLAGS_DRV_MODE],
            (None, AttachMode::Generic) => vec![netlink::XDP_FLAGS_SKB_MODE],
            (None, _) => vec![netlink::XDP_FLAGS_DRV_MODE, netlink::XDP_FLAGS_SKB_MODE],
        };
        match swap(
            iface,
            ifindex,
            &bytes,
            existing.as_ref(),
            &mut slots,
            Some(&mut *ours),
            &mode_flags,
        ) {
            Ok((dispatcher_id, flags)) => {
                let order: Vec<String> = slots.iter().map(|s| s.name(&our_name)).collect();
                let slot = slots
                    .iter()
                    .position(|s| matches!(s, Slot::Ours))
                    .unwrap_or(0);
                return Ok(Joined {
                    iface: iface.to_owned(),
                    ifindex,
                    dispatcher_id,
                    mode: if flags == netlink::XDP_FLAGS_SKB_MODE {
                        AttachMode::Generic
                    } else {
                        AttachMode::Native
                    },
                    order,
                    slot,
                });
            }
            Err(Swap::Raced(e)) => last_race = Some(e),
            Err(Swap::Failed(e)) => return Err(e),
        }
    }
    Err(DispatcherError::Io {
        iface: iface.to_owned(),
        what: "swapping in a new dispatcher (the interface kept changing)".into(),
        source: last_race.unwrap_or_else(|| io::Error::other("raced")),
    })
}

/// Takes our program (`our_id`) out of `iface`'s dispatcher, leaving every other component in
/// place; the dispatcher is detached only when we were its last program. An interface that is
/// gone takes its attachment with it: then only the pins of the dispatcher we made are removed.
pub fn leave(joined: &Joined, our_id: u32) -> Result<()> {
    let iface = joined.iface.as_str();
    let ifindex = joined.ifindex;
    let _lock = Lock::acquire(iface)?;
    let current = match netlink::attached(ifindex) {
        Ok(c) => c,
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
            unpin_dir(&pin_root().join(format!("dispatch-{ifindex}-{}", joined.dispatcher_id)));
            return Ok(());
        }
        Err(e) => return Err(io_err(iface, "reading its XDP program")(e)),
    };
    let Some(att) = current else { return Ok(()) };
    let info = program_info(iface, att.prog_id)?;
    if info.name_as_str() != Some(DISPATCHER_NAME) {
        return Ok(()); // someone replaced the dispatcher: nothing of ours is attached there
    }
    let existing = Existing::read(iface, ifindex, att)?;
    if !existing.components.iter().any(|c| c.id == our_id) {
        return Ok(());
    }
    let bytes = object()?;
    let mut slots: Vec<Slot> = existing
        .components
        .iter()
        .filter(|c| c.id != our_id)
        .map(|c| Slot::Theirs(c.clone_meta()))
        .collect();
    let flags = [existing.attached.mode_flags];
    match swap(
        iface,
        ifindex,
        &bytes,
        Some(&existing),
        &mut slots,
        None,
        &flags,
    ) {
        Ok(_) => Ok(()),
        Err(Swap::Raced(e)) => Err(DispatcherError::Io {
            iface: iface.to_owned(),
            what: "leaving the dispatcher (it changed meanwhile)".into(),
            source: e,
        }),
        Err(Swap::Failed(e)) => Err(e),
    }
}

/// Whether a program of this (kernel-truncated) name is portsentry's.
fn is_ours(name: &str) -> bool {
    // The kernel keeps 15 characters of a program's name.
    [PROGRAM_NAME, PROGRAM_NAME_COMPAT]
        .iter()
        .any(|n| name == &n[..n.len().min(15)])
}

/// A component of an existing dispatcher: its pinned program and the config it ran with.
struct Component {
    id: u32,
    name: String,
    prio: u32,
    chain: u32,
    flags: u32,
    pin: PathBuf,
}

impl Component {
    fn clone_meta(&self) -> Component {
        Component {
            id: self.id,
            name: self.name.clone(),
            prio: self.prio,
            chain: self.chain,
            flags: self.flags,
            pin: self.pin.clone(),
        }
    }
}

enum Slot {
    Theirs(Component),
    Ours,
}

impl Slot {
    fn name(&self, ours: &str) -> String {
        match self {
            Slot::Theirs(c) => c.name.clone(),
            Slot::Ours => ours.to_owned(),
        }
    }
    fn prio(&self) -> u32 {
        match self {
            Slot::Theirs(c) => c.prio,
            Slot::Ours => RUN_PRIORITY,
        }
    }
}

/// libxdp's order: run priority, then name, then programs already in the dispatcher before new
/// ones (a stable sort keeps the rest as found).
fn sort_slots(slots: &mut [Slot], our_name: &str) {
    slots.sort_by(|a, b| {
        a.prio()
            .cmp(&b.prio())
            .then_with(|| a.name(our_name).cmp(&b.name(our_name)))
            .then_with(|| matches!(a, Slot::Ours).cmp(&matches!(b, Slot::Ours)))
    });
}

/// The dispatcher attached now, its config and its components (read from its pins).
struct Existing {
    attached: netlink::Attached,
    fd: ProgramFd,
    dir: PathBuf,
    components: Vec<Component>,
}

impl Existing {
    fn read(iface: &str, ifindex: u32, attached: netlink::Attached) -> Result<Self> {
        let id = attached.prog_id;
        let incompatible = |why: String| DispatcherError::Incompatible {
            iface: iface.to_owned(),
            id,
            why,
        };
        let info = program_info(iface, id)?;
        let maps = info
            .map_ids()
            .map_err(|e| incompatible(format!("reading its maps: {e}")))?
            .unwrap_or_default();
        let [map_id] = maps[..] else {
            return Err(incompatible(format!(
                "a dispatcher has one map, this one {}",
                maps.len()
            )));
        };
        let map = MapData::from_id(map_id)
            .map_err(|e| incompatible(format!("opening its config map: {e}")))?;
        let config: Array<MapData, Config> = Array::try_from(Map::Array(map)).map_err(|e| {
            incompatible(format!(
                "its config is not libxdp's dispatcher config version {VERSION}: {e}"
            ))
        })?;
        let config = config
            .get(&0, 0)
            .map_err(|e| incompatible(format!("reading its config: {e}")))?;
        if config.magic != MAGIC || config.dispatcher_version != VERSION {
            return Err(incompatible(format!(
                "dispatcher version {} (magic {}), portsentry speaks version {VERSION}",
                config.dispatcher_version, config.magic
            )));
        }
        let n = usize::from(config.num_progs_enabled);
        if n > MAX_PROGRAMS {
            return Err(incompatible(format!("it claims {n} programs")));
        }
        let dir = pin_root().join(format!("dispatch-{ifindex}-{id}"));
        let mut components = Vec::with_capacity(n);
        for i in 0..n {
            let pin = dir.join(format!("prog{i}-prog"));
            let info = ProgramInfo::from_pin(&pin).map_err(|e| {
                incompatible(format!(
                    "its program {i} is not pinned at {}: {e}",
                    pin.display()
                ))
            })?;
            components.push(Component {
                id: info.id(),
                name: info.name_as_str().unwrap_or("?").to_owned(),
                prio: config.run_prios[i],
                chain: config.chain_call_actions[i] & !RETVAL_BIT,
                flags: config.program_flags[i],
                pin,
            });
        }
        let fd = info
            .fd()
            .map_err(|e| incompatible(format!("opening it: {e}")))?;
        Ok(Existing {
            attached,
            fd,
            dir,
            components,
        })
    }
}

enum Swap {
    /// The interface's program changed under us: read it again and retry.
    Raced(io::Error),
    Failed(DispatcherError),
}

impl From<DispatcherError> for Swap {
    fn from(e: DispatcherError) -> Self {
        Swap::Failed(e)
    }
}

/// Builds a dispatcher for `slots` (in order), links every component into it, pins them,
/// swaps it onto the interface (replacing `existing` atomically, or only if the slot is empty)
/// and unpins `existing`. With no slots, detaches `existing`. Returns the new dispatcher's id
/// and the mode flags used.
fn swap(
    iface: &str,
    ifindex: u32,
    bytes: &[u8],
    existing: Option<&Existing>,
    slots: &mut [Slot],
    ours: Option<&mut Extension>,
    mode_flags: &[u32],
) -> std::result::Result<(u32, u32), Swap> {
    // EEXIST/EBUSY: the interface's program is no longer the one we read (or one appeared
    // where there was none): read it again, as libxdp does.
    let race_or_fail = |e: io::Error, what: &str| {
        if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::EBUSY)) {
            Swap::Raced(e)
        } else {
            Swap::Failed(io_err(iface, what)(e))
        }
    };
    if slots.is_empty() {
        let Some(old) = existing else {
            return Ok((0, 0));
        };
        netlink::set(ifindex, None, Some(old.fd.as_fd()), old.attached.mode_flags)
            .map_err(|e| race_or_fail(e, "detaching libxdp's dispatcher"))?;
        unpin_dir(&old.dir);
        return Ok((0, old.attached.mode_flags));
    }
    let mut config = Config {
        magic: MAGIC,
        dispatcher_version: VERSION,
        num_progs_enabled: slots.len() as u8,
        ..Config::default()
    };
    for (i, slot) in slots.iter().enumerate() {
        let (chain, prio, flags) = match slot {
            Slot::Theirs(c) => (c.chain, c.prio, c.flags),
            Slot::Ours => (CHAIN_ON_PASS, RUN_PRIORITY, 0),
        };
        config.chain_call_actions[i] = chain | RETVAL_BIT;
        config.run_prios[i] = prio;
        config.program_flags[i] = flags;
    }
    let (_object, fd, new_id) = load_dispatcher(iface, bytes, &config)?;
    let dir = pin_root().join(format!("dispatch-{ifindex}-{new_id}"));
    if let Err(e) = link_and_pin(iface, &fd, &dir, slots, ours) {
        unpin_dir(&dir);
        return Err(Swap::Failed(e));
    }
    let mut result = Err(io::Error::other("no XDP mode to try"));
    let mut used = 0;
    for &flags in mode_flags {
        let flags_now = if existing.is_none() {
            flags | netlink::XDP_FLAGS_UPDATE_IF_NOEXIST
        } else {
            flags
        };
        result = netlink::set(
            ifindex,
            Some(fd.as_fd()),
            existing.map(|e| e.fd.as_fd()),
            flags_now,
        );
        used = flags;
        if result.is_ok() {
            break;
        }
    }
    if let Err(e) = result {
        unpin_dir(&dir);
        return Err(race_or_fail(e, "attaching libxdp's dispatcher"));
    }
    if let Some(old) = existing {
        unpin_dir(&old.dir);
    }
    Ok((new_id, used))
}

/// Links each slot's program into the dispatcher `fd` at `progN` and pins link and program
/// under `dir` as libxdp does.
fn link_and_pin(
    iface: &str,
    fd: &ProgramFd,
    dir: &Path,
    slots: &mut [Slot],
    mut ours: Option<&mut Extension>,
) -> Result<()> {
    fs::create_dir(dir).map_err(io_err(iface, &format!("creating {}", dir.display())))?;
    for (i, slot) in slots.iter_mut().enumerate() {
        let target = format!("prog{i}");
        let mut theirs;
        let ext: &mut Extension = match slot {
            Slot::Theirs(c) => {
                theirs = Extension::from_pin(&c.pin)
                    .map_err(bpf_err(iface, &format!("opening {}", c.pin.display())))?;
                &mut theirs
            }
            Slot::Ours => match ours.as_deref_mut() {
                Some(e) => e,
                None => continue,
            },
        };
        let link_id = ext.attach_to_program(fd, &target).map_err(bpf_err(
            iface,
            &format!("linking program {i} into the dispatcher"),
        ))?;
        let link: FdLink = ext
            .take_link(link_id)
            .map_err(bpf_err(iface, "taking the link"))?
            .into();
        let link_pin = dir.join(format!("{target}-link"));
        link.pin(&link_pin).map_err(|e| DispatcherError::Bpf {
            iface: iface.to_owned(),
            what: format!("pinning {}", link_pin.display()),
            detail: e.to_string(),
        })?;
        let prog_pin = dir.join(format!("{target}-prog"));
        ext.pin(&prog_pin).map_err(|e| DispatcherError::Bpf {
            iface: iface.to_owned(),
            what: format!("pinning {}", prog_pin.display()),
            detail: e.to_string(),
        })?;
    }
    Ok(())
}

/// Loads a dispatcher with `config`; returns the object (its config map), the program's fd
/// and its id.
fn load_dispatcher(iface: &str, bytes: &[u8], config: &Config) -> Result<(Ebpf, ProgramFd, u32)> {
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

/// Program info by id.
fn program_info(iface: &str, id: u32) -> Result<ProgramInfo> {
    loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == id)
        .ok_or_else(|| DispatcherError::Bpf {
            iface: iface.to_owned(),
            what: format!("reading XDP program {id}"),
            detail: "not among the loaded programs (gone, or no CAP_SYS_ADMIN)".into(),
        })
}

/// libxdp's directory in bpffs: `$LIBXDP_BPFFS/xdp`, by default `/sys/fs/bpf/xdp`.
fn pin_root() -> PathBuf {
    std::env::var_os("LIBXDP_BPFFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(super::bpffs::BPFFS_ROOT))
        .join("xdp")
}

/// Removes a dispatcher's pins (`progN-link`, `progN-prog`) and its directory; what is already
/// gone is fine.
fn unpin_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

/// libxdp's lock: an exclusive flock on its bpffs directory, held while pins change.
struct Lock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

impl Lock {
    fn acquire(iface: &str) -> Result<Self> {
        let root = pin_root();
        super::bpffs::ensure_pin_dir(&root).map_err(|e| DispatcherError::Io {
            iface: iface.to_owned(),
            what: format!("libxdp's directory {}", root.display()),
            source: io::Error::other(format!("{e:#}")),
        })?;
        let dir =
            fs::File::open(&root).map_err(io_err(iface, &format!("opening {}", root.display())))?;
        nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive)
            .map(Lock)
            .map_err(|(_, e)| DispatcherError::Io {
                iface: iface.to_owned(),
                what: format!("locking {}", root.display()),
                source: e.into(),
            })
    }
}

/// libxdp's dispatcher object: `$LIBXDP_OBJECT_PATH`, then the directories libxdp is built
/// with on the common distributions.
fn object() -> Result<Vec<u8>> {
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

fn io_err<'a>(iface: &'a str, what: &'a str) -> impl Fn(io::Error) -> DispatcherError + 'a {
    move |source| DispatcherError::Io {
        iface: iface.to_owned(),
        what: what.to_owned(),
        source,
    }
}

fn bpf_err<'a>(
    iface: &'a str,
    what: &'a str,
) -> impl Fn(aya::programs::ProgramError) -> DispatcherError + 'a {
    move |e| DispatcherError::Bpf {
        iface: iface.to_owned(),
        what: what.to_owned(),
        detail: errno_of(&e),
    }
}
