//! TLS towards LAPI, as CrowdSec's own bouncers configure it: `ca_cert_path` (the CA bundle
//! that signs LAPI's certificate), `cert_path` + `key_path` (a client certificate LAPI
//! authenticates instead of a bouncer key or a machine password) and `insecure_skip_verify`.
//!
//! Everything is read and checked when the configuration is validated, so `check-config` and a
//! (re)start name the key and the file at fault; a handshake that fails later is explained in
//! words ([`explain_handshake`]). Also the start-up warnings about weak transport
//! ([`startup_warnings`]).
//!
//! Unlike the Go bouncers, which add `ca_cert_path` to the system pool, the bundle *replaces*
//! the Mozilla roots: naming the CA that signs LAPI means no other CA can vouch for it.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use thiserror::Error;

use crate::config::settings::CrowdsecSettings;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("key `crowdsec.{key}`: cannot read {}: {error}", path.display())]
    Unreadable {
        key: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("key `crowdsec.{key}`: {}: {message}", path.display())]
    Invalid {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// The TLS settings of the LAPI client, checked.
#[derive(Clone)]
pub struct LapiTls {
    config: ureq::tls::TlsConfig,
    /// A client certificate authenticates us (no bouncer key, no machine password).
    pub client_cert: bool,
    /// `ca_cert_path` is set.
    pub custom_ca: bool,
}

// The key stays out of debug output.
impl std::fmt::Debug for LapiTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LapiTls")
            .field("client_cert", &self.client_cert)
            .field("custom_ca", &self.custom_ca)
            .field("verify", &!self.config.disable_verification())
            .finish()
    }
}

impl LapiTls {
    /// Reads and checks `ca_cert_path`, `cert_path` and `key_path`: PEM that parses, a CA
    /// rustls accepts as a root, a private key of a kind it can sign with that fits the
    /// certificate.
    pub fn load(c: &CrowdsecSettings) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let ca = match &c.ca_cert_path {
            Some(path) => {
                let certs = read_certs("ca_cert_path", path)?;
                for (n, cert) in certs.iter().enumerate() {
                    roots.add(cert.clone()).map_err(|e| TlsError::Invalid {
                        key: "ca_cert_path",
                        path: path.clone(),
                        message: format!("certificate {} cannot be a trust root: {e}", n + 1),
                    })?;
                }
                Some(certs)
            }
            None => None,
        };
        let client = match (&c.cert_path, &c.key_path) {
            (Some(cert_path), Some(key_path)) => {
                let chain = read_certs("cert_path", cert_path)?;
                let (key_der, key) = read_key(key_path)?;
                // What ureq does with them later (and panics on if it fails): check it now.
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .and_then(|b| {
                        b.with_root_certificates(roots)
                            .with_client_auth_cert(chain.clone(), key_der)
                    })
                    .map_err(|e| TlsError::Invalid {
                        key: "key_path",
                        path: key_path.clone(),
                        message: format!(
                            "cannot be used with the certificate in {}: {e}",
                            cert_path.display()
                        ),
                    })?;
                Some((chain, key, key_path))
            }
            _ => None,
        };

        let mut config =
            ureq::tls::TlsConfig::builder().disable_verification(c.insecure_skip_verify);
        if let Some(certs) = &ca {
            let certs: Vec<_> = certs
                .iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            config = config.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let client_cert = client.is_some();
        if let Some((chain, key, key_path)) = client {
            let chain: Vec<_> = chain
                .iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            // The same PEM block rustls accepted above (ureq keeps its key kinds private).
            let key = ureq::tls::PrivateKey::from_pem(&key).map_err(|e| TlsError::Invalid {
                key: "key_path",
                path: key_path.clone(),
                message: format!("not a usable private key: {e}"),
            })?;
            config = config.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
        }
        Ok(Self {
            config: config.build(),
            client_cert,
            custom_ca: ca.is_some(),
        })
    }

    pub fn ureq_config(&self) -> ureq::tls::TlsConfig {
        self.config.clone()
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Unreadable {
        key,
        path: path.to_owned(),
        error,
    })
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |message: String| TlsError::Invalid {
        key,
        path: path.to_owned(),
        message,
    };
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            "holds no certificate: expected PEM `-----BEGIN CERTIFICATE-----` blocks".into(),
        ));
    }
    Ok(certs)
}

/// The key, parsed, and the PEM text it came from.
fn read_key(path: &Path) -> Result<(PrivateKeyDer<'static>, Vec<u8>), TlsError> {
    let pem = read("key_path", path)?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Invalid {
        key: "key_path",
        path: path.to_owned(),
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "holds no private key: expected an unencrypted PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block".into(),
            e => format!("not valid PEM: {e}"),
        },
    })?;
    Ok((der, pem))
}

/// Words for a failed TLS handshake with LAPI, or `None` when `e` is not one.
pub fn explain_handshake(e: &ureq::Error, tls: &LapiTls) -> Option<String> {
    let rustls_error = match e {
        ureq::Error::Rustls(r) => r,
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        _ => return None,
    };
    use rustls::{CertificateError as C, Error as R};
    let text = match rustls_error {
        R::InvalidCertificate(C::UnknownIssuer | C::BadSignature) if tls.custom_ca => {
            format!("LAPI's certificate is not signed by a CA in crowdsec.ca_cert_path ({rustls_error})")
        }
        R::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "LAPI's certificate is not signed by a CA we trust ({rustls_error}): set crowdsec.ca_cert_path to the CA bundle that signed it"
        ),
        R::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "LAPI's certificate is not valid for the host in crowdsec.lapi_url ({rustls_error})"
        ),
        R::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => format!("LAPI's certificate is outside its validity period ({rustls_error})"),
        R::InvalidCertificate(_) => format!("LAPI's certificate was refused ({rustls_error})"),
        R::AlertReceived(_) if tls.client_cert => format!(
            "LAPI refused the handshake ({rustls_error}): is our client certificate (crowdsec.cert_path) signed by the CA in LAPI's api.server.tls.ca_cert_path?"
        ),
        R::AlertReceived(_) => format!(
            "LAPI refused the handshake ({rustls_error}): does it require a client certificate (crowdsec.cert_path, crowdsec.key_path)?"
        ),
        _ => format!("handshake failed ({rustls_error})"),
    };
    Some(format!("TLS: {text}"))
}

/// Lines for the start-up log: verification switched off; credentials in clear text.
pub fn startup_warnings(c: &CrowdsecSettings) -> Vec<String> {
    let mut out = Vec::new();
    if c.insecure_skip_verify {
        out.push(format!(
            "portsentry: warning: crowdsec: insecure_skip_verify = true: the certificate of LAPI at {} is not verified, so anyone on the path can pose as LAPI (feed decisions, read our credentials); for tests only, set crowdsec.ca_cert_path instead",
            c.lapi_url
        ));
    }
    if !c.is_https() {
        let mut secrets = Vec::new();
        if c.api_key.is_some() || c.api_key_file.is_some() {
            secrets.push("the bouncer key");
        }
        if c.login.is_some() || c.credentials_file.is_some() {
            secrets.push("the machine password");
        }
        let hosts = crate::net::netinfo::lapi_hosts(&c.lapi_url);
        let local = !hosts.is_empty() && hosts.iter().all(|h| h.is_loopback());
        if !secrets.is_empty() && !local {
            out.push(format!(
                "portsentry: warning: crowdsec: lapi_url {} is plain http:// to another host: {} {} the network in clear text; use https:// (with crowdsec.ca_cert_path for a private CA)",
                c.lapi_url,
                secrets.join(" and "),
                if secrets.len() > 1 { "cross" } else { "crosses" }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> CrowdsecSettings {
        CrowdsecSettings {
            lapi_url: url.into(),
            api_key: Some("k".into()),
            ..Default::default()
        }
    }

    #[test]
    fn plain_http_warns_unless_loopback() {
        for url in [
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
            "http://127.1.2.3",
        ] {
            assert!(startup_warnings(&settings(url)).is_empty(), "{url}");
        }
        let w = startup_warnings(&settings("http://10.0.0.1:8080"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("plain http:// to another host: the bouncer key crosses the network"),
            "{w:?}"
        );
        let both = CrowdsecSettings {
            login: Some("m".into()),
            password: Some("p".into()),
            ..settings("http://[fd00::1]:8080")
        };
        assert!(startup_warnings(&both)[0]
            .contains("the bouncer key and the machine password cross the network"));
        assert!(startup_warnings(&settings("https://10.0.0.1:8080")).is_empty());
        let insecure = CrowdsecSettings {
            insecure_skip_verify: true,
            ..settings("https://10.0.0.1:8080")
        };
        assert!(startup_warnings(&insecure)[0].contains("insecure_skip_verify = true"));
    }

    #[test]
    fn pem_errors_name_the_key_and_the_file() {
        let dir = std::env::temp_dir().join(format!("ps-cs-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not pem at all\n").unwrap();
        let broken = dir.join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        let with = |f: &dyn Fn(&mut CrowdsecSettings)| {
            let mut c = settings("https://10.0.0.1");
            f(&mut c);
            LapiTls::load(&c).unwrap_err().to_string()
        };
        let e = with(&|c| c.ca_cert_path = Some(dir.join("missing.pem")));
        assert!(
            e.starts_with("key `crowdsec.ca_cert_path`: cannot read ") && e.contains("missing.pem"),
            "{e}"
        );
        let e = with(&|c| c.ca_cert_path = Some(garbage.clone()));
        assert!(
            e.starts_with("key `crowdsec.ca_cert_path`: ")
                && e.contains("garbage.pem: holds no certificate"),
            "{e}"
        );
        let e = with(&|c| c.ca_cert_path = Some(broken.clone()));
        assert!(e.contains("broken.pem: not valid PEM"), "{e}");
        let e = with(&|c| {
            c.cert_path = Some(garbage.clone());
            c.key_path = Some(garbage.clone());
        });
        assert!(e.starts_with("key `crowdsec.cert_path`: "), "{e}");
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, TEST_CERT).unwrap();
        let e = with(&|c| {
            c.cert_path = Some(cert.clone());
            c.key_path = Some(garbage.clone());
        });
        assert!(
            e.starts_with("key `crowdsec.key_path`: ") && e.contains("holds no private key"),
            "{e}"
        );
        // A well-formed CA bundle loads.
        let mut c = settings("https://10.0.0.1");
        c.ca_cert_path = Some(cert.clone());
        let tls = LapiTls::load(&c).unwrap();
        assert!(tls.custom_ca && !tls.client_cert);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A throwaway self-signed certificate (its key was discarded).
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBkjCCATmgAwIBAgIUCo68FnxpX20XwESjB3ra1BKekAIwCgYIKoZIzj0EAwIw
HzEdMBsGA1UEAwwUcG9ydHNlbnRyeS11bml0LXRlc3QwHhcNMjYxMTI1MTY1MzI3
WhcNMzYxMTIyMTY1MzI3WjAfMR0wGwYDVQQDDBRwb3J0c2VudHJ5LXVuaXQtdGVz
dDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABDhtj2X2H5xR/oPpndQaDb1fOc5/
ycbyhbwf/RoK1jNs9nrLttzUKnMPiqzSNHKQQcSIOAXrYQHefNvMC4pM7zejUzBR
MB0GA1UdDgQWBBRU1tmVlsQrsv+f9K7+lJDogvhiZjAfBgNVHSMEGDAWgBRU1tmV
lsQrsv+f9K7+lJDogvhiZjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cA
MEQCIF2r72lcq53KKnJBLLUZaTCPpE3fFOmkcmQ08+RB1yN/AiA0ncQXI25Ql2cU
qBi3ef3cSQXWQ1M569m5tmUUuFW+Ng==
-----END CERTIFICATE-----
";
}
