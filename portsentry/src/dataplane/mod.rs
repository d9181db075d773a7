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
        Array, HashMap, IterableMap, MapData, MapError, MapInfo, MapType, PerCpuArray, RingBuf,
    },
    programs::{ProgramError, Xdp, XdpMode},
    Ebpf, EbpfError, EbpfLoader,
};
use portsentry_common::{
    map_names as names, AddrKey, BanEntry, Config, HitEntry, Stat, DEFAULT_MAX_BANS,
    DEFAULT_MAX_CIDRS, LAYOUT_VERSION, PORT_BITMAP_WORDS, PROGRAM_NAME,
};
use thiserror::Error;

pub mod bpffs;
pub mod object;

use crate::{net::cidr, net::cidr::Cidr, net::ports::PortSet};

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
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic where the driver lacks XDP.
    #[default]
    Auto,
    /// Driver mode only: fails where the driver has no XDP support.
    Native,
    /// Generic (skb) mode: works everywhere, slower.
    Generic,
}

crate::config::settings::display_as_value_name!(AttachMode);

/// Load-time settings.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Pin maps here (must be on bpffs) and reuse compatible pins found there.
    pub pin_dir: Option<PathBuf>,
    /// Ban table capacity; `None` keeps the object's default.
    pub max_bans: Option<u32>,
    /// Banned-network trie capacity; `None` keeps the object's default.
    pub max_ban_networks: Option<u32>,
}

impl LoadOptions {
    fn capacity(&self, name: &str) -> Option<u32> {
        match name {
            names::BANS => Some(self.max_bans.unwrap_or(DEFAULT_MAX_BANS)),
            names::BAN_CIDRS => Some(self.max_ban_networks.unwrap_or(DEFAULT_MAX_CIDRS)),
            _ => None,
        }
    }
}

/// Ban state read out of pinned maps that had to be replaced (another layout version or a
/// changed capacity). The ban book puts it into the fresh maps.
#[derive(Debug, Default)]
pub struct Migrated {
    /// Why, e.g. "PS_BANS max_entries 64 -> 128".
    pub reasons: Vec<String>,
    pub bans: Vec<(IpAddr, BanEntry)>,
    pub networks: Vec<Cidr>,
    /// False when the old layout could not be read; bans then come from the state file.
    pub copied: bool,
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

/// Typed handles on every map except the ring buffer. Opened either from a freshly loaded
/// program ([`Dataplane`]) or from the pin directory (the CLI, with or without a daemon).
pub struct Maps {
    config: Array<MapData, Config>,
    tcp_guard: Array<MapData, u64>,
    udp_guard: Array<MapData, u64>,
    bans: HashMap<MapData, AddrKey, BanEntry>,
    hits: HashMap<MapData, AddrKey, HitEntry>,
    ban_cidrs: LpmTrie<MapData, [u8; 16], u64>,
    allow_cidrs: LpmTrie<MapData, [u8; 16], u8>,
    stats: PerCpuArray<MapData, u64>,
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    maps: Maps,
    events: Option<RingBuf<MapData>>,
    /// Set when pinned maps were replaced at load.
    pub migrated: Option<Migrated>,
}

impl std::ops::Deref for Dataplane {
    type Target = Maps;
    fn deref(&self) -> &Maps {
        &self.maps
    }
}

impl std::ops::DerefMut for Dataplane {
    fn deref_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }
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
        if let Some(n) = opts.max_ban_networks {
            loader.map_max_entries(names::BAN_CIDRS, n);
        }
        let mut migrated = None;
        let pin_paths: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => {
                let reasons = pin_mismatches(dir, opts)?;
                if !reasons.is_empty() {
                    migrated = Some(migrate_out(dir, reasons)?);
                }
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
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DataplaneError::NoSuchMap(name));
        let maps = Maps {
            config: typed(names::CONFIG, take(names::CONFIG)?)?,
            tcp_guard: typed(names::TCP_GUARD, take(names::TCP_GUARD)?)?,
            udp_guard: typed(names::UDP_GUARD, take(names::UDP_GUARD)?)?,
            bans: typed(names::BANS, take(names::BANS)?)?,
            hits: typed(names::HITS, take(names::HITS)?)?,
            ban_cidrs: typed(names::BAN_CIDRS, take(names::BAN_CIDRS)?)?,
            allow_cidrs: typed(names::ALLOW_CIDRS, take(names::ALLOW_CIDRS)?)?,
            stats: typed(names::STATS, take(names::STATS)?)?,
        };
        let events = Some(typed(names::EVENTS, take(names::EVENTS)?)?);
        Ok(Self {
            ebpf,
            maps,
            events,
            migrated,
        })
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
        let try_mode = |program: &mut Xdp, m: XdpMode| program.attach(iface, m).map(|_| ());
        match mode {
            AttachMode::Native => try_mode(program, XdpMode::Driver)
                .map(|()| AttachMode::Native)
                .map_err(attach_err),
            AttachMode::Generic => try_mode(program, XdpMode::Skb)
                .map(|()| AttachMode::Generic)
                .map_err(attach_err),
            AttachMode::Auto => match try_mode(program, XdpMode::Driver) {
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

    /// Takes the event ring buffer (once) for the event reader.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        self.events
            .take()
            .ok_or(DataplaneError::NoSuchMap(names::EVENTS))
    }
}

fn typed<T>(name: &'static str, map: aya::maps::Map) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    T::try_from(map).map_err(map_err(name))
}

/// A pinned map opened as the `Map` variant its type calls for.
fn open_pinned<T>(dir: &Path, name: &'static str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let data = MapData::from_pin(dir.join(name)).map_err(map_err(name))?;
    let map = match data.info().and_then(|i| i.map_type()) {
        Ok(MapType::Array) => aya::maps::Map::Array(data),
        Ok(MapType::Hash) => aya::maps::Map::HashMap(data),
        Ok(MapType::LruHash) => aya::maps::Map::LruHashMap(data),
        Ok(MapType::LpmTrie) => aya::maps::Map::LpmTrie(data),
        Ok(MapType::PerCpuArray) => aya::maps::Map::PerCpuArray(data),
        Ok(other) => {
            return Err(DataplaneError::IncompatiblePin {
                path: dir.join(name),
                dir: dir.to_path_buf(),
                what: format!("unexpected map type {other:?}"),
            })
        }
        Err(e) => return Err(map_err(name)(e)),
    };
    typed(name, map)
}

impl Maps {
    /// Opens the maps pinned in `dir`; `Ok(None)` if nothing is pinned there.
    pub fn open_pinned(dir: &Path) -> Result<Option<Self>> {
        if !dir.join(names::BANS).exists() {
            return Ok(None);
        }
        check_pins(dir)?;
        check_layout_version(dir)?;
        Ok(Some(Self {
            config: open_pinned(dir, names::CONFIG)?,
            tcp_guard: open_pinned(dir, names::TCP_GUARD)?,
            udp_guard: open_pinned(dir, names::UDP_GUARD)?,
            bans: open_pinned(dir, names::BANS)?,
            hits: open_pinned(dir, names::HITS)?,
            ban_cidrs: open_pinned(dir, names::BAN_CIDRS)?,
            allow_cidrs: open_pinned(dir, names::ALLOW_CIDRS)?,
            stats: open_pinned(dir, names::STATS)?,
        }))
    }

    pub fn set_config(&mut self, config: &Config) -> Result<()> {
        self.config
            .set(0, config, 0)
            .map_err(map_err(names::CONFIG))
    }

    pub fn config(&self) -> Result<Config> {
        self.config.get(&0, 0).map_err(map_err(names::CONFIG))
    }

    /// Replaces the guarded-port bitmap of `protocol` (`proto::TCP` or `proto::UDP`), writing
    /// only the words that changed.
    pub fn set_guarded_ports(&mut self, protocol: u8, ports: &PortSet) -> Result<()> {
        let (name, map) = if protocol == portsentry_common::proto::TCP {
            (names::TCP_GUARD, &mut self.tcp_guard)
        } else {
            (names::UDP_GUARD, &mut self.udp_guard)
        };
        for (i, word) in ports
            .words()
            .iter()
            .enumerate()
            .take(PORT_BITMAP_WORDS as usize)
        {
            let i = i as u32;
            if map.get(&i, 0).ok() != Some(*word) {
                map.set(i, word, 0).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    pub fn insert_ban(&mut self, addr: IpAddr, entry: &BanEntry) -> Result<()> {
        match self.bans.insert(cidr::addr_key(addr), entry, 0) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
                Err(DataplaneError::TableFull("ban"))
            }
            Err(e) => Err(map_err(names::BANS)(e)),
        }
    }

    /// Removes a ban; false if there was none.
    pub fn remove_ban(&mut self, addr: IpAddr) -> Result<bool> {
        match self.bans.remove(&cidr::addr_key(addr)) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_err(names::BANS)(e)),
        }
    }

    pub fn ban(&self, addr: IpAddr) -> Result<Option<BanEntry>> {
        match self.bans.get(&cidr::addr_key(addr), 0) {
            Ok(b) => Ok(Some(b)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err(names::BANS)(e)),
        }
    }

    pub fn bans(&self) -> Result<Vec<(IpAddr, BanEntry)>> {
        let mut out = Vec::new();
        for item in self.bans.iter() {
            let (k, v) = item.map_err(map_err(names::BANS))?;
            out.push((cidr::key_addr(&k), v));
        }
        Ok(out)
    }

    pub fn hits(&self, addr: IpAddr) -> Result<Option<HitEntry>> {
        match self.hits.get(&cidr::addr_key(addr), 0) {
            Ok(h) => Ok(Some(h)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err(names::HITS)(e)),
        }
    }

    /// Replaces the allowlist trie; the count goes into `Config`.
    pub fn set_allowlist(&mut self, cidrs: &[Cidr]) -> Result<TrieWrite> {
        replace_trie(&mut self.allow_cidrs, names::ALLOW_CIDRS, cidrs, 1u8)
    }

    /// Replaces the banned-network trie (only the ban book calls this). Entries that stay keep
    /// their drop counters.
    pub fn set_ban_cidrs(&mut self, cidrs: &[Cidr]) -> Result<TrieWrite> {
        replace_trie(&mut self.ban_cidrs, names::BAN_CIDRS, cidrs, 0u64)
    }

    /// Capacity of the ban table.
    pub fn ban_capacity(&self) -> u32 {
        self.bans.map().info().map_or(0, |i| i.max_entries())
    }

    /// Capacity of the banned-network trie.
    pub fn ban_network_capacity(&self) -> u32 {
        self.ban_cidrs.map().info().map_or(0, |i| i.max_entries())
    }

    /// Banned networks with their drop counters.
    pub fn ban_cidrs(&self) -> Result<Vec<(Cidr, u64)>> {
        let mut out = Vec::new();
        for item in self.ban_cidrs.iter() {
            let (k, drops) = item.map_err(map_err(names::BAN_CIDRS))?;
            out.push((cidr_from_key(&k), drops));
        }
        Ok(out)
    }

    pub fn stats(&self) -> Result<Stats> {
        let mut stats = Stats::default();
        for stat in Stat::ALL {
            let per_cpu = self
                .stats
                .get(&(stat as u32), 0)
                .map_err(map_err(names::STATS))?;
            stats.0[stat as usize] = per_cpu.iter().sum();
        }
        Ok(stats)
    }
}

fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn cidr_from_key(k: &LpmKey<[u8; 16]>) -> Cidr {
    let addr = cidr::key_addr(&AddrKey { addr: k.data() });
    let prefix = if addr.is_ipv4() {
        k.prefix_len().saturating_sub(96)
    } else {
        k.prefix_len()
    };
    Cidr {
        addr,
        prefix: u8::try_from(prefix).unwrap_or(128),
    }
}

/// What writing a trie did: its entry count afterwards and the entries it had no room for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TrieWrite {
    pub count: u32,
    pub refused: Vec<Cidr>,
}

/// Makes `trie` hold exactly `cidrs`: entries no longer wanted are removed first, so a full trie
/// never blocks a removal; an insert with no room left is reported in `refused`, never fatal.
fn replace_trie<V: aya::Pod>(
    trie: &mut LpmTrie<MapData, [u8; 16], V>,
    name: &'static str,
    cidrs: &[Cidr],
    value: V,
) -> Result<TrieWrite> {
    use std::collections::HashSet;
    let as_pair = |k: &LpmKey<[u8; 16]>| (k.prefix_len(), k.data());
    let old: HashSet<(u32, [u8; 16])> = trie
        .keys()
        .filter_map(|k| k.ok())
        .map(|k| as_pair(&k))
        .collect();
    let wanted: HashSet<(u32, [u8; 16])> = cidrs
        .iter()
        .map(|c| (c.key_prefix(), c.key().addr))
        .collect();
    let mut count = old.len() as u32;
    for (prefix, data) in old.difference(&wanted) {
        match trie.remove(&LpmKey::new(*prefix, *data)) {
            Ok(()) => count -= 1,
            Err(e) if is_not_found(&e) => count -= 1,
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    let mut refused = Vec::new();
    for c in cidrs {
        let pair = (c.key_prefix(), c.key().addr);
        if old.contains(&pair) {
            continue; // keep its counter
        }
        match trie.insert(&LpmKey::new(pair.0, pair.1), value, 0) {
            Ok(()) => count += 1,
            Err(MapError::SyscallError(e))
                if matches!(
                    e.io_error.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::E2BIG)
                ) =>
            {
                refused.push(*c)
            }
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    Ok(TrieWrite { count, refused })
}

/// Differences between the pinned maps in `dir` and what this load asks for: another layout
/// version, another map type or key/value size, another capacity. Empty: reuse the pins.
fn pin_mismatches(dir: &Path, opts: &LoadOptions) -> Result<Vec<String>> {
    let mut reasons = Vec::new();
    if let Err(DataplaneError::IncompatiblePin { path, what, .. }) = check_pins(dir) {
        reasons.push(format!("{}: {what}", path.display()));
        return Ok(reasons);
    }
    if let Err(DataplaneError::IncompatiblePin { what, .. }) = check_layout_version(dir) {
        reasons.push(what);
    }
    for (name, ..) in expected_layout() {
        let (Some(want), path) = (opts.capacity(name), dir.join(name)) else {
            continue;
        };
        if let Ok(info) = MapInfo::from_pin(&path) {
            if info.max_entries() != want {
                reasons.push(format!(
                    "{name} max_entries {} -> {want}",
                    info.max_entries()
                ));
            }
        }
    }
    Ok(reasons)
}

/// The pinned config's layout version must be this build's (0: never configured).
fn check_layout_version(dir: &Path) -> Result<()> {
    let path = dir.join(names::CONFIG);
    if !path.exists() {
        return Ok(());
    }
    let config: Array<MapData, Config> = open_pinned(dir, names::CONFIG)?;
    let found = config
        .get(&0, 0)
        .map_err(map_err(names::CONFIG))?
        .layout_version;
    if found != 0 && found != LAYOUT_VERSION {
        return Err(DataplaneError::IncompatiblePin {
            path,
            dir: dir.to_path_buf(),
            what: format!("layout version {found}, this build writes {LAYOUT_VERSION}"),
        });
    }
    Ok(())
}

/// Reads the bans out of pins that must be replaced, then unpins them so the load creates fresh
/// maps. Old entries are copied only when their key and value sizes match this build (the
/// layout versions so far only gave meaning to padding); otherwise the state file restores them.
fn migrate_out(dir: &Path, reasons: Vec<String>) -> Result<Migrated> {
    let mut m = Migrated {
        reasons,
        ..Migrated::default()
    };
    if check_pins(dir).is_ok() {
        if let Ok(bans) = open_pinned::<HashMap<MapData, AddrKey, BanEntry>>(dir, names::BANS) {
            m.bans = bans
                .iter()
                .filter_map(|r| r.ok())
                .map(|(k, mut v)| {
                    v._pad = [0; 2];
                    (cidr::key_addr(&k), v)
                })
                .collect();
        }
        if let Ok(trie) = open_pinned::<LpmTrie<MapData, [u8; 16], u64>>(dir, names::BAN_CIDRS) {
            m.networks = trie
                .keys()
                .filter_map(|k| k.ok())
                .map(|k| cidr_from_key(&k))
                .collect();
        }
        m.copied = true;
    }
    for (name, ..) in expected_layout() {
        let path = dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| DataplaneError::IncompatiblePin {
                path: path.clone(),
                dir: dir.to_path_buf(),
                what: format!("cannot unpin it for migration: {e}"),
            })?;
        }
    }
    Ok(m)
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
