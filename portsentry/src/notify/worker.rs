//! The delivery thread: takes new messages into the outbox, sends what is pending per channel
//! with exponential backoff and jitter, drops a message only past `max_age` (with a line), and
//! picks up the outbox a previous run left. Blocking I/O (files, SMTP, HTTP) happens only here,
//! so a slow or dead mail server never stalls the event loop.

use std::{
    collections::HashMap,
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    mail,
    outbox::{Channel, Outbox, Outgoing},
    smtp::MailSender,
    webhook::Webhook,
    ChannelStats, NotifyStats,
};
use crate::{config::settings::NotifySettings, detect::logging::LogFn};

/// The first retry waits this long; each failure doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often the worker looks for expired messages when nothing else wakes it.
const IDLE_WAKE: Duration = Duration::from_secs(30);

pub enum Command {
    Send(Box<Outgoing>),
    Reload(Box<NotifySettings>),
}

/// A channel's sender and its retry state.
struct Lane {
    failures: u32,
    retry_at: Option<Instant>,
}

pub struct Worker {
    settings: NotifySettings,
    host: String,
    outbox: Outbox,
    messages: Vec<Outgoing>,
    mail: Option<MailSender>,
    webhook: Option<Webhook>,
    lanes: HashMap<Channel, Lane>,
    stats: Arc<Mutex<NotifyStats>>,
    log: LogFn,
}

impl Worker {
    pub fn spawn(
        settings: NotifySettings,
        host: String,
        outbox: Outbox,
        stats: Arc<Mutex<NotifyStats>>,
        log: LogFn,
    ) -> std::io::Result<mpsc::Sender<Command>> {
        let (tx, rx) = mpsc::channel();
        let mut w = Worker {
            settings: NotifySettings::default(),
            host,
            outbox,
            messages: Vec::new(),
            mail: None,
            webhook: None,
            lanes: HashMap::new(),
            stats,
            log,
        };
        std::thread::Builder::new()
            .name("ps-notify".into())
            .spawn(move || {
                w.configure(settings);
                w.resume();
                w.run(&rx);
            })?;
        Ok(tx)
    }

    fn line(&self, text: String) {
        (self.log)(text);
    }

    fn configure(&mut self, s: NotifySettings) {
        match MailSender::load(&s) {
            Ok(m) => self.mail = m,
            Err(e) => {
                self.line(format!("portsentry: error: notify: mail: {e}"));
                self.mail = None;
            }
        }
        match Webhook::load(&s) {
            Ok(w) => self.webhook = w,
            Err(e) => {
                self.line(format!("portsentry: error: notify: webhook: {e}"));
                self.webhook = None;
            }
        }
        self.settings = s;
        for lane in self.lanes.values_mut() {
            lane.retry_at = None;
        }
    }

    fn configured(&self) -> Vec<Channel> {
        let mut c = Vec::new();
        if self.mail.is_some() {
            c.push(Channel::Mail);
        }
        if self.webhook.is_some() {
            c.push(Channel::Webhook);
        }
        c
    }

    /// What a previous run left in the outbox.
    fn resume(&mut self) {
        let (messages, bad) = self.outbox.load();
        for b in bad {
            self.line(format!(
                "portsentry: error: notify: unreadable outbox file left alone: {b}"
            ));
        }
        if !messages.is_empty() {
            self.line(format!(
                "portsentry: notify: {} undelivered message(s) in {}, sending",
                messages.len(),
                self.outbox.dir().display()
            ));
        }
        self.messages = messages;
        self.update_depth();
    }

    fn run(&mut self, rx: &mpsc::Receiver<Command>) {
        loop {
            let wait = self.next_wake();
            match rx.recv_timeout(wait) {
                Ok(Command::Send(m)) => self.accept(*m),
                Ok(Command::Reload(s)) => self.configure(*s),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            // Take whatever else is queued before sending, so a burst is written at once.
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    Command::Send(m) => self.accept(*m),
                    Command::Reload(s) => self.configure(*s),
                }
            }
            self.expire();
            self.deliver();
        }
    }

    fn next_wake(&self) -> Duration {
        let now = Instant::now();
        Channel::ALL
            .iter()
            .filter(|c| self.messages.iter().any(|m| m.pending.contains(c)))
            .filter_map(|c| self.lanes.get(c).and_then(|l| l.retry_at))
            .map(|t| t.saturating_duration_since(now))
            .min()
            .unwrap_or(IDLE_WAKE)
            .min(IDLE_WAKE)
    }

    /// A new message: into the outbox (bounded) before any attempt.
    fn accept(&mut self, mut m: Outgoing) {
        let configured = self.configured();
        m.pending.retain(|c| configured.contains(c));
        if m.pending.is_empty() {
            return;
        }
        if self.messages.len() >= self.settings.outbox_max {
            let mut st = super::lock(&self.stats);
            st.outbox_full += 1;
            let n = st.outbox_full;
            drop(st);
            self.line(format!(
                "portsentry: error: notify: outbox full ({} messages, `notify.outbox_max`): {} \"{}\" not queued ({n} refused so far)",
                self.messages.len(),
                kind_name(&m),
                m.subject
            ));
            return;
        }
        if let Err(e) = self.outbox.store(&m) {
            self.line(format!(
                "portsentry: error: notify: cannot write the outbox {}: {e}; sending \"{}\" without a copy on disk",
                self.outbox.dir().display(),
                m.subject
            ));
        }
        self.messages.push(m);
        self.update_depth();
    }

    /// Drops what is older than `max_age`, and channels no longer configured.
    fn expire(&mut self) {
        let now_ms = crate::clock::unix_ms();
        let max_ms = crate::clock::duration_ms(self.settings.max_age);
        let configured = self.configured();
        let mut lines = Vec::new();
        let mut changed = Vec::new();
        for m in &mut self.messages {
            let old = now_ms.saturating_sub(m.created_ms) > max_ms;
            let before = m.pending.clone();
            m.pending.retain(|c| !old && configured.contains(c));
            for c in before.iter().filter(|c| !m.pending.contains(c)) {
                let why = if old {
                    format!(
                        "undelivered after {} (`notify.max_age`)",
                        crate::config::values::format_duration(self.settings.max_age)
                    )
                } else {
                    "its channel is no longer configured".to_owned()
                };
                lines.push(format!(
                    "portsentry: notify: dropped {} \"{}\" (Message-ID <{}>) for {}: {why}",
                    kind_name(m),
                    m.subject,
                    m.id,
                    c.name()
                ));
                super::lock(&self.stats).channel(*c).dropped += 1;
            }
            if m.pending.len() != before.len() {
                changed.push(m.clone());
            }
        }
        for m in &changed {
            let _ = self.outbox.store(m);
        }
        self.messages.retain(|m| !m.pending.is_empty());
        for l in lines {
            self.line(l);
        }
        if !changed.is_empty() {
            self.update_depth();
        }
    }

    fn deliver(&mut self) {
        for channel in self.configured() {
            let ready = self
                .lanes
                .get(&channel)
                .and_then(|l| l.retry_at)
                .is_none_or(|t| t <= Instant::now());
            if !ready {
                continue;
            }
            let mut i = 0;
            while i < self.messages.len() {
                if !self.messages[i].pending.contains(&channel) {
                    i += 1;
                    continue;
                }
                let result = self.send_one(channel, &self.messages[i]);
                match result {
                    Ok(()) => {
                        self.messages[i].pending.retain(|c| *c != channel);
                        let m = &self.messages[i];
                        if let Err(e) = self.outbox.store(m) {
                            (self.log)(format!(
                                "portsentry: error: notify: recording the delivery of <{}> in {}: {e} (it may be sent again after a restart)",
                                m.id,
                                self.outbox.dir().display()
                            ));
                        }
                        super::lock(&self.stats).channel(channel).sent += 1;
                        let lane = self.lanes.entry(channel).or_insert(Lane {
                            failures: 0,
                            retry_at: None,
                        });
                        if lane.failures > 0 {
                            let n = lane.failures;
                            lane.failures = 0;
                            self.line(format!(
                                "portsentry: notify: {} delivers again (after {n} failed attempt(s))",
                                channel.name()
                            ));
                        }
                        self.messages.retain(|m| !m.pending.is_empty());
                        self.update_depth();
                    }
                    Err(e) => {
                        super::lock(&self.stats).channel(channel).failed += 1;
                        let lane = self.lanes.entry(channel).or_insert(Lane {
                            failures: 0,
                            retry_at: None,
                        });
                        lane.failures += 1;
                        let delay = backoff(lane.failures);
                        lane.retry_at = Some(Instant::now() + delay);
                        let failures = lane.failures;
                        // The first failure and then every 10th: an outage is reported, a
                        // long one does not fill the log.
                        if failures == 1 || failures.is_multiple_of(10) {
                            let waiting = self
                                .messages
                                .iter()
                                .filter(|m| m.pending.contains(&channel))
                                .count();
                            self.line(format!(
                                "portsentry: notify: {} delivery failed ({}): {}; {waiting} message(s) kept in the outbox, retry in {}",
                                channel.name(),
                                e.reason,
                                e.detail,
                                crate::config::values::format_duration(Duration::from_secs(delay.as_secs().max(1)))
                            ));
                        }
                        break;
                    }
                }
            }
        }
    }

    fn send_one(&self, channel: Channel, m: &Outgoing) -> Result<(), super::DeliveryError> {
        match channel {
            Channel::Mail => {
                let Some(sender) = &self.mail else {
                    return Err(super::DeliveryError::not_configured());
                };
                let mail = mail::build(&self.settings, &self.host, m)?;
                sender.send(&mail)
            }
            Channel::Webhook => {
                let Some(w) = &self.webhook else {
                    return Err(super::DeliveryError::not_configured());
                };
                w.send(&m.id, &m.json)
            }
        }
    }

    fn update_depth(&self) {
        let mut st = super::lock(&self.stats);
        for c in Channel::ALL {
            let depth = self
                .messages
                .iter()
                .filter(|m| m.pending.contains(&c))
                .count() as u64;
            let configured = match c {
                Channel::Mail => self.mail.is_some(),
                Channel::Webhook => self.webhook.is_some(),
            };
            let s: &mut ChannelStats = st.channel(c);
            s.depth = depth;
            s.configured = configured;
        }
    }
}

fn kind_name(m: &Outgoing) -> &'static str {
    match m.kind {
        super::outbox::Kind::Alert => "alert",
        super::outbox::Kind::Digest => "digest",
        super::outbox::Kind::Test => "test message",
    }
}

/// 1 s, 2 s, 4 s … up to 5 min, each ±25 % so many hosts behind one relay do not retry in step.
fn backoff(failures: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    // A fresh random number from std's per-instance hash keys (no RNG crate for one jitter).
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let jitter = (random % 501) as f64 / 1000.0 - 0.25; // −0.25 .. +0.25
    base.mul_f64(1.0 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for (n, secs) in [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (30, 300.0)] {
            let d = backoff(n).as_secs_f64();
            assert!(
                d >= secs * 0.75 - 1e-9 && d <= secs * 1.25 + 1e-9,
                "{n}: {d}"
            );
        }
    }
}
