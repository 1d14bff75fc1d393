//! Bundles: push (validated, content-addressed, immutable), list, show, pins.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serin_core::bundle::{self, Bundle, BundleFiles, PinPolicy, Problem, ValidateOptions};
use serin_core::{pins, slug};
use serin_store::{NewBundle, StoredBundle};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth, BundleWriteAccess, ReadAccess};
use crate::{AppState, clock};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(push_bundle))
        .routes(routes!(validate_bundle))
        .routes(routes!(list_agents))
        .routes(routes!(list_bundles))
        .routes(routes!(get_bundle))
        .routes(routes!(list_pins))
}

/// A bundle directory sent as its files.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// Relative path (with `/`) -> UTF-8 file content, as read from the bundle
    /// directory: `bundle.yaml`, the prompt, `examples/*.yaml`, `tools/*.json`.
    pub files: BTreeMap<String, String>,
    /// Validate under this env's pin policy: `dev` allows moving model aliases
    /// (with a warning); every other env, and the default, is strict.
    #[serde(default)]
    pub env: Option<String>,
}

/// One validation finding (mirrors `serin_core::bundle::Problem`).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ProblemSchema {
    /// `error` or `warning`.
    severity: String,
    /// The file, relative to the bundle directory.
    file: String,
    /// JSON pointer or `line N` inside the file.
    location: Option<String>,
    /// Stable snake_case code.
    code: String,
    message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PushResponse {
    /// `agent@N`.
    pub id: String,
    pub agent: String,
    pub number: i64,
    /// `sha256:` digest of the canonical content.
    pub digest: String,
    /// False when identical content was already stored: nothing was written.
    pub created: bool,
    pub size_bytes: i64,
    /// RFC 3339.
    pub created_at: String,
    pub created_by: String,
    /// Warnings found by validation (errors refuse the push with 422).
    #[schema(value_type = Vec<ProblemSchema>)]
    pub problems: Vec<Problem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValidateResponse {
    /// True when no problem is an error.
    pub valid: bool,
    pub agent: Option<String>,
    pub digest: Option<String>,
    #[schema(value_type = Vec<ProblemSchema>)]
    pub problems: Vec<Problem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BundleSummaryResponse {
    pub id: String,
    pub agent: String,
    pub number: i64,
    pub digest: String,
    pub size_bytes: i64,
    pub created_at: String,
    pub created_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BundleResponse {
    #[serde(flatten)]
    pub summary: BundleSummaryResponse,
    /// The canonical bundle: agent, model, prompt, examples, tools, eval_set, metadata.
    #[schema(value_type = Object)]
    pub bundle: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentResponse {
    pub name: String,
    pub bundles: i64,
    /// Number of the newest bundle.
    pub latest: i64,
    pub updated_at: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many (1..=1000, default 50).
    pub limit: Option<i64>,
    /// Only bundles numbered below this (keyset pagination, newest first).
    pub before: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PinsQuery {
    /// Only this agent.
    pub agent: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PinResponse {
    pub agent: String,
    /// The bundle whose pin is reported (`agent@N`, the newest one).
    pub bundle: String,
    pub provider: String,
    #[schema(value_type = Object)]
    pub report: pins::PinReport,
}

fn summary(b: &StoredBundle) -> BundleSummaryResponse {
    BundleSummaryResponse {
        id: format!("{}@{}", b.agent, b.number),
        agent: b.agent.clone(),
        number: b.number,
        digest: b.digest.clone(),
        size_bytes: b.size_bytes,
        created_at: clock::rfc3339(b.created_at_ms),
        created_by: b.created_by.clone(),
    }
}

fn check_agent(agent: &str) -> ApiResult<()> {
    slug::validate_agent(agent)
        .map_err(|e| ApiError::field(ErrorCode::BadRequest, "agent", e.to_string()))
}

fn to_files(files: BTreeMap<String, String>) -> BundleFiles {
    let mut out = BundleFiles::new();
    for (path, text) in files {
        out.insert(path, text.into_bytes());
    }
    out
}

async fn pin_policy(state: &AppState, env: Option<&str>) -> ApiResult<PinPolicy> {
    match env {
        None => Ok(PinPolicy::Strict),
        Some(env) => {
            slug::validate_env(env)
                .map_err(|e| ApiError::field(ErrorCode::InvalidField, "/env", e.to_string()))?;
            state.envs.require(env, "/env").await
        }
    }
}

/// Validation is CPU-bound (YAML, JSON Schema compilation), so it runs off the
/// async workers to keep other requests flowing, a bounded number at a time
/// (`--max-validations`): beyond, 429 rather than a queue of pending CPU work.
/// Its YAML work is bounded by one budget across every file of the request
/// (`Limits::yaml_alias_nodes`, `yaml_alias_bytes`).
async fn run_validation(
    state: &AppState,
    files: BundleFiles,
    policy: PinPolicy,
) -> ApiResult<bundle::Validation> {
    let Ok(permit) = state.validations.clone().try_acquire_owned() else {
        metrics::counter!("serin_http_shed_total").increment(1);
        return Err(ApiError::new(
            ErrorCode::Overloaded,
            "too many bundle validations are running; retry shortly",
        ));
    };
    let catalog = Arc::clone(&state.catalog);
    let limits = state.limits.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        bundle::validate(
            &files,
            &ValidateOptions {
                pin_policy: policy,
                catalog: &catalog,
                limits: &limits,
            },
        )
    })
    .await
    .map_err(ApiError::internal)
}

fn invalid_bundle(problems: &[Problem]) -> ApiError {
    let errors = problems
        .iter()
        .filter(|p| matches!(p.severity, bundle::Severity::Error))
        .count();
    let first = problems
        .iter()
        .find(|p| matches!(p.severity, bundle::Severity::Error))
        .map(|p| format!(": {p}"))
        .unwrap_or_default();
    ApiError::new(
        ErrorCode::InvalidBundle,
        format!("the bundle has {errors} error(s){first}"),
    )
    .with_details(serde_json::json!({ "problems": problems }))
}

/// Push a bundle: validate it, then store it as the next `agent@N`, or return
/// the existing `agent@N` when identical content was pushed before.
#[utoipa::path(
    post,
    path = "/v1/bundles",
    tag = "bundles",
    request_body = PushRequest,
    responses(
        (status = 201, description = "Stored as a new version", body = PushResponse),
        (status = 200, description = "Identical content already stored; nothing written", body = PushResponse),
    ),
    security(("bearer" = ["deployer"]))
)]
async fn push_bundle(
    State(state): State<AppState>,
    auth: Auth<BundleWriteAccess>,
    ApiJson(req): ApiJson<PushRequest>,
) -> ApiResult<(StatusCode, Json<PushResponse>)> {
    let policy = pin_policy(&state, req.env.as_deref()).await?;
    let validation = run_validation(&state, to_files(req.files), policy).await?;
    let Some(bundle) = validation.bundle else {
        return Err(invalid_bundle(&validation.problems));
    };
    let content = bundle.canonical_json();
    let put = state
        .store
        .put_bundle(NewBundle {
            agent: bundle.agent.clone(),
            digest: bundle.digest().to_string(),
            size_bytes: i64::try_from(content.len()).unwrap_or(i64::MAX),
            content,
            at_ms: clock::now_ms(),
            actor: auth.caller.actor(),
        })
        .await?;
    let b = &put.bundle;
    if put.created {
        metrics::counter!("serin_bundles_created_total").increment(1);
        tracing::info!(bundle = %format!("{}@{}", b.agent, b.number), digest = %b.digest, actor = %auth.caller.actor(), "bundle stored");
    }
    let s = summary(b);
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(PushResponse {
            id: s.id,
            agent: s.agent,
            number: s.number,
            digest: s.digest,
            created: put.created,
            size_bytes: s.size_bytes,
            created_at: s.created_at,
            created_by: s.created_by,
            problems: validation.problems,
        }),
    ))
}

/// Validate a bundle without storing it (what `serin bundle validate` runs
/// locally, for clients that cannot embed serin-core).
#[utoipa::path(
    post,
    path = "/v1/bundles/validate",
    tag = "bundles",
    request_body = PushRequest,
    responses(
        (status = 200, description = "The validation report; `valid` says whether it would be accepted", body = ValidateResponse),
        (status = 422, description = "`invalid_bundle`: YAML aliases exceed the validation budget (problem code `budget_exceeded`); the rest was not checked", body = crate::error::ErrorBody),
    ),
    security(("bearer" = ["viewer"]))
)]
async fn validate_bundle(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiJson(req): ApiJson<PushRequest>,
) -> ApiResult<Json<ValidateResponse>> {
    let policy = pin_policy(&state, req.env.as_deref()).await?;
    let validation = run_validation(&state, to_files(req.files), policy).await?;
    // Over budget, the report is incomplete (later files were not parsed): refuse it
    // rather than present it as the bundle's findings.
    if validation
        .problems
        .iter()
        .any(|p| p.code == "budget_exceeded")
    {
        return Err(invalid_bundle(&validation.problems));
    }
    Ok(Json(ValidateResponse {
        valid: validation.bundle.is_some(),
        agent: validation.bundle.as_ref().map(|b| b.agent.clone()),
        digest: validation.bundle.as_ref().map(|b| b.digest().to_string()),
        problems: validation.problems,
    }))
}

/// Every agent that has at least one bundle.
#[utoipa::path(
    get,
    path = "/v1/agents",
    tag = "bundles",
    responses((status = 200, body = Vec<AgentResponse>)),
    security(("bearer" = ["viewer"]))
)]
async fn list_agents(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
) -> ApiResult<Json<Vec<AgentResponse>>> {
    let agents = state.store.list_agents().await?;
    Ok(Json(
        agents
            .into_iter()
            .map(|a| AgentResponse {
                name: a.name,
                bundles: a.bundles,
                latest: a.latest,
                updated_at: clock::rfc3339(a.updated_at_ms),
            })
            .collect(),
    ))
}

/// An agent's bundles, newest first.
#[utoipa::path(
    get,
    path = "/v1/agents/{agent}/bundles",
    tag = "bundles",
    params(("agent" = String, Path, description = "Agent slug"), ListQuery),
    responses((status = 200, body = Vec<BundleSummaryResponse>)),
    security(("bearer" = ["viewer"]))
)]
async fn list_bundles(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath(agent): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<BundleSummaryResponse>>> {
    check_agent(&agent)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            ErrorCode::BadRequest,
            "limit",
            "limit must be between 1 and 1000",
        ));
    }
    let list = state.store.list_bundles(&agent, limit, q.before).await?;
    if list.is_empty() && q.before.is_none() {
        return Err(ApiError::not_found(format!("agent {agent} has no bundles")));
    }
    Ok(Json(
        list.iter()
            .map(|b| BundleSummaryResponse {
                id: format!("{}@{}", b.agent, b.number),
                agent: b.agent.clone(),
                number: b.number,
                digest: b.digest.clone(),
                size_bytes: b.size_bytes,
                created_at: clock::rfc3339(b.created_at_ms),
                created_by: b.created_by.clone(),
            })
            .collect(),
    ))
}

/// One bundle, whole.
#[utoipa::path(
    get,
    path = "/v1/agents/{agent}/bundles/{number}",
    tag = "bundles",
    params(("agent" = String, Path, description = "Agent slug"), ("number" = i64, Path, description = "N of agent@N")),
    responses((status = 200, body = BundleResponse)),
    security(("bearer" = ["viewer"]))
)]
async fn get_bundle(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath((agent, number)): ApiPath<(String, String)>,
) -> ApiResult<Json<BundleResponse>> {
    check_agent(&agent)?;
    let number: i64 = number.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::field(
            ErrorCode::BadRequest,
            "number",
            format!("bundle number {number:?} must be a positive integer"),
        )
    })?;
    let stored = state
        .store
        .get_bundle(&agent, number)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no bundle {agent}@{number}")))?;
    let bundle: Value = serde_json::from_str(&stored.content).map_err(ApiError::internal)?;
    Ok(Json(BundleResponse {
        summary: summary(&stored),
        bundle,
    }))
}

/// The model snapshot pinned by each agent's newest bundle, against the newest
/// snapshot the model catalog knows in the same family.
#[utoipa::path(
    get,
    path = "/v1/pins",
    tag = "bundles",
    params(PinsQuery),
    responses((status = 200, body = Vec<PinResponse>)),
    security(("bearer" = ["viewer"]))
)]
async fn list_pins(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiQuery(q): ApiQuery<PinsQuery>,
) -> ApiResult<Json<Vec<PinResponse>>> {
    if let Some(agent) = &q.agent {
        check_agent(agent)?;
    }
    let mut out = Vec::new();
    for stored in state.store.latest_bundles().await? {
        if q.agent.as_ref().is_some_and(|a| a != &stored.agent) {
            continue;
        }
        let bundle = Bundle::from_canonical_json(&stored.content).map_err(ApiError::internal)?;
        out.push(PinResponse {
            agent: stored.agent.clone(),
            bundle: format!("{}@{}", stored.agent, stored.number),
            report: pins::pin_report(
                &state.catalog,
                &bundle.model.provider,
                &bundle.model.snapshot,
            ),
            provider: bundle.model.provider,
        });
    }
    if out.is_empty()
        && let Some(agent) = &q.agent
    {
        return Err(ApiError::not_found(format!("agent {agent} has no bundles")));
    }
    Ok(Json(out))
}
