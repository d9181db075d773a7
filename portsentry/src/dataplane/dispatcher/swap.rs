//! Building the new dispatcher: its slots in libxdp's run order, a dispatcher loaded with their
//! config, every component linked into it and pinned as libxdp does, then swapped onto the
//! interface atomically (`XDP_FLAGS_REPLACE`, or only where the slot is empty) and the old
//! dispatcher's pins removed.

use std::{fs, io, os::fd::AsFd, path::Path};

use aya::programs::{links::FdLink, Extension, ProgramFd};

use super::{
    error::{bpf_err, io_err, DispatcherError, Result},
    existing::{Component, Existing},
    netlink,
    pins::{pin_root, unpin_dir},
    protocol::{load_dispatcher, Config, CHAIN_ON_PASS, MAGIC, RETVAL_BIT, RUN_PRIORITY, VERSION},
};

pub(super) enum Slot {
    Theirs(Component),
    Ours,
}

impl Slot {
    pub(super) fn name(&self, ours: &str) -> String {
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
pub(super) fn sort_slots(slots: &mut [Slot], our_name: &str) {
    slots.sort_by(|a, b| {
        a.prio()
            .cmp(&b.prio())
            .then_with(|| a.name(our_name).cmp(&b.name(our_name)))
            .then_with(|| matches!(a, Slot::Ours).cmp(&matches!(b, Slot::Ours)))
    });
}

pub(super) enum Swap {
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
pub(super) fn swap(
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
