//! The `[hooks]` and `[crowdsec]` tables.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::values;

pub const DEFAULT_HOSTS_DENY: &str = "/etc/hosts.deny";
pub const DEFAULT_CROWDSEC_SCENARIO: &str = "portsentry/port-scan";

/// PortSentry's KILL_* response hooks, made safe: argv lists, never a shell.
///
/// Placeholders in every argv element and in `hosts_deny`: `$TARGET$`/`{target}` (source
/// address), `$PORT$`/`{port}` (destination port), `$MODE$`/`{mode}` (`tcp`/`udp`),
/// `{proto}` (`TCP`/`UDP`), `{scan}` (scan type text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookSettings {
    /// KILL_RUN_CMD: run on every ban; `[]` runs nothing.
    #[serde(with = "values::argv")]
    pub run_cmd: Option<Vec<String>>,
    /// KILL_HOSTS_DENY: this line is appended to `hosts_deny_file` on every ban.
    #[serde(with = "values::hosts_deny_line")]
    pub hosts_deny: Option<String>,
    #[serde(with = "values::required_path")]
    pub hosts_deny_file: PathBuf,
    /// KILL_ROUTE: run on every ban (after hosts_deny).
    #[serde(with = "values::targeted_argv")]
    pub kill_route: Option<Vec<String>>,
    /// KILL_RUN_CMD_FIRST: run_cmd before hosts_deny and kill_route instead of after.
    pub run_cmd_first: bool,
    /// Also run `run_cmd` for bans that are not enforced (detect mode, `block_tcp`/`block_udp`
    /// off): PortSentry's BLOCK_TCP/BLOCK_UDP = 2. hosts_deny and kill_route block, so they run
    /// only for enforced bans.
    pub run_cmd_always: bool,
    /// Each command is killed after this long and counted as failed.
    #[serde(with = "values::bounded_duration")]
    pub timeout: Duration,
    /// Ban responses (each a sequence of the hooks above) running at once; more wait in the
    /// queue.
    #[serde(deserialize_with = "values::int_in::<_, _, 1, 1024>")]
    pub max_concurrent: usize,
    /// Ban responses that may wait, in ban order, for one of the `max_concurrent` slots; a
    /// response finding the queue full is skipped. 0: skip whenever every slot is busy.
    #[serde(deserialize_with = "values::int_in::<_, _, 0, 65536>")]
    pub queue: usize,
    /// Ban responses admitted (started or queued) per rolling minute at most; more are skipped,
    /// not queued.
    #[serde(deserialize_with = "values::int_in::<_, _, 0, 4294967295>")]
    pub max_per_minute: u32,
}

impl Default for HookSettings {
    fn default() -> Self {
        Self {
            run_cmd: None,
            hosts_deny: None,
            hosts_deny_file: PathBuf::from(DEFAULT_HOSTS_DENY),
            kill_route: None,
            run_cmd_first: false,
            run_cmd_always: false,
            timeout: Duration::from_secs(10),
            max_concurrent: 4,
            queue: 256,
            max_per_minute: 60,
        }
    }
}

impl HookSettings {
    pub fn is_empty(&self) -> bool {
        self.run_cmd.is_none() && self.hosts_deny.is_none() && self.kill_route.is_none()
    }
}

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

/// What `[notify] alert` sends at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertMode {
    /// No message per ban: the digest tells.
    #[default]
    Off,
    /// One message per newly banned source (local detections), within `max_alerts_per_hour`.
    NewBan,
}

/// `[notify]`: tell the administrator by mail (SMTP or a local sendmail) and/or a webhook:
/// a digest per interval and, optionally, one alert per new ban. Reloaded on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySettings {
    /// Mail recipients; `[]` sends no mail.
    #[serde(deserialize_with = "values::mailboxes")]
    pub email_to: Vec<String>,
    /// The sender; "" = `portsentry@<hostname>`.
    pub email_from: String,
    /// `smtp://host:25` (plain: loopback only unless `smtp_allow_plaintext`),
    /// `smtp://host:587?tls=required` (STARTTLS, fails closed), `smtps://user@host:465`
    /// (implicit TLS); "" = no SMTP.
    pub smtp_url: String,
    /// The SMTP password (first line), for the user named in `smtp_url`; the file must be
    /// private (mode 0600). Sent only over TLS.
    #[serde(with = "values::optional_path")]
    pub smtp_password_file: Option<PathBuf>,
    /// PEM bundle of the CA(s) signing the SMTP server's certificate, trusted *instead of*
    /// the Mozilla roots.
    #[serde(with = "values::optional_path")]
    pub smtp_ca_cert_path: Option<PathBuf>,
    /// Allow plain `smtp://` to a host that is not loopback (mail and its contents cross the
    /// network in clear text).
    pub smtp_allow_plaintext: bool,
    /// A local MTA's sendmail (`/usr/sbin/sendmail`) instead of `smtp_url`; "" = none.
    #[serde(with = "values::optional_path")]
    pub sendmail: Option<PathBuf>,
    /// JSON POST of every alert and digest (`"version": 1`); "" = none.
    pub webhook_url: String,
    /// Bearer token for the webhook (first line; private file).
    #[serde(with = "values::optional_path")]
    pub webhook_token_file: Option<PathBuf>,
    /// One digest per interval (none when nothing happened); "off" = none.
    #[serde(with = "values::interval_or_off")]
    pub digest_interval: Option<Duration>,
    /// "new-ban": one message per newly banned source, at once; "off": digests only.
    pub alert: AlertMode,
    /// Alerts per rolling hour at most; more are folded into the next digest ("N more").
    #[serde(deserialize_with = "values::int_in::<_, _, 0, 1000000>")]
    pub max_alerts_per_hour: u32,
    /// A message not delivered within this long is dropped (with a log line).
    #[serde(with = "values::bounded_duration")]
    pub max_age: Duration,
    /// Messages the outbox (`state_dir/notify-outbox/`) holds at most; a full outbox refuses
    /// new ones (logged).
    #[serde(deserialize_with = "values::int_in::<_, _, 1, 1000000>")]
    pub outbox_max: usize,
}

pub const DEFAULT_DIGEST_INTERVAL: Duration = Duration::from_secs(3600);

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            email_to: Vec::new(),
            email_from: String::new(),
            smtp_url: String::new(),
            smtp_password_file: None,
            smtp_ca_cert_path: None,
            smtp_allow_plaintext: false,
            sendmail: None,
            webhook_url: String::new(),
            webhook_token_file: None,
            digest_interval: Some(DEFAULT_DIGEST_INTERVAL),
            alert: AlertMode::Off,
            max_alerts_per_hour: 20,
            max_age: Duration::from_secs(24 * 3600),
            outbox_max: 1000,
        }
    }
}

impl NotifySettings {
    /// Whether any transport is configured.
    pub fn is_enabled(&self) -> bool {
        self.mail_enabled() || !self.webhook_url.is_empty()
    }

    /// Mail goes out (recipients and a way to send).
    pub fn mail_enabled(&self) -> bool {
        !self.email_to.is_empty() && (!self.smtp_url.is_empty() || self.sendmail.is_some())
    }

    /// Rules between keys of the table; `Err((key, message))` names the key at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.smtp_url.is_empty() && self.sendmail.is_some() {
            return Err((
                "notify.sendmail",
                "`notify.smtp_url` and `notify.sendmail` exclude each other: use one".into(),
            ));
        }
        let mail_way = !self.smtp_url.is_empty() || self.sendmail.is_some();
        if !self.email_to.is_empty() && !mail_way {
            return Err((
                "notify.email_to",
                "needs a way to send: set `notify.smtp_url` (e.g. \"smtp://127.0.0.1:25\") or `notify.sendmail` (e.g. \"/usr/sbin/sendmail\")".into(),
            ));
        }
        if mail_way && self.email_to.is_empty() {
            return Err((
                "notify.email_to",
                "is empty: name at least one recipient, e.g. [\"root@example.org\"]".into(),
            ));
        }
        if !self.email_from.is_empty() {
            if let Err(e) = self.email_from.parse::<lettre::message::Mailbox>() {
                return Err((
                    "notify.email_from",
                    format!("`{}` is not a mail address: {e}", self.email_from),
                ));
            }
        }
        if !self.smtp_url.is_empty() {
            let url = super::smtp_url::SmtpUrl::parse(&self.smtp_url)
                .map_err(|e| ("notify.smtp_url", e))?;
            if !url.tls() {
                if !url.is_loopback() && !self.smtp_allow_plaintext {
                    return Err(("notify.smtp_url", format!(
                        "`{}` is plain SMTP to a host that is not loopback: mail would cross the network in clear text; use \"smtp://{}:587?tls=required\" or smtps://, or set `notify.smtp_allow_plaintext = true`",
                        self.smtp_url, url.host
                    )));
                }
                if self.smtp_password_file.is_some() {
                    return Err(("notify.smtp_password_file", format!(
                        "a password is sent only over TLS, and `{}` is plain SMTP: use \"?tls=required\" (STARTTLS) or smtps://",
                        self.smtp_url
                    )));
                }
            }
            if self.smtp_password_file.is_some() && url.user.is_none() {
                return Err(("notify.smtp_url", format!(
                    "`notify.smtp_password_file` is set but `{}` names no user: write it as smtps://USER@host:465",
                    self.smtp_url
                )));
            }
            if self.smtp_ca_cert_path.is_some() && !url.tls() {
                return Err((
                    "notify.smtp_ca_cert_path",
                    format!("needs TLS, and `{}` is plain SMTP", self.smtp_url),
                ));
            }
        } else {
            for (key, set) in [
                (
                    "notify.smtp_password_file",
                    self.smtp_password_file.is_some(),
                ),
                ("notify.smtp_ca_cert_path", self.smtp_ca_cert_path.is_some()),
            ] {
                if set {
                    return Err((key, "needs `notify.smtp_url`".into()));
                }
            }
        }
        if !self.webhook_url.is_empty() {
            let u = self.webhook_url.to_ascii_lowercase();
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err((
                    "notify.webhook_url",
                    format!("`{}` is not an http:// or https:// URL", self.webhook_url),
                ));
            }
        } else if self.webhook_token_file.is_some() {
            return Err((
                "notify.webhook_token_file",
                "needs `notify.webhook_url`".into(),
            ));
        }
        Ok(())
    }
}
