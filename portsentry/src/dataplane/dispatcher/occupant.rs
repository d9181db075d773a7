//! What occupies an interface's XDP slot ([`Occupant`]: nothing, libxdp's dispatcher, or a
//! program on its own, ours or not), and the [`Refusal`] to replace a program that is not ours,
//! worded with why the programs cannot share the interface and what the administrator can do.

use std::fmt;

use aya::programs::{loaded_programs, ProgramInfo};
use portsentry_common::{PROGRAM_NAME, PROGRAM_NAME_COMPAT};

use super::{
    error::{io_err, DispatcherError, Result},
    existing::Existing,
    netlink,
    probe::kernel_runs_dispatcher,
    protocol::{DISPATCHER_NAME, OBJECT_FILE},
};

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

/// Whether a program of this (kernel-truncated) name is portsentry's.
pub(super) fn is_ours(name: &str) -> bool {
    // The kernel keeps 15 characters of a program's name.
    [PROGRAM_NAME, PROGRAM_NAME_COMPAT]
        .iter()
        .any(|n| name == &n[..n.len().min(15)])
}

/// Program info by id.
pub(super) fn program_info(iface: &str, id: u32) -> Result<ProgramInfo> {
    loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == id)
        .ok_or_else(|| DispatcherError::Bpf {
            iface: iface.to_owned(),
            what: format!("reading XDP program {id}"),
            detail: "not among the loaded programs (gone, or no CAP_SYS_ADMIN)".into(),
        })
}
