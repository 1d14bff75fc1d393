//! Liveness, readiness, metrics and the OpenAPI document.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::clock::{self, ClockError};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{AdminAccess, ApiJson, Auth, ReadAccess};
use crate::quarantine::QuarantinedRow;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(advance_clock))
        .routes(routes!(quarantine))
        .routes(routes!(replicas))
}

/// What `GET /v1/system/replicas` answers.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ReplicaList {
    /// The answering server's now (unix ms), which `alive` and `last_seen_ago_ms` are
    /// measured against.
    pub now_ms: i64,
    /// The id of the replica that answered.
    pub served_by: String,
    /// The live replica leading the release controller (the one with the newest epoch if
    /// two claim it for a moment); absent while none does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<ReplicaLeader>,
    /// The store's current leadership epoch.
    pub epoch: i64,
    /// The store's newest version of every env some replica serves.
    pub newest_versions: BTreeMap<String, i64>,
    /// Every replica seen within the last hour, oldest start first.
    pub replicas: Vec<ReplicaInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ReplicaLeader {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub epoch: i64,
}

/// One replica, as it last reported itself.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ReplicaInfo {
    /// Random per process start.
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// The server version it runs.
    pub version: String,
    pub started_ms: i64,
    pub last_seen_ms: i64,
    pub last_seen_ago_ms: i64,
    /// Heartbeated within the last 6 s (three heartbeats) and did not shut down.
    pub alive: bool,
    /// When it shut down cleanly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gone_ms: Option<i64>,
    /// Whether it reported leading the release controller.
    pub is_leader: bool,
    /// The epoch it leads under, or the newest it had seen.
    pub epoch: i64,
    /// PostgreSQL only: whether its fan-out listener session was up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener_connected: Option<bool>,
    /// Whether it reported every env it serves published at the newest version.
    pub caught_up: bool,
    /// The envs it reported behind.
    pub behind: Vec<String>,
    /// Versions behind the store's newest, over the envs it serves (the largest gap; 0 when
    /// caught up), from what it last reported publishing.
    pub lag_versions: i64,
    /// SDK instances with an open snapshot stream on it.
    pub sdk_streams: i64,
}

/// Every server process sharing this store: which are alive, which one leads, and how far
/// each is behind the store's newest env versions. Each replica heartbeats its row every 2 s;
/// one not seen for 6 s is not alive, and rows not seen for an hour are deleted.
#[utoipa::path(
    get,
    path = "/v1/system/replicas",
    tag = "system",
    responses((status = 200, body = ReplicaList)),
    security(("bearer" = ["viewer"]))
)]
async fn replicas(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
) -> ApiResult<axum::Json<ReplicaList>> {
    // This replica's own row is written now, so the answer includes it even right after start.
    if let Err(e) = state.heartbeat.beat().await {
        tracing::debug!(error = %e, "could not write this replica's heartbeat");
    }
    Ok(axum::Json(replica_list(&state).await?))
}

/// The replica registry as stored now, measured against this server's clock (shared by
/// `GET /v1/system/replicas` and the overview of `GET /v1/status`).
pub(crate) async fn replica_list(state: &AppState) -> ApiResult<ReplicaList> {
    let rows = state.store.list_replicas().await?;
    let epoch = state.store.leadership().await?.epoch;
    let now_ms = clock::now_ms();
    let mut newest_versions = BTreeMap::new();
    for env in rows.iter().flat_map(|r| r.published.keys()) {
        if newest_versions.contains_key(env) {
            continue;
        }
        let newest = state.store.newest_env_version(env).await?.unwrap_or(0);
        newest_versions.insert(env.clone(), newest);
    }
    let replicas: Vec<ReplicaInfo> = rows
        .into_iter()
        .map(|r| {
            let alive = crate::replicas::is_alive(&r, now_ms);
            let lag_versions = r
                .published
                .iter()
                .map(|(env, v)| {
                    newest_versions
                        .get(env)
                        .map_or(0, |n: &i64| n.saturating_sub(*v).max(0))
                })
                .max()
                .unwrap_or(0);
            ReplicaInfo {
                alive,
                last_seen_ago_ms: now_ms.saturating_sub(r.last_seen_ms).max(0),
                lag_versions,
                id: r.id,
                host: r.host,
                pid: r.pid,
                version: r.version,
                started_ms: r.started_ms,
                last_seen_ms: r.last_seen_ms,
                gone_ms: r.gone_ms,
                is_leader: r.is_leader,
                epoch: r.epoch,
                listener_connected: r.listener_connected,
                caught_up: r.caught_up,
                behind: r.behind,
                sdk_streams: r.sdk_streams,
            }
        })
        .collect();
    let leader = replicas
        .iter()
        .filter(|r| r.alive && r.is_leader)
        .max_by_key(|r| r.epoch)
        .map(|r| ReplicaLeader {
            id: r.id.clone(),
            host: r.host.clone(),
            pid: r.pid,
            epoch: r.epoch,
        });
    Ok(ReplicaList {
        now_ms,
        served_by: state.heartbeat.identity.id.clone(),
        leader,
        epoch,
        newest_versions,
        replicas,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantineList {
    /// Stored rows this server found unreadable since it started; each row is
    /// left in the store as it was.
    pub rows: Vec<QuarantinedRow>,
}

/// Stored rows this server could not read (quarantined instead of stopping
/// the server), with the decode error and the raw text. Admin only: the raw
/// text may hold anything the row held.
#[utoipa::path(
    get,
    path = "/v1/system/quarantine",
    tag = "system",
    responses((status = 200, body = QuarantineList)),
    security(("bearer" = ["admin"]))
)]
async fn quarantine(
    State(state): State<AppState>,
    _auth: Auth<AdminAccess>,
) -> axum::Json<QuarantineList> {
    axum::Json(QuarantineList {
        rows: state.quarantine.list(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the store does not answer.
    pub status: &'static str,
    pub version: &'static str,
    /// `sqlite` or `postgres`.
    pub store: &'static str,
}

/// Liveness: the process answers. No authentication.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health)))]
async fn healthz(State(state): State<AppState>) -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        store: state.store.backend_name(),
    })
}

/// What `/readyz` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ok`, or `unavailable` when the store does not answer (then the answer is 503).
    pub status: &'static str,
    pub version: &'static str,
    /// `sqlite` or `postgres`.
    pub store: &'static str,
    /// This replica's part in the snapshot fan-out. Informational: it does not change the
    /// status code, because a replica that is behind still serves, and catches up within
    /// `--refresh-ms` at worst.
    pub replica: ReplicaHealth,
    /// Whether this replica leads the release controller, and under which epoch.
    pub leader: crate::leader::LeaderStatus,
}

/// This replica's part in the snapshot fan-out.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaHealth {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// PostgreSQL only (absent on SQLite): whether this replica's listener session is up, so
    /// that changes committed through other replicas reach its SDK streams at once. While it
    /// is down they arrive within `--refresh-ms`, and it reconnects with backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener_connected: Option<bool>,
    /// Whether every env this replica serves is published at the store's newest version.
    /// False while a change is on its way, when a stored version cannot be served, or when
    /// the store could not be read.
    pub caught_up: bool,
    /// The envs served here whose published version is behind the store's newest.
    pub behind: Vec<String>,
    /// PostgreSQL only (absent on SQLite, or when the store could not be read): outcome
    /// batches accepted by any replica and not yet applied to the guardrail monitors by the
    /// leader (rows of the shared outcome journal, so the same figure on every replica).
    /// Informational like `caught_up`: it stays above 0 while no replica leads, and the
    /// verdicts any replica shows lag by these batches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_behind: Option<i64>,
}

/// Readiness: the store answers a query, plus this replica's fan-out state, and whether it
/// leads the release controller (under which epoch). No authentication.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "system",
    responses(
        (status = 200, body = Ready),
        (status = 503, description = "The store is unreachable", body = Ready)
    )
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Ready>) {
    let ok = state.store.ping().await.is_ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let (caught_up, behind) = if ok {
        crate::replicas::lagging_envs(&state.store, &state.hub).await
    } else {
        (false, Vec::new())
    };
    // SQLite judges every batch as it arrives: it has no journal to be behind on.
    let journal_behind = if ok && state.store.backend_name() == "postgres" {
        state.store.journal_marks().await.ok().map(|m| m.behind)
    } else {
        None
    };
    (
        status,
        axum::Json(Ready {
            status: if ok { "ok" } else { "unavailable" },
            version: env!("CARGO_PKG_VERSION"),
            store: state.store.backend_name(),
            replica: ReplicaHealth {
                backend: state.replica.backend(),
                listener_connected: state.replica.listener_connected(),
                caught_up,
                behind,
                journal_behind,
            },
            leader: state.leader.status(),
        }),
    )
}

/// Prometheus text exposition of the server's metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")),
    security(("bearer" = ["viewer"]))
)]
async fn metrics(State(state): State<AppState>, _auth: Auth<ReadAccess>) -> impl IntoResponse {
    let mut text = state.metrics.render();
    text.push_str(&crate::telemetry::render_state(&state).await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "system",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")),
    security(("bearer" = ["viewer"]))
)]
async fn openapi_json(State(state): State<AppState>, _auth: Auth<ReadAccess>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_json.as_str().to_owned(),
    )
}

/// How far to move an adjustable clock.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceClock {
    /// Milliseconds to move forward, 1 to a year.
    pub advance_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClockState {
    /// The server's now, RFC 3339 UTC.
    pub now: String,
    pub now_ms: i64,
    /// How far the server's clock is ahead of wall time.
    pub offset_ms: i64,
}

/// Move the server's clock forward (tests and drills of time-based rules).
///
/// Only a server started with `--adjustable-clock` takes this; any other
/// answers 409. Time never moves backwards, and the step applies to every
/// time-based rule at once: release step durations, evidence expiry, dedup
/// windows, webhook backoff.
#[utoipa::path(
    post,
    path = "/v1/system/clock",
    tag = "system",
    request_body = AdvanceClock,
    responses(
        (status = 200, body = ClockState),
        (status = 409, description = "The server's clock is not adjustable", body = crate::error::ErrorBody),
        (status = 422, description = "advance_ms out of range", body = crate::error::ErrorBody)
    ),
    security(("bearer" = ["admin"]))
)]
async fn advance_clock(
    State(state): State<AppState>,
    auth: Auth<AdminAccess>,
    ApiJson(body): ApiJson<AdvanceClock>,
) -> ApiResult<axum::Json<ClockState>> {
    let refuse = |e: ClockError| match e {
        ClockError::NotAdjustable => ApiError::new(ErrorCode::Conflict, e.to_string()),
        ClockError::OutOfRange(_) => {
            ApiError::field(ErrorCode::InvalidField, "/advance_ms", e.to_string())
        }
    };
    clock::check_advance(body.advance_ms).map_err(refuse)?;
    // Moving time changes what every time-based rule decides, so the step is
    // on the record before it takes effect.
    state
        .store
        .append_audit(serin_store::NewAudit {
            at_ms: clock::now_ms(),
            actor: auth.caller.actor(),
            action: "system.clock_advance".into(),
            subject: "clock".into(),
            details: serde_json::json!({
                "advance_ms": body.advance_ms,
                "offset_ms": clock::offset_ms().saturating_add(body.advance_ms),
            }),
        })
        .await?;
    let now_ms = clock::advance(body.advance_ms).map_err(refuse)?;
    tracing::warn!(
        by = %auth.caller.actor(),
        advance_ms = body.advance_ms,
        offset_ms = clock::offset_ms(),
        "the server clock was moved forward"
    );
    Ok(axum::Json(ClockState {
        now: clock::rfc3339(now_ms),
        now_ms,
        offset_ms: clock::offset_ms(),
    }))
}
