//! A small blocking client for the three LAPI endpoints portsentry uses: the bouncer's decision
//! stream, the machine login and alert submission.

use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;

use super::USER_AGENT;

/// No single call may hang a worker longer than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A startup stream with a community blocklist runs to megabytes; anything beyond this is not
/// a decision list.
const MAX_BODY_BYTES: u64 = 256 << 20;

#[derive(Debug, Error)]
pub enum LapiError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("unexpected answer: {0}")]
    BadResponse(String),
}

impl LapiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            LapiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One decision as the stream returns it. Every field defaults, so one odd entry (a scope we
/// do not know, a missing field) is skipped and counted, not fatal for the whole pull.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct StreamDecision {
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub origin: String,
    #[serde(default)]
    pub scenario: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub value: String,
}

/// `GET /v1/decisions/stream`: `null` when empty, never `[]`.
#[derive(Debug, Default, Deserialize)]
pub struct Stream {
    #[serde(default)]
    pub new: Option<Vec<StreamDecision>>,
    #[serde(default)]
    pub deleted: Option<Vec<StreamDecision>>,
}

#[derive(Deserialize)]
struct LoginAnswer {
    token: String,
}

#[derive(Deserialize)]
struct Message {
    message: String,
}

pub struct Lapi {
    agent: ureq::Agent,
    base: String,
}

impl Lapi {
    /// `base` like `http://127.0.0.1:8080` (no trailing slash).
    pub fn new(base: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(CALL_TIMEOUT))
            .http_status_as_error(false)
            .user_agent(USER_AGENT)
            .build()
            .into();
        Self {
            agent,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The bouncer's stream: the full state with `startup`, else what changed since our last pull.
    pub fn stream(&self, api_key: &str, startup: bool) -> Result<Stream, LapiError> {
        let response = self
            .agent
            .get(format!("{}/v1/decisions/stream", self.base))
            .query("startup", if startup { "true" } else { "false" })
            .header("X-Api-Key", api_key)
            .call();
        read(response, 200)
    }

    /// Logs a machine in; returns its bearer token (valid for an hour on LAPI 1.4+).
    pub fn login(&self, login: &str, password: &str, scenario: &str) -> Result<String, LapiError> {
        #[derive(Serialize)]
        struct Login<'a> {
            machine_id: &'a str,
            password: &'a str,
            scenarios: [&'a str; 1],
        }
        let response = self
            .agent
            .post(format!("{}/v1/watchers/login", self.base))
            .send_json(Login {
                machine_id: login,
                password,
                scenarios: [scenario],
            });
        let answer: LoginAnswer = read(response, 200)?;
        Ok(answer.token)
    }

    /// Submits alerts; returns the ids LAPI gave them.
    pub fn push_alerts<T: Serialize>(
        &self,
        token: &str,
        alerts: &[T],
    ) -> Result<Vec<String>, LapiError> {
        let response = self
            .agent
            .post(format!("{}/v1/alerts", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .send_json(alerts);
        read(response, 201)
    }
}

fn read<T: DeserializeOwned>(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    expected: u16,
) -> Result<T, LapiError> {
    let mut response = response.map_err(|e| LapiError::Unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_string()
        .map_err(|e| LapiError::Unreachable(format!("reading the answer: {e}")))?;
    if status != expected {
        let message = serde_json::from_str::<Message>(&body)
            .map(|m| m.message)
            .unwrap_or_else(|_| {
                let text = body.trim();
                if text.is_empty() {
                    "(no message)".to_owned()
                } else {
                    text.chars().take(200).collect()
                }
            });
        return Err(LapiError::Status { status, message });
    }
    serde_json::from_str(&body).map_err(|e| LapiError::BadResponse(format!("{e}")))
}
