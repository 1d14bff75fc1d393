//! Readiness: policies, evidence, offline evals, the check, and rollback drills.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use serin_core::readiness::{Evidence, Policy};
use serin_core::release::Plan;
use serin_core::slug;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::drills::{DEFAULT_TIMEOUT, DrillHistory, DrillRecord};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{
    AdminAccess, ApiJson, ApiPath, ApiQuery, AttestAccess, Auth, DeployAccess, ReadAccess,
    path_bundle_number, refuse_arrays_as_objects,
};
use crate::readiness::{CheckView, EvalRequest, EvalView, EvidenceRequest, PolicyView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_policy, apply_policy))
        .routes(routes!(policy_history))
        .routes(routes!(list_evidence))
        .routes(routes!(set_evidence, evidence_history))
        .routes(routes!(record_eval, list_evals))
        .routes(routes!(check_readiness))
        .routes(routes!(run_drill, drill_history))
}

async fn check(state: &AppState, env: &str, agent: &str) -> ApiResult<()> {
    state.envs.require(env, "env").await?;
    slug::validate_agent(agent)
        .map_err(|e| ApiError::field(ErrorCode::BadRequest, "agent", e.to_string()))
}

fn check_key(key: &str) -> ApiResult<()> {
    if serin_core::readiness::is_valid_key(key) {
        Ok(())
    } else {
        Err(ApiError::field(
            ErrorCode::BadRequest,
            "key",
            format!("{key:?} is not an item key (snake_case, at most 64 characters)"),
        ))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyPolicyRequest {
    /// The policy file as written (YAML or JSON text); errors then carry its line.
    pub yaml: Option<String>,
    /// Or the policy as a JSON object.
    #[schema(value_type = Option<Object>)]
    pub policy: Option<Value>,
}

/// Apply a readiness policy: validated, then stored as the next version (audited
/// `readiness.apply`). Identical content keeps the current version (`changed: false`).
#[utoipa::path(put, path = "/v1/envs/{env}/agents/{agent}/readiness/policy", tag = "readiness",
    params(("env" = String, Path), ("agent" = String, Path)), request_body = ApplyPolicyRequest,
    responses((status = 200, body = PolicyView)), security(("bearer" = ["admin"])))]
async fn apply_policy(
    State(state): State<AppState>,
    auth: Auth<AdminAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ApplyPolicyRequest>,
) -> ApiResult<Json<PolicyView>> {
    check(&state, &env, &agent).await?;
    let parsed = match (req.yaml, req.policy) {
        (Some(text), None) => Policy::parse_and_validate(&text).map_err(|e| (e, "/yaml"))?,
        (None, Some(value)) => {
            let raw = value.clone();
            let p = Policy::from_value(value).map_err(|e| (e, "/policy"))?;
            refuse_arrays_as_objects::<Policy>(&raw, "/policy")?;
            p.validate().map_err(|e| (e, "/policy"))?;
            p
        }
        _ => {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/yaml",
                "send exactly one of `yaml` (the file's text) or `policy` (a JSON object)",
            ));
        }
    };
    Ok(Json(
        state
            .readiness
            .apply(&env, &agent, &parsed, &auth.caller.actor())
            .await?,
    ))
}

impl From<(serin_core::readiness::PolicyError, &str)> for ApiError {
    fn from((e, base): (serin_core::readiness::PolicyError, &str)) -> ApiError {
        let field = if base == "/yaml" {
            // The pointer is inside the policy, not inside the request body.
            e.pointer.clone()
        } else {
            format!("{base}{}", e.pointer)
        };
        ApiError::field(ErrorCode::InvalidField, field, e.to_string())
            .with_details(serde_json::json!({ "code": e.code, "line": e.location }))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    /// A past version; the current one when absent.
    pub version: Option<i64>,
}

/// The readiness policy in force (or a past version).
#[utoipa::path(get, path = "/v1/envs/{env}/agents/{agent}/readiness/policy", tag = "readiness",
    params(("env" = String, Path), ("agent" = String, Path), PolicyQuery),
    responses((status = 200, body = PolicyView)), security(("bearer" = ["viewer"])))]
async fn get_policy(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PolicyQuery>,
) -> ApiResult<Json<PolicyView>> {
    check(&state, &env, &agent).await?;
    Ok(Json(state.readiness.policy(&env, &agent, q.version).await?))
}

/// Every version of the policy, newest first.
#[utoipa::path(get, path = "/v1/envs/{env}/agents/{agent}/readiness/policy/history", tag = "readiness",
    params(("env" = String, Path), ("agent" = String, Path)),
    responses((status = 200, body = Vec<PolicyView>)), security(("bearer" = ["viewer"])))]
async fn policy_history(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<PolicyView>>> {
    check(&state, &env, &agent).await?;
    Ok(Json(state.readiness.history(&env, &agent).await?))
}

/// The newest evidence of every item.
#[utoipa::path(get, path = "/v1/envs/{env}/agents/{agent}/readiness/evidence", tag = "readiness",
    params(("env" = String, Path), ("agent" = String, Path)),
    responses((status = 200, description = "Evidence, by key", content_type = "application/json")),
    security(("bearer" = ["viewer"])))]
async fn list_evidence(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<Evidence>>> {
    check(&state, &env, &agent).await?;
    Ok(Json(state.readiness.evidence(&env, &agent).await?))
}

/// Record evidence for an attested item (audited `evidence.set`); the newest record wins
/// and earlier ones stay in the history. Expired evidence counts as missing.
#[utoipa::path(put, path = "/v1/envs/{env}/agents/{agent}/readiness/evidence/{key}", tag = "readiness",
    params(("env" = String, Path), ("agent" = String, Path), ("key" = String, Path)),
    request_body = EvidenceRequest,
    responses((status = 200, description = "The evidence as recorded", content_type = "application/json")),
    security(("bearer" = ["approver"])))]
async fn set_evidence(
    State(state): State<AppState>,
    auth: Auth<AttestAccess>,
    ApiPath((env, agent, key)): ApiPath<(String, String, String)>,
    ApiJson(req): ApiJson<EvidenceRequest>,
) -> ApiResult<Json<Evidence>> {
    check(&state, &env, &agent).await?;
    check_key(&key)?;
    Ok(Json(
        state
            .readiness
            .set_evidence(&env, &agent, &key, req, &auth.caller.actor())
            .await?,
    ))
}

/// Every record of one item, newest first.
#[utoipa::path(get, path = "/v1/envs/{env}/agents/{agent}/readiness/evidence/{key}", tag = "readiness",
    params(("env" = String, Path), ("agent" = String, Path), ("key" = String, Path)),
    responses((status = 200, description = "Evidence history", content_type = "application/json")),
    security(("bearer" = ["viewer"])))]
async fn evidence_history(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((env, agent, key)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Vec<Evidence>>> {
    check(&state, &env, &agent).await?;
    check_key(&key)?;
    Ok(Json(
        state.readiness.evidence_history(&env, &agent, &key).await?,
    ))
}

/// Record an offline eval of one bundle, tied to its digest (audited `eval.record`).
#[utoipa::path(post, path = "/v1/agents/{agent}/bundles/{n}/evals", tag = "readiness",
    params(("agent" = String, Path), ("n" = u64, Path)), request_body = EvalRequest,
    responses((status = 201, body = EvalView), (status = 409, description = "`digest` differs from the stored bundle's", body = crate::error::ErrorBody)), security(("bearer" = ["approver"])))]
async fn record_eval(
    State(state): State<AppState>,
    auth: Auth<AttestAccess>,
    ApiPath((agent, n)): ApiPath<(String, u64)>,
    ApiJson(req): ApiJson<EvalRequest>,
) -> ApiResult<(StatusCode, Json<EvalView>)> {
    slug::validate_agent(&agent)
        .map_err(|e| ApiError::field(ErrorCode::BadRequest, "agent", e.to_string()))?;
    let n = path_bundle_number(n, "n")?;
    let view = state
        .readiness
        .record_eval(&agent, n, req, &auth.caller.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The offline evals recorded for one bundle, newest first.
#[utoipa::path(get, path = "/v1/agents/{agent}/bundles/{n}/evals", tag = "readiness",
    params(("agent" = String, Path), ("n" = u64, Path)),
    responses((status = 200, body = Vec<EvalView>)), security(("bearer" = ["viewer"])))]
async fn list_evals(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((agent, n)): ApiPath<(String, u64)>,
) -> ApiResult<Json<Vec<EvalView>>> {
    slug::validate_agent(&agent)
        .map_err(|e| ApiError::field(ErrorCode::BadRequest, "agent", e.to_string()))?;
    let n = path_bundle_number(n, "n")?;
    Ok(Json(state.readiness.evals(&agent, n).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// N of `agent@N`, the candidate.
    pub bundle: u64,
    /// The release plan (as JSON), so plan items can be computed.
    #[schema(value_type = Option<Object>)]
    pub plan: Option<Value>,
}

/// Evaluate the readiness policy for a candidate: every item with its status, owner,
/// evidence, next action and (computed items) how it was computed; a one-line verdict.
/// Reads only; the answer is 200 whether or not the candidate is ready.
#[utoipa::path(post, path = "/v1/envs/{env}/agents/{agent}/readiness/check", tag = "readiness",
    params(("env" = String, Path), ("agent" = String, Path)), request_body = CheckRequest,
    responses((status = 200, body = CheckView)), security(("bearer" = ["viewer"])))]
async fn check_readiness(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<CheckRequest>,
) -> ApiResult<Json<CheckView>> {
    check(&state, &env, &agent).await?;
    let plan = match req.plan {
        Some(v) => {
            let raw = v.clone();
            let plan = Plan::from_value(v).map_err(|e| {
                ApiError::field(
                    ErrorCode::InvalidField,
                    format!("/plan{}", e.pointer),
                    e.to_string(),
                )
            })?;
            refuse_arrays_as_objects::<Plan>(&raw, "/plan")?;
            plan.validate().map_err(|e| {
                ApiError::field(
                    ErrorCode::InvalidField,
                    format!("/plan{}", e.pointer),
                    e.to_string(),
                )
            })?;
            Some(plan)
        }
        None => None,
    };
    Ok(Json(
        state
            .readiness
            .check(&env, &agent, req.bundle, plan.as_ref())
            .await?,
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrillRequest {
    /// How long to wait for SDKs on each leg, 1..=120000 ms (default 10000).
    pub timeout_ms: Option<u64>,
}

/// Run a rollback drill: roll back, wait until every connected SDK reports serving the
/// previous bundle, roll forward, wait again; answers with the timed record. Refused
/// while a release is active. The answer is 200 for a failed drill too (see `outcome`); a
/// drill no SDK confirmed is `inconclusive` and is not evidence for `rollback_drill_recent`.
#[utoipa::path(post, path = "/v1/envs/{env}/agents/{agent}/drills", tag = "readiness",
    params(("env" = String, Path), ("agent" = String, Path)), request_body = DrillRequest,
    responses((status = 200, body = DrillRecord), (status = 409, description = "A release is active, another drill is running, or there is no previous stable to roll back to", body = crate::error::ErrorBody)), security(("bearer" = ["deployer"])))]
async fn run_drill(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<DrillRequest>,
) -> ApiResult<Json<DrillRecord>> {
    check(&state, &env, &agent).await?;
    let timeout = req
        .timeout_ms
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    Ok(Json(
        state
            .drills
            .run(&env, &agent, timeout, &auth.caller.actor())
            .await?,
    ))
}

/// The agent's drills in the env, newest first, with the median rollback time and its trend.
#[utoipa::path(get, path = "/v1/envs/{env}/agents/{agent}/drills", tag = "readiness",
    params(("env" = String, Path), ("agent" = String, Path)),
    responses((status = 200, body = DrillHistory)), security(("bearer" = ["viewer"])))]
async fn drill_history(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
) -> ApiResult<Json<DrillHistory>> {
    check(&state, &env, &agent).await?;
    Ok(Json(state.drills.history(&env, &agent).await?))
}
