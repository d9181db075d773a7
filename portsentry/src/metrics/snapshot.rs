//! One reading of every number portsentry reports: kernel counters, table fill, bans by origin,
//! the top banned sources by drops, hooks and fleet mode. `portsentry status` and the metrics
//! endpoint both render a [`Snapshot`], so they cannot disagree.
//!
//! Plain data: [`Snapshot::collect`] reads the ban book and the maps; the daemon adds what only
//! it knows ([`DaemonView`]). Must not: write maps or the book (drop counters are refreshed
//! into the book's records, as `list` does).

use portsentry_common::{config_flags, Stat};
use serde::Serialize;

use crate::{
    bans::{BanBook, Origin},
    dataplane::{Maps, Stats},
    fleet::FleetCounters,
    hooks::HookStats,
    net::cidr::Cidr,
};

/// A table's fill: entries now and the kernel's capacity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableFill {
    /// `bans`, `ban_networks`, `allowlist`, `learned_peers`, `learned_inbound_peers`.
    pub table: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// What the maps say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelView {
    pub stats: Stats,
    /// `block`, `detect` or `unconfigured`.
    pub mode: &'static str,
    pub learned_peers: u64,
    pub tables: Vec<TableFill>,
}

/// One of the bans with the most drops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopBan {
    pub target: Cidr,
    pub origin: Origin,
    pub drops: u64,
}

/// The bans in the book.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BanView {
    /// Every record (`status`'s `bans`).
    pub total: u64,
    /// Detect mode's shadow bans (recorded, never dropped).
    pub shadow: u64,
    /// Unexpired, enforced bans by origin, every origin listed.
    pub active: Vec<(Origin, u64)>,
    /// Bans made since the daemon (or the book) started, by origin, every origin listed.
    pub made: Vec<(Origin, u64)>,
    /// Fleet decisions held (fleet-origin records, enforced or not).
    pub fleet_held: u64,
}

/// What only the running daemon knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonView {
    pub hooks: HookStats,
    /// Ban responses running now.
    pub hooks_running: u64,
    /// Ban responses waiting for a free slot now (`[hooks] queue`).
    pub hooks_queued: u64,
    /// Fleet mode's counters, in fleet mode.
    pub fleet: Option<FleetCounters>,
    /// Notification counters, when `[notify]` has a transport.
    pub notify: Option<crate::notify::NotifyStats>,
}

/// Every number `status` and `/metrics` show, read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Wall clock (Unix ms) of the reading.
    pub taken_at_ms: u64,
    /// `None`: no maps (no daemon and nothing pinned).
    pub kernel: Option<KernelView>,
    pub bans: BanView,
    /// At most the requested number, most drops first; bans without drops are left out.
    pub top_bans: Vec<TopBan>,
    /// `None`: no daemon answered.
    pub daemon: Option<DaemonView>,
}

impl Snapshot {
    /// Reads the book and the maps now; `top_n` bans with the most drops are named. The drop
    /// counters are the book's: its owner refreshes them from the maps first
    /// ([`BanBook::refresh_drops`]).
    pub fn collect(
        book: &BanBook,
        maps: Option<&Maps>,
        daemon: Option<DaemonView>,
        top_n: usize,
    ) -> anyhow::Result<Self> {
        let now_ms = crate::clock::unix_ms();
        let kernel = match maps {
            Some(m) => Some(kernel_view(book, m)?),
            None => None,
        };
        let live = || book.records().filter(|r| !r.is_expired(now_ms));
        let count =
            |f: &dyn Fn(&crate::bans::BanRecord) -> bool| live().filter(|r| f(r)).count() as u64;
        let bans = BanView {
            total: book.len() as u64,
            shadow: book.shadow_count() as u64,
            active: Origin::ALL
                .iter()
                .map(|o| (*o, count(&|r| r.origin == *o && !r.shadow)))
                .collect(),
            made: Origin::ALL.iter().map(|o| (*o, book.made(*o))).collect(),
            fleet_held: count(&|r| r.origin == Origin::Fleet),
        };
        let mut top_bans: Vec<TopBan> = live()
            .filter(|r| r.drops > 0)
            .map(|r| TopBan {
                target: r.target,
                origin: r.origin,
                drops: r.drops,
            })
            .collect();
        top_bans.sort_by(|a, b| b.drops.cmp(&a.drops).then(a.target.cmp(&b.target)));
        top_bans.truncate(top_n);
        Ok(Self {
            taken_at_ms: now_ms,
            kernel,
            bans,
            top_bans,
            daemon,
        })
    }

    /// Seconds since the last answered decision pull, in fleet mode after the first one.
    pub fn last_pull_age_seconds(&self) -> Option<f64> {
        let at = self.daemon.as_ref()?.fleet.as_ref()?.last_pull_ms?;
        Some(self.taken_at_ms.saturating_sub(at) as f64 / 1000.0)
    }
}

fn kernel_view(book: &BanBook, m: &Maps) -> anyhow::Result<KernelView> {
    let config = m.config()?;
    let mode = if config.layout_version == 0 {
        "unconfigured"
    } else if config.flags & config_flags::ENFORCE != 0 {
        "block"
    } else {
        "detect"
    };
    let peers = m.peer_count(crate::dataplane::PeerTable::Outbound)? as u64;
    let inbound = m.peer_count(crate::dataplane::PeerTable::Inbound)? as u64;
    let hosts = book.records().filter(|r| r.target.is_host()).count() as u64;
    let tables = vec![
        TableFill {
            table: "bans",
            entries: hosts,
            capacity: m.ban_capacity().into(),
        },
        TableFill {
            table: "ban_networks",
            entries: config.ban_cidr_count.into(),
            capacity: m.ban_network_capacity().into(),
        },
        TableFill {
            table: "allowlist",
            entries: config.allow_cidr_count.into(),
            capacity: m.allow_capacity().into(),
        },
        TableFill {
            table: "learned_peers",
            entries: peers,
            capacity: m.peer_capacity().into(),
        },
        TableFill {
            table: "learned_inbound_peers",
            entries: inbound,
            capacity: m.peer_capacity().into(),
        },
    ];
    Ok(KernelView {
        stats: m.stats()?,
        mode,
        learned_peers: peers,
        tables,
    })
}

/// The kernel counters by scan type: (stat, scan type label, protocol label).
pub const PROBE_STATS: [(Stat, &str, &str); 6] = [
    (Stat::ProbesSyn, "syn", "tcp"),
    (Stat::ProbesFin, "fin", "tcp"),
    (Stat::ProbesNull, "null", "tcp"),
    (Stat::ProbesXmas, "xmas", "tcp"),
    (Stat::ProbesOther, "other", "tcp"),
    (Stat::ProbesUdp, "udp", "udp"),
];
