//! The side-effect ledger: agents record an intent before a side-effecting tool call and its
//! result after, so a retry learns whether the call already happened.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serin_core::ledger::{self, Effect, EffectIntent, EffectStatus, LedgerError};
use serin_core::slug;
use serin_store::Resolved;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::clock;
use crate::effects::{from_row, to_row};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth, EffectAccess, ReadAccess};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(record_intent))
        .routes(routes!(record_result))
        .routes(routes!(list_effects))
}

/// A ledger refusal, naming the body field (a JSON pointer) it concerns.
fn refusal(e: LedgerError) -> ApiError {
    match &e {
        LedgerError::Invalid { field, .. } => {
            ApiError::field(ErrorCode::InvalidField, format!("/{field}"), e.to_string())
        }
        LedgerError::ResultConflict { current, .. } => {
            ApiError::field(ErrorCode::Conflict, "/status", e.to_string())
                .with_details(serde_json::json!({ "code": e.code(), "status": current }))
        }
    }
}

/// 404 naming the nearest agent unless `agent` has bundles, then 404 unless it has bundle `n`.
async fn require_bundle(
    state: &AppState,
    agent: &str,
    n: i64,
    fields: (&str, &str),
) -> ApiResult<()> {
    let agents = state.store.list_agents().await?;
    if !agents.iter().any(|a| a.name == agent) {
        return Err(ApiError::field(
            ErrorCode::NotFound,
            fields.0,
            slug::not_found_message("agent", agent, agents.iter().map(|a| a.name.as_str())),
        ));
    }
    if state.store.get_bundle(agent, n).await?.is_none() {
        return Err(ApiError::field(
            ErrorCode::NotFound,
            fields.1,
            format!("no bundle {agent}@{n}"),
        ));
    }
    Ok(())
}

/// A ledger record and whether this request created it.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntentResponse {
    /// False when the key already recorded this call: the earlier record is returned and the
    /// caller must not act again unless its status says the call did not happen.
    pub created: bool,
    pub effect: Effect,
}

/// Record an intent before acting (audited `effect.intent`). 201 with a new record; 200 with
/// the earlier record when the key already records this same call (a retry: check its status
/// before acting again); 409 when the key records a different call.
#[utoipa::path(post, path = "/v1/effects", tag = "effects", request_body = EffectIntent,
    responses(
        (status = 201, body = IntentResponse),
        (status = 200, description = "The key already records this call", body = IntentResponse),
        (status = 409, description = "The key records a different call", body = crate::error::ErrorBody),
        (status = 429, description = "Too many intents from this token in one second", body = crate::error::ErrorBody)),
    security(("bearer" = ["sdk"])))]
async fn record_intent(
    State(state): State<AppState>,
    auth: Auth<EffectAccess>,
    ApiJson(intent): ApiJson<EffectIntent>,
) -> ApiResult<(StatusCode, Json<IntentResponse>)> {
    intent.validate().map_err(refusal)?;
    let now = clock::now_ms();
    state.effect_intents.admit(&auth.caller.token_id, now)?;
    require_bundle(&state, &intent.agent, intent.bundle, ("/agent", "/bundle")).await?;
    let actor = auth.caller.actor();
    let record = Effect::open(&intent, now, &actor);
    let (row, created) = state.store.insert_effect(&to_row(&record), &actor).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(IntentResponse {
            created,
            effect: from_row(row)?,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultRequest {
    /// `committed`, `failed` or `unknown` (the caller cannot tell).
    pub status: EffectStatus,
    /// A short explanation (at most 4096 bytes).
    pub detail: Option<String>,
}

/// Record an intent's result (audited `effect.result`). The same result again is a no-op;
/// a different one after `committed` or `failed` is 409. `unknown` may still be settled.
#[utoipa::path(post, path = "/v1/effects/{key}/result", tag = "effects",
    params(("key" = String, Path, description = "The idempotency key")), request_body = ResultRequest,
    responses((status = 200, body = Effect),
        (status = 409, description = "A different result is already recorded", body = crate::error::ErrorBody)),
    security(("bearer" = ["sdk"])))]
async fn record_result(
    State(state): State<AppState>,
    auth: Auth<EffectAccess>,
    ApiPath(key): ApiPath<String>,
    ApiJson(req): ApiJson<ResultRequest>,
) -> ApiResult<Json<Effect>> {
    ledger::check_key(&key, "key")
        .map_err(|e| ApiError::field(ErrorCode::BadRequest, "key", e.to_string()))?;
    let now = clock::now_ms();
    let detail = req.detail.as_deref();
    let out = state
        .store
        .resolve_effect(&key, now, &auth.caller.actor(), |row| {
            let current = from_row(row.clone())?;
            current
                .resolve(req.status, detail, now)
                .map(|next| next.map(|e| to_row(&e)))
                .map_err(refusal)
        })
        .await?;
    match out {
        Resolved::NoSuchKey => Err(ApiError::field(
            ErrorCode::NotFound,
            "key",
            format!("no effect has idempotency key {key}"),
        )),
        Resolved::Refused(e) => Err(e),
        Resolved::Done { row, .. } => Ok(Json(from_row(*row)?)),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EffectsQuery {
    /// N of agent@N.
    pub bundle: i64,
    /// Only effects in this status.
    pub status: Option<EffectStatus>,
    /// At most this many, oldest first (default and maximum 1000).
    pub limit: Option<i64>,
}

/// The ledger of one bundle, oldest first.
#[utoipa::path(get, path = "/v1/agents/{agent}/effects", tag = "effects",
    params(("agent" = String, Path), EffectsQuery),
    responses((status = 200, body = Vec<Effect>)), security(("bearer" = ["viewer"])))]
async fn list_effects(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath(agent): ApiPath<String>,
    ApiQuery(q): ApiQuery<EffectsQuery>,
) -> ApiResult<Json<Vec<Effect>>> {
    slug::validate_agent(&agent)
        .map_err(|e| ApiError::field(ErrorCode::BadRequest, "agent", e.to_string()))?;
    if q.bundle < 1 {
        return Err(ApiError::field(
            ErrorCode::BadRequest,
            "bundle",
            "bundle must be a positive bundle number",
        ));
    }
    require_bundle(&state, &agent, q.bundle, ("agent", "bundle")).await?;
    let rows = state
        .store
        .list_effects(
            &agent,
            q.bundle,
            q.status.map(EffectStatus::as_str),
            q.limit.unwrap_or(serin_store::MAX_PAGE),
        )
        .await?;
    Ok(Json(
        rows.into_iter().map(from_row).collect::<ApiResult<_>>()?,
    ))
}
