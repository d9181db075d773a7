//! The HTTP listener of `metrics_listen`: `GET /metrics` answers with the exposition of a fresh
//! [`Snapshot`], which it asks the event loop for over a channel (the loop owns the book and
//! the maps). Encoding and network I/O happen in this task, never in the loop.
//!
//! Bounded on every side: at most [`MAX_CONNECTIONS`] at once (more are closed on accept), one
//! request per connection, a request head of at most 8 KiB read within [`HEAD_TIMEOUT`], no
//! request body, every connection closed after [`CONNECTION_TIMEOUT`], and a loop that does not
//! answer within [`SNAPSHOT_TIMEOUT`] gives a 503 rather than a hung scrape.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::{Body, Incoming},
    header, Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot, Semaphore},
    task::JoinHandle,
};

use super::{
    exposition::{self, Format},
    Snapshot,
};

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 8;
/// The request head must arrive within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Every connection is closed after this, whatever it is doing.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a scrape waits for the event loop's snapshot.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);
/// hyper's smallest read buffer: the request head must fit.
const MAX_HEAD_BYTES: usize = 8192;

/// A request for a snapshot: the event loop answers on the enclosed sender.
pub type SnapshotRequest = oneshot::Sender<Arc<Snapshot>>;

/// `metrics_listen` could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("metrics_listen = \"{addr}\": cannot listen there")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds `metrics_listen`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// Serves scrapes on `listener` until the task is aborted.
pub fn spawn(listener: TcpListener, snapshots: mpsc::Sender<SnapshotRequest>) -> JoinHandle<()> {
    tokio::spawn(serve(listener, snapshots))
}

async fn serve(listener: TcpListener, snapshots: mpsc::Sender<SnapshotRequest>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: wait a moment instead of spinning.
                eprintln!("portsentry: warning: metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let snapshots = snapshots.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let snapshots = snapshots.clone();
                async move { Ok::<_, Infallible>(answer(req, &snapshots).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_HEAD_BYTES)
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            // A slow or broken client only loses its own connection.
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn answer(
    req: Request<Incoming>,
    snapshots: &mpsc::Sender<SnapshotRequest>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if !req.body().is_end_stream() {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "no request body is accepted\n",
        );
    }
    match req.uri().path() {
        "/metrics" => {}
        "/" => return plain(StatusCode::OK, "portsentry: metrics at /metrics\n"),
        _ => return plain(StatusCode::NOT_FOUND, "not found; metrics at /metrics\n"),
    }
    let format = Format::negotiate(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let (tx, rx) = oneshot::channel();
    // A full channel means scrapes are already waiting for the loop: do not pile up more.
    if snapshots.try_send(tx).is_err() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "busy, try again\n");
    }
    let snapshot = match tokio::time::timeout(SNAPSHOT_TIMEOUT, rx).await {
        Ok(Ok(s)) => s,
        _ => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "no snapshot from the daemon\n",
            )
        }
    };
    let Ok(text) = exposition::render(snapshot, format) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n");
    };
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(format.content_type()),
    );
    r
}
