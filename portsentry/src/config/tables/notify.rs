//! The `[notify]` table: mail (SMTP or sendmail) and webhook transports, the digest and alert
//! limits, and the rules between its keys. Sending is `notify/`'s.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::config::{smtp_url::SmtpUrl, values};

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
            let url = SmtpUrl::parse(&self.smtp_url).map_err(|e| ("notify.smtp_url", e))?;
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
