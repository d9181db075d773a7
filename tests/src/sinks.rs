//! Test sinks for `[notify]`: a small SMTP server and a webhook (HTTP) server, each a thread
//! serving a listener bound to 127.0.0.1 in a lab namespace. They record what arrives (whole
//! mails, AUTH commands and the credentials in them, webhook bodies and their Authorization
//! header) and can refuse the first N deliveries, so retries are seen end to end. The SMTP sink
//! can offer STARTTLS or speak TLS from the first byte (rustls, with a throwaway CA and
//! certificate made by the `openssl` command, see [`TestCa`]) and can require AUTH with given
//! credentials. Nothing is installed on the host.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ServerConfig, ServerConnection, StreamOwned,
};

use crate::{
    lab::{Netns, TempDir},
    tls,
};

/// What a sink has seen.
#[derive(Default)]
pub struct Seen {
    /// Whole messages (mail: the DATA; webhook: the body).
    pub messages: Vec<String>,
    /// AUTH commands (mail) or Authorization headers (webhook).
    pub auth: Vec<String>,
    /// Deliveries refused on purpose.
    pub refused: usize,
    /// Every AUTH exchange (mail), decoded.
    pub logins: Vec<Login>,
}

/// One AUTH exchange as the SMTP sink saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// `PLAIN` or `LOGIN`.
    pub mechanism: String,
    pub user: String,
    pub password: String,
    /// The session was under TLS (STARTTLS done, or implicit TLS) when AUTH came.
    pub over_tls: bool,
    /// The sink accepted it (it matched the required credentials).
    pub accepted: bool,
}

/// How the SMTP sink behaves beyond the default (plain, AUTH offered and accepted blindly).
#[derive(Clone, Default)]
pub struct SmtpOptions {
    /// Offer STARTTLS with this server config.
    pub starttls: Option<Arc<ServerConfig>>,
    /// Speak TLS from the first byte (smtps://) with this server config.
    pub implicit_tls: Option<Arc<ServerConfig>>,
    /// AUTH mechanisms offered in EHLO; default `PLAIN LOGIN`.
    pub mechanisms: Option<&'static str>,
    /// Require AUTH with exactly these credentials before MAIL (530 without, 535 if wrong).
    pub credentials: Option<(String, String)>,
}

/// A CA and a server certificate for 127.0.0.1 and `localhost`, P-256, valid for a day, made
/// by the `openssl` command in a throwaway directory (`crate::tls`, as the LAPI's are).
pub struct TestCa {
    /// The CA certificate (PEM): what `smtp_ca_cert_path` names.
    pub ca_pem: String,
    config: Arc<ServerConfig>,
    _dir: TempDir,
}

impl TestCa {
    pub fn new() -> Result<Self> {
        let dir = TempDir::new("smtp-ca")?;
        tls::make_ca(&dir, "portsentry test mail CA")?;
        tls::issue(
            &dir,
            "smtp",
            "/O=portsentry tests/CN=smtp sink",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )?;
        let cert = CertificateDer::from_pem_file(dir.join("smtp.pem"))
            .context("reading the sink's certificate")?;
        let key =
            PrivateKeyDer::from_pem_file(dir.join("smtp.key")).context("reading the sink's key")?;
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)?;
        Ok(Self {
            ca_pem: dir.join("ca.pem").display().to_string(),
            config: Arc::new(config),
            _dir: dir,
        })
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }
}

pub struct Sink {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Sink {
    /// An SMTP sink on `port` (0: any) in `ns`: EHLO offers `AUTH PLAIN LOGIN` (no STARTTLS),
    /// the first `refuse` sessions get `421` at the greeting.
    pub fn smtp(ns: &Netns, port: u16, refuse: usize) -> Result<Self> {
        Self::smtp_with(ns, port, refuse, SmtpOptions::default())
    }

    /// An SMTP sink with STARTTLS, implicit TLS or required credentials: see [`SmtpOptions`].
    pub fn smtp_with(ns: &Netns, port: u16, refuse: usize, options: SmtpOptions) -> Result<Self> {
        Self::start(
            ns,
            port,
            refuse,
            Arc::new(move |s, refuse, seen| serve_smtp(s, refuse, seen, &options)),
        )
    }

    /// A webhook sink: the first `refuse` requests get HTTP 503, later ones 200.
    pub fn webhook(ns: &Netns, port: u16, refuse: usize) -> Result<Self> {
        Self::start(ns, port, refuse, Arc::new(serve_http))
    }

    fn start(ns: &Netns, port: u16, refuse: usize, serve: Arc<Serve>) -> Result<Self> {
        let listener = ns
            .run(move || TcpListener::bind(("127.0.0.1", port)))
            .context("binding a sink")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (st, se) = (stop.clone(), seen.clone());
        let sessions = AtomicUsize::new(0);
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        let n = sessions.fetch_add(1, Ordering::SeqCst);
                        serve(s, n < refuse, &se);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self { addr, stop, seen })
    }

    /// A free port on 127.0.0.1 in `ns` (for a sink started later: "the server is down").
    pub fn free_port(ns: &Netns) -> u16 {
        ns.run(|| TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()))
            .expect("a free port")
            .port()
    }

    pub fn messages(&self) -> Vec<String> {
        self.seen.lock().unwrap().messages.clone()
    }

    pub fn auth(&self) -> Vec<String> {
        self.seen.lock().unwrap().auth.clone()
    }

    pub fn refused(&self) -> usize {
        self.seen.lock().unwrap().refused
    }

    pub fn logins(&self) -> Vec<Login> {
        self.seen.lock().unwrap().logins.clone()
    }

    /// Waits until `n` messages arrived; returns them.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() >= end {
                return m;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What serves one accepted connection: (stream, refuse it, what was seen).
type Serve = dyn Fn(TcpStream, bool, &Mutex<Seen>) + Send + Sync;

/// The SMTP session's byte stream: plain, or TLS after STARTTLS or from the start.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    /// Between the two (never read or written).
    Gone,
}

impl Conn {
    fn tls(s: TcpStream, config: &Arc<ServerConfig>) -> Option<Self> {
        let conn = ServerConnection::new(config.clone()).ok()?;
        Some(Self::Tls(Box::new(StreamOwned::new(conn, s))))
    }

    fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
            Self::Gone => Ok(0),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
            Self::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
            Self::Gone => Ok(()),
        }
    }
}

/// One SMTP session: the stream and what was read past the last line.
struct Session {
    conn: Conn,
    pending: Vec<u8>,
}

impl Session {
    /// The next line without its CRLF; `None` at EOF or on an error.
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line).into_owned();
                return Some(text.trim_end_matches(['\r', '\n']).to_owned());
            }
            let mut buf = [0u8; 4096];
            match self.conn.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn reply(&mut self, text: &str) -> bool {
        self.conn.write_all(text.as_bytes()).is_ok() && self.conn.flush().is_ok()
    }
}

/// Standard base64 (RFC 4648) to text; `None` if it is not base64.
fn base64_decode(text: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.trim().bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads the AUTH exchange after `AUTH MECH [initial]`; returns (user, password).
fn read_auth(
    sess: &mut Session,
    mechanism: &str,
    initial: Option<&str>,
) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            let response = match initial {
                Some(r) => r.to_owned(),
                None => {
                    sess.reply("334 \r\n");
                    sess.line()?
                }
            };
            let decoded = base64_decode(&response)?;
            let mut parts = decoded.split('\0');
            let _authzid = parts.next()?;
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        }
        "LOGIN" => {
            let user = match initial {
                Some(u) => u.to_owned(),
                None => {
                    sess.reply("334 VXNlcm5hbWU6\r\n");
                    sess.line()?
                }
            };
            sess.reply("334 UGFzc3dvcmQ6\r\n");
            let password = sess.line()?;
            Some((base64_decode(&user)?, base64_decode(&password)?))
        }
        _ => None,
    }
}

fn serve_smtp(s: TcpStream, refuse: bool, seen: &Mutex<Seen>, opts: &SmtpOptions) {
    if refuse {
        seen.lock().unwrap().refused += 1;
        let mut s = s;
        let _ = s.write_all(b"421 sink busy, try later\r\n");
        return;
    }
    let conn = match &opts.implicit_tls {
        Some(cfg) => match Conn::tls(s, cfg) {
            Some(c) => c,
            None => return,
        },
        None => Conn::Plain(s),
    };
    let mut sess = Session {
        conn,
        pending: Vec::new(),
    };
    let mechanisms = opts.mechanisms.unwrap_or("PLAIN LOGIN");
    let mut authed = false;
    if !sess.reply("220 sink ESMTP\r\n") {
        return;
    }
    while let Some(cmd) = sess.line() {
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let mut r = "250-sink\r\n".to_owned();
            if opts.starttls.is_some() && !sess.conn.is_tls() {
                r.push_str("250-STARTTLS\r\n");
            }
            r.push_str(&format!("250-AUTH {mechanisms}\r\n250 8BITMIME\r\n"));
            r
        } else if upper.starts_with("AUTH") {
            seen.lock().unwrap().auth.push(cmd.clone());
            let mut words = cmd.split_whitespace().skip(1);
            let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
            let initial = words.next();
            if !mechanisms.split(' ').any(|m| m == mechanism) {
                "504 mechanism not offered\r\n".to_owned()
            } else if let Some((user, password)) = read_auth(&mut sess, &mechanism, initial) {
                let accepted = opts
                    .credentials
                    .as_ref()
                    .is_none_or(|(u, p)| *u == user && *p == password);
                seen.lock().unwrap().logins.push(Login {
                    mechanism,
                    user,
                    password,
                    over_tls: sess.conn.is_tls(),
                    accepted,
                });
                authed |= accepted;
                if accepted {
                    "235 ok\r\n".to_owned()
                } else {
                    "535 bad credentials\r\n".to_owned()
                }
            } else {
                "501 malformed AUTH\r\n".to_owned()
            }
        } else if upper.starts_with("MAIL") && opts.credentials.is_some() && !authed {
            "530 authentication required\r\n".to_owned()
        } else if upper.starts_with("DATA") {
            if !sess.reply("354 go\r\n") {
                return;
            }
            let mut data = String::new();
            loop {
                match sess.line() {
                    None => return,
                    Some(l) if l == "." => break,
                    Some(l) => {
                        data.push_str(&l);
                        data.push_str("\r\n");
                    }
                }
            }
            seen.lock().unwrap().messages.push(data);
            "250 queued\r\n".to_owned()
        } else if upper.starts_with("QUIT") {
            sess.reply("221 bye\r\n");
            return;
        } else if upper.starts_with("STARTTLS") {
            match (&opts.starttls, sess.conn.is_tls()) {
                (Some(cfg), false) => {
                    if !sess.reply("220 go ahead\r\n") {
                        return;
                    }
                    // Nothing sent before the handshake counts (RFC 3207: forget it all).
                    sess.pending.clear();
                    authed = false;
                    let Conn::Plain(s) = std::mem::replace(&mut sess.conn, Conn::Gone) else {
                        return;
                    };
                    match Conn::tls(s, cfg) {
                        Some(c) => sess.conn = c,
                        None => return,
                    }
                    continue;
                }
                _ => "502 not offered\r\n".to_owned(),
            }
        } else {
            "250 ok\r\n".to_owned()
        };
        if !sess.reply(&reply) {
            return;
        }
    }
}

fn serve_http(s: TcpStream, refuse: bool, seen: &Mutex<Seen>) {
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    let mut auth = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            auth = l["authorization:".len()..].trim().to_owned();
        }
    }
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let mut g = seen.lock().unwrap();
    if refuse {
        g.refused += 1;
        drop(g);
        let _ = w.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        return;
    }
    g.messages.push(String::from_utf8_lossy(&body).into_owned());
    g.auth.push(auth);
    drop(g);
    let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
}
