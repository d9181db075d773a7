//! The writer of `bans.json` for the daemon: one thread that serializes and writes the copies
//! the event loop hands it, so that saving a large book never holds up the loop. At most one
//! write runs and one copy waits; a newer copy replaces the waiting one (the newest wins).
//! Each write's outcome goes back to the loop ([`SaveDone`]), where `persist` logs errors and
//! retries.
//!
//! Owns: the thread and the waiting copy. Takes copies only ([`crate::bans::Snapshot`]); never
//! touches the book.

use std::{
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::bans::{Saved, StateError, StateStore};

/// The outcome of one write.
#[derive(Debug)]
pub(super) struct SaveDone {
    /// The copy's number ([`Saver::submit`]); copies with smaller numbers are on disk or
    /// superseded.
    pub generation: u64,
    pub result: Result<(), StateError>,
    /// When the write ended and how long it took.
    pub ended: Instant,
    pub took: Duration,
}

/// Where the outcomes of writes arrive, for the event loop.
pub(super) type SaveOutcomes = mpsc::UnboundedReceiver<SaveDone>;

#[derive(Default)]
struct Slot {
    waiting: Option<(u64, Saved)>,
    writing: bool,
    closed: bool,
}

type Shared = Arc<(Mutex<Slot>, Condvar)>;

pub(super) struct Saver {
    shared: Shared,
    thread: Option<JoinHandle<()>>,
}

impl Saver {
    /// Starts the writer thread for `store`; outcomes arrive on the returned receiver.
    pub fn start(store: StateStore) -> std::io::Result<(Self, mpsc::UnboundedReceiver<SaveDone>)> {
        let shared: Shared = Default::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("ps-saver".into())
                .spawn(move || write_loop(&store, &shared, &tx))?
        };
        Ok((
            Self {
                shared,
                thread: Some(thread),
            },
            rx,
        ))
    }

    /// Hands copy number `generation` (increasing) to the writer, replacing a copy still
    /// waiting.
    pub fn submit(&mut self, generation: u64, saved: Saved) {
        let (lock, wake) = &*self.shared;
        let mut slot = lock.lock().unwrap_or_else(|p| p.into_inner());
        slot.waiting = Some((generation, saved));
        wake.notify_one();
    }

    /// Whether a copy is being written or waits.
    pub fn busy(&self) -> bool {
        let slot = self.shared.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.writing || slot.waiting.is_some()
    }

    /// Writes what waits, then ends the thread and waits for it (at stop: the last save is on
    /// disk when this returns).
    pub fn finish(&mut self) {
        {
            let (lock, wake) = &*self.shared;
            lock.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
            wake.notify_one();
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                crate::errln!("portsentry: error: the bans.json writer thread panicked");
            }
        }
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.finish();
    }
}

fn write_loop(store: &StateStore, shared: &Shared, done: &mpsc::UnboundedSender<SaveDone>) {
    let (lock, wake) = &**shared;
    loop {
        let (generation, saved) = {
            let mut slot = lock.lock().unwrap_or_else(|p| p.into_inner());
            slot.writing = false;
            loop {
                if let Some(w) = slot.waiting.take() {
                    slot.writing = true;
                    break w;
                }
                if slot.closed {
                    return;
                }
                slot = wake.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
        };
        let started = Instant::now();
        let result = store.save(&saved);
        drop(saved);
        let _ = done.send(SaveDone {
            generation,
            result,
            ended: Instant::now(),
            took: started.elapsed(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{Saved, Saver, StateStore};
    use crate::bans::BanRecord;

    fn saved(n: usize) -> Saved {
        Saved {
            bans: (0..n as u32)
                .map(|i| {
                    BanRecord::untracked(
                        crate::net::cidr::Cidr::host(
                            std::net::Ipv4Addr::from(0x0b00_0001 + i).into(),
                        ),
                        crate::bans::Origin::Manual,
                        1,
                    )
                })
                .collect(),
            ..Saved::default()
        }
    }

    /// Copies handed in quickly are coalesced (the newest wins), every outcome names its copy,
    /// and `finish` returns once the last copy is on disk.
    #[test]
    fn the_newest_copy_wins_and_finish_waits_for_it() {
        let dir = std::env::temp_dir().join(format!("ps-saver-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = StateStore::new(&dir);
        let (mut saver, mut rx) = Saver::start(store.clone()).unwrap();
        let copies: Vec<Saved> = (1..=50).map(|n| saved(n * 100)).collect();
        for (g, c) in copies.into_iter().enumerate() {
            saver.submit(g as u64 + 1, c);
        }
        saver.finish();
        assert!(!saver.busy());
        let mut done = Vec::new();
        while let Ok(d) = rx.try_recv() {
            assert!(d.result.is_ok(), "{:?}", d.result);
            done.push(d.generation);
        }
        assert_eq!(done.last(), Some(&50), "the last copy is written: {done:?}");
        assert!(done.windows(2).all(|w| w[0] < w[1]), "{done:?}");
        assert!(done.len() < 50, "some copies were superseded: {done:?}");
        assert_eq!(store.load().unwrap().bans.len(), 5000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A failed write is reported with its error, for the loop to log and retry.
    #[test]
    fn a_failed_write_is_reported() {
        let file = std::env::temp_dir().join(format!("ps-saver-file-{}", std::process::id()));
        std::fs::write(&file, b"not a directory").unwrap();
        let (mut saver, mut rx) = Saver::start(StateStore::new(&file.join("state"))).unwrap();
        saver.submit(7, saved(1));
        saver.finish();
        let d = rx.try_recv().unwrap();
        assert_eq!(d.generation, 7);
        assert!(d.result.is_err());
        let _ = std::fs::remove_file(&file);
    }
}
