//! SMTP and sendmail delivery through lettre's blocking transports, on the notifier's thread.
//!
//! Owns: acting on `smtp_url` (read by `config::smtp_url`), reading the password and CA
//! files, and saying why a delivery failed in words an administrator acts on (connection
//! refused, TLS, authentication, rejected). TLS is fail closed: `?tls=required` makes lettre
//! refuse a server that offers no STARTTLS before any AUTH, and the config refuses a password
//! over plain SMTP, so a password never crosses the network in clear text.

use std::{path::Path, time::Duration};

use lettre::{
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, CertificateStore, Tls, TlsParameters},
    },
    SendmailTransport, SmtpTransport, Transport,
};

use super::{read_secret, DeliveryError, TransportError};
use crate::config::settings::NotifySettings;
pub use crate::config::smtp_url::{Security, SmtpUrl};

/// A delivery gives up on a silent server after this long.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

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
