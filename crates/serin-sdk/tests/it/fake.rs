//! A stand-in for serin-server's snapshot endpoints, speaking the wire
//! contract the SDK follows:
//!
//! - `GET /v1/envs/{env}/snapshot/stream`: bearer auth; SSE events
//!   `event: snapshot`, `id: <version>`, `data: <Snapshot JSON>`. The first
//!   event after connecting carries every bundle, and is skipped when
//!   `Last-Event-ID` equals the current version; keep-alive comments in
//!   between.
//! - `GET /v1/envs/{env}/snapshot`: the current snapshot, every bundle.
//! - `POST /v1/sdk/applied`: records each applied-version report; answers
//!   204, or a chosen status after a chosen delay.
//!
//! It can be stopped (ending every stream) and started again on the same
//! address, answer 401, and send arbitrary events.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serin_core::decision::Snapshot;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub const TOKEN: &str = "serin_test_secret";

struct Inner {
    env: String,
    current: Mutex<Snapshot>,
    events: broadcast::Sender<(u64, String)>,
    /// Every stream request's `Last-Event-ID`, in order.
    last_event_ids: Mutex<Vec<Option<String>>>,
    /// Every stream request's `instance` query parameter, in order.
    instances: Mutex<Vec<Option<String>>>,
    /// Every applied-version report body, in the order they arrived.
    reports: Mutex<Vec<serde_json::Value>>,
    report_status: AtomicU16,
    report_delay_ms: AtomicU64,
    full_fetches: AtomicUsize,
    deny: AtomicBool,
    keep_alive: Duration,
    /// Bumped to end every open stream.
    generation: watch::Sender<u64>,
}

pub struct Fake {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    running: Mutex<Option<JoinHandle<()>>>,
}

impl Fake {
    /// Serves `snapshot` on a fresh port, keep-alive every 50 ms.
    pub async fn start(snapshot: Snapshot) -> Fake {
        Fake::start_with(snapshot, Duration::from_millis(50)).await
    }

    pub async fn start_with(snapshot: Snapshot, keep_alive: Duration) -> Fake {
        let fake = Fake::new_stopped(free_addr().await, snapshot, keep_alive);
        fake.resume().await;
        fake
    }

    /// A server that is not listening yet on `addr`.
    pub fn new_stopped(addr: SocketAddr, snapshot: Snapshot, keep_alive: Duration) -> Fake {
        let (events, _) = broadcast::channel(64);
        Fake {
            addr,
            inner: Arc::new(Inner {
                env: snapshot.env.clone(),
                current: Mutex::new(snapshot),
                events,
                last_event_ids: Mutex::new(Vec::new()),
                instances: Mutex::new(Vec::new()),
                reports: Mutex::new(Vec::new()),
                report_status: AtomicU16::new(204),
                report_delay_ms: AtomicU64::new(0),
                full_fetches: AtomicUsize::new(0),
                deny: AtomicBool::new(false),
                keep_alive,
                generation: watch::channel(0).0,
            }),
            running: Mutex::new(None),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts listening on `addr` (again).
    pub async fn resume(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let app = Router::new()
            .route("/v1/envs/{env}/snapshot", get(full))
            .route("/v1/envs/{env}/snapshot/stream", get(stream))
            .route("/v1/sdk/applied", post(applied))
            .with_state(self.inner.clone());
        let mut generation = self.inner.generation.subscribe();
        let handle = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = generation.changed().await;
                })
                .await
                .unwrap();
        });
        *self.running.lock().unwrap() = Some(handle);
    }

    /// Ends every stream and stops listening, like a server going down.
    pub async fn stop(&self) {
        self.inner.generation.send_modify(|g| *g += 1);
        let handle = self.running.lock().unwrap().take();
        if let Some(h) = handle {
            tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .expect("fake server did not stop")
                .unwrap();
        }
    }

    /// Makes `snapshot` current and sends it whole.
    pub fn publish(&self, snapshot: Snapshot) {
        let wire = snapshot.clone();
        self.publish_as(snapshot, wire);
    }

    /// Makes `snapshot` current but sends it carrying only the bundles
    /// listed, as a delta event.
    pub fn publish_delta(&self, snapshot: Snapshot, bundles: &[&str]) {
        let mut wire = snapshot.clone();
        wire.bundles.retain(|id, _| bundles.contains(&id.as_str()));
        self.publish_as(snapshot, wire);
    }

    fn publish_as(&self, current: Snapshot, wire: Snapshot) {
        *self.inner.current.lock().unwrap() = current;
        self.send_raw(&wire);
    }

    /// Sends an event without changing what the server holds.
    pub fn send_raw(&self, wire: &Snapshot) {
        let data = serde_json::to_string(wire).unwrap();
        let _ = self.inner.events.send((wire.version, data));
    }

    pub fn deny(&self, deny: bool) {
        self.inner.deny.store(deny, Ordering::SeqCst);
    }

    pub fn last_event_ids(&self) -> Vec<Option<String>> {
        self.inner.last_event_ids.lock().unwrap().clone()
    }

    pub fn stream_connects(&self) -> usize {
        self.inner.last_event_ids.lock().unwrap().len()
    }

    pub fn stream_instances(&self) -> Vec<Option<String>> {
        self.inner.instances.lock().unwrap().clone()
    }

    /// The applied-version reports received so far.
    pub fn reports(&self) -> Vec<serde_json::Value> {
        self.inner.reports.lock().unwrap().clone()
    }

    /// The `version` of each report received so far.
    pub fn reported_versions(&self) -> Vec<u64> {
        self.reports()
            .iter()
            .map(|r| r["version"].as_u64().unwrap())
            .collect()
    }

    /// How reports are answered: `status` after `delay`.
    pub fn answer_reports(&self, status: u16, delay: Duration) {
        self.inner.report_status.store(status, Ordering::SeqCst);
        self.inner
            .report_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn full_fetches(&self) -> usize {
        self.inner.full_fetches.load(Ordering::SeqCst)
    }
}

/// A port that was free a moment ago.
pub async fn free_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn refuse(inner: &Inner, headers: &HeaderMap, env: &str) -> Option<Response> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if inner.deny.load(Ordering::SeqCst) || bearer != Some(TOKEN) {
        let body =
            serde_json::json!({"error": {"code": "unauthorized", "message": "invalid token"}});
        return Some((StatusCode::UNAUTHORIZED, Json(body)).into_response());
    }
    if env != inner.env {
        let body = serde_json::json!({"error": {"code": "not_found", "message": "no such env"}});
        return Some((StatusCode::NOT_FOUND, Json(body)).into_response());
    }
    None
}

async fn full(
    State(inner): State<Arc<Inner>>,
    Path(env): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refuse(&inner, &headers, &env) {
        return r;
    }
    inner.full_fetches.fetch_add(1, Ordering::SeqCst);
    let snapshot = inner.current.lock().unwrap().clone();
    Json(snapshot).into_response()
}

async fn applied(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(TOKEN) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    inner.reports.lock().unwrap().push(body);
    let delay = inner.report_delay_ms.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    StatusCode::from_u16(inner.report_status.load(Ordering::SeqCst))
        .unwrap()
        .into_response()
}

async fn stream(
    State(inner): State<Arc<Inner>>,
    Path(env): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    inner.last_event_ids.lock().unwrap().push(last.clone());
    inner
        .instances
        .lock()
        .unwrap()
        .push(query.get("instance").cloned());
    if let Some(r) = refuse(&inner, &headers, &env) {
        return r;
    }
    let rx = inner.events.subscribe();
    let current = inner.current.lock().unwrap().clone();
    let first = (last.as_deref() != Some(current.version.to_string().as_str()))
        .then(|| (current.version, serde_json::to_string(&current).unwrap()));
    let mut generation = inner.generation.subscribe();
    generation.mark_unchanged();
    let events = futures_util::stream::unfold(
        (first, rx, generation),
        |(mut first, mut rx, mut generation)| async move {
            let (id, data) = match first.take() {
                Some(ev) => ev,
                None => tokio::select! {
                    _ = generation.changed() => return None,
                    msg = rx.recv() => msg.ok()?,
                },
            };
            let event = Event::default()
                .event("snapshot")
                .id(id.to_string())
                .data(data);
            Some((Ok::<_, Infallible>(event), (None, rx, generation)))
        },
    );
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(inner.keep_alive))
        .into_response()
}
