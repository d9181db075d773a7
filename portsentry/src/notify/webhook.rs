//! The webhook: one JSON POST per message (`"version": 1`), with a bearer token from a private
//! file, through the blocking HTTP client fleet mode already uses (ureq, rustls), on the
//! notifier's thread. Any 2xx is delivered; anything else is retried.

use std::time::Duration;

use super::{read_secret, DeliveryError, TransportError};
use crate::config::settings::NotifySettings;

const CALL_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Webhook {
    agent: ureq::Agent,
    url: String,
    token: Option<String>,
}

impl Webhook {
    pub fn load(s: &NotifySettings) -> Result<Option<Self>, TransportError> {
        if s.webhook_url.is_empty() {
            return Ok(None);
        }
        let token = match &s.webhook_token_file {
            Some(p) => Some(read_secret("webhook_token_file", p)?),
            None => None,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(CALL_TIMEOUT))
            .http_status_as_error(false)
            .user_agent(concat!("portsentry/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Some(Self {
            agent,
            url: s.webhook_url.clone(),
            token,
        }))
    }

    /// POSTs `body` (JSON); the message id goes in `Idempotency-Key` so a receiver can drop a
    /// repeat after a crash between its answer and our bookkeeping.
    pub fn send(&self, id: &str, body: &serde_json::Value) -> Result<(), DeliveryError> {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Idempotency-Key", id)
            .header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let text = body.to_string();
        match req.send(text.as_bytes()) {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(DeliveryError {
                reason: if matches!(r.status().as_u16(), 401 | 403) {
                    "authentication"
                } else {
                    "rejected"
                },
                detail: format!("{}: HTTP {}", self.url, r.status()),
            }),
            Err(e) => {
                let text = e.to_string();
                let lower = text.to_ascii_lowercase();
                let reason = if lower.contains("connection refused") {
                    "connection refused"
                } else if lower.contains("tls") || lower.contains("certificate") {
                    "TLS"
                } else if lower.contains("timeout") || lower.contains("timed out") {
                    "timed out"
                } else {
                    "failed"
                };
                Err(DeliveryError {
                    reason,
                    detail: format!("{}: {text}", self.url),
                })
            }
        }
    }
}
