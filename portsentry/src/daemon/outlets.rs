//! Where outcomes go: the log sink (stdout and the history), the hook runner, the notifier and
//! its digest window. The daemon hands each part's outcome here in order ([`Outlets::route`]);
//! the fleet's alert goes to [`FleetLink`].
//!
//! Owns the sink, the hook runner, the notifier and the digest window's counters. Words no
//! line: the sink writes what `detect::lines` and the parts worded.

use std::{path::Path, time::Duration};

use tokio::sync::mpsc;

use super::{fleet::FleetLink, notify, notify::DigestWindow, probes::Out};
use crate::{
    bans::BanBook,
    config::settings::{HistoryFormat, LiveSettings},
    dataplane::Dataplane,
    detect::logging::{LogFn, LogSink},
    hooks::HookRunner,
    metrics,
    notify::Notifier,
};

pub(super) struct Outlets {
    sink: LogSink,
    hooks: HookRunner,
    /// Alert and digest mail, webhook (`[notify]`).
    notifier: Notifier,
    digest: DigestWindow,
}

impl Outlets {
    /// Hook and worker lines come back through `log_line` for the loop to write.
    pub fn new(live: &LiveSettings, state_dir: &Path, log_line: LogFn) -> Self {
        Self {
            hooks: HookRunner::new(live.hooks.clone(), log_line.clone()),
            notifier: Notifier::new(&live.notify, state_dir, log_line),
            sink: sink(live),
            digest: DigestWindow::default(),
        }
    }

    /// A line for the log and the history.
    pub fn line(&mut self, text: &str) {
        self.sink.line(text);
    }

    pub fn history_format(&self) -> HistoryFormat {
        self.sink.history_format()
    }

    /// One thing the probe pipeline asked for; `trigger` is the effective trigger.
    pub fn route(&mut self, out: Out, trigger: u64, fleet: &mut FleetLink) {
        match out {
            Out::Event { ev, iface } => self.sink.event(&ev, trigger, &iface),
            Out::Line(text) => self.sink.line(&text),
            Out::FirstTrigger(ev) => self.sink.first_trigger(&ev),
            Out::Seen(ev) => self.notifier.on_event(&ev),
            Out::Banned(notice) => {
                self.hooks.on_ban(&notice);
                self.notifier.on_new_ban(&notice);
                fleet.on_local_ban(&notice);
            }
            Out::Unenforced(notice) => self.hooks.on_ban(&notice),
        }
    }

    /// A neighbour flip's line: logged, and the administrator hears of it (it is itself an
    /// attack, or a replaced host).
    pub fn flip(&mut self, line: &str) {
        self.sink.line(line);
        self.notifier.on_neighbour_flip(line);
    }

    /// SIGHUP, before the settings are applied: the notifier's settings.
    pub fn reload_notifier(&mut self, live: &LiveSettings) {
        self.notifier.reload(&live.notify);
    }

    /// Applying the settings: the hooks' settings and a sink for the log format and history.
    pub fn apply(&mut self, live: &LiveSettings) {
        self.hooks.reload(live.hooks.clone());
        self.sink = sink(live);
    }

    /// What only the daemon knows, for `status` and the metrics.
    pub fn view(&self, fleet: &FleetLink) -> metrics::DaemonView {
        metrics::DaemonView {
            hooks: self.hooks.stats(),
            hooks_running: self.hooks.running() as u64,
            hooks_queued: self.hooks.queued() as u64,
            fleet: fleet.counters(),
            notify: self.notifier.is_enabled().then(|| self.notifier.stats()),
        }
    }

    /// At start: where the first digest window's counters begin.
    pub fn mark_digest(&mut self, book: &BanBook, dp: &Dataplane, fleet: &FleetLink) {
        self.digest
            .mark(notify::counters(book, dp, fleet.counters()));
    }

    /// The loop's timer: the hooks' and the fleet's skip summaries, then the digest when due.
    pub fn tick(&mut self, book: &mut BanBook, dp: &Dataplane, fleet: &mut FleetLink) {
        self.hooks.flush_skip_summary();
        fleet.flush_cap_report();
        let fleet = &*fleet;
        let counters = |book: &BanBook| notify::counters(book, dp, fleet.counters());
        self.digest.tick(&mut self.notifier, book, dp, counters);
    }

    /// At stop: queued responses are dropped (said), running ones get a moment to finish, and
    /// the lines still on their way are written.
    pub async fn stop(&mut self, log_rx: &mut mpsc::UnboundedReceiver<String>) {
        self.hooks.abandon_queue();
        self.hooks.idle(Duration::from_secs(2)).await;
        while let Ok(line) = log_rx.try_recv() {
            self.sink.line(&line);
        }
    }
}

fn sink(live: &LiveSettings) -> LogSink {
    LogSink::new(
        live.log_format,
        live.history_file.as_deref(),
        live.history_format,
    )
}
