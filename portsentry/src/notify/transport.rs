//! The transports as configuration and as a test: their errors (a `[notify]` key's problem,
//! one delivery's failure), reading a secret file, checking the configured transports without
//! sending, and `portsentry notify --test`.

use std::path::Path;

use serde_json::json;
use thiserror::Error;

use super::{
    digest, hostname, mail, message_id,
    outbox::{Kind, Outgoing},
    smtp, webhook,
};
use crate::{
    config::settings::NotifySettings,
    secret_file::{first_line, read_private, SecretFileError},
};

/// A configuration problem with a transport (a file, a URL); names the `[notify]` key.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("key `notify.{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    /// A secret file that cannot be read or that others can access.
    #[error("key `notify.{key}`: {error}")]
    Secret {
        key: &'static str,
        error: SecretFileError,
    },
}

/// Why one delivery failed: a short reason (`connection refused`, `TLS`, `authentication`,
/// `rejected`, …) and the details.
#[derive(Debug, Clone)]
pub struct DeliveryError {
    pub reason: &'static str,
    pub detail: String,
}

impl DeliveryError {
    pub(super) fn not_configured() -> Self {
        Self {
            reason: "not configured",
            detail: String::new(),
        }
    }
}

/// Reads a secret's first non-empty line, refusing a file group or others can access (as the
/// crowdsec key files are). Checked on the open file, so the file checked is the file read.
pub(super) fn read_secret(key: &'static str, path: &Path) -> Result<String, TransportError> {
    let text = read_private(path).map_err(|error| TransportError::Secret { key, error })?;
    first_line(&text).ok_or_else(|| TransportError::Invalid {
        key,
        message: format!("{} is empty", path.display()),
    })
}

/// The configured transports, checked (files read) without sending anything: what
/// `check-config` and a (re)start validate.
pub struct Transports;

impl Transports {
    pub fn load(s: &NotifySettings) -> Result<(), TransportError> {
        smtp::MailSender::load(s)?;
        webhook::Webhook::load(s)?;
        Ok(())
    }
}

/// One transport's outcome of `notify --test`.
pub struct TestOutcome {
    pub channel: &'static str,
    pub result: Result<(), DeliveryError>,
}

/// Sends a test message through every configured transport, now, from this thread (no outbox:
/// the administrator is watching).
pub fn test_all(s: &NotifySettings) -> Result<Vec<TestOutcome>, TransportError> {
    let host = hostname();
    let now_ms = crate::clock::unix_ms();
    let id = message_id(now_ms, &host);
    let subject = format!("[portsentry] {host}: test message");
    let text = format!(
        "{subject}\n\nThis is a test from `portsentry notify --test` at {}.\nAlerts and digests from this host will arrive like this one.\n",
        digest::stamp(now_ms)
    );
    let m = Outgoing {
        id: id.clone(),
        kind: Kind::Test,
        created_ms: now_ms,
        subject: subject.clone(),
        text,
        json: json!({"version": 1, "type": "test", "host": host, "subject": subject, "id": id}),
        pending: Vec::new(),
    };
    let mut out = Vec::new();
    if let Some(sender) = smtp::MailSender::load(s)? {
        let result = mail::build(s, &host, &m).and_then(|mail| sender.send(&mail));
        out.push(TestOutcome {
            channel: sender.name(),
            result,
        });
    }
    if let Some(w) = webhook::Webhook::load(s)? {
        out.push(TestOutcome {
            channel: "webhook",
            result: w.send(&m.id, &m.json),
        });
    }
    Ok(out)
}
