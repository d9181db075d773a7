//! A message as mail: From, To, Subject, Date (when it was made), a Message-ID that stays the
//! same across retries and restarts, `Auto-Submitted: auto-generated` (RFC 3834: no
//! vacation replies to it), text/plain UTF-8.

use lettre::message::{
    header::{ContentType, Header, HeaderName, HeaderValue},
    Mailbox,
};

use super::{outbox::Outgoing, DeliveryError};
use crate::config::settings::NotifySettings;

/// `Auto-Submitted: auto-generated`.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// The sender: `email_from`, else `portsentry@<hostname>`.
pub fn sender(s: &NotifySettings, host: &str) -> String {
    if s.email_from.is_empty() {
        format!("portsentry@{host}")
    } else {
        s.email_from.clone()
    }
}

pub fn build(
    s: &NotifySettings,
    host: &str,
    m: &Outgoing,
) -> Result<lettre::Message, DeliveryError> {
    let bad = |what: &str, e: String| DeliveryError {
        reason: "invalid message",
        detail: format!("{what}: {e}"),
    };
    let from: Mailbox = sender(s, host)
        .parse()
        .map_err(|e: lettre::address::AddressError| bad("email_from", e.to_string()))?;
    let mut b = lettre::Message::builder()
        .from(from)
        .subject(m.subject.clone())
        .date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(m.created_ms))
        .message_id(Some(format!("<{}>", m.id)))
        .header(AutoSubmitted)
        .header(ContentType::TEXT_PLAIN);
    for to in &s.email_to {
        let mb: Mailbox = to
            .parse()
            .map_err(|e: lettre::address::AddressError| bad("email_to", e.to_string()))?;
        b = b.to(mb);
    }
    // 8bit when the text allows (short lines: readable in any mail tool and in the raw
    // message), else lettre's choice (quoted-printable for long lines).
    let body = lettre::message::Body::new_with_encoding(
        m.text.clone(),
        lettre::message::header::ContentTransferEncoding::EightBit,
    )
    .unwrap_or_else(|_| lettre::message::Body::new(m.text.clone()));
    b.body(body)
        .map_err(|e| bad("building the mail", e.to_string()))
}
