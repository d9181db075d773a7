//! xdp-filter's own XDP programs as peers of our pass path: the objects Debian's libxdp1
//! package ships (`xdpfilt_*.o`, the ones `xdp-filter load` attaches), staged under
//! `target/test-tools` by `cargo xtask bench` and never installed. Loaded with aya, their
//! filter maps filled the way `xdp-filter port/ip/ether` fills them, and run through the same
//! BPF_PROG_TEST_RUN harness as ours.
//!
//! Which objects: xdp-filter builds one per feature set and policy. `alw` ("allow" policy:
//! traffic matching no rule passes, a rule drops) is a blocklist, as ours is; `all` checks
//! every feature (Ethernet addresses, IPv4, IPv6, TCP/UDP ports), `ip` only the addresses. The
//! `dny` ("deny" policy: only matching traffic passes) object is the allowlist form, measured on
//! a packet one of its rules lets through.
//!
//! The objects' maps are declared pinned by name (libbpf's `LIBBPF_PIN_BY_NAME`): aya pins them
//! in a bpffs mounted for the run ([`PinDir`]), never under /sys/fs/bpf where a real
//! xdp-filter keeps its maps.

use std::{net::IpAddr, path::Path};

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{PerCpuArray, PerCpuHashMap, PerCpuValues},
    programs::Xdp,
    Ebpf, EbpfLoader, Pod,
};

use crate::lab::PinDir;

/// `common_kern_user.h` of xdp-tools: what a rule matches (the value of every filter map; the
/// bits above `COUNTER_SHIFT` count hits).
const MAP_FLAG_SRC: u64 = 1 << 0;
const MAP_FLAG_DST: u64 = 1 << 1;
const MAP_FLAG_TCP: u64 = 1 << 2;
const MAP_FLAG_UDP: u64 = 1 << 3;

/// The environment variable naming the directory of the staged `xdpfilt_*.o`.
pub const OBJECTS_ENV: &str = "PORTSENTRY_XDP_FILTER_OBJECTS";

/// Rules like an operator's few: ports closed to the world (`xdp-filter port P`: destination,
/// TCP and UDP), sources blocked (`xdp-filter ip A --mode src`), one MAC.
pub struct Rules<'a> {
    pub ports: &'a [u16],
    pub sources: &'a [IpAddr],
    pub macs: &'a [[u8; 6]],
}

/// One loaded xdp-filter program with its maps filled.
pub struct XdpFilter {
    ebpf: Ebpf,
    name: String,
    /// Kept for the life of the maps' pins.
    _pins: PinDir,
}

impl XdpFilter {
    /// Loads `<dir>/<name>.o` (its program is named `name` too) and writes `rules` into the
    /// maps it has; an object without a feature has no map for it.
    pub fn load(dir: &Path, name: &str, rules: &Rules) -> Result<Self> {
        let path = dir.join(format!("{name}.o"));
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let pins = PinDir::new()?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.path)
            .load(&bytes)
            .with_context(|| format!("loading {} with aya", path.display()))?;
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("no `{name}` program in {}", path.display()))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("loading {name} into the kernel"))?;
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        let every_cpu = |flags: u64| PerCpuValues::try_from(vec![flags; cpus]);
        if let Some(map) = ebpf.map_mut("filter_ports") {
            let mut ports: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
            for port in rules.ports {
                // The key is the port as the packet carries it (network order, read natively).
                let key = u32::from(u16::from_ne_bytes(port.to_be_bytes()));
                ports.set(
                    key,
                    every_cpu(MAP_FLAG_DST | MAP_FLAG_TCP | MAP_FLAG_UDP)?,
                    0,
                )?;
            }
        }
        for source in rules.sources {
            match source {
                IpAddr::V4(a) => insert(
                    &mut ebpf,
                    "filter_ipv4",
                    u32::from_ne_bytes(a.octets()),
                    every_cpu(MAP_FLAG_SRC)?,
                )?,
                IpAddr::V6(a) => insert(
                    &mut ebpf,
                    "filter_ipv6",
                    a.octets(),
                    every_cpu(MAP_FLAG_SRC)?,
                )?,
            }
        }
        for mac in rules.macs {
            insert(&mut ebpf, "filter_ethernet", *mac, every_cpu(MAP_FLAG_SRC)?)?;
        }
        Ok(Self {
            ebpf,
            name: name.to_owned(),
            _pins: pins,
        })
    }

    pub fn program(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(&self.name)
            .ok_or_else(|| anyhow!("{} program", self.name))?
            .try_into()?)
    }
}

/// `key → values` into the per-CPU hash `map`, if the object has it.
fn insert<K: Pod>(ebpf: &mut Ebpf, map: &str, key: K, values: PerCpuValues<u64>) -> Result<()> {
    if let Some(m) = ebpf.map_mut(map) {
        PerCpuHashMap::<_, K, u64>::try_from(m)?
            .insert(key, values, 0)
            .with_context(|| format!("writing a rule into {map}"))?;
    }
    Ok(())
}
