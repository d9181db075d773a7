//! Keeping bans on disk: a debounced save after changes, retries after failures, and the
//! periodic sweep of expired bans, a step per loop turn. A save copies the book a step per
//! loop turn ([`crate::bans::Snapshot`]) and hands the copy to the writer thread (`saver`);
//! its outcome comes back to the loop ([`BanSaving::on_saved`]), which also answers the verbs
//! waiting for their change to be on disk.
//!
//! Owns the save schedule, the copy under way, the writer thread, the waiting answers and the
//! book's sweep under way. Borrows the ban book and the maps per call; what else is saved on
//! the sweep schedule (peers, service ports, the fleet's alert queue) the daemon asks of their
//! owners when [`BanSaving::due`] says so.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::saver::{SaveDone, Saver};
use crate::{
    bans::{BanBook, RecidivePolicy, Snapshot, StateStore, Sweep},
    clock::Now,
    control,
    dataplane::Dataplane,
    report::ReportGate,
};

/// A ban is persisted at most this long after it happened.
pub(super) const SAVE_DEBOUNCE: Duration = Duration::from_secs(1);
/// Even without events, the state is saved and expired bans are swept this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// The next debounced save waits at least this many times as long as the last save took.
const SAVE_COST_FACTOR: u32 = 10;
/// A save copies at most this many ban records per loop turn (a few ms in a debug build).
const SNAPSHOT_STEP: usize = 4096;
/// The sweep looks at most this many book records or kernel entries per loop turn.
const SWEEP_STEP: usize = 4096;
/// A failed save is retried after this long.
const SAVE_RETRY: Duration = Duration::from_secs(5);

/// What is due at a loop tick.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Due {
    /// A debounced save of the book.
    pub save: bool,
    /// The periodic sweep (and the saves that go with it).
    pub sweep: bool,
}

/// The save schedule and the sweep of the ban book.
pub(super) struct BanSaving {
    dirty_since: Option<Instant>,
    /// After a failed save, the next attempt waits until then.
    save_retry_at: Option<Instant>,
    /// When the last write of the book ended, and how long it took.
    last_save: Option<(Instant, Duration)>,
    /// Writes `bans.json` on its own thread.
    saver: Saver,
    /// The copy of the book being taken for a save, and its number.
    snapshot: Option<(u64, Snapshot)>,
    /// Copies begun so far (the last one's number).
    copies_begun: u64,
    /// A verb changed the book while a copy was under way: another copy follows it.
    copy_again: bool,
    /// Answers to verbs that changed the book, sent once copy number `.0` is written.
    save_waiters: Vec<(u64, oneshot::Sender<control::Reply>, control::Reply)>,
    last_sweep: Instant,
    /// The ban book's sweep under way, a step per loop turn.
    sweep: Option<Sweep>,
}

impl BanSaving {
    /// Starts the writer thread for `store`; each write's outcome arrives on the receiver, for
    /// [`Self::on_saved`].
    pub fn start(store: StateStore) -> std::io::Result<(Self, mpsc::UnboundedReceiver<SaveDone>)> {
        let (saver, done) = Saver::start(store)?;
        Ok((
            Self {
                dirty_since: None,
                save_retry_at: None,
                last_save: None,
                saver,
                snapshot: None,
                copies_begun: 0,
                copy_again: false,
                save_waiters: Vec::new(),
                last_sweep: Instant::now(),
                sweep: None,
            },
            done,
        ))
    }

    pub fn mark_dirty(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// A copy or a sweep is under way: the loop gives it a step per turn.
    pub fn working(&self) -> bool {
        self.snapshot.is_some() || self.sweep.is_some()
    }

    /// Whether a save or the sweep is due now. While a fleet update is applied (`busy`),
    /// neither: it finishes within seconds, and a save per second of a growing book is the cost
    /// this avoids. A save waits at least SAVE_COST_FACTOR times as long as the last one took,
    /// so saving a large book never takes more than a small share of the loop's time.
    pub fn due(&self, busy: bool) -> Due {
        let save = !busy
            && self.snapshot.is_none()
            && !self.saver.busy()
            && self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= SAVE_DEBOUNCE)
            && self.save_retry_at.is_none_or(|t| Instant::now() >= t)
            && self
                .last_save
                .is_none_or(|(at, took)| at.elapsed() >= took * SAVE_COST_FACTOR);
        let sweep = !busy && self.sweep.is_none() && self.last_sweep.elapsed() >= SWEEP_INTERVAL;
        Due { save, sweep }
    }

    /// Starts the ban book's sweep: forgets offences older than `policy`'s window, then
    /// removes expired bans (they already stopped dropping) and reconciles book and kernel, a
    /// step per loop turn ([`Self::sweep_step`]).
    pub fn begin_sweep(&mut self, book: &mut BanBook, dp: &mut Dataplane, policy: &RecidivePolicy) {
        book.forget_offences(policy, crate::clock::unix_ms());
        self.last_sweep = Instant::now();
        self.sweep.get_or_insert_with(Default::default);
        self.sweep_step(book, dp);
    }

    /// The next part of the ban book's sweep, if one is under way.
    pub fn sweep_step(&mut self, book: &mut BanBook, dp: &mut Dataplane) {
        let Some(s) = self.sweep.as_mut() else {
            return;
        };
        match book.sweep_step(dp, &Now::read(), s, SWEEP_STEP) {
            Ok(None) => {}
            Ok(Some(n)) => {
                self.sweep = None;
                // Adopted kernel bans and dropped unbans change the book without expiring
                // anything: saved now too, not at the next sweep.
                if n > 0 || book.is_dirty() {
                    self.mark_dirty();
                }
            }
            Err(e) => {
                self.sweep = None;
                crate::errln!("portsentry: error: sweeping expired bans: {e:#}");
            }
        }
    }

    /// Starts a save if the book changed since the last one: the copy begins now (a small book
    /// is copied at once) and goes on a step per loop turn ([`Self::snapshot_step`]). True if
    /// a copy began (the daemon then saves what else goes with a save).
    pub fn save(&mut self, book: &mut BanBook) -> bool {
        if self.snapshot.is_some() || (!book.is_dirty() && self.dirty_since.is_none()) {
            return false;
        }
        self.copies_begun += 1;
        self.snapshot = Some((self.copies_begun, book.begin_snapshot()));
        self.dirty_since = None;
        self.snapshot_step(book);
        true
    }

    /// Copies the next part of the book; a finished copy goes to the writer thread. True when
    /// a verb asked for another copy after it ([`Self::save_then_reply`]): the daemon then
    /// saves again.
    pub fn snapshot_step(&mut self, book: &mut BanBook) -> bool {
        let Some((generation, s)) = self.snapshot.as_mut() else {
            return false;
        };
        let Some(saved) = book.snapshot_step(s, SNAPSHOT_STEP) else {
            return false;
        };
        let generation = *generation;
        self.snapshot = None;
        self.saver.submit(generation, saved);
        if std::mem::take(&mut self.copy_again) {
            self.mark_dirty();
            return true;
        }
        false
    }

    /// Saves what the book holds now and answers `reply` once it is written: a verb's change
    /// must survive a crash right after the answer. The loop goes on meanwhile. True if the
    /// daemon should start a save now ([`Self::save`]).
    pub fn save_then_reply(
        &mut self,
        reply: oneshot::Sender<control::Reply>,
        answer: control::Reply,
    ) -> bool {
        let (generation, save_now) = if self.snapshot.is_some() {
            // The copy under way may have passed the change: another one follows it.
            self.copy_again = true;
            (self.copies_begun + 1, false)
        } else {
            self.mark_dirty();
            (self.copies_begun + 1, true)
        };
        self.save_waiters.push((generation, reply, answer));
        save_now
    }

    /// A write ended: errors are logged (once per report interval of `errors`) and the save
    /// retried later; answers waiting for this copy are sent.
    pub fn on_saved(&mut self, done: SaveDone, errors: &mut ReportGate) {
        self.last_save = Some((done.ended, done.took));
        match done.result {
            Ok(()) => {
                self.save_retry_at = None;
            }
            // Stay dirty and retry a little later; enforcement is unaffected.
            Err(e) => {
                self.mark_dirty();
                self.save_retry_at = Some(Instant::now() + SAVE_RETRY);
                if errors.try_report().is_some() {
                    crate::errln!("portsentry: error: saving bans: {e:#} (retrying every {}s; enforcement continues)", SAVE_RETRY.as_secs());
                }
            }
        }
        let (ready, waiting) = std::mem::take(&mut self.save_waiters)
            .into_iter()
            .partition(|(g, _, _)| *g <= done.generation);
        self.save_waiters = waiting;
        for (_, reply, answer) in ready {
            let _ = reply.send(answer);
        }
    }

    /// At stop: saves the whole book at once if it changed (a copy under way is taken again in
    /// full), and returns when the writer thread has written it and ended.
    pub fn save_and_finish(
        &mut self,
        book: &mut BanBook,
        done: &mut mpsc::UnboundedReceiver<SaveDone>,
        errors: &mut ReportGate,
    ) {
        if self.snapshot.take().is_some() || book.is_dirty() || self.dirty_since.is_some() {
            self.copies_begun += 1;
            let saved = book.snapshot();
            self.dirty_since = None;
            self.saver.submit(self.copies_begun, saved);
        }
        self.saver.finish();
        while let Ok(d) = done.try_recv() {
            self.on_saved(d, errors);
        }
        for (_, reply, answer) in std::mem::take(&mut self.save_waiters) {
            let _ = reply.send(answer);
        }
    }
}
