//! Reading the dispatcher attached now: its config (checked against the protocol version we
//! speak) and its components, found through the pins libxdp keeps for them.

use std::path::PathBuf;

use aya::{
    maps::{Array, Map, MapData},
    programs::{ProgramFd, ProgramInfo},
};

use super::{
    error::{DispatcherError, Result},
    netlink,
    occupant::program_info,
    pins::pin_root,
    protocol::{Config, MAGIC, MAX_PROGRAMS, RETVAL_BIT, VERSION},
};

/// A component of an existing dispatcher: its pinned program and the config it ran with.
pub(super) struct Component {
    pub(super) id: u32,
    pub(super) name: String,
    pub(super) prio: u32,
    pub(super) chain: u32,
    pub(super) flags: u32,
    pub(super) pin: PathBuf,
}

impl Component {
    pub(super) fn clone_meta(&self) -> Component {
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

/// The dispatcher attached now, its config and its components (read from its pins).
pub(super) struct Existing {
    pub(super) attached: netlink::Attached,
    pub(super) fd: ProgramFd,
    pub(super) dir: PathBuf,
    pub(super) components: Vec<Component>,
}

impl Existing {
    pub(super) fn read(iface: &str, ifindex: u32, attached: netlink::Attached) -> Result<Self> {
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
