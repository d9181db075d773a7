//! `portsentry run`: load, restore bans, configure, attach, then log events, run hooks, persist
//! bans and reload on SIGHUP until SIGINT/SIGTERM.
//!
//! The daemon is a few parts, each owning its state behind a small API with typed outcomes:
//!
//! - `probes`: the probe pipeline. An event in; its [`probes::Outcome`] out (the event's lines,
//!   other lines, the 1.2 history line, ban notices), after recording bans in the ban book,
//!   escalating repeat offenders, folding prefix bans and bounding the lines of a flood.
//! - `persist` ([`persist::BanSaving`]) with `saver`: the save schedule, the copy of the book
//!   and its writer thread, the answers waiting for a save, the sweep of expired bans.
//! - `allowlist`: the automatic allowlist and `lo`'s route lookups; `service_ports`: advanced
//!   mode's guarded ports and the service-port memory; `interfaces`: attaching and
//!   re-attaching XDP; `topology`: upper devices and neighbour flips; `peers`: the
//!   peer-learning programs and `peers.json`; `fleet`: CrowdSec decisions applied a step per
//!   turn, and alerts; `status`: what the verbs and scrapes see.
//! - `outlets`: where outcomes go (the log sink, the hook runner, the notifier and its digest
//!   window, `notify`).
//! - `guard` writes what the live settings say into the kernel (ports, allowlist, config);
//!   `reload` re-reads the settings; `startup` loads the maps and opens the ban book.
//!
//! [`Daemon`] (this file) holds the parts and the shared resources (maps, ban book, settings),
//! lends the resources to one part per call, and routes each outcome to the outlets and the
//! fleet; `run` is the loop: start-up order, the `select!` over events, timers, signals and
//! sockets, and shutdown. Changed only from the loop, so no state is shared between tasks.
//! Must not: write a ban except through the ban book, let a part touch another's state, or
//! word a PortSentry-format or `attackalert:` line (`detect::lines` does; the parts hand it
//! facts).

mod allowlist;
mod fleet;
pub mod guard;
mod interfaces;
mod notify;
mod outlets;
mod peers;
mod persist;
mod probes;
mod reload;
pub mod resources;
mod run;
mod saver;
mod service_ports;
mod startup;
mod status;
mod topology;

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot};

pub use run::run;

use self::{
    allowlist::{AllowlistKeeper, Refreshed},
    fleet::{FleetLink, Stepped},
    interfaces::{Attached, Interfaces},
    outlets::Outlets,
    peers::Peers,
    persist::BanSaving,
    probes::{Outcome, ProbePipeline},
    saver::{SaveDone, SaveOutcomes},
    service_ports::ServicePortKeeper,
    status::Status,
    topology::Topology,
};
use crate::{
    bans::BanBook,
    config::{settings::Settings, sources::Sources},
    control::{self, DaemonInfo},
    dataplane::Dataplane,
    detect::{events::ProbeEvent, logging::LogFn},
    fleet::crowdsec::decisions::FleetUpdate,
    metrics,
    net::rtnl::Change,
    report::{ReportGate, REPORT_INTERVAL},
};

/// Everything `run` keeps between events.
struct Daemon {
    dp: Dataplane,
    /// Every ban: the only writer of the ban maps and the state file.
    book: BanBook,
    settings: Settings,
    /// The sink, the hooks, the notifier: where outcomes go.
    outlets: Outlets,
    probes: ProbePipeline,
    saving: BanSaving,
    /// Failed saves (bans, peers, service ports) are reported at most once per interval.
    save_errors: ReportGate,
    ports: ServicePortKeeper,
    allowlist: AllowlistKeeper,
    interfaces: Interfaces,
    topology: Topology,
    peers: Peers,
    fleet: FleetLink,
    /// What the config block holds beyond the settings (peer challenge, netns cookie).
    extras: guard::KernelExtras,
    /// What `status`, the verbs and the scrapes see.
    status: Status,
}

impl Daemon {
    /// Loads and configures everything, starts fleet mode and attaches to `interfaces`
    /// (returned with their modes); bans are saved off the loop, with outcomes on the receiver.
    fn start(
        settings: Settings,
        interfaces: &[String],
        log_line: LogFn,
    ) -> Result<(Self, SaveOutcomes, Attached)> {
        let mut dp = startup::load_dataplane(&settings, interfaces)?;
        let book = startup::open_ban_book(&mut dp, &settings)?;
        let (saving, saved_rx) =
            BanSaving::start(book.store().clone()).context("starting the bans.json writer")?;
        // Learned peers: the cgroup programs, then what the last run saved. Before the config
        // is written, so that the first config already challenges peers.
        let peers = Peers::start(&mut dp, &settings);
        let extras = startup::kernel_extras(&peers);
        let (startup, live) = (&settings.startup, &settings.live);
        let mut d = Daemon {
            ports: ServicePortKeeper::start(&startup.state_dir),
            allowlist: AllowlistKeeper::new(startup.crowdsec.as_ref()),
            outlets: Outlets::new(live, &startup.state_dir, log_line.clone()),
            dp,
            book,
            settings,
            probes: ProbePipeline::default(),
            saving,
            save_errors: ReportGate::new(REPORT_INTERVAL),
            interfaces: Interfaces::default(),
            topology: Topology::default(),
            peers,
            fleet: FleetLink::default(),
            extras,
            status: Default::default(),
        };
        // The config goes in last: until then the program fails open.
        d.apply()?;
        d.probes.set_kernel_baseline(&d.dp);
        d.outlets.mark_digest(&d.book, &d.dp, &d.fleet);
        reload::report_shadow_bans(&d.book, &d.settings.live);
        if d.book.is_dirty() {
            d.save();
        }
        // Fleet mode starts after the allowlist is known (decisions touching it are not
        // enforced).
        if let Some(c) = d.settings.startup.crowdsec.clone() {
            d.fleet.start(&c, &d.settings.startup.state_dir, log_line)?;
        }
        let (xdp_mode, challenge) = (d.settings.startup.xdp_mode, d.extras.peer_challenge);
        let attached = (d.interfaces).attach_all(&mut d.dp, interfaces, xdp_mode, challenge)?;
        Ok((d, saved_rx, attached))
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn line(&mut self, text: &str) {
        self.outlets.line(text);
    }

    /// The kernel's ring of events and its diagnostics, for the loop's reader tasks.
    fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    fn set_info(&mut self, info: DaemonInfo) {
        self.status.set_info(info);
    }

    /// Reads the upper devices and the neighbour table (after subscribing to their changes).
    fn read_topology(&mut self) {
        self.topology
            .refresh_uppers(&mut self.dp, &self.interfaces.guarded());
        let flips = self.topology.learn_neighbours();
        self.on_flips(flips);
    }

    /// One event from the XDP program, through the probe pipeline.
    fn on_event(&mut self, ev: &ProbeEvent) {
        let iface = self
            .interfaces
            .name_of(ev.ifindex)
            .unwrap_or("?")
            .to_owned();
        let mut cx = probes::Cx {
            book: &mut self.book,
            dp: &mut self.dp,
            live: &self.settings.live,
            history_format: self.outlets.history_format(),
        };
        let outcome = self.probes.on_event(ev, &iface, &mut cx);
        self.route(outcome);
    }

    /// Sends what the pipeline asked for where it goes, in its order.
    fn route(&mut self, outcome: Outcome) {
        let trigger = self.settings.live.effective_trigger();
        for out in outcome.out {
            self.outlets.route(out, trigger, &mut self.fleet);
        }
        if outcome.dirty {
            self.saving.mark_dirty();
        }
    }

    /// Writes ports, allowlist, hooks and the config block from `self.settings`.
    fn apply(&mut self) -> Result<()> {
        let live = &self.settings.live;
        self.allowlist.recompute(live, self.extras.peer_challenge)?;
        let allow = self.allowlist.list(live);
        self.ports.recompute_remembered(live);
        let (listening, remembered) = (self.ports.listening(), self.ports.remembered());
        let written = guard::write(
            &mut self.dp,
            live,
            &allow,
            listening,
            remembered,
            &self.extras,
        )?;
        allowlist::report_refused(&written);
        let lifted = allowlist::lift(&mut self.book, &mut self.dp, &allow)?;
        self.on_lifted(lifted);
        let live = &self.settings.live;
        self.outlets.apply(live);
        crate::errln!("{}", reload::guarding_line(live, written.count));
        Ok(())
    }

    fn on_lifted(&mut self, lifted: Option<String>) {
        if let Some(line) = lifted {
            self.outlets.line(&line);
            self.saving.mark_dirty();
        }
    }

    /// An address or route changed: the automatic allowlist follows.
    fn on_route_change(&mut self) {
        let live = &self.settings.live;
        if let Refreshed::Written { lifted, summary } =
            (self.allowlist).refresh(live, &mut self.book, &mut self.dp)
        {
            self.on_lifted(lifted);
            crate::errln!("{summary}");
        }
    }

    fn on_link_changes(&mut self, changes: Vec<Change>) {
        let changed = self.topology.on_changes(changes);
        self.on_flips(changed.flips);
        if changed.links {
            self.topology
                .refresh_uppers(&mut self.dp, &self.interfaces.guarded());
        }
    }

    /// Contests each flipped neighbour and says so.
    fn on_flips(&mut self, flips: Vec<crate::net::neighbours::Flip>) {
        for flip in flips {
            let known = self.interfaces.name_of(flip.ifindex);
            let line = topology::contest(&flip, known, &mut self.dp, &self.settings.live);
            self.outlets.flip(&line);
        }
    }

    /// The loop's timer: interfaces, listening sockets, saves and sweeps, summaries, digest.
    fn on_tick(&mut self) {
        let (xdp_mode, challenge) = (self.settings.startup.xdp_mode, self.extras.peer_challenge);
        let topology = &mut self.topology;
        self.interfaces
            .watch(&mut self.dp, xdp_mode, challenge, |dp, guarded| {
                topology.refresh_uppers(dp, guarded);
            });
        self.ports.poll(&mut self.dp, &self.settings.live);
        if let Some(summary) = self
            .probes
            .flush_line_budget(crate::clock::unix_ms(), &self.dp)
        {
            self.outlets.line(&summary);
        }
        let due = self.saving.due(self.fleet.busy());
        if due.sweep {
            self.probes.forget_expired(&self.settings.live);
            let policy = crate::bans::RecidivePolicy::from(&self.settings.live);
            (self.saving).begin_sweep(&mut self.book, &mut self.dp, &policy);
        }
        if due.save || due.sweep {
            self.save();
        }
        if due.sweep {
            self.peers
                .save(&self.dp, &self.settings.live, &mut self.save_errors);
        }
        if self.ports.save_due(due.sweep) {
            self.ports.save(&self.settings.live, &mut self.save_errors);
        }
        (self.outlets).tick(&mut self.book, &self.dp, &mut self.fleet);
    }

    /// Starts a save of the book (and the fleet's alert queue with it).
    fn save(&mut self) {
        self.fleet.persist();
        self.saving.save(&mut self.book);
    }

    /// A copy or a sweep is under way.
    fn working(&self) -> bool {
        self.saving.working()
    }

    /// The next step of the sweep and of the copy under way.
    fn work_step(&mut self) {
        self.saving.sweep_step(&mut self.book, &mut self.dp);
        if self.saving.snapshot_step(&mut self.book) {
            self.save();
        }
    }

    fn on_saved(&mut self, done: SaveDone) {
        self.saving.on_saved(done, &mut self.save_errors);
    }

    fn fleet_busy(&self) -> bool {
        self.fleet.busy()
    }

    async fn next_fleet_update(&mut self) -> Option<FleetUpdate> {
        self.fleet.next_update().await
    }

    fn on_fleet_update(&mut self, update: FleetUpdate) {
        if let Some(line) = self.fleet.begin(update) {
            self.outlets.line(&line);
        }
    }

    fn fleet_step(&mut self) {
        let peer_ttl_ns = self.settings.live.peer_ttl_ns();
        let stepped = self.fleet.step(&mut self.book, &mut self.dp, peer_ttl_ns);
        if let Stepped::Applied(lines) = stepped {
            self.saving.mark_dirty();
            for l in lines {
                self.outlets.line(&l);
            }
        }
    }

    /// A snapshot for a scrape.
    fn metrics_snapshot(&mut self) -> Option<Arc<metrics::Snapshot>> {
        let (view, top) = (
            self.outlets.view(&self.fleet),
            self.settings.startup.metrics_top_bans,
        );
        self.status
            .snapshot(&mut self.book, &self.dp, view, top as usize)
    }

    /// A verb from the control socket, answered from the live state.
    fn control(&mut self, req: &control::Request, reply: oneshot::Sender<control::Reply>) {
        let (view, startup) = (self.outlets.view(&self.fleet), &self.settings.startup);
        let (pin_dir, top) = (
            startup.pin_dir.as_deref(),
            startup.metrics_top_bans as usize,
        );
        let answer = (self.status).answer(req, &mut self.book, &mut self.dp, pin_dir, view, top);
        if req.mutates() && self.book.is_dirty() {
            // Persist before answering: the verb's change must survive a crash right after.
            if self.saving.save_then_reply(reply, answer) {
                self.save();
            }
        } else {
            let _ = reply.send(answer);
        }
    }

    /// SIGHUP: live keys apply at once, startup keys warn.
    fn reload(&mut self, sources: &Sources) {
        let Some(new) = reload::reread(sources, &self.settings) else {
            return;
        };
        self.settings.live = new.live;
        self.outlets.reload_notifier(&self.settings.live);
        match self.apply() {
            Ok(()) => {
                let source = new.source;
                crate::errln!("portsentry: reloaded configuration from {source}; bans kept");
                if new.to_block {
                    reload::report_shadow_bans(&self.book, &self.settings.live);
                }
            }
            Err(e) => crate::errln!("portsentry: error: applying reloaded configuration: {e:#}"),
        }
    }

    /// At stop: the fleet's workers end, bans, service ports and peers are saved, running
    /// hooks get a moment to finish and their lines are written. True if peers were learned.
    async fn stop(
        &mut self,
        saved_rx: &mut SaveOutcomes,
        log_rx: &mut mpsc::UnboundedReceiver<String>,
    ) -> bool {
        self.fleet.stop();
        self.fleet.persist();
        self.saving
            .save_and_finish(&mut self.book, saved_rx, &mut self.save_errors);
        self.ports.save(&self.settings.live, &mut self.save_errors);
        self.peers
            .save(&self.dp, &self.settings.live, &mut self.save_errors);
        self.outlets.stop(log_rx).await;
        self.peers.remembered()
    }
}
