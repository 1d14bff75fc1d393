//! Releases: start, status, promote, pause, resume, abort, report.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use serin_core::approvals::{ApprovalKind, Gated};
use serin_core::auth::Action;
use serin_core::decision::Percent;
use serin_core::readiness::GateOverride;
use serin_core::release::{Event, Plan, Release};
use serin_core::slug;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::approvals::{self, Gate};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{
    ApiJson, ApiPath, ApiQuery, Auth, DeployAccess, ReadAccess, refuse_arrays_as_objects,
};
use crate::releases::{ReleaseView, Started};
use crate::{AppState, report};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_release, list_releases))
        .routes(routes!(release_status))
        .routes(routes!(promote))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(abort))
        .routes(routes!(release_report))
}

async fn check(state: &AppState, env: &str, agent: &str) -> ApiResult<()> {
    state.envs.require(env, "env").await?;
    slug::validate_agent(agent)
        .map_err(|e| ApiError::field(ErrorCode::BadRequest, "agent", e.to_string()))
}

fn check_reason(reason: &Option<String>) -> ApiResult<()> {
    if let Some(r) = reason
        && (r.trim().is_empty() || r.chars().count() > 1000)
    {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/reason",
            "reason must be 1 to 1000 characters",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// N of `agent@N`, the candidate.
    pub bundle: u64,
    /// The plan (SPEC `plan.yaml`, as JSON).
    #[schema(value_type = serin_core::release::Plan)]
    pub plan: Value,
    /// Start although the readiness gate refuses (admin only; needs `reason`; audited
    /// `release.readiness_override` and kept in the deploy report).
    #[serde(default)]
    pub override_readiness: bool,
    pub reason: Option<String>,
    /// An approved request (`apr-…`) for exactly this start, when the env's approval policy
    /// reserves it; spent by the start.
    pub approval: Option<String>,
}

/// Start a release: the candidate opens at the plan's first step. One active
/// release per agent and env. When the env's approval policy reserves this start (the
/// candidate adds or widens a write or irreversible capability; a readiness override), it
/// answers 202 with a pending approval request instead; repeat it with `approval` once an
/// approver has approved.
#[utoipa::path(post, path = "/v1/envs/{env}/agents/{agent}/releases", tag = "releases",
    params(("env" = String, Path), ("agent" = String, Path)), request_body = StartRequest,
    responses((status = 201, body = ReleaseView), (status = 202, description = "Reserved by the env's approval policy: the pending request", body = crate::approvals::ApprovalPending), (status = 409, description = "Another release is active, a drill is running, or the readiness gate refuses (`not_ready`, `details` is the report)", body = crate::error::ErrorBody)), security(("bearer" = ["deployer"])))]
async fn start_release(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<StartRequest>,
) -> ApiResult<Response> {
    check(&state, &env, &agent).await?;
    check_reason(&req.reason)?;
    let gate_override = if req.override_readiness {
        if !auth.caller.role.allows(Action::Approve) {
            return Err(ApiError::field(
                ErrorCode::Forbidden,
                "/override_readiness",
                format!(
                    "overriding the readiness gate needs the admin role; this token is {}",
                    auth.caller.role.as_str()
                ),
            ));
        }
        let reason = req.reason.clone().ok_or_else(|| {
            ApiError::field(
                ErrorCode::InvalidField,
                "/reason",
                "override_readiness needs a reason",
            )
        })?;
        Some(GateOverride {
            by: auth.caller.actor(),
            reason,
        })
    } else {
        if req.reason.is_some() {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/reason",
                "reason is only taken with override_readiness",
            ));
        }
        None
    };
    let raw_plan = req.plan.clone();
    let plan = Plan::from_value(req.plan).map_err(|e| {
        ApiError::field(
            ErrorCode::InvalidField,
            format!("/plan{}", e.pointer),
            e.to_string(),
        )
    })?;
    refuse_arrays_as_objects::<Plan>(&raw_plan, "/plan")?;
    let started = state
        .releases
        .start(
            &env,
            &agent,
            req.bundle,
            plan,
            &auth.caller.actor(),
            gate_override,
            req.approval.as_deref(),
        )
        .await?;
    Ok(match started {
        Started::Release(view) => (StatusCode::CREATED, Json(*view)).into_response(),
        Started::Pending(r) => crate::approvals::pending(*r),
    })
}

/// The agent's releases in the env, newest first.
#[utoipa::path(get, path = "/v1/envs/{env}/agents/{agent}/releases", tag = "releases",
    params(("env" = String, Path), ("agent" = String, Path)),
    responses((status = 200, description = "Releases, newest first", body = Vec<Release>)),
    security(("bearer" = ["viewer"])))]
async fn list_releases(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<Release>>> {
    check(&state, &env, &agent).await?;
    Ok(Json(state.releases.list(&env, &agent).await?))
}

/// The active release (or the newest one): phase, step, weight, the gate and
/// what it still needs, the verdicts, and webhook deliveries.
#[utoipa::path(get, path = "/v1/envs/{env}/agents/{agent}/release", tag = "releases",
    params(("env" = String, Path), ("agent" = String, Path)),
    responses((status = 200, body = ReleaseView)), security(("bearer" = ["viewer"])))]
async fn release_status(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
) -> ApiResult<Json<ReleaseView>> {
    check(&state, &env, &agent).await?;
    Ok(Json(state.releases.current(&env, &agent).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Promote past an unmet gate (needs `reason`; audited).
    #[serde(default)]
    pub force: bool,
    pub reason: Option<String>,
    /// An approved request (`apr-…`) for a promotion to 100% the env's approval policy
    /// reserves; spent by the promotion. Taken by promote only.
    pub approval: Option<String>,
}

fn no_approval(req: &ActionRequest) -> ApiResult<()> {
    if req.approval.is_some() {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/approval",
            "only promote takes an approval",
        ));
    }
    Ok(())
}

/// Advance one step (or complete from the last) when the gate holds; refused
/// with what is missing otherwise. When the env's approval policy reserves promotions to
/// 100% (`promote_full`), such a promotion answers 202 with a pending approval request;
/// repeat it with `approval` once approved.
#[utoipa::path(post, path = "/v1/envs/{env}/agents/{agent}/release/promote", tag = "releases",
    params(("env" = String, Path), ("agent" = String, Path)), request_body = ActionRequest,
    responses((status = 200, body = ReleaseView), (status = 202, description = "Reserved by the env's approval policy: the pending request", body = crate::approvals::ApprovalPending), (status = 409, description = "No active release, or its state refuses the command (`details.missing` lists what a gate still needs)", body = crate::error::ErrorBody), (status = 422, description = "The plan's policy refuses the command", body = crate::error::ErrorBody)), security(("bearer" = ["deployer"])))]
async fn promote(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ActionRequest>,
) -> ApiResult<Response> {
    check(&state, &env, &agent).await?;
    check_reason(&req.reason)?;
    let actor = auth.caller.actor();
    let reserved = promote_reservation(&state, &env, &agent).await?;
    let spent =
        match approvals::gate(&state.store, &actor, reserved, req.approval.as_deref()).await? {
            Gate::Pending(r) => return Ok(approvals::pending(r)),
            Gate::Proceed(spent) => spent,
        };
    let result = state
        .releases
        .command(&env, &agent, &actor.clone(), |requests, verdicts, waves| {
            Event::Promote {
                actor,
                force: req.force,
                reason: req.reason,
                canary_requests: requests,
                verdicts: verdicts.to_vec(),
                waves: waves.to_vec(),
            }
        })
        .await;
    match result {
        Ok(view) => Ok(Json(view).into_response()),
        Err(e) => {
            approvals::give_back(&state.store, spent).await;
            Err(e)
        }
    }
}

/// A promotion the env's policy reserves: one that takes the candidate to 100% (it
/// completes the release, or its next step's weight is 100%).
async fn promote_reservation<'a>(
    state: &AppState,
    env: &'a str,
    agent: &'a str,
) -> ApiResult<Option<approvals::Reserved<'a>>> {
    let (policy, _) = approvals::policy(&state.store, env).await?;
    if !policy.requires(Gated::PromoteFull) {
        return Ok(None);
    }
    let Some(release) = state.releases.active(env, agent).await? else {
        // No active release: the command refuses it with its own message.
        return Ok(None);
    };
    let stages = release.plan.stages();
    let to_full = match stages.get(release.step + 1) {
        None => true,
        Some(next) => next.step.weight == Percent::FULL && next.wave.is_none(),
    };
    if !to_full {
        return Ok(None);
    }
    Ok(Some(approvals::Reserved {
        kind: ApprovalKind::PromoteFull,
        env,
        agent,
        bundle: Some(release.candidate.number),
        reason: format!(
            "promote {} to 100% of {agent} in {env} (release {}, step {} of {})",
            release.candidate.id,
            release.id,
            release.step + 1,
            stages.len()
        ),
        details: serde_json::json!({
            "release": release.id,
            "candidate": release.candidate.id,
            "stable": release.baseline.id,
            "step": release.step + 1,
            "steps": stages.len(),
            "weight": release.weight().to_string(),
        }),
    }))
}

/// Hold the current weight; promotion (manual or automatic) waits.
#[utoipa::path(post, path = "/v1/envs/{env}/agents/{agent}/release/pause", tag = "releases",
    params(("env" = String, Path), ("agent" = String, Path)), request_body = ActionRequest,
    responses((status = 200, body = ReleaseView), (status = 409, description = "No active release, or its state refuses the command (`details.missing` lists what a gate still needs)", body = crate::error::ErrorBody), (status = 422, description = "The plan's policy refuses the command", body = crate::error::ErrorBody)), security(("bearer" = ["deployer"])))]
async fn pause(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ActionRequest>,
) -> ApiResult<Json<ReleaseView>> {
    check(&state, &env, &agent).await?;
    check_reason(&req.reason)?;
    no_approval(&req)?;
    let actor = auth.caller.actor();
    let view = state
        .releases
        .command(&env, &agent, &actor.clone(), |_, _, _| Event::Pause {
            actor,
            reason: req.reason,
        })
        .await?;
    Ok(Json(view))
}

/// Continue a paused or halted release.
#[utoipa::path(post, path = "/v1/envs/{env}/agents/{agent}/release/resume", tag = "releases",
    params(("env" = String, Path), ("agent" = String, Path)),
    responses((status = 200, body = ReleaseView), (status = 409, description = "No active release, or its state refuses the command (`details.missing` lists what a gate still needs)", body = crate::error::ErrorBody), (status = 422, description = "The plan's policy refuses the command", body = crate::error::ErrorBody)), security(("bearer" = ["deployer"])))]
async fn resume(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
) -> ApiResult<Json<ReleaseView>> {
    check(&state, &env, &agent).await?;
    let actor = auth.caller.actor();
    let view = state
        .releases
        .command(&env, &agent, &actor.clone(), |_, _, _| Event::Resume {
            actor,
        })
        .await?;
    Ok(Json(view))
}

/// Abandon the release: the candidate is drained at once.
#[utoipa::path(post, path = "/v1/envs/{env}/agents/{agent}/release/abort", tag = "releases",
    params(("env" = String, Path), ("agent" = String, Path)), request_body = ActionRequest,
    responses((status = 200, body = ReleaseView), (status = 409, description = "No active release, or its state refuses the command (`details.missing` lists what a gate still needs)", body = crate::error::ErrorBody), (status = 422, description = "The plan's policy refuses the command", body = crate::error::ErrorBody)), security(("bearer" = ["deployer"])))]
async fn abort(
    State(state): State<AppState>,
    auth: Auth<DeployAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ActionRequest>,
) -> ApiResult<Json<ReleaseView>> {
    check(&state, &env, &agent).await?;
    check_reason(&req.reason)?;
    no_approval(&req)?;
    let reason = req.reason.ok_or_else(|| {
        ApiError::field(ErrorCode::InvalidField, "/reason", "abort needs a reason")
    })?;
    let actor = auth.caller.actor();
    let view = state
        .releases
        .command(&env, &agent, &actor.clone(), |_, _, _| Event::Abort {
            actor,
            reason,
        })
        .await?;
    Ok(Json(view))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// A release id; the agent's active or newest release when absent.
    pub release: Option<String>,
    /// `markdown` (default) or `json`.
    pub format: Option<String>,
}

/// The deploy report: timeline, per-step guardrail evidence, who did what.
#[utoipa::path(get, path = "/v1/envs/{env}/agents/{agent}/release/report", tag = "releases",
    params(("env" = String, Path), ("agent" = String, Path), ReportQuery),
    responses((status = 200, description = "Markdown or JSON", content_type = "text/markdown")),
    security(("bearer" = ["viewer"])))]
async fn release_report(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((env, agent)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> ApiResult<Response> {
    check(&state, &env, &agent).await?;
    let view = match &q.release {
        Some(id) => state.releases.by_id(id).await?,
        None => state.releases.current(&env, &agent).await?,
    };
    if view.release.env != env || view.release.agent != agent {
        return Err(ApiError::not_found(
            "no such release for this agent and env",
        ));
    }
    let format = q.format.as_deref().unwrap_or("markdown");
    if !matches!(format, "json" | "markdown") {
        return Err(ApiError::field(
            ErrorCode::BadRequest,
            "format",
            format!("format {format:?} is not markdown or json"),
        ));
    }
    let effects = report::effects(&state.store, &view.release).await?;
    if format == "json" {
        let mut v = report::json(&view);
        if let Some(o) = v.as_object_mut() {
            o.insert("effects".to_owned(), report::effects_json(&effects));
        }
        return Ok(Json(v).into_response());
    }
    let mut md = report::markdown(&view);
    report::effects_markdown(&mut md, &effects);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/markdown; charset=utf-8",
        )],
        md,
    )
        .into_response())
}
