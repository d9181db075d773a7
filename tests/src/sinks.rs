//! Test sinks for `[notify]`: a small SMTP server and a webhook (HTTP) server, each a thread
//! serving a listener bound to 127.0.0.1 in a lab namespace. They record what arrives (whole
//! mails, AUTH commands, webhook bodies and their Authorization header) and can refuse the first
//! N deliveries, so retries are seen end to end. Nothing is installed on the host.

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

use crate::lab::Netns;

/// What a sink has seen.
#[derive(Default)]
pub struct Seen {
    /// Whole messages (mail: the DATA; webhook: the body).
    pub messages: Vec<String>,
    /// AUTH commands (mail) or Authorization headers (webhook).
    pub auth: Vec<String>,
    /// Deliveries refused on purpose.
    pub refused: usize,
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
        Self::start(ns, port, refuse, serve_smtp)
    }

    /// A webhook sink: the first `refuse` requests get HTTP 503, later ones 200.
    pub fn webhook(ns: &Netns, port: u16, refuse: usize) -> Result<Self> {
        Self::start(ns, port, refuse, serve_http)
    }

    fn start(
        ns: &Netns,
        port: u16,
        refuse: usize,
        serve: fn(TcpStream, bool, &Mutex<Seen>),
    ) -> Result<Self> {
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

fn serve_smtp(s: TcpStream, refuse: bool, seen: &Mutex<Seen>) {
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    if refuse {
        seen.lock().unwrap().refused += 1;
        let _ = w.write_all(b"421 sink busy, try later\r\n");
        return;
    }
    let mut r = BufReader::new(s);
    let _ = w.write_all(b"220 sink ESMTP\r\n");
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("AUTH") {
            seen.lock().unwrap().auth.push(cmd.clone());
            b"235 ok\r\n"
        } else if upper.starts_with("DATA") {
            let _ = w.write_all(b"354 go\r\n");
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(&line);
            }
            seen.lock().unwrap().messages.push(data);
            b"250 queued\r\n"
        } else if upper.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else if upper.starts_with("STARTTLS") {
            b"502 not offered\r\n"
        } else {
            b"250 ok\r\n"
        };
        if w.write_all(reply).is_err() {
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
