//! Approvals: each env's policy, the queue, decisions, and agent-side requests.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serin_core::approvals::{
    self, ApprovalKind, ApprovalPolicy, ApprovalRequest, ApprovalStatus, MAX_FIELD_LEN,
};
use serin_core::auth::Role;
use serin_core::slug;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::approvals::{from_row, policy, to_row};
use crate::clock;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{
    AdminAccess, ApiJson, ApiPath, ApiQuery, ApproveAccess, Auth, EffectAccess, ReadAccess,
    SnapshotAccess,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_policy, put_policy))
        .routes(routes!(request_approval, list_approvals))
        .routes(routes!(get_approval))
        .routes(routes!(approve))
        .routes(routes!(deny))
}

/// An env's approval policy in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalPolicyView {
    pub env: String,
    /// 0 when no policy was ever applied (the default shown holds: nothing reserved).
    pub version: i64,
    pub policy: ApprovalPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_by: Option<String>,
    /// False when the policy applied was the one in force (nothing written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
}

/// The env's approval policy.
#[utoipa::path(get, path = "/v1/envs/{env}/approval-policy", tag = "approvals",
    params(("env" = String, Path)), responses((status = 200, body = ApprovalPolicyView)),
    security(("bearer" = ["viewer"])))]
async fn get_policy(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath(env): ApiPath<String>,
) -> ApiResult<Json<ApprovalPolicyView>> {
    state.envs.require(&env, "env").await?;
    let row = state.store.current_approval_policy(&env).await?;
    let (p, version) = policy(&state.store, &env).await?;
    Ok(Json(ApprovalPolicyView {
        env,
        version,
        policy: p,
        applied_at_ms: row.as_ref().map(|r| r.applied_at_ms),
        applied_by: row.map(|r| r.applied_by),
        changed: None,
    }))
}

/// Apply a new version of the env's approval policy (audited `approvals.policy`).
#[utoipa::path(put, path = "/v1/envs/{env}/approval-policy", tag = "approvals",
    params(("env" = String, Path)), request_body = ApprovalPolicy,
    responses((status = 200, body = ApprovalPolicyView), (status = 422, description = "The policy does not hold together (`field` names the culprit)", body = crate::error::ErrorBody)),
    security(("bearer" = ["admin"])))]
async fn put_policy(
    State(state): State<AppState>,
    auth: Auth<AdminAccess>,
    ApiPath(env): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<ApprovalPolicyView>> {
    state.envs.require(&env, "env").await?;
    if !body.is_object() {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "",
            "the policy is a JSON object",
        ));
    }
    let p = ApprovalPolicy::from_value(body)
        .map_err(|e| ApiError::field(ErrorCode::InvalidField, e.pointer.clone(), e.message))?;
    let text = serde_json::to_string(&p).map_err(ApiError::internal)?;
    let (row, changed) = state
        .store
        .apply_approval_policy(&env, &text, clock::now_ms(), &auth.caller.actor())
        .await?;
    Ok(Json(ApprovalPolicyView {
        env,
        version: row.version,
        policy: p,
        applied_at_ms: Some(row.applied_at_ms),
        applied_by: Some(row.applied_by),
        changed: Some(changed),
    }))
}

/// What an agent asks before a risky tool call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentApprovalRequest {
    pub env: String,
    pub agent: String,
    /// N of `agent@N`: the bundle the agent is running.
    pub bundle: u64,
    /// The tool it wants to call.
    pub tool: String,
    /// A digest of the call's arguments (the arguments themselves stay with the agent).
    pub args_digest: String,
    /// Why, for the approver.
    pub reason: String,
    /// The request the call belongs to.
    pub request_id: Option<String>,
    /// The snapshot version the agent decided under: places the request in a release's arm
    /// for the approval guardrails.
    pub snapshot_version: Option<u64>,
    /// Life of the request in ms (default: the policy's `agent_requests.expiry`; 1 s to 24 h).
    pub expires_in_ms: Option<u64>,
}

fn check_field(name: &str, v: &str) -> ApiResult<()> {
    if v.is_empty() || v.len() > MAX_FIELD_LEN || v.chars().any(char::is_control) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            format!("/{name}"),
            format!("{name} must be 1 to {MAX_FIELD_LEN} bytes without control characters"),
        ));
    }
    Ok(())
}

/// An agent asks a person before a risky tool call (audited `approval.request`). The agent
/// then polls `GET /v1/approvals/{id}?wait_ms=` until it is decided; an undecided request
/// expires and counts as denied. 429 past 200 requests per token per second, or when the
/// agent already has the policy's `agent_requests.max_pending` requests pending in the env.
#[utoipa::path(post, path = "/v1/approvals", tag = "approvals", request_body = AgentApprovalRequest,
    responses((status = 201, body = ApprovalRequest),
        (status = 404, description = "Unknown env, agent or bundle (with the nearest name)", body = crate::error::ErrorBody),
        (status = 429, description = "Too many requests from this token, or too many pending for this agent", body = crate::error::ErrorBody)),
    security(("bearer" = ["sdk"])))]
async fn request_approval(
    State(state): State<AppState>,
    auth: Auth<EffectAccess>,
    ApiJson(req): ApiJson<AgentApprovalRequest>,
) -> ApiResult<(StatusCode, Json<ApprovalRequest>)> {
    slug::validate_agent(&req.agent)
        .map_err(|e| ApiError::field(ErrorCode::InvalidField, "/agent", e.to_string()))?;
    check_field("tool", &req.tool)?;
    check_field("args_digest", &req.args_digest)?;
    if let Some(r) = &req.request_id {
        check_field("request_id", r)?;
    }
    approvals::check_reason(&req.reason)
        .map_err(|e| ApiError::field(ErrorCode::InvalidField, "/reason", e.to_string()))?;
    if let Some(ms) = req.expires_in_ms
        && !(approvals::MIN_EXPIRY_MS..=approvals::MAX_EXPIRY_MS).contains(&ms)
    {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/expires_in_ms",
            "expires_in_ms must be between 1000 (1 s) and 86400000 (24 h)",
        ));
    }
    let now = clock::now_ms();
    state.approval_requests.admit(&auth.caller.token_id, now)?;
    state.envs.require(&req.env, "/env").await?;
    let agents = state.store.list_agents().await?;
    if !agents.iter().any(|a| a.name == req.agent) {
        return Err(ApiError::field(
            ErrorCode::NotFound,
            "/agent",
            slug::not_found_message("agent", &req.agent, agents.iter().map(|a| a.name.as_str())),
        ));
    }
    let n = i64::try_from(req.bundle).unwrap_or(i64::MAX);
    if state.store.get_bundle(&req.agent, n).await?.is_none() {
        return Err(ApiError::field(
            ErrorCode::NotFound,
            "/bundle",
            format!("no bundle {}@{}", req.agent, req.bundle),
        ));
    }
    let (p, _) = policy(&state.store, &req.env).await?;
    let expiry = req
        .expires_in_ms
        .unwrap_or_else(|| p.agent_requests.expiry.as_ms());
    let actor = auth.caller.actor();
    let record = ApprovalRequest {
        id: crate::approvals::new_id(),
        kind: ApprovalKind::ToolCall,
        env: req.env.clone(),
        agent: req.agent.clone(),
        bundle: Some(req.bundle),
        requested_by: actor.clone(),
        reason: req.reason.trim().to_owned(),
        details: json!({
            "tool": req.tool,
            "args_digest": req.args_digest,
            "request_id": req.request_id,
        }),
        status: ApprovalStatus::Pending,
        created_at_ms: now,
        expires_at_ms: now.saturating_add(i64::try_from(expiry).unwrap_or(i64::MAX)),
        decided_by: None,
        decided_at_ms: None,
        decision_reason: None,
        used_at_ms: None,
        snapshot_version: req.snapshot_version,
        overdue: false,
        counted: Default::default(),
    };
    let urls: Vec<String> = p.notify.iter().map(|n| n.webhook.clone()).collect();
    let stored = state
        .store
        .insert_approval(
            &to_row(&record)?,
            &actor,
            Some(i64::from(p.agent_requests.max_pending)),
            &urls,
        )
        .await?;
    if stored.is_none() {
        metrics::counter!("serin_approvals_total", "event" => "refused").increment(1);
        return Err(ApiError::field(
            ErrorCode::Overloaded,
            "/agent",
            format!(
                "{} already has {} approval requests pending in {}; wait for decisions \
                 (retry after `Retry-After` s)",
                req.agent, p.agent_requests.max_pending, req.env
            ),
        ));
    }
    metrics::counter!("serin_approvals_total", "event" => "requested").increment(1);
    Ok((StatusCode::CREATED, Json(record)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub env: Option<String>,
    pub agent: Option<String>,
    /// pending | approved | denied | expired
    pub status: Option<String>,
    /// release_start | promote_full | readiness_override | unkill | tool_call
    pub kind: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// The queue, newest first. A pending request past its expiry reads `expired` even before
/// the sweep writes it.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ListQuery),
    responses((status = 200, body = Vec<ApprovalRequest>)), security(("bearer" = ["viewer"])))]
async fn list_approvals(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<ApprovalRequest>>> {
    if let Some(env) = &q.env {
        state.envs.require(env, "env").await?;
    }
    if let Some(s) = &q.status
        && ApprovalStatus::parse(s).is_none()
    {
        return Err(ApiError::field(
            ErrorCode::BadRequest,
            "status",
            format!("status {s:?} is not pending, approved, denied or expired"),
        ));
    }
    if let Some(k) = &q.kind
        && ApprovalKind::parse(k).is_none()
    {
        let names: Vec<&str> = ApprovalKind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(ApiError::field(
            ErrorCode::BadRequest,
            "kind",
            slug::not_found_message("kind", k, names.iter().copied()),
        ));
    }
    let now = clock::now_ms();
    // Pending past expiry reads as expired; the store still says pending until the sweep.
    let store_status = match q.status.as_deref() {
        Some("expired") => None,
        other => other,
    };
    let rows = state
        .store
        .list_approvals(
            q.env.as_deref(),
            q.agent.as_deref(),
            store_status,
            q.kind.as_deref(),
            q.limit.unwrap_or(100),
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut r = from_row(row)?;
        r.status = r.status_at(now);
        if q.status.as_deref().is_none_or(|s| s == r.status.as_str()) {
            out.push(r);
        }
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Wait up to this many ms (at most 30000) for a pending request to be decided.
    pub wait_ms: Option<u64>,
}

/// Longest long-poll.
const MAX_WAIT_MS: u64 = 30_000;

/// One request. With `wait_ms`, answers as soon as a pending request is decided or expires,
/// or when the wait is over. An sdk token reads only agent-side (`tool_call`) requests.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path), GetQuery),
    responses((status = 200, body = ApprovalRequest)), security(("bearer" = ["viewer"])))]
async fn get_approval(
    State(state): State<AppState>,
    auth: Auth<SnapshotAccess>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> ApiResult<Json<ApprovalRequest>> {
    let wait = q.wait_ms.unwrap_or(0).min(MAX_WAIT_MS);
    let until = tokio::time::Instant::now() + Duration::from_millis(wait);
    loop {
        let Some(row) = state.store.get_approval(&id).await? else {
            return Err(ApiError::not_found(format!("no approval request {id}")));
        };
        let mut r = from_row(&row)?;
        if auth.caller.role == Role::Sdk && r.kind != ApprovalKind::ToolCall {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "an sdk token reads only agent-side (tool_call) approval requests",
            ));
        }
        let now = clock::now_ms();
        r.status = r.status_at(now);
        // Polled from the store, so a decision made on another replica is seen too.
        if r.status != ApprovalStatus::Pending || tokio::time::Instant::now() >= until {
            return Ok(Json(r));
        }
        let expires_in = u64::try_from(r.expires_at_ms.saturating_sub(now)).unwrap_or(0);
        let nap = Duration::from_millis(expires_in.clamp(1, 200));
        tokio::time::sleep(nap.min(until.saturating_duration_since(tokio::time::Instant::now())))
            .await;
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Why (1 to 1000 characters); kept in the audit log and shown to the requester.
    pub reason: String,
}

/// Approve a pending request (audited `approval.approve`). Not the requester's own; not an
/// expired or decided one.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = String, Path)), request_body = DecisionRequest,
    responses((status = 200, body = ApprovalRequest),
        (status = 403, description = "The requester's own request, or a role the env's policy does not let decide", body = crate::error::ErrorBody),
        (status = 409, description = "Expired or already decided", body = crate::error::ErrorBody)),
    security(("bearer" = ["approver"])))]
async fn approve(
    State(state): State<AppState>,
    auth: Auth<ApproveAccess>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<DecisionRequest>,
) -> ApiResult<Json<ApprovalRequest>> {
    Ok(Json(
        crate::approvals::decide(&state, &auth.caller, &id, true, &req.reason).await?,
    ))
}

/// Deny a pending request (audited `approval.deny`).
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals",
    params(("id" = String, Path)), request_body = DecisionRequest,
    responses((status = 200, body = ApprovalRequest),
        (status = 403, description = "The requester's own request, or a role the env's policy does not let decide", body = crate::error::ErrorBody),
        (status = 409, description = "Expired or already decided", body = crate::error::ErrorBody)),
    security(("bearer" = ["approver"])))]
async fn deny(
    State(state): State<AppState>,
    auth: Auth<ApproveAccess>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<DecisionRequest>,
) -> ApiResult<Json<ApprovalRequest>> {
    Ok(Json(
        crate::approvals::decide(&state, &auth.caller, &id, false, &req.reason).await?,
    ))
}
