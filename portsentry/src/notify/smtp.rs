//! SMTP and sendmail delivery through lettre's blocking transports, on the notifier's thread.
//!
//! Owns: reading `smtp_url` (scheme, host, port, user, `tls=required`), the password and CA
//! files, and saying why a delivery failed in words an administrator acts on (connection
//! refused, TLS, authentication, rejected). TLS is fail closed: `?tls=required` makes lettre
//! refuse a server that offers no STARTTLS before any AUTH, and the config refuses a password
//! over plain SMTP, so a password never crosses the network in clear text.

use std::{net::IpAddr, path::Path, time::Duration};

use lettre::{
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, CertificateStore, Tls, TlsParameters},
    },
    SendmailTransport, SmtpTransport, Transport,
};

use super::{read_secret, DeliveryError, TransportError};
use crate::config::settings::NotifySettings;

/// A delivery gives up on a silent server after this long.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// The parts of `smtp_url` portsentry acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub security: Security,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// `smtp://`: no TLS.
    Plain,
    /// `smtp://…?tls=required`: STARTTLS or nothing.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

impl SmtpUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text)
            .map_err(|e| format!("`{text}` is not a URL ({e}); e.g. \"smtp://127.0.0.1:25\""))?;
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some("required")) => (Security::StartTls, 587),
            ("smtps", None) => (Security::Implicit, 465),
            ("smtp", Some(other)) => {
                return Err(format!(
                    "`tls={other}` in `{text}`: only \"tls=required\" (STARTTLS that fails closed) is accepted"
                ))
            }
            (scheme, _) => {
                return Err(format!(
                    "`{text}`: the scheme must be smtp:// or smtps://, not `{scheme}://`"
                ))
            }
        };
        if url.password().is_some() {
            return Err(format!(
                "`{text}` holds a password: put it in `notify.smtp_password_file` (mode 0600) instead"
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{text}` names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let user = (!url.username().is_empty()).then(|| percent_encoding_decode(url.username()));
        Ok(Self {
            host,
            port: url.port().unwrap_or(default_port),
            user,
            security,
        })
    }

    pub fn tls(&self) -> bool {
        self.security != Security::Plain
    }

    /// `localhost` or a loopback address: plain SMTP stays on this host.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
    }
}

fn percent_encoding_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("u={s}").as_bytes())
        .next()
        .map_or_else(|| s.to_owned(), |(_, v)| v.into_owned())
}

/// A mail transport built from the settings (files read once per build: start, reload, test).
pub enum MailSender {
    Smtp {
        transport: Box<SmtpTransport>,
        url: SmtpUrl,
    },
    Sendmail(SendmailTransport),
}

impl MailSender {
    /// `None` when no mail is configured.
    pub fn load(s: &NotifySettings) -> Result<Option<Self>, TransportError> {
        if !s.mail_enabled() {
            return Ok(None);
        }
        if let Some(path) = &s.sendmail {
            return Ok(Some(Self::Sendmail(SendmailTransport::new_with_command(
                path.as_os_str(),
            ))));
        }
        let url = SmtpUrl::parse(&s.smtp_url).map_err(|message| TransportError::Invalid {
            key: "smtp_url",
            message,
        })?;
        let mut builder = SmtpTransport::builder_dangerous(url.host.clone())
            .port(url.port)
            .timeout(Some(SMTP_TIMEOUT));
        if url.tls() {
            let mut params = TlsParameters::builder(url.host.clone());
            if let Some(ca) = &s.smtp_ca_cert_path {
                params = params
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(read_ca(ca)?);
            }
            let params = params.build_rustls().map_err(|e| TransportError::Invalid {
                key: "smtp_url",
                message: format!("TLS setup: {e}"),
            })?;
            builder = builder.tls(match url.security {
                Security::Implicit => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if let (Some(user), Some(file)) = (&url.user, &s.smtp_password_file) {
            let password = read_secret("smtp_password_file", file)?;
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Some(Self::Smtp {
            transport: Box::new(builder.build()),
            url,
        }))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Smtp { .. } => "smtp",
            Self::Sendmail(_) => "sendmail",
        }
    }

    pub fn send(&self, mail: &lettre::Message) -> Result<(), DeliveryError> {
        match self {
            Self::Smtp { transport, url } => transport
                .send(mail)
                .map(|_| ())
                .map_err(|e| explain_smtp(&e, url)),
            Self::Sendmail(t) => t.send(mail).map_err(|e| DeliveryError {
                reason: "sendmail",
                detail: e.to_string(),
            }),
        }
    }
}

fn read_ca(path: &Path) -> Result<Certificate, TransportError> {
    let pem = std::fs::read(path).map_err(|e| TransportError::Invalid {
        key: "smtp_ca_cert_path",
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(TransportError::Invalid {
            key: "smtp_ca_cert_path",
            message: format!("{} holds no PEM certificate", path.display()),
        });
    }
    Certificate::from_pem(&pem).map_err(|e| TransportError::Invalid {
        key: "smtp_ca_cert_path",
        message: format!("{}: {e}", path.display()),
    })
}

/// Why an SMTP delivery failed, in the administrator's words.
fn explain_smtp(e: &lettre::transport::smtp::Error, url: &SmtpUrl) -> DeliveryError {
    use std::error::Error as _;
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let lower = chain.to_ascii_lowercase();
    let at = format!("{}:{}", url.host, url.port);
    let reason = if lower.contains("starttls") {
        "TLS: the server offers no STARTTLS (nothing was sent, no password)"
    } else if e.is_tls() || lower.contains("certificate") || lower.contains("tls") {
        "TLS"
    } else if lower.contains("connection refused") {
        "connection refused"
    } else if e.is_timeout() || lower.contains("timed out") {
        "timed out"
    } else if matches!(e.status().map(|c| c.to_string()), Some(c) if ["530", "534", "535"].contains(&c.as_str()))
        || lower.contains("authentication")
    {
        "authentication"
    } else if e.is_permanent() {
        "rejected"
    } else {
        "failed"
    };
    DeliveryError {
        reason,
        detail: format!("{at}: {chain}"),
    }
}
