//! The control socket: `state_dir/control.sock`, mode 0600, root (or the daemon's own user)
//! only, checked with SO_PEERCRED. One JSON request line in, one JSON reply line out. The
//! daemon answers in its event loop, so a verb acts on exactly the state the daemon enforces.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream as StdUnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::{unix::OwnedReadHalf, UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::net::cidr::Cidr;

pub const SOCKET_FILE: &str = "control.sock";
/// A request line longer than this is refused.
const MAX_REQUEST: u64 = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

/// A verb, as sent over the socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "kebab-case")]
pub enum Request {
    Status {
        json: bool,
    },
    List {
        json: bool,
    },
    /// `ttl_ms: None` bans forever.
    Ban {
        target: Cidr,
        ttl_ms: Option<u64>,
    },
    Unban {
        targets: Vec<Cidr>,
        all: bool,
    },
    PromoteShadow,
}

impl Request {
    /// Verbs that change bans (and so the state file).
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Request::Ban { .. } | Request::Unban { .. } | Request::PromoteShadow
        )
    }
}

/// What the verb prints and its exit code.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    pub fn error(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            stdout: String::new(),
            stderr: message.into(),
        }
    }
}

/// A request waiting for the event loop's answer.
pub type Call = (Request, oneshot::Sender<Reply>);

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_FILE)
}

/// Why a call did not reach a daemon.
#[derive(Debug)]
pub enum CallError {
    /// No socket, or nobody listening on it.
    NoDaemon(std::io::Error),
    /// A daemon is there but the exchange failed.
    Failed(String),
}

/// Sends `req` to the daemon listening on `path` and waits for its reply.
pub fn call(path: &Path, req: &Request) -> Result<Reply, CallError> {
    let mut stream = StdUnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            CallError::NoDaemon(e)
        }
        _ => CallError::Failed(format!("connecting to {}: {e}", path.display())),
    })?;
    let failed = |e: std::io::Error| CallError::Failed(format!("{}: {e}", path.display()));
    stream.set_read_timeout(Some(TIMEOUT)).map_err(failed)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(failed)?;
    let mut line = serde_json::to_string(req).map_err(|e| CallError::Failed(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(failed)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(failed)?;
    serde_json::from_str(&answer).map_err(|e| {
        CallError::Failed(format!(
            "{}: the daemon's reply does not parse ({e}): {answer:?}",
            path.display()
        ))
    })
}

/// Binds the socket (0600; a stale file from a dead daemon is replaced).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if StdUnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is served by another running daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // SAFETY: umask only changes this process's file-creation mask; restored right after.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = listener?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections until the receiver of `calls` is gone.
pub async fn serve(listener: UnixListener, calls: mpsc::Sender<Call>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if calls.is_closed() {
            return;
        }
        tokio::spawn(handle(stream, calls.clone()));
    }
}

async fn handle(stream: UnixStream, calls: mpsc::Sender<Call>) {
    let admitted = admit(&stream);
    let (read, mut write) = stream.into_split();
    let reply = match admitted {
        Err(reply) => reply,
        Ok(()) => match tokio::time::timeout(TIMEOUT, exchange(read, &calls)).await {
            Ok(reply) => reply,
            Err(_) => Reply::error(1, "portsentry: error: the request timed out"),
        },
    };
    let mut line = serde_json::to_string(&reply).unwrap_or_default();
    line.push('\n');
    let _ = write.write_all(line.as_bytes()).await;
}

/// Root, or the user the daemon runs as.
fn admit(stream: &UnixStream) -> Result<(), Reply> {
    let uid = stream
        .peer_cred()
        .map_err(|e| Reply::error(1, format!("portsentry: error: peer credentials: {e}")))?
        .uid();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own = unsafe { libc::geteuid() };
    if uid == 0 || uid == own {
        Ok(())
    } else {
        Err(Reply::error(
            1,
            format!("portsentry: error: uid {uid} may not control portsentry (root only)"),
        ))
    }
}

async fn exchange(read: OwnedReadHalf, calls: &mpsc::Sender<Call>) -> Reply {
    let mut line = String::new();
    let mut reader = AsyncBufReader::new(read.take(MAX_REQUEST));
    if let Err(e) = reader.read_line(&mut line).await {
        return Reply::error(2, format!("portsentry: error: reading the request: {e}"));
    }
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return Reply::error(2, format!("portsentry: error: bad request: {e}")),
    };
    let (tx, rx) = oneshot::channel();
    if calls.send((req, tx)).await.is_err() {
        return Reply::error(1, "portsentry: error: the daemon is stopping");
    }
    rx.await
        .unwrap_or_else(|_| Reply::error(1, "portsentry: error: the daemon is stopping"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_verb() {
        let r = Request::Ban {
            target: "192.0.2.0/24".parse().unwrap(),
            ttl_ms: Some(1000),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"verb":"ban","target":"192.0.2.0/24","ttl_ms":1000}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"verb":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"verb":"promote-shadow"}"#).is_ok());
    }

    #[test]
    fn a_missing_socket_means_no_daemon() {
        let path = std::env::temp_dir().join(format!("ps-nosock-{}", std::process::id()));
        assert!(matches!(
            call(&path, &Request::PromoteShadow),
            Err(CallError::NoDaemon(_))
        ));
    }
}
