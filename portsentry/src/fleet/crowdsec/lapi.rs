//! A small blocking client for the three LAPI endpoints portsentry uses: the bouncer's decision
//! stream, the machine login and alert submission.

use std::{borrow::Cow, time::Duration};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;

use super::{tls::LapiTls, USER_AGENT};

/// No single call may hang a worker longer than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers other than the decision stream (login, alert ids, errors) are small.
const MAX_BODY_BYTES: u64 = 1 << 20;
/// The decision stream may take this many bytes per decision (LAPI 1.x words one in about 230),
/// plus [`MAX_BODY_BYTES`]: the size cap follows from `crowdsec.max_decisions`.
pub const STREAM_BYTES_PER_DECISION: u64 = 512;

/// The byte cap of a decision-stream answer for `max_decisions`.
pub fn stream_body_cap(max_decisions: usize) -> u64 {
    (max_decisions as u64)
        .saturating_mul(STREAM_BYTES_PER_DECISION)
        .saturating_add(MAX_BODY_BYTES)
}

#[derive(Debug, Error)]
pub enum LapiError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The handshake failed; the text says what is wrong with which certificate.
    #[error("{0}")]
    Tls(String),
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("unexpected answer: {0}")]
    BadResponse(String),
    /// The decision stream is larger than its byte cap; nothing of it is applied.
    #[error("LAPI answer is larger than {cap} bytes (the cap that follows from crowdsec.max_decisions = {max_decisions}, {STREAM_BYTES_PER_DECISION} bytes a decision); none of it applied; raise crowdsec.max_decisions if LAPI really holds that many")]
    TooLarge { cap: u64, max_decisions: usize },
    /// The decision stream lists more decisions than `crowdsec.max_decisions`.
    #[error("LAPI sent {count} decisions, more than crowdsec.max_decisions = {max_decisions}; none of them applied; raise crowdsec.max_decisions (and max_bans) if LAPI really holds that many")]
    TooMany { count: usize, max_decisions: usize },
}

impl LapiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            LapiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One decision as the stream returns it, its strings borrowed from the answer (copied only
/// where JSON escapes them). Every field defaults, so one odd entry (a scope we do not know, a
/// missing field) is skipped and counted, not fatal for the whole pull.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct StreamDecision<'a> {
    #[serde(default, borrow)]
    pub duration: Cow<'a, str>,
    #[serde(default, borrow)]
    pub origin: Cow<'a, str>,
    #[serde(default, borrow)]
    pub scenario: Cow<'a, str>,
    #[serde(default, borrow)]
    pub scope: Cow<'a, str>,
    #[serde(default, borrow, rename = "type")]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub value: Cow<'a, str>,
}

/// `GET /v1/decisions/stream`: `null` when empty, never `[]`.
#[derive(Debug, Default, Deserialize)]
pub struct Stream<'a> {
    #[serde(default, borrow)]
    pub new: Option<Vec<StreamDecision<'a>>>,
    #[serde(default, borrow)]
    pub deleted: Option<Vec<StreamDecision<'a>>>,
}

#[derive(Deserialize)]
struct LoginAnswer {
    token: String,
}

#[derive(Deserialize)]
struct Message {
    message: String,
}

/// How the bouncer proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum BouncerAuth {
    /// `X-Api-Key` (from `cscli bouncers add`).
    ApiKey(String),
    /// The TLS client certificate (LAPI names the bouncer `CN@address`).
    Certificate,
}

/// How the machine logs in.
#[derive(Clone, PartialEq, Eq)]
pub enum MachineAuth {
    /// `cscli machines add NAME --password P`.
    Password { login: String, password: String },
    /// The TLS client certificate (LAPI names the machine `CN@address`).
    Certificate,
}

pub struct Lapi {
    agent: ureq::Agent,
    base: String,
    tls: LapiTls,
}

impl Lapi {
    /// `base` like `http://127.0.0.1:8080` (no trailing slash).
    pub fn new(base: &str, tls: &LapiTls) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(CALL_TIMEOUT))
            .http_status_as_error(false)
            .user_agent(USER_AGENT)
            .tls_config(tls.ureq_config())
            .build()
            .into();
        Self {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            tls: tls.clone(),
        }
    }

    /// Whether a client certificate authenticates us.
    pub fn client_cert(&self) -> bool {
        self.tls.client_cert
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The bouncer's stream: the full state with `startup`, else what changed since our last
    /// pull, handed to `take` (its strings borrow from the answer). An answer over
    /// `max_decisions` (or over the byte cap that follows from it) is an error.
    pub fn stream<T>(
        &self,
        auth: &BouncerAuth,
        startup: bool,
        max_decisions: usize,
        take: impl FnOnce(Stream<'_>) -> T,
    ) -> Result<T, LapiError> {
        let mut request = self
            .agent
            .get(format!("{}/v1/decisions/stream", self.base))
            .query("startup", if startup { "true" } else { "false" });
        if let BouncerAuth::ApiKey(key) = auth {
            request = request.header("X-Api-Key", key);
        }
        let cap = stream_body_cap(max_decisions);
        let too_large = |e| match e {
            ReadError::TooLarge => LapiError::TooLarge { cap, max_decisions },
            ReadError::Lapi(e) => e,
        };
        let response = self.response(request.call()).map_err(too_large)?;
        let body = read_body(response, 200, cap).map_err(too_large)?;
        let stream: Stream<'_> =
            serde_json::from_slice(&body).map_err(|e| LapiError::BadResponse(format!("{e}")))?;
        let count =
            stream.new.as_ref().map_or(0, Vec::len) + stream.deleted.as_ref().map_or(0, Vec::len);
        if count > max_decisions {
            return Err(LapiError::TooMany {
                count,
                max_decisions,
            });
        }
        Ok(take(stream))
    }

    /// Logs a machine in; returns its bearer token (valid for an hour on LAPI 1.4+).
    /// With a client certificate LAPI reads only `scenarios` from the body.
    pub fn login(&self, auth: &MachineAuth, scenario: &str) -> Result<String, LapiError> {
        #[derive(Serialize)]
        struct Login<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            machine_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            password: Option<&'a str>,
            scenarios: [&'a str; 1],
        }
        let (machine_id, password) = match auth {
            MachineAuth::Password { login, password } => {
                (Some(login.as_str()), Some(password.as_str()))
            }
            MachineAuth::Certificate => (None, None),
        };
        let response = self
            .agent
            .post(format!("{}/v1/watchers/login", self.base))
            .send_json(Login {
                machine_id,
                password,
                scenarios: [scenario],
            });
        let answer: LoginAnswer = self.read(response, 200)?;
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
        self.read(response, 201)
    }

    fn read<T: DeserializeOwned>(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        expected: u16,
    ) -> Result<T, LapiError> {
        self.read_capped(response, expected, MAX_BODY_BYTES)
            .map_err(|e| match e {
                ReadError::TooLarge => {
                    LapiError::BadResponse(format!("more than {MAX_BODY_BYTES} bytes"))
                }
                ReadError::Lapi(e) => e,
            })
    }

    fn read_capped<T: DeserializeOwned>(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        expected: u16,
        cap: u64,
    ) -> Result<T, ReadError> {
        let body = read_body(self.response(response)?, expected, cap)?;
        serde_json::from_slice(&body).map_err(|e| LapiError::BadResponse(format!("{e}")).into())
    }

    fn response(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, ReadError> {
        response.map_err(|e| {
            match super::tls::explain_handshake(&e, &self.tls) {
                Some(text) => LapiError::Tls(text),
                None => LapiError::Unreachable(e.to_string()),
            }
            .into()
        })
    }
}

/// A read that failed, or stopped at its byte cap.
enum ReadError {
    TooLarge,
    Lapi(LapiError),
}

impl From<LapiError> for ReadError {
    fn from(e: LapiError) -> Self {
        ReadError::Lapi(e)
    }
}

/// The body of an answer with the `expected` status, at most `cap` bytes.
fn read_body(
    mut response: ureq::http::Response<ureq::Body>,
    expected: u16,
    cap: u64,
) -> Result<Vec<u8>, ReadError> {
    let status = response.status().as_u16();
    // Bytes, not a String: the parser checks UTF-8 as it goes (one pass over a large answer).
    let body = response
        .body_mut()
        .with_config()
        .limit(cap)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => ReadError::TooLarge,
            e => LapiError::Unreachable(format!("reading the answer: {e}")).into(),
        })?;
    if status != expected {
        let body = String::from_utf8_lossy(&body);
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
        return Err(LapiError::Status { status, message }.into());
    }
    Ok(body)
}
