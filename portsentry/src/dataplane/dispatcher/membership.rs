//! Joining and leaving libxdp's dispatcher on an interface: under libxdp's lock, read what is
//! attached, refuse a program that is not a dispatcher, work out the new set of components
//! (ours added, or removed; stale copies of ours dropped) and have `swap` build and swap in the
//! dispatcher that runs them, retrying when the interface changed meanwhile.

use std::io;

use aya::programs::Extension;
use portsentry_common::PROGRAM_NAME;

use super::{
    error::{bpf_err, io_err, DispatcherError, Result},
    existing::Existing,
    netlink,
    occupant::{is_ours, program_info, refusal, Occupant},
    pins::{pin_root, unpin_dir, Lock},
    protocol::{object, DISPATCHER_NAME, MAX_PROGRAMS},
    swap::{sort_slots, swap, Slot, Swap},
};
use crate::dataplane::AttachMode;

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
/// generic). A program that is not a dispatcher is never replaced ([`Refusal`](super::Refusal)). A component of
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
