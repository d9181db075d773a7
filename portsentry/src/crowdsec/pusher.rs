//! The machine thread: local bans become alerts, batched, queued (bounded, persisted in
//! `state_dir`) and delivered with exponential backoff while LAPI is away. Nothing here can
//! block the daemon: it only ever sends to an unbounded channel.

use std::{
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use super::{
    alerts::{Alert, AlertQueue, Loaded},
    bouncer::{Log, Reporter},
    lapi::{Lapi, LapiError},
};

/// Alerts sent in one request.
const BATCH_MAX: usize = 100;
/// A ban waits this long for company before it is sent (a scan bans many sources at once).
const BATCH_DELAY: Duration = Duration::from_millis(200);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The queue file is rewritten at most this often while it changes.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Tokens live an hour on LAPI; log in again well before.
const TOKEN_LIFETIME: Duration = Duration::from_secs(45 * 60);

pub enum PushMsg {
    Alert(Box<Alert>),
    /// Save the queue and stop; the sender is told when done.
    Stop(mpsc::Sender<()>),
}

pub struct Machine {
    pub lapi: Lapi,
    pub login: String,
    pub password: String,
    pub scenario: String,
}

struct Pusher {
    machine: Machine,
    queue: AlertQueue,
    log: Log,
    token: Option<(String, Instant)>,
    backoff: Duration,
    next_try: Instant,
    oldest_since: Option<Instant>,
    dirty: bool,
    last_save: Option<Instant>,
    reporter: Reporter,
    /// After LAPI rejected a batch as invalid, send one alert per request to find the bad one.
    one_at_a_time: bool,
}

pub fn spawn(
    machine: Machine,
    queue_dir: &std::path::Path,
    queue_max: usize,
    log: Log,
) -> std::io::Result<(mpsc::Sender<PushMsg>, thread::JoinHandle<()>)> {
    let (queue, loaded) = AlertQueue::load(queue_dir, queue_max);
    match loaded {
        Loaded::Fresh => {}
        Loaded::Restored(n) => log(format!(
            "portsentry: crowdsec: {n} alert(s) from the last run still to deliver (from {})",
            queue.path().display()
        )),
        Loaded::MovedAside(moved, e) => log(format!(
            "portsentry: error: crowdsec: {} is damaged ({e}); moved aside to {}",
            queue.path().display(),
            moved.display()
        )),
    }
    let (tx, rx) = mpsc::channel();
    let mut p = Pusher {
        machine,
        oldest_since: (!queue.is_empty()).then(Instant::now),
        queue,
        log,
        token: None,
        backoff: BACKOFF_MIN,
        next_try: Instant::now(),
        dirty: false,
        last_save: None,
        reporter: Reporter::new("pushing alerts"),
        one_at_a_time: false,
    };
    let handle = thread::Builder::new()
        .name("crowdsec-push".into())
        .spawn(move || p.run(rx))?;
    Ok((tx, handle))
}

impl Pusher {
    fn run(&mut self, rx: mpsc::Receiver<PushMsg>) {
        loop {
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(PushMsg::Alert(a)) => self.enqueue(*a),
                Ok(PushMsg::Stop(done)) => {
                    self.save();
                    let _ = done.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.save();
                    return;
                }
            }
            if self.due() {
                self.deliver();
            }
            if self.dirty && self.last_save.is_none_or(|t| t.elapsed() >= SAVE_EVERY) {
                self.save();
            }
        }
    }

    fn enqueue(&mut self, alert: Alert) {
        self.oldest_since.get_or_insert_with(Instant::now);
        let dropped = self.queue.push(alert);
        if dropped > 0 {
            (self.log)(format!(
                "portsentry: error: crowdsec: alert queue full ({} alerts): dropped the oldest; raise crowdsec.queue_max or bring LAPI back",
                self.queue.len()
            ));
        }
        self.dirty = true;
    }

    fn due(&self) -> bool {
        let now = Instant::now();
        !self.queue.is_empty()
            && now >= self.next_try
            && (self.queue.len() >= BATCH_MAX
                || self.oldest_since.is_none_or(|t| now >= t + BATCH_DELAY))
    }

    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut at = now + Duration::from_secs(3600);
        if !self.queue.is_empty() {
            let batch_ready = self.oldest_since.map_or(now, |t| t + BATCH_DELAY);
            at = at.min(batch_ready.max(self.next_try));
        }
        if self.dirty {
            at = at.min(self.last_save.map_or(now, |t| t + SAVE_EVERY));
        }
        at
    }

    fn save(&mut self) {
        match self.queue.save() {
            Ok(()) => self.dirty = false,
            Err(e) => (self.log)(format!(
                "portsentry: error: crowdsec: saving the alert queue to {}: {e} (alerts stay queued in memory)",
                self.queue.path().display()
            )),
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
        let t = m.lapi.login(&m.login, &m.password, &m.scenario)?;
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

    fn deliver(&mut self) {
        let n = if self.one_at_a_time { 1 } else { BATCH_MAX };
        let batch = self.queue.front(n);
        match self.send(&batch) {
            Ok(ids) => {
                self.queue.pop_front(batch.len());
                self.dirty = true;
                self.backoff = BACKOFF_MIN;
                self.next_try = Instant::now();
                self.oldest_since = (!self.queue.is_empty()).then(Instant::now);
                let down = self.reporter.recovered();
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
                if self.one_at_a_time && self.queue.is_empty() {
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
                    self.queue.pop_front(1);
                    self.dirty = true;
                    (self.log)(format!(
                        "portsentry: error: crowdsec: LAPI rejected the alert for {} (HTTP {status}: {message}); dropped it",
                        batch.first().map_or("?", |a| a.source.value.as_str())
                    ));
                }
            }
            Err(e) => {
                let queued = self.queue.len();
                let backoff = self.backoff;
                let path = self.queue.path();
                let url = self.machine.lapi.url().to_owned();
                self.reporter.failed(&self.log, || {
                    let hint = match e.status() {
                        Some(401) => " (check crowdsec.login/password: `cscli machines list`)",
                        _ => "",
                    };
                    format!(
                        "LAPI at {url}: {e}{hint}; {queued} alert(s) kept in {}, retrying with backoff (now {}s)",
                        path.display(),
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
