//! A fake CrowdSec LAPI for scale: a small HTTP/1.1 server thread bound to 127.0.0.1 in a lab
//! namespace, serving `GET /v1/decisions/stream` as LAPI 1.x does (`{"deleted":…,"new":[…]}`,
//! `null` for an empty list). The real LAPI cannot be filled with a million decisions quickly
//! (`cscli decisions add` takes minutes for thousands); the parser sees the same JSON.
//!
//! The first `startup=true` pull gets the full body given at start; every later pull gets an
//! empty answer, or the next body queued with [`FakeLapi::queue`].

use std::{
    collections::VecDeque,
    io::{Read, Write},
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

const EMPTY: &[u8] = br#"{"deleted":null,"new":null}"#;

/// The target of fake decision `i`: addresses from 11.0.0.1 upwards (public space, far from the
/// lab's 10.77/16 and every bogus range).
pub fn decision_ip(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(0x0b00_0001u32 + i as u32)
}

/// A stream answer with `n` Ip ban decisions of `duration` (Go syntax, e.g. `"4h"`), as LAPI
/// words them for the community blocklist.
pub fn decisions_body(n: usize, duration: &str) -> Vec<u8> {
    decisions_body_padded(n, duration, 0)
}

/// As [`decisions_body`], each scenario name padded with `pad` more bytes (an answer larger
/// than its decision count explains).
pub fn decisions_body_padded(n: usize, duration: &str, pad: usize) -> Vec<u8> {
    let padding = "x".repeat(pad);
    let mut out = Vec::with_capacity(n * (230 + pad) + 64);
    out.extend_from_slice(br#"{"deleted":null,"new":["#);
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            r#"{{"duration":"{duration}","id":{},"origin":"CAPI","scenario":"crowdsecurity/ssh-bf{padding}","scope":"Ip","type":"ban","value":"{}","uuid":"00000000-0000-4000-8000-{:012x}"}}"#,
            i + 1,
            decision_ip(i),
            i
        );
    }
    out.extend_from_slice(b"]}");
    out
}

pub struct FakeLapi {
    pub url: String,
    stop: Arc<AtomicBool>,
    /// Answers served to `startup=true` pulls and to all pulls.
    startup_served: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
    /// When the first full answer was completely written.
    first_served_at: Arc<Mutex<Option<Instant>>>,
    queued: Arc<Mutex<VecDeque<Arc<Vec<u8>>>>>,
}

impl FakeLapi {
    /// Starts serving in `ns`; `startup` is the answer to `startup=true` pulls.
    pub fn start(ns: &Netns, startup: Vec<u8>) -> Result<Self> {
        let listener = ns
            .run(|| TcpListener::bind(("127.0.0.1", 0)))
            .context("binding the fake LAPI")?;
        listener.set_nonblocking(true)?;
        let addr: SocketAddr = listener.local_addr()?;
        let lapi = FakeLapi {
            url: format!("http://{addr}"),
            stop: Arc::new(AtomicBool::new(false)),
            startup_served: Arc::new(AtomicUsize::new(0)),
            served: Arc::new(AtomicUsize::new(0)),
            first_served_at: Arc::new(Mutex::new(None)),
            queued: Arc::new(Mutex::new(VecDeque::new())),
        };
        let startup = Arc::new(startup);
        let (stop, startup_served, served, at, queued) = (
            lapi.stop.clone(),
            lapi.startup_served.clone(),
            lapi.served.clone(),
            lapi.first_served_at.clone(),
            lapi.queued.clone(),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let Some(full) = serve(conn, &startup, &queued) else {
                    continue;
                };
                served.fetch_add(1, Ordering::Relaxed);
                if full {
                    startup_served.fetch_add(1, Ordering::Relaxed);
                    at.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert_with(Instant::now);
                }
            }
        });
        Ok(lapi)
    }

    /// The next non-startup pull gets `body` (one pull per queued body).
    pub fn queue(&self, body: Vec<u8>) {
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Arc::new(body));
    }

    /// Pulls answered so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// Waits until the full answer has been written once; returns when it was.
    pub fn wait_startup_served(&self, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(t) = *self
                .first_served_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
            {
                return Some(t);
            }
            thread::sleep(Duration::from_millis(2));
        }
        None
    }
}

impl Drop for FakeLapi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers one request; `Some(true)` when it was the full (startup) answer.
fn serve(
    mut conn: TcpStream,
    startup: &Arc<Vec<u8>>,
    queued: &Mutex<VecDeque<Arc<Vec<u8>>>>,
) -> Option<bool> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default();
    let (status, body, full): (&str, Arc<Vec<u8>>, bool) =
        if !line.starts_with("GET /v1/decisions/stream") {
            (
                "404 Not Found",
                Arc::new(br#"{"message":"not here"}"#.to_vec()),
                false,
            )
        } else if line.contains("startup=true") {
            ("200 OK", startup.clone(), true)
        } else {
            let next = queued.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            (
                "200 OK",
                next.unwrap_or_else(|| Arc::new(EMPTY.to_vec())),
                false,
            )
        };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(header.as_bytes()).ok()?;
    // A client that gives up early (a body cap) is not an error here.
    let _ = conn.write_all(&body);
    let _ = conn.flush();
    Some(full)
}
