//! Fleet mode: CrowdSec's Local API (LAPI) as the shared memory of many portsentry hosts.
//!
//! - Bouncer ([`bouncer`]): pulls the decision stream every `update_frequency` and hands the
//!   daemon [`decisions::FleetUpdate`]s to enforce in the kernel tables.
//! - Machine ([`pusher`]): turns each local ban into a CrowdSec alert carrying a ban decision,
//!   batches them, persists the queue in `state_dir` and retries with backoff while LAPI is away.
//!
//! Both run on their own threads with blocking HTTP: a slow or dead LAPI never stalls the event
//! loop, and the data plane never waits for anything.

pub mod alerts;
pub mod bouncer;
pub mod decisions;
pub mod godur;
pub mod lapi;
pub mod pusher;
pub mod tls;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use thiserror::Error;

use crate::{
    config::settings::CrowdsecSettings,
    report::{ReportGate, REPORT_INTERVAL},
    secret_file::{first_line, read_private, SecretFileError},
};

/// Sent as User-Agent: LAPI records it as the bouncer's version (`cscli bouncers list`).
pub const USER_AGENT: &str = concat!("portsentry/", env!("CARGO_PKG_VERSION"));

/// The `origin` of the decisions we push; bouncers can filter on it (`origins=portsentry`).
pub const DECISION_ORIGIN: &str = "portsentry";

pub type Log = crate::detect::logging::LogFn;

/// One outage of LAPI as a worker sees it: failures are reported at most once per
/// [`REPORT_INTERVAL`] (the first at once), and its length is told once it works again.
pub struct LapiOutage {
    what: &'static str,
    failing_since: Option<Instant>,
    gate: ReportGate,
}

impl LapiOutage {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            failing_since: None,
            gate: ReportGate::new(REPORT_INTERVAL),
        }
    }

    pub fn failed(&mut self, log: &Log, detail: impl FnOnce() -> String) {
        self.failing_since.get_or_insert_with(Instant::now);
        let Some(held_back) = self.gate.try_report() else {
            return;
        };
        let again = if held_back > 0 {
            format!(" ({held_back} more failures since the last report)")
        } else {
            String::new()
        };
        log(format!(
            "portsentry: error: crowdsec: {}: {}{again}",
            self.what,
            detail()
        ));
    }

    /// Returns how long it had been failing, once, when it works again.
    pub fn recovered(&mut self) -> Option<Duration> {
        self.gate.reset();
        self.failing_since.take().map(|t| t.elapsed())
    }
}

#[derive(Debug, Error)]
pub enum CredentialsError {
    /// A secret file that cannot be read or that others can access.
    #[error("key `crowdsec.{key}`: {error}")]
    Secret {
        key: &'static str,
        error: SecretFileError,
    },
    #[error("key `crowdsec.{key}`: {}: {message}", path.display())]
    Invalid {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// Why `[crowdsec]`'s files cannot be used: a secret (credentials) or a certificate (TLS).
#[derive(Debug, Error)]
pub enum CheckError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The secrets of `[crowdsec]`, read from the config or from their files.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Bouncer key: pull decisions.
    pub api_key: Option<String>,
    /// Machine login and password: push alerts.
    pub machine: Option<(String, String)>,
}

// Never print secrets, not even in debug output.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("api_key", &self.api_key.as_ref().map(|_| "(hidden)"))
            .field("login", &self.machine.as_ref().map(|(l, _)| l))
            .finish()
    }
}

impl Credentials {
    /// Reads `api_key_file` and `credentials_file` if set. Called when the configuration is
    /// validated, so `check-config` and a (re)start report a missing or empty file.
    pub fn resolve(c: &CrowdsecSettings) -> Result<Self, CredentialsError> {
        let api_key = match (&c.api_key, &c.api_key_file) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(path)) => Some(read_key_file(path)?),
            (None, None) => None,
        };
        let machine = match (&c.login, &c.password, &c.credentials_file) {
            (Some(l), Some(p), _) => Some((l.clone(), p.clone())),
            (_, _, Some(path)) => Some(read_credentials_file(path)?),
            _ => None,
        };
        Ok(Self { api_key, machine })
    }
}

/// Reads a secret file, refusing one that group or others may read or write (mode & 077), as
/// ssh refuses such a private key: any local user could take the fleet's key or forge its
/// alerts. Checked on the open file, so the file checked is the file read.
fn read_secret(key: &'static str, path: &Path) -> Result<String, CredentialsError> {
    read_private(path).map_err(|error| CredentialsError::Secret { key, error })
}

fn read_key_file(path: &Path) -> Result<String, CredentialsError> {
    let text = read_secret("api_key_file", path)?;
    first_line(&text).ok_or_else(|| CredentialsError::Invalid {
        key: "api_key_file",
        path: path.to_owned(),
        message: "is empty: put the key from `cscli bouncers add NAME -o raw` on its first line"
            .into(),
    })
}

/// cscli's `local_api_credentials.yaml`: `url:`, `login:` and `password:` lines (plain or quoted).
fn read_credentials_file(path: &Path) -> Result<(String, String), CredentialsError> {
    let text = read_secret("credentials_file", path)?;
    parse_credentials(&text).map_err(|message| CredentialsError::Invalid {
        key: "credentials_file",
        path: path.to_owned(),
        message,
    })
}

fn parse_credentials(text: &str) -> Result<(String, String), String> {
    let mut login = None;
    let mut password = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("line {}: expected `key: value`", n + 1));
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value)
            .to_owned();
        match key.trim() {
            "login" => login = Some(value),
            "password" => password = Some(value),
            _ => {}
        }
    }
    match (login, password) {
        (Some(l), Some(p)) if !l.is_empty() && !p.is_empty() => Ok((l, p)),
        _ => Err("needs `login:` and `password:` lines, as written by `cscli machines add NAME --password P -f FILE`".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn cscli_credentials_files() {
        let text = "url: http://127.0.0.1:8080/\nlogin: host-a\npassword: \"s3cr:et\"\n";
        assert_eq!(
            parse_credentials(text),
            Ok(("host-a".into(), "s3cr:et".into()))
        );
        assert!(parse_credentials("login: a\n")
            .unwrap_err()
            .contains("password"));
        assert!(parse_credentials("garbage")
            .unwrap_err()
            .starts_with("line 1:"));
    }

    #[test]
    fn secret_files_are_read_and_errors_name_key_and_path() {
        let dir = std::env::temp_dir().join(format!("ps-cs-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        write_private(&key, "\n  abc123  \n");
        let c = CrowdsecSettings {
            lapi_url: "http://127.0.0.1:8080".into(),
            api_key_file: Some(key.clone()),
            ..Default::default()
        };
        assert_eq!(
            Credentials::resolve(&c).unwrap().api_key.as_deref(),
            Some("abc123")
        );
        write_private(&key, "\n");
        let e = Credentials::resolve(&c).unwrap_err().to_string();
        assert!(
            e.starts_with("key `crowdsec.api_key_file`: ") && e.contains("is empty"),
            "{e}"
        );
        let missing = CrowdsecSettings {
            api_key_file: None,
            credentials_file: Some(dir.join("nope.yaml")),
            ..c
        };
        let e = Credentials::resolve(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("key `crowdsec.credentials_file`: cannot read ")
                && e.contains("nope.yaml"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn write_private(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Like ssh with a private key: a secret group or others can read (or write) is refused,
    /// naming the key, the file and its mode; 0600 and 0400 are accepted.
    #[test]
    fn secret_files_others_can_access_are_refused() {
        let dir = std::env::temp_dir().join(format!("ps-cs-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("bouncer.key");
        let creds = dir.join("machine.yaml");
        write_private(&key, "abc123\n");
        write_private(&creds, "login: a\npassword: b\n");
        let c = CrowdsecSettings {
            lapi_url: "http://127.0.0.1:8080".into(),
            api_key_file: Some(key.clone()),
            credentials_file: Some(creds.clone()),
            ..Default::default()
        };
        assert!(Credentials::resolve(&c).is_ok());
        for (path, name, mode) in [
            (&key, "api_key_file", 0o644),
            (&key, "api_key_file", 0o640),
            (&creds, "credentials_file", 0o604),
            (&creds, "credentials_file", 0o620),
        ] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Credentials::resolve(&c).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "key `crowdsec.{name}`: {p} has mode {mode:04o}: group or others can access \
                     this secret; make it private: chmod 600 {p}",
                    p = path.display()
                )
            );
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400)).unwrap();
        }
        assert!(Credentials::resolve(&c).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
