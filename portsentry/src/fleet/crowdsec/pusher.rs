//! The machine side: local bans become alerts in an [`Outbox`] (a bounded queue mirrored in
//! `state_dir`), and a thread delivers them in batches, with exponential backoff while LAPI is
//! away. The daemon only ever takes the outbox lock for a push or a file write, never for
//! network I/O, so neither a slow LAPI nor a dead one can hold up the event loop, and the daemon
//! can persist the queue on its own schedule and at shutdown even while a request hangs.
//!
//! Delivery is at least once: an alert LAPI accepted just before a crash or shutdown may be
//! sent again after the restart.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
    },
    thread,
    time::{Duration, Instant},
};

use super::{
    alerts::{Alert, AlertQueue, Loaded, STARTS_WITHOUT},
    lapi::{Lapi, LapiError, MachineAuth},
    LapiOutage, Log,
};

/// Alerts sent in one request.
const BATCH_MAX: usize = 100;
/// A ban waits this long for company before it is sent (a scan bans many sources at once).
const BATCH_DELAY: Duration = Duration::from_millis(200);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The queue file is rewritten at most this often by the delivery thread.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Tokens live an hour on LAPI; log in again well before.
const TOKEN_LIFETIME: Duration = Duration::from_secs(45 * 60);

struct Shared {
    queue: AlertQueue,
    stop: bool,
}

/// Alerts waiting for LAPI, shared by the daemon (which adds and persists) and the delivery
/// thread (which sends and removes).
pub struct Outbox {
    shared: Mutex<Shared>,
    wake: Condvar,
    path: PathBuf,
    /// Alerts LAPI has accepted since start.
    delivered: AtomicU64,
    /// Push requests LAPI accepted, and push requests that failed (login or push), since start.
    pushes: AtomicU64,
    push_errors: AtomicU64,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an alert; returns how many of the oldest were dropped to stay within the bound.
    pub fn push(&self, alert: Alert) -> usize {
        let dropped = self.lock().queue.push(alert);
        self.wake.notify_one();
        dropped
    }

    /// Writes the queue file if it changed.
    pub fn persist(&self) -> std::io::Result<()> {
        self.lock().queue.save_if_dirty()
    }

    /// Stops the delivery thread (it writes the queue on its way out, as does `persist`).
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Alerts LAPI has accepted since start.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Push requests LAPI accepted since start.
    pub fn pushes(&self) -> u64 {
        self.pushes.load(Ordering::Relaxed)
    }

    /// Push requests that failed since start (LAPI away, login refused, alert rejected).
    pub fn push_errors(&self) -> u64 {
        self.push_errors.load(Ordering::Relaxed)
    }

    /// An outbox in `dir` with no delivery thread (tests look at what gets queued).
    #[cfg(test)]
    pub fn detached(dir: &Path, queue_max: usize) -> Arc<Self> {
        let (queue, _) = AlertQueue::load(dir, queue_max);
        Arc::new(Outbox {
            path: queue.path(),
            shared: Mutex::new(Shared { queue, stop: false }),
            wake: Condvar::new(),
            delivered: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
            push_errors: AtomicU64::new(0),
        })
    }
}

pub struct Machine {
    pub lapi: Lapi,
    pub auth: MachineAuth,
    pub scenario: String,
}

struct Delivery {
    machine: Machine,
    outbox: Arc<Outbox>,
    log: Log,
    token: Option<(String, Instant)>,
    backoff: Duration,
    next_try: Instant,
    last_save: Option<Instant>,
    outage: LapiOutage,
    /// After LAPI rejected a batch as invalid, send one alert per request to find the bad one.
    one_at_a_time: bool,
}

/// Loads the queue left by the last run and starts the delivery thread.
pub fn spawn(
    machine: Machine,
    queue_dir: &Path,
    queue_max: usize,
    log: Log,
) -> std::io::Result<Arc<Outbox>> {
    let (queue, loaded) = AlertQueue::load(queue_dir, queue_max);
    match loaded {
        Loaded::Fresh => {}
        Loaded::Restored(n) => log(format!(
            "portsentry: crowdsec: {n} alert(s) from the last run still to deliver (from {})",
            queue.path().display()
        )),
        Loaded::Unusable(unusable) => log(unusable.line(STARTS_WITHOUT)),
    }
    let outbox = Arc::new(Outbox {
        path: queue.path(),
        shared: Mutex::new(Shared { queue, stop: false }),
        wake: Condvar::new(),
        delivered: AtomicU64::new(0),
        pushes: AtomicU64::new(0),
        push_errors: AtomicU64::new(0),
    });
    let mut delivery = Delivery {
        machine,
        outbox: outbox.clone(),
        log,
        token: None,
        backoff: BACKOFF_MIN,
        next_try: Instant::now(),
        last_save: None,
        outage: LapiOutage::new("pushing alerts"),
        one_at_a_time: false,
    };
    thread::Builder::new()
        .name("crowdsec-push".into())
        .spawn(move || delivery.run())?;
    Ok(outbox)
}

impl Delivery {
    fn run(&mut self) {
        let outbox = self.outbox.clone();
        loop {
            // Wait, under the lock, until a batch is due (or it is time to save, or to stop).
            let batch = {
                let mut g = outbox.lock();
                loop {
                    if g.stop {
                        self.save(&mut g);
                        return;
                    }
                    let now = Instant::now();
                    if g.queue.is_dirty() && self.last_save.is_none_or(|t| now >= t + SAVE_EVERY) {
                        self.save(&mut g);
                        continue;
                    }
                    if self.due(&g.queue, now) {
                        break;
                    }
                    let wait = self
                        .next_deadline(&g.queue, now)
                        .saturating_duration_since(now);
                    g = outbox
                        .wake
                        .wait_timeout(g, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                g.queue
                    .front(if self.one_at_a_time { 1 } else { BATCH_MAX })
            };
            // Network I/O without the lock.
            let (last, alerts) = batch;
            let result = self.send(&alerts);
            self.handle(result, last, &alerts);
        }
    }

    fn due(&self, q: &AlertQueue, now: Instant) -> bool {
        !q.is_empty()
            && now >= self.next_try
            && (q.len() >= BATCH_MAX || q.waiting_since().is_none_or(|t| now >= t + BATCH_DELAY))
    }

    fn next_deadline(&self, q: &AlertQueue, now: Instant) -> Instant {
        let mut at = now + Duration::from_secs(3600);
        if !q.is_empty() {
            let batch_ready = q.waiting_since().map_or(now, |t| t + BATCH_DELAY);
            at = at.min(batch_ready.max(self.next_try));
        }
        if q.is_dirty() {
            at = at.min(self.last_save.map_or(now, |t| t + SAVE_EVERY));
        }
        at
    }

    fn save(&mut self, g: &mut MutexGuard<'_, Shared>) {
        if let Err(e) = g.queue.save_if_dirty() {
            (self.log)(format!(
                "portsentry: error: crowdsec: saving the alert queue to {}: {e} (alerts stay queued in memory)",
                self.outbox.path().display()
            ));
        }
        self.last_save = Some(Instant::now());
    }

    fn token(&mut self) -> Result<String, LapiError> {
        if let Some((t, at)) = &self.token {
            if at.elapsed() < TOKEN_LIFETIME {
                return Ok(t.clone());
            }
        }
        let m = &self.machine;
        let t = m.lapi.login(&m.auth, &m.scenario)?;
        self.token = Some((t.clone(), Instant::now()));
        Ok(t)
    }

    fn send(&mut self, batch: &[Alert]) -> Result<Vec<String>, LapiError> {
        let token = self.token()?;
        match self.machine.lapi.push_alerts(&token, batch) {
            // Tokens die with a LAPI restart (a new signing secret): log in again, once.
            Err(e) if e.status() == Some(401) => {
                self.token = None;
                let token = self.token()?;
                self.machine.lapi.push_alerts(&token, batch)
            }
            other => other,
        }
    }

    fn handle(&mut self, result: Result<Vec<String>, LapiError>, last: u64, batch: &[Alert]) {
        let counter = match result {
            Ok(_) => &self.outbox.pushes,
            Err(_) => &self.outbox.push_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(ids) => {
                let remaining = {
                    let mut g = self.outbox.lock();
                    g.queue.remove_through(last);
                    g.queue.len()
                };
                self.outbox
                    .delivered
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.backoff = BACKOFF_MIN;
                self.next_try = Instant::now();
                let down = self.outage.recovered();
                let sources: Vec<&str> = batch
                    .iter()
                    .map(|a| a.source.value.as_str())
                    .take(5)
                    .collect();
                (self.log)(format!(
                    "portsentry: crowdsec: pushed {} alert(s) to LAPI (ids {}; sources {}{}){}",
                    batch.len(),
                    ids.join(","),
                    sources.join(", "),
                    if batch.len() > sources.len() {
                        ", …"
                    } else {
                        ""
                    },
                    down.map(|d| format!(" after {}s of LAPI being unreachable", d.as_secs()))
                        .unwrap_or_default()
                ));
                if remaining == 0 {
                    self.one_at_a_time = false;
                }
            }
            // LAPI says the alert itself is wrong (it answers 400/422, and 500 for validation
            // errors): retrying cannot help. Isolate it, then drop it, loudly.
            Err(LapiError::Status { status, message })
                if matches!(status, 400 | 422) || (status == 500 && is_rejection(&message)) =>
            {
                if batch.len() > 1 {
                    self.one_at_a_time = true;
                } else {
                    self.outbox.lock().queue.remove_through(last);
                    (self.log)(format!(
                        "portsentry: error: crowdsec: LAPI rejected the alert for {} (HTTP {status}: {message}); dropped it",
                        batch.first().map_or("?", |a| a.source.value.as_str())
                    ));
                }
            }
            Err(e) => {
                let queued = self.outbox.len();
                let backoff = self.backoff;
                let path = self.outbox.path().display().to_string();
                let url = self.machine.lapi.url().to_owned();
                let by_cert = self.machine.auth == MachineAuth::Certificate;
                self.outage.failed(&self.log, || {
                    let hint = match (e.status(), by_cert) {
                        (Some(401 | 403), false) => " (check crowdsec.login/password: `cscli machines list`)",
                        (Some(401 | 403), true) => " (does LAPI authenticate agents by certificate, and does ours carry an OU from its api.server.tls.agents_allowed_ou?)",
                        _ => "",
                    };
                    format!(
                        "LAPI at {url}: {e}{hint}; {queued} alert(s) kept in {path}, retrying with backoff (now {}s)",
                        backoff.as_secs()
                    )
                });
                self.next_try = Instant::now() + backoff;
                self.backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn is_rejection(message: &str) -> bool {
    message.contains("validation failure")
        || (message.starts_with("unable to create alerts")
            && (message.contains("invalid") || message.contains("unable to parse")))
}
