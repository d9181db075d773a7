//! What `portsentry status`, the other verbs and the scrapes see of the running daemon: its
//! published facts ([`DaemonInfo`]), the verbs executed on the live ban book, and the metrics
//! snapshot (cached briefly, so a busy scraper costs one reading).
//!
//! Owns the published facts and the cached snapshot. Borrows the book and the maps per call;
//! a verb that changed the book is saved before it is answered (the daemon's `control`).

use std::{path::Path, sync::Arc};

use crate::{
    bans::BanBook,
    control::{self, DaemonInfo},
    dataplane::Dataplane,
    metrics,
};

#[derive(Default)]
pub(super) struct Status {
    /// For `status` over the control socket.
    info: Option<DaemonInfo>,
    /// The last snapshot served to a scraper.
    cache: metrics::SnapshotCache,
}

impl Status {
    pub fn set_info(&mut self, info: DaemonInfo) {
        self.info = Some(info);
    }

    /// A snapshot for a scrape: the cached one if it is fresh, else a new reading.
    pub fn snapshot(
        &mut self,
        book: &mut BanBook,
        dp: &Dataplane,
        view: metrics::DaemonView,
        top: usize,
    ) -> Option<Arc<metrics::Snapshot>> {
        // The book owns the drop counters: it reads them from the kernel before the snapshot.
        match self.cache.get(|| {
            book.refresh_drops(dp)?;
            metrics::Snapshot::collect(book, Some(dp), Some(view), top)
        }) {
            Ok(s) => Some(s),
            Err(e) => {
                crate::errln!("portsentry: error: metrics: reading the counters failed: {e:#}");
                None
            }
        }
    }

    /// A verb from the control socket, answered from the live state.
    pub fn answer(
        &self,
        req: &control::Request,
        book: &mut BanBook,
        dp: &mut Dataplane,
        pin_dir: Option<&Path>,
        view: metrics::DaemonView,
        top: usize,
    ) -> control::Reply {
        control::verbs::execute(
            req,
            control::verbs::Target {
                book,
                maps: Some(dp),
                daemon: self.info.as_ref(),
                pin_dir,
                view: Some(view),
                top_bans: top,
            },
        )
    }
}
