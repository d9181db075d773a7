//! The `[crowdsec]` table: joining a CrowdSec LAPI as bouncer and/or machine, its keys'
//! defaults and the rules between them. The files it names (credentials, certificates) are
//! read by the fleet, not here.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::config::values;

pub const DEFAULT_CROWDSEC_SCENARIO: &str = "portsentry/port-scan";

/// `[crowdsec]`: join a CrowdSec Local API (LAPI) as a bouncer (enforce fleet decisions) and/or
/// as a machine (push our bans as alerts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrowdsecSettings {
    /// e.g. `http://127.0.0.1:8080`; `https://` is verified against the Mozilla root store,
    /// or against `ca_cert_path` alone when that is set.
    #[serde(with = "values::lapi_url")]
    pub lapi_url: String,
    /// PEM bundle of the CA(s) that sign LAPI's certificate; trusted *instead of* the Mozilla
    /// roots (needs an https:// `lapi_url`).
    #[serde(with = "values::optional_path")]
    pub ca_cert_path: Option<PathBuf>,
    /// Client certificate (PEM; its chain may follow it) and its private key, for LAPI's TLS
    /// authentication: they replace the bouncer key and the machine password.
    #[serde(with = "values::optional_path")]
    pub cert_path: Option<PathBuf>,
    #[serde(with = "values::optional_path")]
    pub key_path: Option<PathBuf>,
    /// Accept any certificate from LAPI (a warning is logged at start): testing only.
    pub insecure_skip_verify: bool,
    /// Bouncer API key (`cscli bouncers add`); with `api_key_file`, the file's first line.
    #[serde(with = "values::secret", skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(
        with = "values::optional_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_key_file: Option<PathBuf>,
    /// How often the decision stream is pulled.
    #[serde(with = "values::poll_interval")]
    pub update_frequency: Duration,
    /// Machine login and password (`cscli machines add`), or `credentials_file`.
    #[serde(
        with = "values::optional_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub login: Option<String>,
    #[serde(with = "values::secret", skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// cscli's `local_api_credentials.yaml` format: `login:` and `password:` lines.
    #[serde(
        with = "values::optional_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub credentials_file: Option<PathBuf>,
    /// Scenario name of the alerts we push.
    #[serde(with = "values::scenario")]
    pub scenario: String,
    /// Alerts kept (in memory and in `state_dir`) while LAPI is unreachable; the oldest go first.
    #[serde(deserialize_with = "values::int_in::<_, _, 1, 1000000>")]
    pub queue_max: usize,
    /// Alerts pushed per minute at most, so a forging campaign cannot flood the fleet; the
    /// rest are counted and dropped.
    #[serde(deserialize_with = "values::int_in::<_, _, 1, 1000000>")]
    pub max_alerts_per_minute: u32,
    /// Decisions one LAPI answer may hold (new plus deleted); a larger answer, or one larger
    /// than 512 bytes a decision (plus 1 MiB), is refused whole with an error naming this key.
    #[serde(deserialize_with = "values::int_in::<_, _, 1, 100000000>")]
    pub max_decisions: usize,
}

impl Default for CrowdsecSettings {
    fn default() -> Self {
        Self {
            lapi_url: String::new(),
            ca_cert_path: None,
            cert_path: None,
            key_path: None,
            insecure_skip_verify: false,
            api_key: None,
            api_key_file: None,
            update_frequency: Duration::from_secs(2),
            login: None,
            password: None,
            credentials_file: None,
            scenario: DEFAULT_CROWDSEC_SCENARIO.to_owned(),
            queue_max: 10_000,
            max_alerts_per_minute: 60,
            max_decisions: 1_000_000,
        }
    }
}

impl CrowdsecSettings {
    /// Authenticates with a client certificate (both roles).
    pub fn has_client_cert(&self) -> bool {
        self.cert_path.is_some()
    }

    /// Pulls decisions (has a bouncer key or a client certificate).
    pub fn is_bouncer(&self) -> bool {
        self.api_key.is_some() || self.api_key_file.is_some() || self.has_client_cert()
    }

    /// Pushes alerts (has machine credentials or a client certificate).
    pub fn is_machine(&self) -> bool {
        self.login.is_some() || self.credentials_file.is_some() || self.has_client_cert()
    }

    /// Whether `lapi_url` is https://.
    pub fn is_https(&self) -> bool {
        self.lapi_url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }

    /// Rules between keys of the table; `Err((key, message))` names the key at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let pair = |a: &str, b: &str| {
            format!("`crowdsec.{a}` and `crowdsec.{b}` exclude each other: use one")
        };
        if self.lapi_url.is_empty() {
            return Err((
                "crowdsec.lapi_url",
                "is required in [crowdsec], e.g. lapi_url = \"http://127.0.0.1:8080\"".into(),
            ));
        }
        if self.api_key.is_some() && self.api_key_file.is_some() {
            return Err(("crowdsec", pair("api_key", "api_key_file")));
        }
        if self.credentials_file.is_some() && (self.login.is_some() || self.password.is_some()) {
            return Err(("crowdsec", pair("credentials_file", "login/password")));
        }
        if self.login.is_some() != self.password.is_some() {
            return Err(("crowdsec", "`login` and `password` go together: set both (from `cscli machines add NAME --password P`)".into()));
        }
        if self.cert_path.is_some() != self.key_path.is_some() {
            let (set, missing) = if self.cert_path.is_some() {
                ("crowdsec.cert_path", "key_path")
            } else {
                ("crowdsec.key_path", "cert_path")
            };
            return Err((
                set,
                format!("`crowdsec.cert_path` and `crowdsec.key_path` go together: set `crowdsec.{missing}` too (the client certificate and its private key)"),
            ));
        }
        if self.has_client_cert() {
            let secret = [
                ("api_key", self.api_key.is_some()),
                ("api_key_file", self.api_key_file.is_some()),
                ("login", self.login.is_some()),
                ("password", self.password.is_some()),
                ("credentials_file", self.credentials_file.is_some()),
            ];
            if let Some((other, _)) = secret.iter().find(|(_, set)| *set) {
                return Err((
                    "crowdsec.cert_path",
                    format!("`crowdsec.cert_path` and `crowdsec.{other}` exclude each other: with a client certificate LAPI authenticates by the certificate (bouncer and machine), so remove `{other}`"),
                ));
            }
        }
        if !self.is_https() {
            let tls_only = [
                ("crowdsec.ca_cert_path", self.ca_cert_path.is_some()),
                ("crowdsec.cert_path", self.cert_path.is_some()),
                ("crowdsec.insecure_skip_verify", self.insecure_skip_verify),
            ];
            if let Some((key, _)) = tls_only.iter().find(|(_, set)| *set) {
                return Err((
                    key,
                    format!(
                        "needs an https:// `crowdsec.lapi_url` (it is `{}`)",
                        self.lapi_url
                    ),
                ));
            }
        }
        if self.insecure_skip_verify && self.ca_cert_path.is_some() {
            return Err(("crowdsec", pair("insecure_skip_verify", "ca_cert_path")));
        }
        if !self.is_bouncer() && !self.is_machine() {
            return Err(("crowdsec", "nothing to do: set `api_key` (pull decisions, from `cscli bouncers add NAME`) and/or `login`+`password` (push alerts, from `cscli machines add NAME`), or `cert_path`+`key_path` (both, by TLS client certificate)".into()));
        }
        Ok(())
    }
}
