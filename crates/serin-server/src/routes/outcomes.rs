//! Outcome ingestion and the live guardrail table.

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serin_core::guardrails::{
    ArmSummary, BurnRate, GuardrailConfig, Verdict, VerdictStatus, burn_rate,
};
use serin_core::slug;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{
    ApiJson, ApiPath, ApiQuery, Auth, DeployAccess, JsonBytes, OutcomeAccess, ReadAccess,
};
use crate::guardrails::{IngestReport, ParsedEvent, WindowReport, parse_batch};
use crate::{AppState, clock};

/// Outcome batches are bounded: 10,000 events of a few hundred bytes each.
pub const OUTCOME_BODY_LIMIT: usize = 4 * 1024 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_outcomes))
        .routes(routes!(post_outcome_windows))
        .layer(DefaultBodyLimit::max(OUTCOME_BODY_LIMIT))
        .merge(OpenApiRouter::new().routes(routes!(get_guardrails, put_guardrail_config)))
}

/// A batch of outcome events (SPEC "Outcome event"). Documents the body; the
/// handler reads events one by one so a bad one does not sink the batch.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct OutcomeBatch {
    /// Up to 10,000 events.
    #[schema(value_type = Vec<serin_core::outcome::OutcomeEvent>)]
    pub events: Vec<Value>,
}

/// Report outcomes. Each event is judged on its own: the answer counts the
/// accepted ones, the duplicates (same env and request id within 10 minutes,
/// e.g. a retried batch) and the rejected ones with their reasons. Accepted
/// events are durable when this answers.
#[utoipa::path(post, path = "/v1/outcomes", tag = "guardrails", request_body = OutcomeBatch,
    responses((status = 200, body = IngestReport)), security(("bearer" = ["sdk"])))]
async fn post_outcomes(
    State(state): State<AppState>,
    _auth: Auth<OutcomeAccess>,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Json<IngestReport>> {
    let events = parse_batch(&body)?;
    drop(body);
    check_event_envs(&state, &events).await?;
    let started = std::time::Instant::now();
    let report = state.guardrails.ingest(events, clock::now_ms()).await?;
    metrics::histogram!("serin_ingest_duration_seconds", "source" => "outcomes")
        .record(started.elapsed().as_secs_f64());
    Ok(Json(report))
}

/// Windows per body.
pub const MAX_WINDOWS: usize = 1_000;

/// A body of outcome windows (an SPEC extension: see docs/api.md, "Outcome windows").
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowBatch {
    /// Up to 1,000 windows.
    pub windows: Vec<serin_core::outcome::OutcomeWindow>,
}

/// Report outcomes as windows: per SDK instance, agent and snapshot version, both arms'
/// counts and each request's latency and cost, instead of one event per request. Each window
/// is judged on its own (the answer counts accepted windows, duplicates by window id within
/// 10 minutes, and rejections with reasons); accepted windows are durable when this answers.
#[utoipa::path(post, path = "/v1/outcomes/windows", tag = "guardrails", request_body = WindowBatch,
    responses((status = 200, body = WindowReport)), security(("bearer" = ["sdk"])))]
async fn post_outcome_windows(
    State(state): State<AppState>,
    _auth: Auth<OutcomeAccess>,
    ApiJson(body): ApiJson<WindowBatch>,
) -> ApiResult<Json<WindowReport>> {
    if body.windows.len() > MAX_WINDOWS {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/windows",
            format!("at most {MAX_WINDOWS} windows per body"),
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, w) in body.windows.iter().enumerate() {
        let env = w.env.as_str();
        if seen.contains(&env) || slug::validate_env(env).is_err() {
            continue;
        }
        seen.push(env);
        state
            .envs
            .require(env, &format!("/windows/{i}/env"))
            .await?;
    }
    let started = std::time::Instant::now();
    let report = state
        .guardrails
        .ingest_windows(body.windows, clock::now_ms())
        .await?;
    metrics::histogram!("serin_ingest_duration_seconds", "source" => "windows")
        .record(started.elapsed().as_secs_f64());
    Ok(Json(report))
}

/// An event naming an env that does not exist refuses the whole batch with 404 (naming the
/// event), so an SDK configured with a mistyped env learns it from its first report instead of
/// having every event dropped one by one. Malformed env names are left to per-event validation.
async fn check_event_envs(state: &AppState, events: &[ParsedEvent]) -> ApiResult<()> {
    let mut seen: Vec<&str> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let Some(env) = e.env() else {
            continue;
        };
        if seen.contains(&env) || slug::validate_env(env).is_err() {
            continue;
        }
        seen.push(env);
        state.envs.require(env, &format!("/events/{i}/env")).await?;
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Comparison {
    /// The canary bundle (`agent@N`) compared with the stable arm.
    pub candidate: String,
    /// `pass`, `fail` or `pending`.
    pub overall: VerdictStatus,
    pub last_canary_outcome_at: String,
    #[schema(value_type = Object)]
    pub canary: ArmSummary,
    #[schema(value_type = Object)]
    pub control: ArmSummary,
    pub verdicts: Vec<Verdict>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GuardrailsResponse {
    pub env: String,
    pub agent: String,
    /// The thresholds new comparisons use.
    #[schema(value_type = Object)]
    pub config: GuardrailConfig,
    pub comparisons: Vec<Comparison>,
    /// Cost per hour against its moving average, and the projected daily spend.
    #[schema(value_type = Object)]
    pub burn_rate: BurnRate,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GuardrailsQuery {
    /// Daily budget in USD for the projected-spend warning.
    pub budget_usd: Option<f64>,
}

/// Live verdicts of every canary bundle of the agent against stable, with the
/// evidence behind each, and the burn rate.
#[utoipa::path(get, path = "/v1/envs/{env}/agents/{agent}/guardrails", tag = "guardrails",
    params(("env" = String, Path), ("agent" = String, Path), GuardrailsQuery),
    responses((status = 200, body = GuardrailsResponse)), security(("bearer" = ["viewer"])))]
async fn get_guardrails(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<GuardrailsQuery>,
) -> ApiResult<Json<GuardrailsResponse>> {
    check(&state, &env, &agent).await?;
    if let Some(b) = q.budget_usd
        && !(b.is_finite() && b > 0.0)
    {
        return Err(ApiError::field(
            ErrorCode::BadRequest,
            "budget_usd",
            "budget_usd must be a positive number",
        ));
    }
    let config = match state.store.guardrail_config(&env, &agent).await? {
        Some(json) => serde_json::from_str(&json).map_err(ApiError::internal)?,
        None => GuardrailConfig::spec_default(),
    };
    let comparisons = state
        .guardrails
        .comparisons(&env, &agent)
        .await
        .into_iter()
        .map(|(candidate, at, m)| Comparison {
            candidate,
            overall: m.overall(),
            last_canary_outcome_at: clock::rfc3339(at),
            canary: m.canary().summary(),
            control: m.control().summary(),
            verdicts: m.verdicts(),
        })
        .collect();
    // Hourly cost over the last 25 hours, all bundles and arms.
    let now = clock::now_ms();
    let hour_ms = 3_600_000;
    let start = now - now.rem_euclid(hour_ms) - 24 * hour_ms;
    let mut hourly = vec![0.0f64; 25];
    for row in state.store.rollups(&env, &agent, start).await? {
        let agg: serin_core::guardrails::ArmAggregate = match serde_json::from_str(&row.data) {
            Ok(a) => a,
            Err(e) => {
                state.quarantine.record(
                    crate::quarantine::ROLLUP,
                    &format!(
                        "{}/{}/{}/{}/{}",
                        row.env, row.agent, row.bundle, row.arm, row.minute_ms
                    ),
                    &e.to_string(),
                    &row.data,
                );
                continue;
            }
        };
        let slot = usize::try_from((row.minute_ms - start) / hour_ms).unwrap_or(0);
        if let Some(h) = hourly.get_mut(slot) {
            *h += agg.cost_usd_sum;
        }
    }
    Ok(Json(GuardrailsResponse {
        env,
        agent,
        config,
        comparisons,
        burn_rate: burn_rate(&hourly, q.budget_usd),
    }))
}

async fn check(state: &AppState, env: &str, agent: &str) -> ApiResult<()> {
    state.envs.require(env, "env").await?;
    slug::validate_agent(agent)
        .map_err(|e| ApiError::field(ErrorCode::BadRequest, "agent", e.to_string()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigResponse {
    pub env: String,
    pub agent: String,
    #[schema(value_type = Object)]
    pub config: GuardrailConfig,
}

/// Set the guardrail thresholds for the agent's future comparisons (a
/// comparison keeps the thresholds it started with). Audited.
#[utoipa::path(put, path = "/v1/envs/{env}/agents/{agent}/guardrails", tag = "guardrails",
    params(("env" = String, Path), ("agent" = String, Path)),
    request_body(content = Object, description = "The `guardrails:` block of a plan"),
    responses((status = 200, body = ConfigResponse)), security(("bearer" = ["deployer"])))]
async fn put_guardrail_config(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<ConfigResponse>> {
    check(&state, &env, &agent).await?;
    let config: GuardrailConfig = crate::extract::parse_value(body)?;
    config.validate().map_err(|e| {
        ApiError::field(
            ErrorCode::InvalidField,
            e.pointer().to_owned(),
            e.to_string(),
        )
    })?;
    let json = serde_json::to_string(&config).map_err(ApiError::internal)?;
    state
        .store
        .put_guardrail_config(&env, &agent, &json, clock::now_ms(), &auth.caller.actor())
        .await?;
    Ok(Json(ConfigResponse { env, agent, config }))
}
