//! Prometheus metrics (`metrics_listen`): one [`Snapshot`] of every number, rendered as
//! OpenMetrics / Prometheus text by `prometheus-client` and served over HTTP by hyper.
//!
//! Owns: the snapshot type that `portsentry status` renders too (one source of truth), the
//! series names and help texts (`exposition`), and the listener (`server`). The event loop
//! builds snapshots (it owns the book and the maps) and answers the listener over a channel;
//! the listener encodes and talks to clients in its own task, bounded in connections, request
//! size and time, so a scraper can never stall the loop.
//!
//! Must not: write maps, bans or files; hand-write the exposition format.

pub mod exposition;
pub mod server;
pub mod snapshot;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

pub use snapshot::{DaemonView, Snapshot, TableFill, TopBan};

/// Scrapes closer together than this share one snapshot (reading the maps is not free).
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(1);

/// The last snapshot and when it was taken.
#[derive(Default)]
pub struct SnapshotCache {
    last: Option<(Instant, Arc<Snapshot>)>,
}

impl SnapshotCache {
    /// The cached snapshot if younger than [`SNAPSHOT_MAX_AGE`], else a fresh one from `take`
    /// (or the stale one if `take` fails, so a scrape still gets numbers).
    pub fn get(
        &mut self,
        take: impl FnOnce() -> anyhow::Result<Snapshot>,
    ) -> anyhow::Result<Arc<Snapshot>> {
        let now = Instant::now();
        if let Some((at, s)) = &self.last {
            if now.saturating_duration_since(*at) < SNAPSHOT_MAX_AGE {
                return Ok(s.clone());
            }
        }
        match take() {
            Ok(s) => {
                let s = Arc::new(s);
                self.last = Some((now, s.clone()));
                Ok(s)
            }
            Err(e) => match &self.last {
                Some((_, s)) => {
                    eprintln!("portsentry: warning: metrics: reading the counters failed ({e:#}); serving the previous snapshot");
                    Ok(s.clone())
                }
                None => Err(e),
            },
        }
    }
}
