//! Ban response hooks: PortSentry's KILL_RUN_CMD, KILL_HOSTS_DENY and KILL_ROUTE, made safe.
//!
//! Owns: running the configured responses to each local ban, in PortSentry's order, within
//! `max_concurrent` and `max_per_minute`, and reporting how they went. Must not touch: the
//! kernel maps, the ban book (a hook's outcome never changes whether a source is banned) and
//! the configuration files (settings arrive by [`HookRunner::new`] and [`HookRunner::reload`]).
//!
//! PortSentry pasted the attacker's address into a command line and handed it to `system()`,
//! i.e. to `/bin/sh`. Here every command is an argv list executed directly, never through a
//! shell: placeholders are expanded inside each argv element on its own, so a value stays exactly
//! one argument whatever it contains (spaces, `;`, quotes, `$(...)`). An admin who wants shell
//! features writes `["/bin/sh", "-c", "<fixed script>", "sh", "{target}"]`: the script is theirs
//! and fixed, the value only arrives as `$1` and is never parsed as code.
//!
//! Placeholders (in argv elements and the hosts.deny line): `$TARGET$`/`{target}` (source
//! address; in hosts.deny an IPv6 one in brackets), `$PORT$`/`{port}` (destination port), `$MODE$`/`{mode}` (`tcp`/`udp`), `{proto}`
//! (`TCP`/`UDP`), `{scan}` (scan type). Anything else is left as written.
//!
//! Limits: at most `max_per_minute` ban responses (the configured hooks for one ban, in order)
//! are admitted per rolling minute; an admitted one runs in one of `max_concurrent` slots, or
//! waits for a free slot in a FIFO queue of `queue` entries. Only a full queue or the rate limit
//! skips a response (`admission.rs` says why the rate limit skips rather than queues). Each
//! command is killed, with its process group, after `timeout`.
//!
//! Skips are counted, never lost, and reported by [`HookRunner::flush_skip_summary`] in one
//! line: the first promptly, later ones at most once per [`REPORT_INTERVAL`], so a flood
//! neither floods the log nor goes unnoticed.
//!
//! A response's success line is [`crate::detect::lines::response_line`] of what ran (PortSentry's
//! `attackalert:` wording lives there); the tasks running responses are `slots`.

mod admission;
mod exec;
mod hosts_deny;
mod slots;
mod template;
#[cfg(test)]
mod tests;

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use self::{
    admission::{AdmissionControl, Admitted, Proof, QueueFill, SkipReason},
    exec::{run_command, CommandHook},
    hosts_deny::{append_hosts_deny, HostsDenyLock},
    slots::fill_slots,
    template::{expand_argv, Placeholders},
};
use crate::{
    bans::BanNotice,
    config::settings::HookSettings,
    detect::logging::LogFn,
    report::{ReportGate, REPORT_INTERVAL},
};

/// Counters since start. `started` and the `skipped_*` count ban responses; `succeeded`,
/// `failed` and `timed_out` count single hooks (a command or a hosts.deny write). A timed-out
/// command is also counted as failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookStats {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
    /// Every slot busy and the queue full.
    pub skipped_queue_full: u64,
    pub skipped_rate: u64,
}

/// One hook of a response, still with its templates.
enum HookAction<'s> {
    Command(CommandHook, &'s [String]),
    HostsDeny(&'s str),
}

/// How one hook ended.
enum HookOutcome {
    Succeeded,
    Failed,
    TimedOut,
}

/// A ban response: the ban and the settings in force when it was admitted.
type Job = (Arc<HookSettings>, BanNotice);

/// What `on_ban` decides with, behind one lock, so a burst of bans is limited exactly.
struct SettingsAndCounters {
    settings: Arc<HookSettings>,
    admission: AdmissionControl,
    stats: HookStats,
    skip_report: ReportGate,
    /// Admitted responses waiting for a slot, oldest first.
    queue: VecDeque<Job>,
}

/// What the runner shares with the slot tasks it spawns.
struct RunnerShared {
    guarded: Mutex<SettingsAndCounters>,
    log: LogFn,
    /// Slots running a response; changed only under `guarded`'s lock.
    running: AtomicUsize,
    became_idle: Notify,
    hosts_deny_lock: HostsDenyLock,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop bans from being answered; the data stays consistent
    // because every critical section only does plain counter and queue updates.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the ban response hooks; cheap to call from the event loop.
pub struct HookRunner {
    shared: Arc<RunnerShared>,
}

impl HookRunner {
    /// `log` receives complete log lines (the daemon prints them to stdout and the history file).
    pub fn new(settings: HookSettings, log: LogFn) -> Self {
        let guarded = SettingsAndCounters {
            admission: AdmissionControl::new(settings.max_concurrent, settings.queue),
            settings: Arc::new(settings),
            stats: HookStats::default(),
            skip_report: ReportGate::new(REPORT_INTERVAL),
            queue: VecDeque::new(),
        };
        let shared = RunnerShared {
            guarded: Mutex::new(guarded),
            log,
            running: AtomicUsize::new(0),
            became_idle: Notify::new(),
            hosts_deny_lock: HostsDenyLock::default(),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// New settings take effect for the next ban; running and queued responses finish with
    /// the settings they were admitted with. A higher `max_concurrent` starts queued responses
    /// at once.
    pub fn reload(&self, settings: HookSettings) {
        {
            let mut g = lock(&self.shared.guarded);
            g.admission
                .set_limits(settings.max_concurrent, settings.queue);
            g.settings = Arc::new(settings);
        }
        fill_slots(&self.shared);
    }

    /// Admits the response to one ban and returns at once: it starts in the background now, or
    /// waits in the queue for a slot. No-op without hooks.
    pub fn on_ban(&self, ban: &BanNotice) {
        if tokio::runtime::Handle::try_current().is_err() {
            (self.shared.log)(format!(
                "portsentry: error: hooks for host {} not run: no async runtime",
                ban.source
            ));
            return;
        }
        {
            let mut g = lock(&self.shared.guarded);
            if g.settings.is_empty() {
                return;
            }
            // An unenforced ban has nothing to respond with unless run_cmd is asked to run
            // for it; that is not a skip.
            let runs_unenforced = g.settings.run_cmd_always && g.settings.run_cmd.is_some();
            if !ban.enforced && !runs_unenforced {
                return;
            }
            // Decided here, synchronously, so a burst of bans is limited exactly.
            let max_per_minute = g.settings.max_per_minute;
            let running = self.shared.running.load(Ordering::SeqCst);
            let fill = QueueFill {
                total: g.queue.len(),
                unverified: g.queue.iter().filter(|(_, b)| !b.verified).count(),
            };
            let proof = if ban.verified {
                Proof::Verified
            } else {
                Proof::Unverified
            };
            match g
                .admission
                .admit(max_per_minute, running, fill, proof, Instant::now())
            {
                Ok(admitted) => {
                    if admitted == Admitted::QueueDisplacing {
                        if let Some(newest) = g.queue.iter().rposition(|(_, b)| !b.verified) {
                            g.queue.remove(newest);
                            g.stats.skipped_queue_full += 1;
                        }
                    }
                    let job = (g.settings.clone(), ban.clone());
                    // Verified responses wait ahead of every unverified one; FIFO within each.
                    let at = if ban.verified {
                        g.queue
                            .iter()
                            .position(|(_, b)| !b.verified)
                            .unwrap_or(g.queue.len())
                    } else {
                        g.queue.len()
                    };
                    g.queue.insert(at, job);
                }
                Err(SkipReason::QueueFull) => {
                    g.stats.skipped_queue_full += 1;
                    return;
                }
                Err(SkipReason::OverRate) => {
                    g.stats.skipped_rate += 1;
                    return;
                }
            }
        }
        fill_slots(&self.shared);
    }

    pub fn stats(&self) -> HookStats {
        lock(&self.shared.guarded).stats
    }

    /// Ban responses running now.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Ban responses waiting for a slot now.
    pub fn queued(&self) -> usize {
        lock(&self.shared.guarded).queue.len()
    }

    /// At stop: forgets the responses still waiting for a slot, says how many in one line, and
    /// returns that number (running ones finish, see [`Self::idle`]).
    pub fn abandon_queue(&self) -> usize {
        let n = {
            let mut g = lock(&self.shared.guarded);
            let n = g.queue.len();
            g.queue.clear();
            n
        };
        if n > 0 {
            (self.shared.log)(format!(
                "portsentry: warning: hooks: {n} queued ban response(s) not run: stopping"
            ));
        }
        n
    }

    /// Reports responses skipped since the last report in one line: at once if none was
    /// reported before or the last report is at least [`REPORT_INTERVAL`] old, otherwise the
    /// counts wait for a later call.
    pub fn flush_skip_summary(&self) {
        self.flush_skip_summary_at(Instant::now());
    }

    /// [`Self::flush_skip_summary`] at a given time; tests pass one instead of waiting a minute.
    fn flush_skip_summary_at(&self, now: Instant) {
        let line = {
            let mut g = lock(&self.shared.guarded);
            let skipped = g.admission.unreported();
            // The gate is asked only when there is something to say, so a quiet minute does
            // not delay the first line of the next flood.
            if skipped.total() == 0 || g.skip_report.try_report_at(now).is_none() {
                return;
            }
            g.admission.clear_unreported();
            format!(
                "portsentry: hooks: skipped {} ban response(s) since the last report ({} with the queue full (max_concurrent = {}, queue = {}), {} over max_per_minute = {}); {} run so far",
                skipped.total(), skipped.queue_full, g.admission.max_concurrent(), g.admission.queue_max(), skipped.rate, g.settings.max_per_minute, g.stats.started,
            )
        };
        (self.shared.log)(line);
    }

    /// Waits until no response is running or queued, at most `timeout`; true if idle.
    pub async fn idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a response ending in between still wakes us.
            let notified = self.shared.became_idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A queued response always has a running slot ahead of it that will take it.
            if self.shared.running.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.shared.running.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

impl RunnerShared {
    /// Runs the configured hooks for one ban in PortSentry's order. A failing hook does not stop
    /// the next one, as in PortSentry: each is a separate defence.
    async fn respond(&self, s: &HookSettings, ban: &BanNotice) {
        let values = Placeholders::new(ban);
        let run_cmd = s
            .run_cmd
            .as_deref()
            .map(|argv| HookAction::Command(CommandHook::RunCmd, argv));
        // hosts_deny and kill_route block; an unenforced ban must stay unenforced.
        let deny = s
            .hosts_deny
            .as_deref()
            .filter(|_| ban.enforced)
            .map(HookAction::HostsDeny);
        let route = s
            .kill_route
            .as_deref()
            .filter(|_| ban.enforced)
            .map(|argv| HookAction::Command(CommandHook::KillRoute, argv));
        let order = if s.run_cmd_first {
            [run_cmd, deny, route]
        } else {
            [deny, route, run_cmd]
        };
        for action in order.into_iter().flatten() {
            let outcome = match action {
                HookAction::HostsDeny(template) => {
                    append_hosts_deny(
                        &self.log,
                        &self.hosts_deny_lock,
                        template,
                        &s.hosts_deny_file,
                        ban,
                    )
                    .await
                }
                HookAction::Command(hook, argv) => {
                    let argv = expand_argv(argv, &values);
                    run_command(&self.log, hook, &argv, s.timeout, ban.source).await
                }
            };
            let mut g = lock(&self.guarded);
            match outcome {
                HookOutcome::Succeeded => g.stats.succeeded += 1,
                HookOutcome::Failed => g.stats.failed += 1,
                HookOutcome::TimedOut => {
                    g.stats.failed += 1;
                    g.stats.timed_out += 1;
                }
            }
        }
    }
}
