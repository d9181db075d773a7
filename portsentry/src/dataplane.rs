//! Loading, configuring and attaching the XDP program, and typed access to its maps.
//!
//! Maps can be pinned under a directory on bpffs so that the CLI, `bpftool` and a restarted
//! daemon see live state. Pinned maps are reused only if their layout matches this build.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{
        lpm_trie::{Key as LpmKey, LpmTrie},
        Array, HashMap, MapData, MapError, MapInfo, MapType, PerCpuArray, RingBuf,
    },
    programs::{ProgramError, Xdp, XdpMode},
    Ebpf, EbpfError, EbpfLoader,
};
use portsentry_common::{
    map_names as names, AddrKey, BanEntry, Config, HitEntry, Stat, PORT_BITMAP_WORDS, PROGRAM_NAME,
};
use thiserror::Error;

use crate::{cidr, cidr::Cidr, object, ports::PortSet};

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
    #[error("XDP program")]
    Program(#[source] ProgramError),
    #[error("the XDP object has no map {0} (object and binary out of step?)")]
    NoSuchMap(&'static str),
    #[error("the XDP object has no program `{PROGRAM_NAME}`")]
    NoProgram,
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
    #[error("the {0} table is full")]
    TableFull(&'static str),
}

type Result<T> = std::result::Result<T, DataplaneError>;

/// How to attach: PortSentry users pick "auto" (native, falling back to generic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    #[default]
    Auto,
    Native,
    Generic,
}

/// Load-time settings.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Pin maps here (must be on bpffs) and reuse compatible pins found there.
    pub pin_dir: Option<PathBuf>,
    /// Ban table capacity; `None` keeps the object's default.
    pub max_bans: Option<u32>,
}

/// Map layout this build expects: (name, type, key size, value size).
fn expected_layout() -> [(&'static str, MapType, usize, usize); 9] {
    use std::mem::size_of;
    [
        (names::CONFIG, MapType::Array, 4, size_of::<Config>()),
        (names::TCP_GUARD, MapType::Array, 4, 8),
        (names::UDP_GUARD, MapType::Array, 4, 8),
        (
            names::BANS,
            MapType::Hash,
            size_of::<AddrKey>(),
            size_of::<BanEntry>(),
        ),
        (
            names::HITS,
            MapType::LruHash,
            size_of::<AddrKey>(),
            size_of::<HitEntry>(),
        ),
        (names::BAN_CIDRS, MapType::LpmTrie, 20, 8),
        (names::ALLOW_CIDRS, MapType::LpmTrie, 20, 1),
        (names::STATS, MapType::PerCpuArray, 4, 8),
        (names::EVENTS, MapType::RingBuf, 0, 0),
    ]
}

/// Counters summed over CPUs, indexed like [`Stat`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats(pub [u64; Stat::COUNT as usize]);

impl Stats {
    pub fn get(&self, stat: Stat) -> u64 {
        self.0[stat as usize]
    }
    /// Packets seen while configured: every packet ends passed or dropped.
    pub fn packets(&self) -> u64 {
        self.get(Stat::Passed) + self.get(Stat::Dropped)
    }
}

pub struct Dataplane {
    ebpf: Ebpf,
}

impl Dataplane {
    /// Loads the embedded object and verifies the program (does not attach).
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        Self::load_object(object::embedded()?, opts)
    }

    pub fn load_object(bytes: &[u8], opts: &LoadOptions) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        if let Some(n) = opts.max_bans {
            loader.map_max_entries(names::BANS, n);
        }
        let pin_paths: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => {
                check_pins(dir)?;
                expected_layout()
                    .iter()
                    .map(|(n, ..)| (*n, dir.join(n)))
                    .collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(bytes).map_err(DataplaneError::Load)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::NoProgram)?
            .try_into()
            .map_err(DataplaneError::Program)?;
        program.load().map_err(verifier_error)?;
        Ok(Self { ebpf })
    }

    /// The loaded program, for attaching or BPF_PROG_TEST_RUN.
    pub fn program(&self) -> Result<&Xdp> {
        self.ebpf
            .program(PROGRAM_NAME)
            .ok_or(DataplaneError::NoProgram)?
            .try_into()
            .map_err(DataplaneError::Program)
    }

    /// Attaches to `iface`; returns the mode actually used. With `Auto`, native XDP is tried
    /// first and generic XDP is used if the driver has no native support.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<AttachMode> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::NoProgram)?
            .try_into()
            .map_err(DataplaneError::Program)?;
        let attach_err = |source| DataplaneError::Attach {
            iface: iface.to_owned(),
            source,
        };
        match mode {
            AttachMode::Native => program
                .attach(iface, XdpMode::Driver)
                .map(|_| AttachMode::Native)
                .map_err(attach_err),
            AttachMode::Generic => program
                .attach(iface, XdpMode::Skb)
                .map(|_| AttachMode::Generic)
                .map_err(attach_err),
            AttachMode::Auto => match program.attach(iface, XdpMode::Driver) {
                Ok(_) => Ok(AttachMode::Native),
                Err(ProgramError::UnknownInterface { name }) => {
                    Err(attach_err(ProgramError::UnknownInterface { name }))
                }
                Err(_) => program
                    .attach(iface, XdpMode::Skb)
                    .map(|_| AttachMode::Generic)
                    .map_err(attach_err),
            },
        }
    }

    pub fn set_config(&mut self, config: &Config) -> Result<()> {
        let mut map: Array<_, Config> = self.map_mut(names::CONFIG)?;
        map.set(0, config, 0).map_err(map_err(names::CONFIG))
    }

    pub fn config(&self) -> Result<Config> {
        let map: Array<_, Config> = self.map(names::CONFIG)?;
        map.get(&0, 0).map_err(map_err(names::CONFIG))
    }

    /// Replaces the guarded-port bitmap of `proto` (`proto::TCP` or `proto::UDP`).
    pub fn set_guarded_ports(&mut self, protocol: u8, ports: &PortSet) -> Result<()> {
        let name = if protocol == portsentry_common::proto::TCP {
            names::TCP_GUARD
        } else {
            names::UDP_GUARD
        };
        let mut map: Array<_, u64> = self.map_mut(name)?;
        for (i, word) in ports
            .words()
            .iter()
            .enumerate()
            .take(PORT_BITMAP_WORDS as usize)
        {
            map.set(i as u32, word, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    pub fn insert_ban(&mut self, addr: IpAddr, entry: &BanEntry) -> Result<()> {
        let mut map: HashMap<_, AddrKey, BanEntry> = self.map_mut(names::BANS)?;
        match map.insert(cidr::addr_key(addr), entry, 0) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
                Err(DataplaneError::TableFull("ban"))
            }
            Err(e) => Err(map_err(names::BANS)(e)),
        }
    }

    /// Removes a ban; false if there was none.
    pub fn remove_ban(&mut self, addr: IpAddr) -> Result<bool> {
        let mut map: HashMap<_, AddrKey, BanEntry> = self.map_mut(names::BANS)?;
        match map.remove(&cidr::addr_key(addr)) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(false)
            }
            Err(e) => Err(map_err(names::BANS)(e)),
        }
    }

    pub fn ban(&self, addr: IpAddr) -> Result<Option<BanEntry>> {
        let map: HashMap<_, AddrKey, BanEntry> = self.map(names::BANS)?;
        match map.get(&cidr::addr_key(addr), 0) {
            Ok(b) => Ok(Some(b)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::BANS)(e)),
        }
    }

    pub fn bans(&self) -> Result<Vec<(IpAddr, BanEntry)>> {
        let map: HashMap<_, AddrKey, BanEntry> = self.map(names::BANS)?;
        let mut out = Vec::new();
        for item in map.iter() {
            let (k, v) = item.map_err(map_err(names::BANS))?;
            out.push((cidr::key_addr(&k), v));
        }
        Ok(out)
    }

    pub fn hits(&self, addr: IpAddr) -> Result<Option<HitEntry>> {
        let map: HashMap<_, AddrKey, HitEntry> = self.map(names::HITS)?;
        match map.get(&cidr::addr_key(addr), 0) {
            Ok(h) => Ok(Some(h)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::HITS)(e)),
        }
    }

    /// Replaces the allowlist trie; returns the number of entries (for `Config`).
    pub fn set_allowlist(&mut self, cidrs: &[Cidr]) -> Result<u32> {
        self.replace_trie::<u8>(names::ALLOW_CIDRS, cidrs, 1)
    }

    /// Replaces the CIDR ban trie; returns the number of entries (for `Config`).
    pub fn set_ban_cidrs(&mut self, cidrs: &[Cidr]) -> Result<u32> {
        self.replace_trie::<u64>(names::BAN_CIDRS, cidrs, 0)
    }

    fn replace_trie<V: aya::Pod>(
        &mut self,
        name: &'static str,
        cidrs: &[Cidr],
        value: V,
    ) -> Result<u32> {
        let mut trie: LpmTrie<_, [u8; 16], V> = self.map_mut(name)?;
        let old: Vec<LpmKey<[u8; 16]>> = trie.keys().filter_map(|k| k.ok()).collect();
        let wanted: Vec<LpmKey<[u8; 16]>> = cidrs
            .iter()
            .map(|c| LpmKey::new(c.key_prefix(), c.key().addr))
            .collect();
        for key in &wanted {
            match trie.insert(key, value, 0) {
                Ok(()) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOSPC) =>
                {
                    return Err(DataplaneError::TableFull(name));
                }
                Err(e) => return Err(map_err(name)(e)),
            }
        }
        for key in old {
            let keep = wanted
                .iter()
                .any(|w| w.prefix_len() == key.prefix_len() && w.data() == key.data());
            if !keep {
                trie.remove(&key).map_err(map_err(name))?;
            }
        }
        Ok(wanted.len() as u32)
    }

    pub fn stats(&self) -> Result<Stats> {
        let map: PerCpuArray<_, u64> = self.map(names::STATS)?;
        let mut stats = Stats::default();
        for stat in Stat::ALL {
            let per_cpu = map.get(&(stat as u32), 0).map_err(map_err(names::STATS))?;
            stats.0[stat as usize] = per_cpu.iter().sum();
        }
        Ok(stats)
    }

    /// Takes the event ring buffer (once) for the event reader.
    pub fn take_events(&mut self) -> Result<RingBuf<aya::maps::MapData>> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(DataplaneError::NoSuchMap(names::EVENTS))?;
        RingBuf::try_from(map).map_err(map_err(names::EVENTS))
    }

    fn map<'a, T>(&'a self, name: &'static str) -> Result<T>
    where
        T: TryFrom<&'a aya::maps::Map, Error = MapError>,
    {
        let map = self.ebpf.map(name).ok_or(DataplaneError::NoSuchMap(name))?;
        T::try_from(map).map_err(map_err(name))
    }

    fn map_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::NoSuchMap(name))?;
        T::try_from(map).map_err(map_err(name))
    }
}

/// Keeps the end of the verifier log, where the reason is; the full log is rarely useful to an
/// administrator and can be megabytes long.
fn verifier_error(e: ProgramError) -> DataplaneError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
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

/// Refuses pinned maps whose type or key/value size differ from this build's.
fn check_pins(dir: &Path) -> Result<()> {
    for (name, map_type, key, value) in expected_layout() {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let incompatible = |what: String| DataplaneError::IncompatiblePin {
            path: path.clone(),
            dir: dir.to_path_buf(),
            what,
        };
        let info =
            MapInfo::from_pin(&path).map_err(|e| incompatible(format!("cannot open it: {e}")))?;
        let actual = info
            .map_type()
            .map_err(|e| incompatible(format!("unknown type: {e}")))?;
        if actual != map_type {
            return Err(incompatible(format!(
                "type {actual:?}, expected {map_type:?}"
            )));
        }
        if map_type != MapType::RingBuf
            && (info.key_size() as usize != key || info.value_size() as usize != value)
        {
            return Err(incompatible(format!(
                "key/value size {}/{}, expected {key}/{value}",
                info.key_size(),
                info.value_size()
            )));
        }
    }
    Ok(())
}

/// Opens pinned maps without loading a program: for the CLI while a daemon runs.
pub fn pinned_map(dir: &Path, name: &'static str) -> Result<MapData> {
    MapData::from_pin(dir.join(name)).map_err(map_err(name))
}
