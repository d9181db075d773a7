//! `notify.smtp_url`'s syntax: scheme, host, port, user and `tls=required`, read once for the
//! config's checks (a password in the URL, plain SMTP off loopback) and for the transport.

use std::net::IpAddr;

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
