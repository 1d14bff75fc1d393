//! The accept loop: what a client may hold of the server before it has sent a request.
//!
//! axum's `serve` has no header-read timeout and no connection cap, so a few thousand clients
//! sending half a request line could hold every file descriptor until `/healthz` stopped
//! answering. Here:
//!
//! - **Header-read timeout** (`header_timeout`, 10 s): the head of every request, the first and
//!   each one after on a kept-alive connection, must arrive within it or the connection is
//!   closed. Because hyper starts that clock as soon as a connection waits for a head, it is
//!   also the keep-alive idle timeout.
//! - **Body deadline** (`body_timeout`, 30 s): a request body must be complete within it,
//!   counted from the arrival of the head; after it the read fails and the request answers
//!   408 `request_timeout`. Snapshot streams send no request body, so it never touches them.
//! - **Connection cap** (`max_connections`): a new connection beyond the cap closes the
//!   *oldest connection with no request in flight* (an idle keep-alive or a half-sent head), so
//!   a flood of half-open connections only ever evicts itself: `/healthz`, new requests and
//!   open snapshot streams (which are requests in flight) keep working. Only when every
//!   connection has a request in flight is the new one answered 429 and closed.
//! - hyper's own answers to unparsable heads (400, 414, 431) go out with the JSON error
//!   body instead of an empty one.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use crate::App;

/// How long and how many: the limits of the accept loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Connections open at once; see the module documentation for what happens beyond.
    pub max_connections: usize,
    /// A request head (and the wait for the next one on a kept-alive connection) must
    /// arrive within this.
    pub header_timeout: Duration,
    /// A request body must be complete this long after its head.
    pub body_timeout: Duration,
}

impl TransportConfig {
    pub const DEFAULT: TransportConfig = TransportConfig {
        max_connections: 4096,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
    };
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig::DEFAULT
    }
}

/// A request head (line and headers) over this is refused by hyper with 431; it also bounds
/// the memory a half-sent head can hold.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// More header fields than this is refused by hyper with 431.
pub const MAX_HEADERS: usize = 100;

/// The body was not complete within the body deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// Whether `err` (or what caused it) is a body deadline.
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// One open connection, as the cap sees it.
#[derive(Debug, Default)]
struct Slot {
    /// Requests of this connection in flight (from head received to response body dropped).
    busy: AtomicUsize,
    evict: Notify,
}

#[derive(Debug)]
struct Registry {
    max: usize,
    /// Open connections by accept order: the first idle one is the oldest.
    open: Mutex<(u64, BTreeMap<u64, Arc<Slot>>)>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, (u64, BTreeMap<u64, Arc<Slot>>)> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one more connection, evicting the oldest one with nothing in flight when
    /// at the cap; `None` when every open connection is serving a request.
    fn admit(&self) -> Option<(u64, Arc<Slot>)> {
        let mut guard = self.lock();
        let (next, open) = &mut *guard;
        if open.len() >= self.max {
            let victim = open
                .iter()
                .find(|(_, s)| s.busy.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id)?;
            if let Some(slot) = open.remove(&victim) {
                slot.evict.notify_one();
                metrics::counter!("serin_http_connections_evicted_total").increment(1);
            }
        }
        let id = *next;
        *next = next.wrapping_add(1);
        let slot = Arc::new(Slot::default());
        open.insert(id, slot.clone());
        metrics::gauge!("serin_http_connections_open").set(open.len() as f64);
        Some((id, slot))
    }

    fn release(&self, id: u64) {
        let mut guard = self.lock();
        guard.1.remove(&id);
        metrics::gauge!("serin_http_connections_open").set(guard.1.len() as f64);
    }
}

/// Marks a connection busy while one of its requests is in flight.
#[derive(Debug)]
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: Arc<Slot>) -> Self {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` on `listener` with the limits of `config` until `shutdown` resolves; then
/// stops accepting, ends snapshot streams and lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: App,
    config: TransportConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let hub = app.hub.clone();
    let _tasks = app.tasks.clone();
    let router = app.router;
    let registry = Arc::new(Registry {
        max: config.max_connections.max(1),
        open: Mutex::new((0, BTreeMap::new())),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some((id, slot)) = registry.admit() else {
            metrics::counter!("serin_http_connections_refused_total").increment(1);
            // Best effort, never waiting: the client learns why, then the socket closes.
            let _ = stream.try_write(OVERLOADED);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(
            TokioIo::new(JsonErrorsIo::new(stream)),
            RequestService {
                router: router.clone(),
                slot: slot.clone(),
                body_timeout: config.body_timeout,
            },
        );
        let registry = registry.clone();
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            tokio::pin!(conn);
            let mut draining = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            if e.is_timeout() {
                                metrics::counter!("serin_http_header_timeouts_total").increment(1);
                            }
                            tracing::debug!(error = %e, "connection ended");
                        }
                        break;
                    }
                    () = slot.evict.notified() => break,
                    changed = stop.wait_for(|s| *s), if !draining => {
                        drop(changed);
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            registry.release(id);
        });
    }
    drop(listener);
    hub.close();
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// The 429 written to a connection refused because every open one is serving a request.
const OVERLOADED: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: 99\r\n\r\n{\"error\":{\"code\":\"overloaded\",\"message\":\"the server has too many open connections; retry shortly\"}}";

/// Each request: mark the connection busy, put the body deadline on the body, route it.
#[derive(Clone, Debug)]
struct RequestService {
    router: Router,
    slot: Arc<Slot>,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::new(self.slot.clone());
        let router = self.router.clone();
        let timeout = self.body_timeout;
        Box::pin(async move {
            let req = req.map(|b| Body::new(DeadlineBody::new(b, timeout)));
            let resp = router.oneshot(req).await?;
            // The connection stays busy until the response body is dropped (written, or a
            // stream ended), so an open snapshot stream is never evicted.
            Ok(resp.map(|inner| Body::new(BusyBody { inner, _busy: busy })))
        })
    }
}

/// A response body that keeps its connection marked busy until it is dropped; sizes pass
/// through, so answers keep their `content-length`.
struct BusyBody {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, with hyper's empty-bodied answers to unparsable heads replaced by the same
/// answers in the JSON error shape.
struct JsonErrorsIo {
    inner: TcpStream,
    /// A replacement answer not yet fully written.
    pending: Vec<u8>,
    written: usize,
}

impl JsonErrorsIo {
    fn new(inner: TcpStream) -> Self {
        JsonErrorsIo {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }

    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some(rest) = self.pending.get(self.written..).filter(|r| !r.is_empty()) {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes over `head` if it is one of hyper's own error answers; `true` if it did.
    fn substitute(&mut self, head: &[u8]) -> bool {
        match json_error_answer(head) {
            Some(answer) => {
                self.pending = answer;
                self.written = 0;
                true
            }
            None => false,
        }
    }
}

/// hyper answers a head it cannot parse with a bare status line, `content-length: 0` and a
/// date, then closes. Our own answers always carry a JSON body, so a bodiless 400/414/431 is
/// hyper's.
fn json_error_answer(head: &[u8]) -> Option<Vec<u8>> {
    let (status, code, message) = if head.starts_with(b"HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            "headers_too_large",
            format!(
                "the request head (request line and headers) is over {} KiB or {MAX_HEADERS} header fields",
                MAX_HEAD_BYTES / 1024
            ),
        )
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        (
            "414 URI Too Long",
            "uri_too_long",
            "the request URI is too long".to_owned(),
        )
    } else if head.starts_with(b"HTTP/1.1 400 ") {
        (
            "400 Bad Request",
            "bad_request",
            "the request is not valid HTTP/1.1".to_owned(),
        )
    } else {
        return None;
    };
    let lower = head.to_ascii_lowercase();
    let bodiless =
        lower.ends_with(b"\r\n\r\n") && lower.windows(19).any(|w| w == b"content-length: 0\r\n");
    if !bodiless {
        return None;
    }
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl AsyncRead for JsonErrorsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonErrorsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.drain(cx))?;
        if self.substitute(buf) {
            // Claim hyper's bytes written; ours go out now or on the next flush.
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            let first: &[u8] = first;
            if self.substitute(first) {
                let _ = self.drain(cx)?;
                return Poll::Ready(Ok(first.len()));
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_431_becomes_the_json_error_shape() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 16:00:00 GMT\r\n\r\n";
        let out = json_error_answer(head).unwrap_or_default();
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        assert!(text.contains("\"code\":\"headers_too_large\""), "{text}");
        assert!(text.contains("x-content-type-options: nosniff"), "{text}");
    }

    #[test]
    fn our_own_answers_with_a_body_are_left_alone() {
        let head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 57\r\n\r\n";
        assert!(json_error_answer(head).is_none());
        assert!(json_error_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }

    #[test]
    fn the_canned_overload_answer_declares_its_exact_length() {
        let text = String::from_utf8_lossy(OVERLOADED);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{}",
            body.len()
        );
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
