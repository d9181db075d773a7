//! Attaching the loaded program to an interface: as plain XDP (native, generic, or native
//! falling back to generic), never over a program that is not ours, or by joining libxdp's
//! dispatcher when loaded as a component; leaving the dispatchers again at drop.

use aya::programs::{Extension, ProgramError, Xdp, XdpMode};

use super::{dispatcher, AttachMode, Dataplane, DataplaneError, Result};

impl Dataplane {
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
}
