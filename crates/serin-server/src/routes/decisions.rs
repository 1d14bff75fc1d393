//! Snapshots (read, stream, history), decisions (`/v1/decide`, `/v1/explain`)
//! and the mutations that change routing: deploy, rollback, kill, unkill, flags.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serin_core::bundle::{Bundle, PinPolicy};
use serin_core::catalog::ModelStatus;
use serin_core::decision::{
    BundleRef, Command, CommandError, CompiledSnapshot, Context, EnvState, Flag, Kill,
    validate_flag,
};
use serin_core::slug;
use serin_store::{EnvRecord, EnvStateChange};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{
    AdminAccess, ApiJson, ApiPath, ApiQuery, Auth, Caller, DecideAccess, DeployAccess, ReadAccess,
    SnapshotAccess,
};
use crate::hub::{Published, parse_state, snapshot_event_json};
use crate::servable::{self, Refusal};
use crate::{AppState, clock};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_envs, create_env))
        .routes(routes!(get_env))
        .routes(routes!(get_snapshot))
        .routes(routes!(stream_snapshot))
        .routes(routes!(get_historical_snapshot))
        .routes(routes!(decide))
        .routes(routes!(explain))
        .routes(routes!(deploy))
        .routes(routes!(rollback))
        .routes(routes!(kill))
        .routes(routes!(unkill))
        .routes(routes!(list_flags))
        .routes(routes!(get_flag, put_flag, delete_flag))
}

/// The env's pin policy if it is registered; 404 with the nearest name otherwise.
pub(crate) async fn require_env(state: &AppState, env: &str) -> ApiResult<PinPolicy> {
    state.envs.require(env, "env").await
}

fn check_agent(agent: &str) -> ApiResult<()> {
    slug::validate_agent(agent)
        .map_err(|e| ApiError::field(ErrorCode::BadRequest, "agent", e.to_string()))
}

fn check_reason(reason: &str, field: &str) -> ApiResult<()> {
    let r = reason.trim();
    if r.is_empty() || r.chars().count() > 1000 || r.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            field,
            "reason must be 1 to 1000 printable characters",
        ));
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnvResponse {
    pub env: String,
    /// Strict envs refuse moving model aliases and direct deploys without force.
    pub strict: bool,
    /// `strict` or `dev` (lenient).
    pub pin_policy: String,
    /// The newest snapshot version (0 until the first change there).
    pub version: i64,
    /// When the newest version was committed (the creation time until then).
    pub updated_at: String,
    pub created_at: String,
    pub created_by: String,
}

impl From<EnvRecord> for EnvResponse {
    fn from(e: EnvRecord) -> EnvResponse {
        let policy = if e.strict {
            PinPolicy::Strict
        } else {
            PinPolicy::Dev
        };
        EnvResponse {
            strict: e.strict,
            pin_policy: policy.as_str().to_owned(),
            version: e.version.unwrap_or(0),
            updated_at: clock::rfc3339(e.updated_at_ms.unwrap_or(e.created_at_ms)),
            created_at: clock::rfc3339(e.created_at_ms),
            created_by: e.created_by,
            env: e.name,
        }
    }
}

/// Every registered env (`dev` exists from the start; others once created).
#[utoipa::path(get, path = "/v1/envs", tag = "decisions",
    responses((status = 200, body = Vec<EnvResponse>)), security(("bearer" = ["viewer"])))]
async fn list_envs(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
) -> ApiResult<Json<Vec<EnvResponse>>> {
    let envs = state.envs.list().await?;
    Ok(Json(envs.into_iter().map(EnvResponse::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvRequest {
    /// `[a-z0-9][a-z0-9-]{0,62}`.
    pub name: String,
    /// Pin policy; strict unless the env is named `dev`.
    pub strict: Option<bool>,
}

/// Create an env. Envs exist only once created, so a mistyped name is refused
/// everywhere instead of becoming a new env. Audited `env.create`.
#[utoipa::path(post, path = "/v1/envs", tag = "decisions", request_body = CreateEnvRequest,
    responses((status = 201, body = EnvResponse)), security(("bearer" = ["admin"])))]
async fn create_env(
    State(state): State<AppState>,
    auth: Auth<AdminAccess>,
    ApiJson(req): ApiJson<CreateEnvRequest>,
) -> ApiResult<(axum::http::StatusCode, Json<EnvResponse>)> {
    let strict = req.strict.unwrap_or(req.name != "dev");
    let rec = state
        .envs
        .create(&req.name, strict, clock::now_ms(), &auth.caller.actor())
        .await?;
    tracing::info!(env = %rec.name, strict, actor = %auth.caller.actor(), "env created");
    Ok((axum::http::StatusCode::CREATED, Json(rec.into())))
}

/// One env: its pin policy, creator and newest version.
#[utoipa::path(get, path = "/v1/envs/{env}", tag = "decisions",
    params(("env" = String, Path)),
    responses((status = 200, body = EnvResponse)), security(("bearer" = ["viewer"])))]
async fn get_env(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath(env): ApiPath<String>,
) -> ApiResult<Json<EnvResponse>> {
    Ok(Json(state.envs.get(&env, "env").await?.into()))
}

fn json_response(body: Arc<str>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The env's current snapshot with every bundle it references. Version 0 with
/// no agents when nothing was ever deployed there.
#[utoipa::path(get, path = "/v1/envs/{env}/snapshot", tag = "decisions",
    params(("env" = String, Path)),
    responses((status = 200, description = "The snapshot", body = serin_core::decision::Snapshot)),
    security(("bearer" = ["sdk"])))]
async fn get_snapshot(
    State(state): State<AppState>,
    _auth: Auth<SnapshotAccess>,
    ApiPath(env): ApiPath<String>,
) -> ApiResult<Response> {
    require_env(&state, &env).await?;
    Ok(json_response(
        state.hub.current(&env).await?.full_json.clone(),
    ))
}

/// A snapshot as it was at `version` (any env), for replaying decisions.
#[utoipa::path(get, path = "/v1/snapshots/{version}", tag = "decisions",
    params(("version" = u64, Path)),
    responses((status = 200, description = "The snapshot", body = serin_core::decision::Snapshot)),
    security(("bearer" = ["viewer"])))]
async fn get_historical_snapshot(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath(version): ApiPath<String>,
) -> ApiResult<Response> {
    let version = parse_version(&version, "version")?;
    let compiled = state.hub.historical(version).await?;
    let body = serde_json::to_string(compiled.snapshot()).map_err(ApiError::internal)?;
    Ok(json_response(body.into()))
}

fn parse_version(v: &str, field: &str) -> ApiResult<u64> {
    v.parse::<u64>().ok().filter(|v| *v >= 1).ok_or_else(|| {
        ApiError::field(
            ErrorCode::BadRequest,
            field,
            format!("snapshot version {v:?} must be a positive integer"),
        )
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The SDK instance following the stream (`[A-Za-z0-9._:-]{1,128}`); when
    /// given (sdk tokens only), the connection and the versions sent are
    /// recorded in the SDK registry (`GET /v1/envs/{env}/sdks`), and the
    /// instance id belongs to the token.
    pub instance: Option<String>,
    /// Where the instance runs (`[A-Za-z0-9._:-]{1,128}`; with `instance` only): shown in
    /// the fleet view and checked against a waved release's plan.
    pub region: Option<String>,
    pub pool: Option<String>,
}

pub(crate) fn check_instance(instance: &str, code: ErrorCode, field: &str) -> ApiResult<()> {
    slug::validate_instance(instance).map_err(|e| ApiError::field(code, field, e.to_string()))
}

/// Server-sent events: `event: snapshot`, `id: <version>`, `data: <snapshot>`.
/// The first event after connecting carries every referenced bundle; later
/// ones carry only bundles new since the previous event. `Last-Event-ID` equal
/// to the current version suppresses the first event; one the server does not
/// know as this env's (ahead of it, e.g. after a store restore, or another
/// env's) gets the full current snapshot. Keep-alive comments every 15 s. With
/// `instance` (sdk tokens only), the connection is registered to the token
/// (and a `Last-Event-ID` equal to the current version counts as that
/// instance's applied version). The stream ends when its token is revoked.
#[utoipa::path(get, path = "/v1/envs/{env}/snapshot/stream", tag = "decisions",
    params(("env" = String, Path), StreamQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Version the client already has")),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream")),
    security(("bearer" = ["sdk"])))]
async fn stream_snapshot(
    State(state): State<AppState>,
    auth: Auth<SnapshotAccess>,
    ApiPath(env): ApiPath<String>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    require_env(&state, &env).await?;
    if let Some(instance) = &query.instance {
        check_instance(instance, ErrorCode::BadRequest, "instance")?;
        crate::routes::sdks::require_sdk_token(&auth.caller, "follow a stream as an SDK instance")?;
    }
    for (field, v) in [("region", &query.region), ("pool", &query.pool)] {
        if let Some(v) = v {
            if query.instance.is_none() {
                return Err(ApiError::field(
                    ErrorCode::BadRequest,
                    field,
                    format!("{field} describes an SDK instance: send it with instance"),
                ));
            }
            check_instance(v, ErrorCode::BadRequest, field)?;
        }
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let rx = state.hub.subscribe(&env).await?;
    if last_event_id.is_some_and(|id| id > rx.borrow().version) {
        // Another replica may have published it before this one's poller
        // saw it: catch up before calling the client ahead.
        state.hub.refresh_env(&env).await?;
    }
    let current = rx.borrow().clone();
    // What the client holds, as far as this server can tell: only this env's
    // current or previous version. Anything else (ahead of the server,
    // another env's, or older) gets the full snapshot.
    let resume_from = last_event_id.filter(|id| {
        *id == current.version || (*id == current.prev_version && current.prev_version != 0)
    });
    let token = state.revocations.watch(&auth.caller.token_id).await?;
    // Registered after the subscription succeeded, so a refused stream never
    // shows up as connected.
    let up_to_date = resume_from.filter(|id| *id == current.version);
    if let Some(instance) = query.instance.as_deref() {
        state
            .sdks
            .check_fleet_owner(&env, instance, &auth.caller.token_id)
            .await?;
    }
    let registered = query
        .instance
        .as_deref()
        .map(|instance| {
            state
                .sdks
                .connect(&env, instance, &auth.caller.token_id, up_to_date)
        })
        .transpose()?;
    if let Some(instance) = query.instance.as_deref() {
        state.sdks.set_place(
            &env,
            instance,
            &auth.caller.token_id,
            crate::sdks::Place {
                region: query.region.clone(),
                pool: query.pool.clone(),
            },
        );
    }
    let gauge = SubscriberGauge::new();
    let revocations = state.revocations.clone();
    let stream = futures_util::stream::unfold(
        (
            rx,
            resume_from,
            true,
            (gauge, registered, token, revocations),
        ),
        |(mut rx, mut last_sent, mut first, mut guards)| async move {
            loop {
                if !first {
                    tokio::select! {
                        biased;
                        () = guards.2.revoked() => return None,
                        changed = rx.changed() => if changed.is_err() { return None },
                    }
                }
                let current: Arc<Published> = rx.borrow_and_update().clone();
                if !first {
                    guards.3.check_before_sending(current.version).await;
                }
                if guards.2.is_revoked() {
                    return None;
                }
                let skip = first && last_sent == Some(current.version);
                first = false;
                if skip || last_sent.is_some_and(|v| v >= current.version && current.version > 0) {
                    continue;
                }
                let data = snapshot_event_json(&current, last_sent);
                last_sent = Some(current.version);
                if let Some(registered) = &guards.1 {
                    registered.sent(current.version);
                }
                let event = Event::default()
                    .event("snapshot")
                    .id(current.version.to_string())
                    .data(data.as_ref());
                return Some((Ok(event), (rx, last_sent, first, guards)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Counts open streams in `serin_snapshot_streams`.
struct SubscriberGauge;

impl SubscriberGauge {
    fn new() -> Self {
        metrics::gauge!("serin_snapshot_streams").increment(1.0);
        SubscriberGauge
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        metrics::gauge!("serin_snapshot_streams").decrement(1.0);
    }
}

/// A request to route, as in SPEC "SDK-facing HTTP".
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    pub agent: String,
    pub env: String,
    pub request_id: String,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub workload: Option<String>,
    pub instance: Option<String>,
    pub region: Option<String>,
    /// The serving pool (what a plan's waves `by: pool` split on).
    pub pool: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FlagValue {
    /// Any JSON value (a flag may be `false`, a number, a string...).
    pub value: Value,
    pub on: bool,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecideResponse {
    /// `stable`, `canary` or `killed`.
    pub arm: String,
    /// The bundle to serve, whole (absent when killed).
    #[schema(value_type = Option<Object>)]
    pub bundle: Option<Value>,
    pub snapshot_version: u64,
    pub flags: BTreeMap<String, FlagValue>,
    /// Stable code of the rule that decided.
    pub rule: String,
    /// Why, in a sentence.
    pub reason: String,
    /// Server-side decisions are never made from a stale snapshot.
    pub stale: bool,
    /// The wave of a waved release the request was routed by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
}

fn context(r: &DecideRequest) -> Context<'_> {
    Context {
        request_id: &r.request_id,
        user: r.user.as_deref(),
        tenant: r.tenant.as_deref(),
        workload: r.workload.as_deref(),
        instance: r.instance.as_deref(),
        region: r.region.as_deref(),
        pool: r.pool.as_deref(),
    }
}

fn check_request(r: &DecideRequest) -> ApiResult<()> {
    slug::validate_agent(&r.agent)
        .map_err(|e| ApiError::field(ErrorCode::InvalidField, "/agent", e.to_string()))?;
    slug::validate_env(&r.env)
        .map_err(|e| ApiError::field(ErrorCode::InvalidField, "/env", e.to_string()))?;
    if r.request_id.is_empty() || r.request_id.len() > 256 {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/request_id",
            "request_id must be 1 to 256 bytes",
        ));
    }
    Ok(())
}

fn decide_with(
    snap: &CompiledSnapshot,
    req: &DecideRequest,
    full_bundle: bool,
) -> ApiResult<DecideResponse> {
    let ctx = context(req);
    let d = snap.decide(&req.agent, &ctx).map_err(|e| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("{e} (env {}, snapshot v{})", req.env, snap.version()),
        )
    })?;
    let bundle = match d.bundle {
        Some(r) if full_bundle => {
            let b: &Bundle = snap
                .bundle(&r.id)
                .ok_or_else(|| ApiError::internal(format!("snapshot lacks bundle {}", r.id)))?;
            let mut v = serde_json::to_value(b).map_err(ApiError::internal)?;
            if let Value::Object(m) = &mut v {
                m.insert("id".into(), r.id.clone().into());
                m.insert("digest".into(), r.digest.clone().into());
            }
            Some(v)
        }
        Some(r) => Some(json!({ "id": r.id, "digest": r.digest })),
        None => None,
    };
    let flags = snap
        .agent_flags(&req.agent, &ctx)
        .map(|f| {
            (
                f.key.to_owned(),
                FlagValue {
                    value: f.value.clone(),
                    on: f.on,
                    reason: f.reason.to_string(),
                },
            )
        })
        .collect();
    Ok(DecideResponse {
        arm: serde_json::to_value(d.arm)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        bundle,
        snapshot_version: d.snapshot_version,
        flags,
        rule: d.reason.code().to_owned(),
        reason: d.reason.to_string(),
        stale: false,
        wave: d.wave.map(str::to_owned),
    })
}

/// Route one request with the same engine the SDKs embed (for agents that
/// cannot embed the Rust SDK).
#[utoipa::path(post, path = "/v1/decide", tag = "decisions", request_body = DecideRequest,
    responses((status = 200, body = DecideResponse)), security(("bearer" = ["sdk"])))]
async fn decide(
    State(state): State<AppState>,
    _auth: Auth<DecideAccess>,
    ApiJson(req): ApiJson<DecideRequest>,
) -> ApiResult<Json<DecideResponse>> {
    check_request(&req)?;
    state.envs.require(&req.env, "/env").await?;
    let published = state.hub.current(&req.env).await?;
    let started = std::time::Instant::now();
    let answer = decide_with(&published.compiled, &req, true)?;
    metrics::histogram!("serin_decide_duration_seconds", "env" => req.env.clone(), "route" => "decide")
        .record(started.elapsed().as_secs_f64());
    Ok(Json(answer))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    pub snapshot_version: u64,
    /// Optional when the snapshot routes exactly one agent.
    pub agent: Option<String>,
    pub request_id: String,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub workload: Option<String>,
    pub instance: Option<String>,
    pub region: Option<String>,
    /// The serving pool (what a plan's waves `by: pool` split on).
    pub pool: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainResponse {
    pub env: String,
    pub agent: String,
    #[serde(flatten)]
    pub decision: DecideResponse,
}

/// Replay a request context against a past snapshot version: the arm it got,
/// the rule that decided and why.
#[utoipa::path(post, path = "/v1/explain", tag = "decisions", request_body = ExplainRequest,
    responses((status = 200, body = ExplainResponse)), security(("bearer" = ["viewer"])))]
async fn explain(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiJson(req): ApiJson<ExplainRequest>,
) -> ApiResult<Json<ExplainResponse>> {
    if req.snapshot_version == 0 {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/snapshot_version",
            "snapshot versions start at 1",
        ));
    }
    let snap = state.hub.historical(req.snapshot_version).await?;
    let agent = match &req.agent {
        Some(a) => a.clone(),
        None => {
            let agents = &snap.snapshot().agents;
            if agents.len() == 1 {
                agents.keys().next().cloned().unwrap_or_default()
            } else {
                return Err(ApiError::field(
                    ErrorCode::InvalidField,
                    "/agent",
                    format!(
                        "snapshot v{} routes {} agents; name one with agent",
                        req.snapshot_version,
                        agents.len()
                    ),
                ));
            }
        }
    };
    let env = snap.env().to_owned();
    let decide_req = DecideRequest {
        agent: agent.clone(),
        env: env.clone(),
        request_id: req.request_id,
        user: req.user,
        tenant: req.tenant,
        workload: req.workload,
        instance: req.instance,
        region: req.region,
        pool: req.pool,
    };
    check_request(&decide_req)?;
    let decision = decide_with(&snap, &decide_req, false)?;
    Ok(Json(ExplainResponse {
        env,
        agent,
        decision,
    }))
}

/// The outcome of a routing change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeResponse {
    pub env: String,
    pub agent: Option<String>,
    /// The snapshot version that carries the change.
    pub version: i64,
    pub action: String,
    /// The agent's stable bundle after the change.
    pub stable: Option<String>,
    /// The agent's previous stable (the rollback target) after the change.
    pub previous: Option<String>,
    pub killed: bool,
    pub killed_tenants: Vec<String>,
}

fn command_error(e: CommandError) -> ApiError {
    match e {
        CommandError::UnknownAgent { .. } => {
            ApiError::field(ErrorCode::NotFound, "agent", e.to_string())
        }
        CommandError::TooManyFlags { .. } => {
            ApiError::field(ErrorCode::InvalidField, "/flag/key", e.to_string())
        }
        CommandError::TooManyKilledTenants { .. } => {
            ApiError::field(ErrorCode::InvalidField, "/tenant", e.to_string())
        }
        other => ApiError::new(ErrorCode::Conflict, other.to_string()),
    }
}

/// The request field a change that cannot be served is blamed on.
fn blamed_field(cmd: &Command) -> &'static str {
    match cmd {
        Command::SetFlag(_) => "/flag",
        Command::Deploy { .. } => "/bundle",
        _ => "/",
    }
}

/// The state a change builds on when the env's newest stored state cannot even be read (an
/// older server committed it): the newest readable one, which is what the hub serves, so the
/// unreadable version stays quarantined instead of blocking every kill and rollback. `None`
/// when the newest state is readable.
async fn readable_base(state: &AppState, env: &str) -> ApiResult<Option<EnvState>> {
    let Some(latest) = state.store.latest_env_state(env).await? else {
        return Ok(None);
    };
    if serde_json::from_str::<EnvState>(&latest.state).is_ok() {
        return Ok(None);
    }
    let mut before = latest.version;
    for _ in 0..100 {
        let Some(prev) = state.store.env_state_before(env, before).await? else {
            break;
        };
        if let Ok(st) = serde_json::from_str::<EnvState>(&prev.state) {
            tracing::warn!(
                env,
                unreadable = latest.version,
                base = prev.version,
                "the newest state is unreadable; this change builds on the newest readable one"
            );
            return Ok(Some(st));
        }
        before = prev.version;
    }
    Ok(Some(EnvState::default()))
}

/// Applies `cmd` to the env's latest state in one transaction (refusing, before commit, a
/// state that could not be served), then publishes.
async fn apply(
    state: &AppState,
    env: &str,
    caller: &Caller,
    cmd: Command,
    details: Value,
) -> ApiResult<ChangeResponse> {
    let action = cmd.action().to_owned();
    let subject = format!("{}/{env}", cmd.subject());
    let field = blamed_field(&cmd);
    let mut bundles = servable::known_bundles(&state.hub, env).await;
    if let Command::Deploy { bundle, .. } = &cmd {
        servable::load_into(
            &state.hub,
            &mut bundles,
            &BTreeSet::from([bundle.id.clone()]),
        )
        .await?;
    }
    let fallback = readable_base(state, env).await?;
    // A concurrent change may reference a bundle not loaded yet: load it and run again.
    let mut attempts = 0;
    let stored = loop {
        attempts += 1;
        let outcome = state
            .store
            .update_env_state(env, clock::now_ms(), &caller.actor(), |current| {
                let st: EnvState = match (current.map(serde_json::from_str), &fallback) {
                    (None, _) => EnvState::default(),
                    (Some(Ok(st)), _) => st,
                    (Some(Err(_)), Some(base)) => base.clone(),
                    (Some(Err(e)), None) => return Err(ApiError::internal(e).into()),
                };
                let next = st.apply(&cmd).map_err(command_error)?;
                servable::check(env, &next, &bundles, field)?;
                let state_json = serde_json::to_string(&next).map_err(ApiError::internal)?;
                Ok::<_, Refusal>(EnvStateChange {
                    state: state_json,
                    action: action.clone(),
                    subject: subject.clone(),
                    details: details.clone(),
                })
            })
            .await?;
        match outcome {
            Ok(stored) => break stored,
            Err(Refusal::NeedBundles(ids)) if attempts < 3 => {
                servable::load_into(&state.hub, &mut bundles, &ids).await?;
            }
            Err(r) => return Err(r.into_api()),
        }
    };
    state.hub.publish(&stored).await?;
    metrics::counter!("serin_routing_changes_total", "action" => action.clone()).increment(1);
    let env_state = parse_state(&stored)?;
    let agent = match &cmd {
        Command::Deploy { agent, .. }
        | Command::Rollback { agent }
        | Command::Kill { agent, .. }
        | Command::Unkill { agent, .. }
        | Command::SetRelease { agent, .. } => Some(agent.clone()),
        _ => None,
    };
    let routing = agent
        .as_ref()
        .and_then(|a| env_state.routing().get(a).cloned())
        .unwrap_or_default();
    let reason = details.get("reason").and_then(Value::as_str).unwrap_or("");
    tracing::info!(
        env,
        agent = agent.as_deref().unwrap_or(""),
        version = stored.version,
        action,
        reason,
        actor = %caller.actor(),
        "routing changed"
    );
    Ok(ChangeResponse {
        env: env.to_owned(),
        agent,
        version: stored.version,
        action,
        stable: routing.stable.map(|b| b.id),
        previous: routing.previous.map(|b| b.id),
        killed: routing.killed,
        killed_tenants: routing.killed_tenants.into_iter().collect(),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// N of `agent@N`.
    pub bundle: u64,
    /// Required to deploy directly into a strict env (anything but `dev`).
    #[serde(default)]
    pub force: bool,
    /// Why; required with `force`.
    pub reason: Option<String>,
}

/// Make a bundle the stable directly, outside any release. Allowed in `dev`;
/// in strict envs only with `force` and a reason (audited).
#[utoipa::path(post, path = "/v1/envs/{env}/agents/{agent}/deploy", tag = "decisions",
    params(("env" = String, Path), ("agent" = String, Path)), request_body = DeployRequest,
    responses((status = 200, body = ChangeResponse), (status = 409, description = "The current state refuses the change (see `message`)", body = crate::error::ErrorBody)), security(("bearer" = ["deployer"])))]
async fn deploy(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<DeployRequest>,
) -> ApiResult<Json<ChangeResponse>> {
    let policy = require_env(&state, &env).await?;
    check_agent(&agent)?;
    if policy == PinPolicy::Strict {
        if !req.force {
            return Err(ApiError::new(
                ErrorCode::PolicyViolation,
                format!(
                    "{env} is a strict env: a direct deploy needs force and a reason (releases are the normal path)"
                ),
            ));
        }
        check_reason(req.reason.as_deref().unwrap_or(""), "/reason")?;
    } else if let Some(r) = &req.reason {
        check_reason(r, "/reason")?;
    }
    let number = i64::try_from(req.bundle)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            ApiError::field(
                ErrorCode::InvalidField,
                "/bundle",
                "bundle must be a positive integer",
            )
        })?;
    let stored = state.store.get_bundle(&agent, number).await?;
    let stored = match stored {
        Some(s) => s,
        None => return Err(no_bundle(&state, &agent, number).await),
    };
    let bundle = Bundle::from_canonical_json(&stored.content).map_err(ApiError::internal)?;
    if policy == PinPolicy::Strict
        && let ModelStatus::Alias { .. } = state
            .catalog
            .classify(&bundle.model.provider, &bundle.model.snapshot)
    {
        return Err(ApiError::new(
            ErrorCode::PolicyViolation,
            format!(
                "{agent}@{number} uses the moving model alias {:?}; {env} is strict and only accepts pinned snapshots",
                bundle.model.snapshot
            ),
        ));
    }
    let bundle_ref = BundleRef {
        id: format!("{agent}@{number}"),
        number: req.bundle,
        digest: stored.digest,
    };
    let details = json!({ "bundle": bundle_ref.id, "digest": bundle_ref.digest, "force": req.force, "reason": req.reason });
    let cmd = Command::Deploy {
        agent,
        bundle: bundle_ref,
    };
    Ok(Json(apply(&state, &env, &auth.caller, cmd, details).await?))
}

/// 404 for a deploy of a bundle that does not exist: an agent with no bundles at all is named
/// with the nearest agent that has some, so a typo is caught before anything routes.
async fn no_bundle(state: &AppState, agent: &str, number: i64) -> ApiError {
    match state.store.list_agents().await {
        Ok(agents) if !agents.iter().any(|a| a.name == agent) => ApiError::field(
            ErrorCode::NotFound,
            "agent",
            slug::not_found_message("agent", agent, agents.iter().map(|a| a.name.as_str())),
        ),
        Ok(_) => ApiError::field(
            ErrorCode::NotFound,
            "/bundle",
            format!("no bundle {agent}@{number}"),
        ),
        Err(e) => e.into(),
    }
}

/// The agent a flag key is scoped to (`support` of `support.fast-path`) must have bundles: a
/// flag under a mistyped agent would never be evaluated. Keys without a dot are env-wide.
async fn check_flag_agent(state: &AppState, key: &str) -> ApiResult<()> {
    let Some((agent, _)) = key.split_once('.') else {
        return Ok(());
    };
    let agents = state.store.list_agents().await?;
    if agents.iter().any(|a| a.name == agent) {
        return Ok(());
    }
    let known = agents.iter().map(|a| a.name.as_str());
    let msg = slug::not_found_message("agent", agent, known);
    Err(ApiError::field(
        ErrorCode::NotFound,
        "key",
        format!("flag {key} is scoped to agent {agent}, but there is {msg}"),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why (audited).
    pub reason: String,
}

/// Roll the agent back in one step: a running release is drained; otherwise
/// the previous stable (warm in every SDK) becomes the stable again.
#[utoipa::path(post, path = "/v1/envs/{env}/agents/{agent}/rollback", tag = "decisions",
    params(("env" = String, Path), ("agent" = String, Path)), request_body = ReasonRequest,
    responses((status = 200, body = ChangeResponse), (status = 409, description = "The current state refuses the change (see `message`)", body = crate::error::ErrorBody)), security(("bearer" = ["deployer"])))]
async fn rollback(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> ApiResult<Json<ChangeResponse>> {
    require_env(&state, &env).await?;
    check_agent(&agent)?;
    check_reason(&req.reason, "/reason")?;
    if state.releases.is_active(&env, &agent).await? {
        // The release records who rolled it back and notifies its webhooks.
        let actor = auth.caller.actor();
        let reason = req.reason.clone();
        // An unreadable (quarantined) release cannot run its state machine: its
        // canary is drained and its row closed instead.
        let action = match state
            .releases
            .close_unreadable(&env, &agent, &actor, &reason)
            .await?
        {
            Some(()) => "release.rolled_back".to_owned(),
            None => {
                let view = state
                    .releases
                    .command(&env, &agent, &actor.clone(), |_, _, _| {
                        serin_core::release::Event::Rollback { actor, reason }
                    })
                    .await?;
                format!("release.{}", view.release.phase.as_str())
            }
        };
        let current = state.hub.current(&env).await?;
        let routing = current
            .compiled
            .snapshot()
            .agents
            .get(&agent)
            .cloned()
            .unwrap_or_default();
        return Ok(Json(ChangeResponse {
            env: env.clone(),
            agent: Some(agent),
            version: i64::try_from(current.version).unwrap_or(i64::MAX),
            action,
            stable: routing.stable.map(|b| b.id),
            previous: routing.previous.map(|b| b.id),
            killed: routing.killed,
            killed_tenants: routing.killed_tenants.into_iter().collect(),
        }));
    }
    let details = json!({ "reason": req.reason });
    Ok(Json(
        apply(
            &state,
            &env,
            &auth.caller,
            Command::Rollback { agent },
            details,
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillRequest {
    /// Only this tenant; the whole agent when absent.
    pub tenant: Option<String>,
    pub reason: String,
    /// An approved request (`apr-…`) for this unkill, when the env's approval policy
    /// reserves unkilling (`unkill`); spent by it. Taken by unkill only.
    pub approval: Option<String>,
}

fn check_tenant(t: &Option<String>) -> ApiResult<()> {
    if let Some(t) = t
        && (t.is_empty() || t.len() > 256)
    {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/tenant",
            "tenant must be 1 to 256 bytes",
        ));
    }
    Ok(())
}

/// Switch the agent off (every request decides `killed`), for everyone or one
/// tenant. Wins over every other rule.
#[utoipa::path(post, path = "/v1/envs/{env}/agents/{agent}/kill", tag = "decisions",
    params(("env" = String, Path), ("agent" = String, Path)), request_body = KillRequest,
    responses((status = 200, body = ChangeResponse), (status = 409, description = "The current state refuses the change (see `message`)", body = crate::error::ErrorBody)), security(("bearer" = ["deployer"])))]
async fn kill(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<KillRequest>,
) -> ApiResult<Json<ChangeResponse>> {
    switch(&state, &auth.caller, &env, agent, req, true).await
}

/// Lift a kill switch (for everyone or one tenant). When the env's approval policy reserves
/// unkilling, answers 202 with a pending approval request; repeat with `approval` once an
/// approver has approved.
#[utoipa::path(post, path = "/v1/envs/{env}/agents/{agent}/unkill", tag = "decisions",
    params(("env" = String, Path), ("agent" = String, Path)), request_body = KillRequest,
    responses((status = 200, body = ChangeResponse), (status = 202, description = "Reserved by the env's approval policy: the pending request", body = crate::approvals::ApprovalPending), (status = 409, description = "The current state refuses the change (see `message`)", body = crate::error::ErrorBody)), security(("bearer" = ["deployer"])))]
async fn unkill(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<KillRequest>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    require_env(&state, &env).await?;
    check_agent(&agent)?;
    check_tenant(&req.tenant)?;
    check_reason(&req.reason, "/reason")?;
    let (policy, _) = crate::approvals::policy(&state.store, &env).await?;
    let reserved = policy
        .requires(serin_core::approvals::Gated::Unkill)
        .then(|| crate::approvals::Reserved {
            kind: serin_core::approvals::ApprovalKind::Unkill,
            env: &env,
            agent: &agent,
            bundle: None,
            reason: req.reason.clone(),
            details: json!({ "tenant": req.tenant }),
        });
    let actor = auth.caller.actor();
    let spent =
        match crate::approvals::gate(&state.store, &actor, reserved, req.approval.as_deref())
            .await?
        {
            crate::approvals::Gate::Pending(r) => return Ok(crate::approvals::pending(r)),
            crate::approvals::Gate::Proceed(spent) => spent,
        };
    match switch(&state, &auth.caller, &env, agent.clone(), req, false).await {
        Ok(done) => Ok(done.into_response()),
        Err(e) => {
            crate::approvals::give_back(&state.store, spent).await;
            Err(e)
        }
    }
}

async fn switch(
    state: &AppState,
    caller: &Caller,
    env: &str,
    agent: String,
    req: KillRequest,
    kill: bool,
) -> ApiResult<Json<ChangeResponse>> {
    require_env(state, env).await?;
    check_agent(&agent)?;
    check_tenant(&req.tenant)?;
    check_reason(&req.reason, "/reason")?;
    if kill && req.approval.is_some() {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/approval",
            "kill never waits for an approval; only unkill takes one",
        ));
    }
    let details = json!({ "tenant": req.tenant, "reason": req.reason });
    let cmd = if kill {
        Command::Kill {
            agent,
            tenant: req.tenant,
            kill: Kill {
                reason: req.reason,
                actor: caller.actor(),
                at_ms: clock::now_ms(),
            },
        }
    } else {
        Command::Unkill {
            agent,
            tenant: req.tenant,
        }
    };
    Ok(Json(apply(state, env, caller, cmd, details).await?))
}

/// The env's flags.
#[utoipa::path(get, path = "/v1/envs/{env}/flags", tag = "flags",
    params(("env" = String, Path)),
    responses((status = 200, description = "Flags by key", body = BTreeMap<String, Flag>)),
    security(("bearer" = ["viewer"])))]
async fn list_flags(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath(env): ApiPath<String>,
) -> ApiResult<Json<BTreeMap<String, Flag>>> {
    require_env(&state, &env).await?;
    let current = state.hub.current(&env).await?;
    Ok(Json(current.compiled.snapshot().flags.clone()))
}

/// One flag.
#[utoipa::path(get, path = "/v1/envs/{env}/flags/{key}", tag = "flags",
    params(("env" = String, Path), ("key" = String, Path)),
    responses((status = 200, description = "The flag", body = Flag)),
    security(("bearer" = ["viewer"])))]
async fn get_flag(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((env, key)): ApiPath<(String, String)>,
) -> ApiResult<Json<Flag>> {
    require_env(&state, &env).await?;
    let current = state.hub.current(&env).await?;
    current
        .compiled
        .snapshot()
        .flags
        .get(&key)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no flag {key:?} in env {env}")))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutFlagRequest {
    /// The flag definition (see the Flag type); its `key` must match the path.
    #[schema(value_type = Object)]
    pub flag: Value,
    pub reason: Option<String>,
}

/// Create or replace a flag.
#[utoipa::path(put, path = "/v1/envs/{env}/flags/{key}", tag = "flags",
    params(("env" = String, Path), ("key" = String, Path)), request_body = PutFlagRequest,
    responses((status = 200, body = ChangeResponse), (status = 409, description = "The current state refuses the change (see `message`)", body = crate::error::ErrorBody)), security(("bearer" = ["deployer"])))]
async fn put_flag(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, key)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<PutFlagRequest>,
) -> ApiResult<Json<ChangeResponse>> {
    require_env(&state, &env).await?;
    slug::validate_flag_key(&key)
        .map_err(|e| ApiError::field(ErrorCode::BadRequest, "key", e.to_string()))?;
    if key.starts_with(crate::routes::ofrep::AGENT_FLAG_PREFIX) {
        // OFREP clients read agents' routing under these keys; a flag there would shadow it.
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "key",
            format!(
                "flag keys starting with {} are reserved for agents' routing over OFREP",
                crate::routes::ofrep::AGENT_FLAG_PREFIX
            ),
        ));
    }
    if let Some(r) = &req.reason {
        check_reason(r, "/reason")?;
    }
    let mut raw = req.flag;
    if let Value::Object(m) = &mut raw {
        m.entry("key").or_insert_with(|| key.clone().into());
    }
    let flag: Flag = crate::extract::parse_json(raw.to_string().as_bytes()).map_err(|mut e| {
        e.field = e
            .field
            .map(|f| format!("/flag{}", if f == "/" { "" } else { &f }));
        e
    })?;
    if flag.key != key {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/flag/key",
            format!(
                "the flag's key {:?} differs from the path's {key:?}",
                flag.key
            ),
        ));
    }
    validate_flag(&flag).map_err(|e| {
        ApiError::field(
            ErrorCode::InvalidField,
            format!("/flag{}", e.pointer()),
            e.to_string(),
        )
    })?;
    check_flag_agent(&state, &key).await?;
    let details = json!({ "flag": flag, "reason": req.reason });
    Ok(Json(
        apply(&state, &env, &auth.caller, Command::SetFlag(flag), details).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteFlagQuery {
    pub reason: Option<String>,
}

/// Delete a flag.
#[utoipa::path(delete, path = "/v1/envs/{env}/flags/{key}", tag = "flags",
    params(("env" = String, Path), ("key" = String, Path), DeleteFlagQuery),
    responses((status = 200, body = ChangeResponse), (status = 409, description = "The current state refuses the change (see `message`)", body = crate::error::ErrorBody)), security(("bearer" = ["deployer"])))]
async fn delete_flag(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, key)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DeleteFlagQuery>,
) -> ApiResult<Json<ChangeResponse>> {
    require_env(&state, &env).await?;
    slug::validate_flag_key(&key)
        .map_err(|e| ApiError::field(ErrorCode::BadRequest, "key", e.to_string()))?;
    let details = json!({ "reason": q.reason });
    Ok(Json(
        apply(
            &state,
            &env,
            &auth.caller,
            Command::DeleteFlag { key },
            details,
        )
        .await?,
    ))
}
