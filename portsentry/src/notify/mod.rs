//! Telling the administrator (`[notify]`): one digest per `digest_interval` and, with
//! `alert = "new-ban"`, one alert per newly banned source, by mail (SMTP or sendmail) and/or
//! a webhook.
//!
//! Owns: the digest window and the alert cap ([`Notifier`], fed from the event loop: cheap,
//! never blocking), the outbox and the delivery thread (`worker`), the transports (`smtp`,
//! `webhook`), their errors, checks and `portsentry notify --test` (`transport`, [`test_all`]).
//! Must not: touch the ban book or the maps (the daemon hands over what the digest needs), or
//! word PortSentry's log lines.
//!
//! Restored bans are never alerted: alerts come only from the kernel's ban events, which a
//! restore does not produce.

pub mod digest;
mod mail;
pub mod outbox;
pub mod smtp;
mod transport;
mod webhook;
mod worker;

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{atomic::AtomicU64, mpsc, Arc, Mutex, MutexGuard, PoisonError},
};

use serde::Serialize;
use serde_json::json;

pub use self::transport::{test_all, DeliveryError, TestOutcome, TransportError, Transports};
use self::{
    digest::{Closing, Window},
    outbox::{Channel, Kind, Outbox, Outgoing},
    transport::read_secret,
    worker::{Command, Worker},
};
use crate::{
    bans::BanNotice,
    config::settings::{AlertMode, NotifySettings},
    detect::{events::ProbeEvent, logging::LogFn},
};

/// One channel's counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChannelStats {
    pub configured: bool,
    pub sent: u64,
    pub failed: u64,
    /// Messages dropped past `max_age` (or whose channel was removed).
    pub dropped: u64,
    /// Messages waiting in the outbox for this channel now.
    pub depth: u64,
}

/// The notifier's counters, for `status` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NotifyStats {
    pub mail: ChannelStats,
    pub webhook: ChannelStats,
    /// Messages refused because the outbox was full.
    pub outbox_full: u64,
    /// New bans folded into a digest instead of alerted (the hourly cap).
    pub alerts_folded: u64,
}

impl NotifyStats {
    pub fn channel(&mut self, c: Channel) -> &mut ChannelStats {
        match c {
            Channel::Mail => &mut self.mail,
            Channel::Webhook => &mut self.webhook,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This host's name, for subjects and the default sender.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A Message-ID (without brackets) unique to this host: time, process, sequence.
fn message_id(created_ms: u64, host: &str) -> String {
    let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{created_ms}.{}.{n}.portsentry@{host}", std::process::id())
}

fn channels_of(s: &NotifySettings) -> Vec<Channel> {
    let mut c = Vec::new();
    if s.mail_enabled() {
        c.push(Channel::Mail);
    }
    if !s.webhook_url.is_empty() {
        c.push(Channel::Webhook);
    }
    c
}

/// The event loop's side: decides what to send and hands it to the delivery thread.
pub struct Notifier {
    settings: NotifySettings,
    host: String,
    state_dir: PathBuf,
    log: LogFn,
    tx: Option<mpsc::Sender<Command>>,
    stats: Arc<Mutex<NotifyStats>>,
    /// When the alerts of the last hour were sent (Unix ms), oldest first.
    alerts_sent: VecDeque<u64>,
    window: Window,
}

impl Notifier {
    pub fn new(settings: &NotifySettings, state_dir: &Path, log: LogFn) -> Self {
        let mut n = Self {
            settings: settings.clone(),
            host: hostname(),
            state_dir: state_dir.to_owned(),
            log,
            tx: None,
            stats: Arc::default(),
            alerts_sent: VecDeque::new(),
            window: Window::new(crate::clock::unix_ms()),
        };
        n.start_worker();
        n
    }

    /// The delivery thread starts with the first configured transport, and also when only the
    /// outbox holds something (a transport removed since: its messages are then dropped, said).
    fn start_worker(&mut self) {
        if self.tx.is_some() {
            return;
        }
        let outbox = Outbox::new(&self.state_dir);
        let leftover = std::fs::read_dir(outbox.dir()).is_ok_and(|mut d| d.next().is_some());
        if !self.settings.is_enabled() && !leftover {
            return;
        }
        match Worker::spawn(
            self.settings.clone(),
            self.host.clone(),
            outbox,
            self.stats.clone(),
            self.log.clone(),
        ) {
            Ok(tx) => self.tx = Some(tx),
            Err(e) => (self.log)(format!(
                "portsentry: error: notify: cannot start the delivery thread: {e}; nothing will be sent"
            )),
        }
    }

    pub fn reload(&mut self, settings: &NotifySettings) {
        if *settings == self.settings {
            return;
        }
        let interval_changed = settings.digest_interval != self.settings.digest_interval;
        self.settings = settings.clone();
        match &self.tx {
            Some(tx) => {
                let _ = tx.send(Command::Reload(Box::new(settings.clone())));
            }
            None => self.start_worker(),
        }
        if interval_changed && self.window.is_empty() {
            self.window.start_ms = crate::clock::unix_ms();
        }
    }

    pub fn stats(&self) -> NotifyStats {
        lock(&self.stats).clone()
    }

    pub fn is_enabled(&self) -> bool {
        self.settings.is_enabled()
    }

    /// Every event from the kernel, for the digest.
    pub fn on_event(&mut self, ev: &ProbeEvent) {
        if self.settings.is_enabled() {
            self.window.record(ev, crate::clock::unix_ms());
        }
    }

    /// A neighbour's MAC changed (its `neighbour flip` line), for the digest.
    pub fn on_neighbour_flip(&mut self, line: &str) {
        if self.settings.is_enabled() {
            self.window.record_flip(line);
        }
    }

    /// A new local ban: an alert now, or folded into the digest past the hourly cap.
    pub fn on_new_ban(&mut self, n: &BanNotice) {
        if !self.settings.is_enabled() || self.settings.alert != AlertMode::NewBan {
            return;
        }
        let now_ms = crate::clock::unix_ms();
        while self
            .alerts_sent
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= 3_600_000)
        {
            self.alerts_sent.pop_front();
        }
        if self.alerts_sent.len() >= self.settings.max_alerts_per_hour as usize {
            self.window.alerts_folded += 1;
            lock(&self.stats).alerts_folded += 1;
            return;
        }
        self.alerts_sent.push_back(now_ms);
        let action = if n.enforced {
            "blocked"
        } else {
            "detected, not blocked"
        };
        let proto = match n.protocol {
            crate::detect::events::Protocol::Tcp => "TCP",
            crate::detect::events::Protocol::Udp => "UDP",
        };
        let subject = format!(
            "[portsentry] {}: {} {action} ({proto} {}, {})",
            self.host, n.source, n.dst_port, n.scan
        );
        let expires = n
            .ttl
            .map(|t| now_ms.saturating_add(crate::clock::duration_ms(t)));
        let text = format!(
            "{subject}\n\nsource: {}\naction: {action}\ntrigger: {proto} port {} ({}), {} probe(s)\ninterface: {}\nsource verified: {}\nban expires: {}\nat: {}\n",
            n.source,
            n.dst_port,
            n.scan,
            n.probes,
            n.interface,
            if n.shareable { "yes" } else { "no" },
            expires.map_or_else(|| "never".to_owned(), digest::stamp),
            digest::stamp(now_ms),
        );
        let json = json!({
            "version": 1,
            "type": "alert",
            "host": self.host,
            "subject": subject,
            "address": n.source.to_string(),
            "action": action,
            "protocol": proto,
            "port": n.dst_port,
            "scan_type": n.scan,
            "probes": n.probes,
            "interface": n.interface,
            "verified": n.shareable,
            "origin": "local",
            "ban_expires_ms": expires,
            "at_ms": now_ms,
        });
        self.enqueue(Kind::Alert, now_ms, subject, text, json);
    }

    /// When the current window ends (Unix ms), or `None` when no digest is due: digests off
    /// and nothing folded.
    pub fn digest_due(&self, now_ms: u64) -> bool {
        if !self.settings.is_enabled() {
            return false;
        }
        let interval = match self.settings.digest_interval {
            Some(i) => i,
            // Digests off: folded alerts still go out, once an hour.
            None if self.window.alerts_folded > 0 => std::time::Duration::from_secs(3600),
            None => return false,
        };
        now_ms.saturating_sub(self.window.start_ms) >= crate::clock::duration_ms(interval)
    }

    /// The window's start (Unix ms).
    pub fn window_start_ms(&self) -> u64 {
        self.window.start_ms
    }

    /// Closes the window: a digest unless nothing happened; a new window begins.
    pub fn close_digest(&mut self, closing: &Closing<'_>) {
        let window = std::mem::replace(&mut self.window, Window::new(closing.end_ms));
        let digests_on = self.settings.digest_interval.is_some();
        let nothing = window.is_empty() && closing.other_bans.is_empty();
        if nothing || (!digests_on && window.alerts_folded == 0) {
            return;
        }
        let (subject, text, json) = digest::render(&window, closing);
        self.enqueue(Kind::Digest, closing.end_ms, subject, text, json);
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn alert_cap(&self) -> u32 {
        self.settings.max_alerts_per_hour
    }

    fn enqueue(
        &mut self,
        kind: Kind,
        created_ms: u64,
        subject: String,
        text: String,
        json: serde_json::Value,
    ) {
        let Some(tx) = &self.tx else {
            return;
        };
        let id = message_id(created_ms, &self.host);
        let mut json = json;
        json["id"] = serde_json::Value::String(id.clone());
        let m = Outgoing {
            id,
            kind,
            created_ms,
            subject,
            text,
            json,
            pending: channels_of(&self.settings),
        };
        let _ = tx.send(Command::Send(Box::new(m)));
    }
}
