//! The probe pipeline: one event from the XDP program in; its outcome out, in the order things
//! happened ([`Outcome`]: the event's lines and other lines for the sink, the 1.2 history
//! line, ban notices for hooks, the notifier and the fleet). Along the way it records bans in
//! the ban book (making room when the table is full), escalates repeat offenders, folds
//! address bans into prefix bans (`prefix_bans`) and bounds the lines a flood can write.
//!
//! Owns the per-source memories (`per_source`), the prefix tracker (`prefixes`) and the line
//! budget. Borrows the ban book and the maps for one call ([`Cx`]); writes no line itself and
//! starts no response: the daemon routes the outcome. Words no PortSentry-format line
//! (`detect::lines` does).

mod per_source;
mod prefix_bans;
mod prefixes;

use std::time::Duration;

use crate::{
    bans::{BanBook, BanNotice, MadeRoom, NewBan, Origin, Repeat, Trigger},
    clock::Now,
    config::settings::{HistoryFormat, LiveSettings, Mode},
    dataplane::Dataplane,
    detect::{
        budget::{LineBudget, LineClass},
        events::{EventKind, ProbeEvent},
    },
    net::cidr::Cidr,
};

/// One thing an event asks of the rest of the daemon.
#[derive(Debug)]
pub(super) enum Out {
    /// The event's own lines (`LogSink::event`: `Scan from:`, `attackalert:`, or JSON).
    Event { ev: ProbeEvent, iface: String },
    /// Another line for the log and the history.
    Line(String),
    /// A source's first trigger in its ban period (PortSentry 1.2's history line).
    FirstTrigger(ProbeEvent),
    /// A probe or ban the notifier's digest counts.
    Seen(ProbeEvent),
    /// A local ban: hooks, the notifier's alert, the fleet's alert.
    Banned(BanNotice),
    /// A trigger left unblocked whose `run_cmd` still runs (PortSentry's BLOCK_* = 2).
    Unenforced(BanNotice),
}

/// What one event asks for, in order, and whether the ban book changed (a save is due).
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub out: Vec<Out>,
    pub dirty: bool,
}

impl Outcome {
    fn line(&mut self, text: String) {
        self.out.push(Out::Line(text));
    }
}

/// What the daemon lends the pipeline for one call.
pub(super) struct Cx<'a> {
    pub book: &'a mut BanBook,
    pub dp: &'a mut Dataplane,
    pub live: &'a LiveSettings,
    /// The history's format: the 1.2 line is tracked only for that format.
    pub history_format: HistoryFormat,
}

/// The per-source memories, the prefix tracker and the line budget.
#[derive(Debug, Default)]
pub(super) struct ProbePipeline {
    /// Sources answered with `run_cmd` although their protocol does not block.
    unenforced: per_source::UnenforcedResponses,
    /// Sources already written to a PortSentry 1.2 format history in their ban period.
    classic_history: per_source::UnenforcedResponses,
    /// Recent verified address bans per prefix, for prefix-aware bans.
    prefixes: prefixes::PrefixTracker,
    /// Bounds the event lines a flood can write.
    line_budget: LineBudget,
    /// Per-source limit on the `ignored: [true]` lines.
    ignored_lines: per_source::IgnoredLines,
}

/// The kernel's `events_suppressed` counter (0 if it cannot be read).
pub(super) fn kernel_events_suppressed(dp: &Dataplane) -> u64 {
    dp.stats()
        .map(|s| s.get(portsentry_common::Stat::EventsSuppressed))
        .unwrap_or(0)
}

impl ProbePipeline {
    /// Counts the kernel's held-back events from its counter now (at start).
    pub fn set_kernel_baseline(&mut self, dp: &Dataplane) {
        self.line_budget
            .set_kernel_baseline(kernel_events_suppressed(dp));
    }

    /// Handles one event from interface `iface` (`?` if unknown).
    pub fn on_event(&mut self, ev: &ProbeEvent, iface: &str, cx: &mut Cx) -> Outcome {
        let mut o = Outcome::default();
        let mut ev = ev.clone();
        let target = Cidr::host(ev.src);
        let mut repeat = None;
        match ev.kind {
            EventKind::Probe
            | EventKind::Spoofed
            | EventKind::Contested
            | EventKind::Bogus
            | EventKind::PeerProbe => {}
            EventKind::Ignored => {
                if !self.ignored_lines.allow(ev.src, crate::clock::unix_ms()) {
                    return o;
                }
            }
            EventKind::Ban => {
                if let Err(e) = cx.book.on_kernel_ban(cx.dp, &target, &Now::read()) {
                    crate::errln!("portsentry: error: recording the ban of {target}: {e:#}");
                }
                repeat = note_offence(cx, &target);
                o.dirty = true;
            }
            EventKind::BanTableFull => {
                if self.ban_despite_full_table(&ev, cx, &mut o) {
                    ev.kind = EventKind::Ban;
                    repeat = note_offence(cx, &target);
                }
            }
            EventKind::PrefixTrigger => {
                self.on_prefix_trigger(&ev, iface, cx, &mut o);
                return o;
            }
        }
        self.log_event(&ev, iface, cx, &mut o);
        o.out.push(Out::Seen(ev.clone()));
        if let Some(r) = repeat {
            let ttl = r.ttl.map_or_else(
                || "never".to_owned(),
                crate::config::values::format_duration,
            );
            // Bounded like probe lines: a flood that re-bans displaced sources must not
            // become a flood of these.
            if self
                .line_budget
                .admit(ev.src, LineClass::Other, crate::clock::unix_ms())
            {
                o.line(format!(
                    "portsentry: repeat offender {}: ban {}, ttl {ttl}",
                    ev.src, r.bans
                ));
            }
        }
        if self.is_first_trigger(&ev, cx) {
            o.out.push(Out::FirstTrigger(ev.clone()));
        }
        if ev.kind == EventKind::Ban {
            let ttl = repeat.map_or(cx.live.ban_ttl, |r| r.ttl);
            o.out.push(Out::Banned(BanNotice::from_event(
                &ev,
                iface,
                ttl,
                chrono::Utc::now(),
            )));
            self.fold_into_prefix(&ev, iface, cx, &mut o);
        } else if self.is_unblocked_trigger(&ev, cx.live) {
            // PortSentry's BLOCK_* = 2: run_cmd, once per source per ban period, no ban.
            let notice = BanNotice::from_event(&ev, iface, cx.live.ban_ttl, chrono::Utc::now());
            o.out.push(Out::Unenforced(notice));
        }
        o
    }

    /// The event's lines, within the flood budget (`detect::budget`): a newly blocked source
    /// is always logged (up to its own cap), other lines per source and in all are bounded and
    /// summarised.
    fn log_event(&mut self, ev: &ProbeEvent, iface: &str, cx: &Cx, o: &mut Outcome) {
        let now_ms = crate::clock::unix_ms();
        if let Some(summary) = self.flush_line_budget(now_ms, cx.dp) {
            o.line(summary);
        }
        let class = if ev.kind == EventKind::Ban && ev.is_blocked() {
            LineClass::Ban
        } else {
            LineClass::Other
        };
        if self.line_budget.admit(ev.src, class, now_ms) {
            o.out.push(Out::Event {
                ev: ev.clone(),
                iface: iface.to_owned(),
            });
        }
    }

    /// The summary of the lines a finished interval held back, if any, with the events the
    /// kernel held back (its counter is read only when an interval has ended).
    pub fn flush_line_budget(&mut self, now_ms: u64, dp: &Dataplane) -> Option<String> {
        if !self.line_budget.due(now_ms) {
            return None;
        }
        let kernel = kernel_events_suppressed(dp);
        self.line_budget.summary(now_ms, kernel)
    }

    /// At the sweep: forgets the per-source and per-prefix memories whose period is over.
    pub fn forget_expired(&mut self, live: &LiveSettings) {
        self.unenforced.forget_expired(crate::clock::unix_ms());
        self.classic_history.forget_expired(crate::clock::unix_ms());
        self.prefixes
            .forget_stale(crate::clock::unix_ms(), prefix_bans::rule(live).window_ms);
    }

    /// A counted probe at or past the trigger (banned or not: PortSentry 1.2 wrote its history
    /// line whatever BLOCK_* said) from a source not yet written in this ban period. Only
    /// tracked when the history is in 1.2 format.
    fn is_first_trigger(&mut self, ev: &ProbeEvent, cx: &Cx) -> bool {
        let live = cx.live;
        if cx.history_format != HistoryFormat::Portsentry1
            || !matches!(ev.kind, EventKind::Probe | EventKind::Ban)
            || ev.count < live.effective_trigger()
        {
            return false;
        }
        let ttl_ms = live.ban_ttl.map(crate::clock::duration_ms);
        self.classic_history
            .first_in_period(ev.src, crate::clock::unix_ms(), ttl_ms)
    }

    /// A probe that reached the trigger in block mode but whose protocol does not block, with
    /// `run_cmd_always` set, from a source not answered in this ban period.
    fn is_unblocked_trigger(&mut self, ev: &ProbeEvent, live: &LiveSettings) -> bool {
        if ev.kind != EventKind::Probe
            || !ev.noblock
            || live.mode != Mode::Block
            || !live.hooks.run_cmd_always
            || live.hooks.run_cmd.is_none()
            || ev.count < live.effective_trigger()
        {
            return false;
        }
        let ttl_ms = live.ban_ttl.map(crate::clock::duration_ms);
        self.unenforced
            .first_in_period(ev.src, crate::clock::unix_ms(), ttl_ms)
    }

    /// The kernel could not store a ban: make room in the ban book's order (expired entries,
    /// then the detected ban expiring soonest) and ban the source from here.
    fn ban_despite_full_table(&mut self, ev: &ProbeEvent, cx: &mut Cx, o: &mut Outcome) -> bool {
        let now = Now::read();
        let capacity = cx.dp.ban_capacity();
        let room = match cx.book.make_room(cx.dp, &now) {
            Ok(room) => room,
            Err(e) => {
                crate::errln!("portsentry: error: making room in the ban table: {e:#}");
                return false;
            }
        };
        let new = NewBan {
            target: Cidr::host(ev.src),
            origin: Origin::Detected,
            shadow: !ev.dropped,
            expires_ms: ban_expiry_ms(cx.live, &now),
            trigger: Trigger::from_kernel(ev.protocol as u8, ev.dst_port, ev.scan as u8),
            fleet: None,
            unverified: ev.unverified,
        };
        let banned = match room {
            MadeRoom::NoRoom => false,
            _ => matches!(
                cx.book.ban(Some(&mut *cx.dp), new, &now),
                Ok(crate::bans::BanOutcome::Banned | crate::bans::BanOutcome::Renewed)
            ),
        };
        let line = match (&room, banned) {
            (
                MadeRoom::Displaced {
                    target,
                    unverified: true,
                    ..
                },
                true,
            ) => format!(
                "portsentry: ban table full ({capacity} entries): displaced {target} (unverified) to ban {}",
                ev.src
            ),
            (
                MadeRoom::Displaced {
                    target,
                    silent_since_ms,
                    ..
                },
                true,
            ) => format!(
                "portsentry: ban table full ({capacity} entries): displaced {target} (no packet since {}) to ban {}",
                crate::clock::iso_local(*silent_since_ms),
                ev.src
            ),
            (MadeRoom::Reclaimed(target), true) => format!(
                "portsentry: ban table full ({capacity} entries): reclaimed the expired ban of {target} to ban {}",
                ev.src
            ),
            _ => format!(
                "portsentry: error: ban table full ({capacity} entries), all of them manual or fleet bans: {} not banned; raise max_bans",
                ev.src
            ),
        };
        // One such line per displaced ban: bounded like probe lines under a flood.
        if self
            .line_budget
            .admit(ev.src, LineClass::Other, crate::clock::unix_ms())
        {
            o.line(line);
        }
        o.dirty = true;
        banned
    }
}

/// When a ban made now with the configured `ban_ttl` ends (`None`: never).
fn ban_expiry_ms(live: &LiveSettings, now: &Now) -> Option<u64> {
    live.ban_ttl
        .map(|ttl| now.unix_ms.saturating_add(crate::clock::duration_ms(ttl)))
}

/// Counts a new detected ban in its source's history; a repeat offender's ban is extended
/// to the escalated TTL (`recidive_window`, `ban_ttl_factor`, `ban_ttl_max`).
fn note_offence(cx: &mut Cx, target: &Cidr) -> Option<Repeat> {
    let (policy, base): (_, Option<Duration>) =
        (crate::bans::RecidivePolicy::from(cx.live), cx.live.ban_ttl);
    match cx
        .book
        .note_offence(Some(&mut *cx.dp), target, &policy, base, &Now::read())
    {
        Ok(r) => r,
        Err(e) => {
            crate::errln!(
                "portsentry: error: extending the ban of repeat offender {target}: {e:#}"
            );
            None
        }
    }
}
