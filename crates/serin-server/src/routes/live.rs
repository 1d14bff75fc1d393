//! The overview (`GET /v1/status`) and the live views the dashboard and `serin status
//! --watch` follow: the overview and one release's view, as server-sent events.
//!
//! A live stream recomputes its view from the store every [`POLL`] and sends it only when
//! it changed. Polling the store, rather than listening to this replica's own events, is
//! what keeps a stream right when the change was committed on another replica (the
//! controller runs on the leader; commands land anywhere). The streams are capped
//! separately from SDK snapshot streams (`--max-ui-streams`, 429 beyond), and end when
//! their token is revoked or the server shuts down.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use serin_core::slug;
use tokio::sync::OwnedSemaphorePermit;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode, ErrorDetail};
use crate::extract::{ApiPath, Auth, ReadAccess};
use crate::hub::Hub;
use crate::overview::{self, Overview};
use crate::releases::ReleaseView;
use crate::revocation::TokenWatch;

/// How often an open live stream recomputes its view.
pub const POLL: Duration = Duration::from_secs(1);
/// SSE comment heartbeats, so proxies keep an idle stream open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(status_stream))
        .routes(routes!(release_stream))
}

/// Every env and every agent with state in it: stable, previous, kill switches, the active
/// release (step, weight, gate progress, verdicts), the env's SDKs and their lag, and the
/// replica registry of `GET /v1/system/replicas`.
#[utoipa::path(get, path = "/v1/status", tag = "system",
    responses((status = 200, body = Overview)), security(("bearer" = ["viewer"])))]
async fn status(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
) -> ApiResult<Json<Overview>> {
    // As `GET /v1/system/replicas` does: this replica's own row is written now, so the answer
    // shows its current state even right after start. The stream leaves this to the
    // heartbeat (every 2 s) rather than writing the store every second per viewer.
    if let Err(e) = state.heartbeat.beat().await {
        tracing::debug!(error = %e, "could not write this replica's heartbeat");
    }
    Ok(Json(overview::gather(&state).await?))
}

/// The overview of `GET /v1/status` as server-sent events: an `overview` event at once and
/// whenever it changes (checked every second; the clock and heartbeat ages alone are not a
/// change), comment heartbeats every 15 s. 429 with `Retry-After` when the server's live
/// streams are all taken. An `error` event (the error shape) reports a failed read; the
/// stream goes on.
#[utoipa::path(get, path = "/v1/status/stream", tag = "system",
    responses((status = 200, description = "An event stream of `overview` events", content_type = "text/event-stream")),
    security(("bearer" = ["viewer"])))]
async fn status_stream(
    State(state): State<AppState>,
    auth: Auth<ReadAccess>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let permit = take_permit(&state)?;
    let token = state.revocations.watch(&auth.caller.token_id).await?;
    let st = state.clone();
    Ok(live(
        state.hub.clone(),
        permit,
        token,
        "overview",
        move || {
            let st = st.clone();
            async move {
                // A little under the poll, so each stream's look finds the view of this round.
                let shared = st.overview.get(&st, POLL.mul_f32(0.9)).await?;
                Ok((shared.0.clone(), shared.1.clone()))
            }
        },
    ))
}

/// The view of `GET /v1/envs/{env}/agents/{agent}/release` (the active release, or the
/// newest) as server-sent events: a `release` event at once and whenever it changes
/// (checked every second), with its transitions, gate, verdicts and evidence; comment
/// heartbeats every 15 s. 404 (with the nearest name) for an unknown env or agent, or an
/// agent without releases there; 429 with `Retry-After` when the server's live streams
/// are all taken.
#[utoipa::path(get, path = "/v1/envs/{env}/agents/{agent}/release/stream", tag = "releases",
    params(("env" = String, Path), ("agent" = String, Path)),
    responses((status = 200, description = "An event stream of `release` events", content_type = "text/event-stream")),
    security(("bearer" = ["viewer"])))]
async fn release_stream(
    State(state): State<AppState>,
    auth: Auth<ReadAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    state.envs.require(&env, "env").await?;
    slug::validate_agent(&agent)
        .map_err(|e| ApiError::field(ErrorCode::BadRequest, "agent", e.to_string()))?;
    let agents = state.store.list_agents().await?;
    if !agents.iter().any(|a| a.name == agent) {
        return Err(ApiError::field(
            ErrorCode::NotFound,
            "agent",
            slug::not_found_message("agent", &agent, agents.iter().map(|a| a.name.as_str())),
        ));
    }
    // Refused before a permit is taken: an agent without releases has nothing to follow.
    state.releases.current(&env, &agent).await?;
    let permit = take_permit(&state)?;
    let token = state.revocations.watch(&auth.caller.token_id).await?;
    let st = state.clone();
    Ok(live(
        state.hub.clone(),
        permit,
        token,
        "release",
        move || {
            let (st, env, agent) = (st.clone(), env.clone(), agent.clone());
            async move {
                let v: ReleaseView = st.releases.current(&env, &agent).await?;
                let key = serde_json::to_string(&v).map_err(ApiError::internal)?;
                Ok((v, key))
            }
        },
    ))
}

fn take_permit(state: &AppState) -> ApiResult<OwnedSemaphorePermit> {
    state.ui_streams.clone().try_acquire_owned().map_err(|_| {
        metrics::counter!("serin_live_streams_refused_total").increment(1);
        ApiError::new(
            ErrorCode::Overloaded,
            "too many live views are open on this server; retry shortly",
        )
    })
}

/// Counts open live streams in `serin_live_streams`.
struct LiveGauge;

impl LiveGauge {
    fn new() -> LiveGauge {
        metrics::gauge!("serin_live_streams").increment(1.0);
        LiveGauge
    }
}

impl Drop for LiveGauge {
    fn drop(&mut self) {
        metrics::gauge!("serin_live_streams").decrement(1.0);
    }
}

/// What a live stream carries between events. The permit and gauge live as long as the
/// stream, so a closed connection frees its place.
struct Live<F> {
    /// Closed at shutdown: the stream ends so the graceful drain can finish.
    hub: Arc<Hub>,
    compute: F,
    /// The key of the view (or the error text) last sent.
    last: Option<String>,
    first: bool,
    token: TokenWatch,
    _permit: OwnedSemaphorePermit,
    _gauge: LiveGauge,
}

/// An SSE stream of `name` events: `compute` gives a view and its change key.
fn live<F, Fut, T>(
    hub: Arc<Hub>,
    permit: OwnedSemaphorePermit,
    token: TokenWatch,
    name: &'static str,
    compute: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ApiResult<(T, String)>> + Send,
    T: Serialize,
{
    let start = Live {
        hub,
        compute,
        last: None,
        first: true,
        token,
        _permit: permit,
        _gauge: LiveGauge::new(),
    };
    let stream = futures_util::stream::unfold(start, move |mut s| async move {
        loop {
            if !s.first {
                tokio::select! {
                    biased;
                    () = s.hub.closed() => return None,
                    () = s.token.revoked() => return None,
                    () = tokio::time::sleep(POLL) => {}
                }
            }
            s.first = false;
            if s.token.is_revoked() {
                return None;
            }
            let event = match (s.compute)().await {
                Ok((view, key)) => {
                    if s.last.as_deref() == Some(key.as_str()) {
                        continue;
                    }
                    s.last = Some(key);
                    Event::default().event(name).json_data(&view)
                }
                Err(e) => {
                    let body = ErrorBody {
                        error: ErrorDetail {
                            code: e.code.as_str().to_owned(),
                            message: e.message.clone(),
                            field: e.field.clone(),
                            details: None,
                        },
                    };
                    let key = format!("error:{}", e.message);
                    if s.last.as_deref() == Some(key.as_str()) {
                        continue;
                    }
                    tracing::warn!(error = %e.message, stream = name, "live view could not be read");
                    s.last = Some(key);
                    Event::default().event("error").json_data(&body)
                }
            };
            match event {
                Ok(ev) => return Some((Ok(ev), s)),
                Err(e) => {
                    tracing::error!(error = %e, stream = name, "live view could not be encoded");
                    return None;
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT))
}
