//! A real CrowdSec Local API (Debian's `crowdsec` package, `crowdsec -no-cs`) for fleet tests:
//! its own network namespace, throwaway config and SQLite database, bouncer and machine
//! credentials made with `cscli`. Protected namespaces reach it over a management veth
//! (10.88.K.0/24), never over the interface XDP guards. Everything is removed on drop.
//!
//! [`Lapi::start_tls`] serves https:// with certificates made by the `openssl` command for the
//! run (a CA, LAPI's certificate, a client certificate whose OUs LAPI accepts for bouncers and
//! agents) and authenticates clients that present one.

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    lab::{ip, veth_pair, Lab, Netns, TempDir},
    staged, tls,
};

/// Set by `cargo xtask test`: the directory of the crowdsec binaries staged under target/.
const CROWDSEC_ENV: &str = "PORTSENTRY_CROWDSEC_BIN";

/// The staged crowdsec binary `name` (`crowdsec` or `cscli`). Refuses one outside a `target/`
/// directory: the tests must never depend on (or start) a crowdsec installed on the host.
pub fn staged_binary(name: &str) -> Result<std::path::PathBuf> {
    let path = staged::dir(CROWDSEC_ENV)?.join(name);
    if !path.is_file() {
        bail!("{} does not exist", path.display());
    }
    Ok(path)
}

static FLEET_COUNTER: AtomicUsize = AtomicUsize::new(0);
const PORT: u16 = 8080;
/// Management links a TLS LAPI's certificate names (10.88.1.1 … 10.88.LINKS.1).
const TLS_LINKS: usize = 16;
/// The OUs LAPI is told to accept for bouncers and for agents (its defaults).
pub const BOUNCER_OU: &str = "bouncer-ou";
pub const AGENT_OU: &str = "agent-ou";

/// The PEM files of a TLS LAPI, all under its directory.
pub struct LapiCerts {
    /// The CA that signed LAPI's certificate and the client certificate.
    pub ca: String,
    /// The CA's own key: a valid key that fits none of the certificates below.
    pub ca_key: String,
    /// A client certificate with OU=bouncer-ou and OU=agent-ou, CN=portsentry-mtls.
    pub client_cert: String,
    pub client_key: String,
}

pub struct Lapi {
    pub ns: Netns,
    pub dir: TempDir,
    pub config: String,
    /// Set when LAPI serves https://.
    pub certs: Option<LapiCerts>,
    process: Option<Child>,
    id: String,
    links: usize,
}

impl Lapi {
    /// Sets up and starts a LAPI on plain http://.
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// A LAPI on https:// that also authenticates bouncers and agents by client certificate
    /// (`client_verification: VerifyClientCertIfGiven`, so API keys and passwords work too).
    pub fn start_tls() -> Result<Self> {
        Self::start_with(true)
    }

    fn scheme(&self) -> &'static str {
        if self.certs.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn start_with(tls: bool) -> Result<Self> {
        let n = FLEET_COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}x{n}", std::process::id() % 100_000);
        let ns = Netns {
            name: format!("psf{id}"),
        };
        ip(&["netns", "add", &ns.name])?;
        let mut lapi = Self {
            dir: TempDir::new("lapi")?,
            config: String::new(),
            certs: None,
            ns,
            process: None,
            id,
            links: 0,
        };
        ip(&["-n", &lapi.ns.name, "link", "set", "lo", "up"])?;
        let d = lapi.dir.path.display().to_string();
        let mut server_tls = String::new();
        if tls {
            let certs = make_certs(&lapi.dir)?;
            server_tls = format!(
                "    tls:\n      cert_file: {d}/lapi.pem\n      key_file: {d}/lapi.key\n      ca_cert_path: {}\n\
                 \x20     client_verification: VerifyClientCertIfGiven\n\
                 \x20     bouncers_allowed_ou:\n        - {BOUNCER_OU}\n      agents_allowed_ou:\n        - {AGENT_OU}\n",
                certs.ca
            );
            lapi.certs = Some(certs);
        }
        lapi.config = lapi.dir.write(
            "config.yaml",
            &format!(
                "common:\n  log_media: stdout\n  log_level: info\nconfig_paths:\n  config_dir: {d}/\n  data_dir: {d}/\n\
                 api:\n  client:\n    credentials_path: {d}/cscli.yaml\n  server:\n    listen_uri: 0.0.0.0:{PORT}\n    profiles_path: {d}/profiles.yaml\n{server_tls}\
                 db_config:\n  type: sqlite\n  db_path: {d}/crowdsec.db\n  use_wal: true\n"
            ),
        );
        // Debian's default profile; only used for alerts that carry no decisions of their own.
        lapi.dir.write(
            "profiles.yaml",
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\n\
             decisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        );
        // The machine cscli itself uses for `decisions add/delete` and `alerts list`.
        lapi.add_machine("cscli")?;
        lapi.launch()?;
        Ok(lapi)
    }

    /// `cscli -c CONFIG ARGS` in the LAPI's namespace; fails with its output.
    pub fn cscli(&self, args: &[&str]) -> Result<String> {
        staged::stdout_of(
            self.ns
                .command(&staged_binary("cscli")?.display().to_string())
                .args(["-c", &self.config, "--error"])
                .args(args),
            &format!("cscli {}", args.join(" ")),
        )
    }

    /// Every alert LAPI holds, as `cscli alerts list -a -o json` prints them.
    pub fn alerts_json(&self) -> Result<String> {
        self.cscli(&["alerts", "list", "-a", "-o", "json"])
    }

    /// A bouncer key.
    pub fn add_bouncer(&self, name: &str) -> Result<String> {
        Ok(self
            .cscli(&["bouncers", "add", name, "-o", "raw"])?
            .trim()
            .to_owned())
    }

    /// A machine; returns the path of its credentials file (cscli's format).
    pub fn add_machine(&self, name: &str) -> Result<String> {
        let file = if name == "cscli" {
            self.dir.join("cscli.yaml")
        } else {
            self.dir.join(&format!("{name}.yaml"))
        };
        let password = format!("pw-{name}-{}", self.id);
        let path = file.display().to_string();
        let url = format!("{}://127.0.0.1:{PORT}", self.scheme());
        self.cscli(&[
            "machines",
            "add",
            name,
            "--password",
            &password,
            "-f",
            &path,
            "--url",
            &url,
        ])?;
        // As the README's recipe leaves it (umask 077): portsentry refuses a secret others
        // can read.
        crate::lab::fixtures::private(&file);
        if let Some(certs) = &self.certs {
            // cscli (the client) trusts LAPI through the run's CA.
            let mut text = std::fs::read_to_string(&file)?;
            text += &format!("ca_cert_path: {}\n", certs.ca);
            std::fs::write(&file, text)?;
        }
        Ok(path)
    }

    fn launch(&mut self) -> Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("crowdsec.log"))?;
        let child = self
            .ns
            .command(&staged_binary("crowdsec")?.display().to_string())
            .args(["-c", &self.config, "-no-cs"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the staged crowdsec")?;
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.healthy() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.process.as_mut().map(Child::try_wait) {
                bail!("crowdsec exited ({status}):\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("LAPI did not answer /health within 15 s:\n{}", self.log())
    }

    /// `/health` answers 200 (plain http), or the TLS port accepts connections.
    fn healthy(&self) -> bool {
        let tls = self.certs.is_some();
        self.ns.run(move || {
            let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
                return false;
            };
            if tls {
                return true;
            }
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
                return false;
            }
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
        })
    }

    /// The running LAPI's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("crowdsec.log")).unwrap_or_default()
    }

    /// Stops the LAPI (SIGKILL: an outage, not a goodbye).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.process.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again: same database, keys and address.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    /// Silently drops every packet to the LAPI port (`on`), or stops doing so: a LAPI that hangs
    /// instead of refusing, so requests block until their timeout.
    pub fn blackhole(&self, on: bool) -> Result<()> {
        let port = PORT.to_string();
        let commands: Vec<Vec<&str>> = if on {
            vec![
                vec!["add", "table", "inet", "blackhole"],
                vec![
                    "add",
                    "chain",
                    "inet",
                    "blackhole",
                    "input",
                    "{ type filter hook input priority 0; }",
                ],
                vec![
                    "add",
                    "rule",
                    "inet",
                    "blackhole",
                    "input",
                    "tcp",
                    "dport",
                    &port,
                    "drop",
                ],
            ]
        } else {
            vec![vec!["delete", "table", "inet", "blackhole"]]
        };
        for args in commands {
            staged::stdout_of(
                self.ns.command("nft").args(&args),
                &format!("nft {}", args.join(" ")),
            )?;
        }
        Ok(())
    }

    /// Joins `lab`'s protected namespace to the LAPI's over a new veth; returns the URL the
    /// protected side reaches LAPI at.
    pub fn connect(&mut self, lab: &Lab) -> Result<String> {
        self.links += 1;
        let k = self.links;
        if self.certs.is_some() && k > TLS_LINKS {
            bail!("a TLS LAPI's certificate names only {TLS_LINKS} management links");
        }
        let (near, far) = (format!("vf{}y{k}", self.id), format!("vm{}y{k}", self.id));
        veth_pair(&self.ns.name, &near, &lab.protected.name, &far)?;
        ip(&[
            "-n",
            &self.ns.name,
            "addr",
            "add",
            &format!("10.88.{k}.1/24"),
            "dev",
            &near,
        ])?;
        ip(&[
            "-n",
            &lab.protected.name,
            "addr",
            "add",
            &format!("10.88.{k}.2/24"),
            "dev",
            &far,
        ])?;
        Ok(format!("{}://10.88.{k}.1:{PORT}", self.scheme()))
    }
}

/// A CA, LAPI's certificate (for 127.0.0.1 and every management address) and a client
/// certificate LAPI accepts for bouncers and agents (`crate::tls`).
fn make_certs(dir: &TempDir) -> Result<LapiCerts> {
    tls::make_ca(dir, "portsentry test CA")?;
    let sans: Vec<String> = std::iter::once("IP:127.0.0.1".to_owned())
        .chain((1..=TLS_LINKS).map(|k| format!("IP:10.88.{k}.1")))
        .collect();
    tls::issue(
        dir,
        "lapi",
        "/O=portsentry tests/CN=lapi",
        &format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
            sans.join(",")
        ),
    )?;
    tls::issue(
        dir,
        "client",
        &format!("/O=portsentry tests/OU={BOUNCER_OU}/OU={AGENT_OU}/CN=portsentry-mtls"),
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    )?;
    let path = |name: &str| dir.join(name).display().to_string();
    Ok(LapiCerts {
        ca: path("ca.pem"),
        ca_key: path("ca.key"),
        client_cert: path("client.pem"),
        client_key: path("client.key"),
    })
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.stop();
        let _ = ip(&["netns", "del", &self.ns.name]);
    }
}
