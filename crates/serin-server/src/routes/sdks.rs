//! SDK instances: the version each one reports applied, and the list of
//! instances following an env (see `crate::sdks`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serin_core::auth::Role;
use serin_core::slug;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{ApiJson, ApiPath, Auth, Caller, ReadAccess, SnapshotAccess};
use crate::routes::decisions::{check_instance, require_env};
use crate::sdks::SdkInstance;

/// Longest `sdk` self-description accepted.
const MAX_SDK_CHARS: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_applied))
        .routes(routes!(list_sdks))
}

/// What an SDK reports after swapping a snapshot in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppliedReport {
    pub env: String,
    /// The SDK instance (`[A-Za-z0-9._:-]{1,128}`), as sent on the stream.
    pub instance: String,
    /// The snapshot version now served (at least 1).
    pub version: u64,
    /// The SDK and its version, e.g. `serin-rust/0.1.0` (at most 64
    /// printable characters).
    pub sdk: Option<String>,
}

/// Only sdk tokens speak for SDK instances: what an instance reports is
/// drill evidence, so a person's token (admin included) must not be able to
/// produce it.
pub(crate) fn require_sdk_token(caller: &Caller, what: &str) -> ApiResult<()> {
    if caller.role == Role::Sdk {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "role {} may not {what}; only sdk tokens act as SDK instances",
            caller.role.as_str()
        ),
    ))
}

fn check_report(r: &AppliedReport) -> ApiResult<()> {
    slug::validate_env(&r.env)
        .map_err(|e| ApiError::field(ErrorCode::InvalidField, "/env", e.to_string()))?;
    check_instance(&r.instance, ErrorCode::InvalidField, "/instance")?;
    if r.version == 0 {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/version",
            "snapshot versions start at 1",
        ));
    }
    if let Some(sdk) = &r.sdk
        && (sdk.is_empty()
            || sdk.chars().count() > MAX_SDK_CHARS
            || sdk.chars().any(char::is_control))
    {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/sdk",
            format!("sdk must be 1 to {MAX_SDK_CHARS} printable characters"),
        ));
    }
    Ok(())
}

/// An SDK instance reports the snapshot version it swapped in, so the server
/// knows what each SDK serves, not only what it was sent. Versions only grow:
/// an older report leaves the recorded one. An instance without an open
/// stream is recorded too. Only sdk tokens may report; an instance id belongs
/// to the token that registered it (another token's report is refused with
/// 409), each token holds at most 1,000 instance ids (429 beyond), and the
/// version must be one of the env's snapshot versions (422 otherwise).
#[utoipa::path(post, path = "/v1/sdk/applied", tag = "decisions", request_body = AppliedReport,
    responses((status = 204, description = "Recorded")), security(("bearer" = ["sdk"])))]
async fn post_applied(
    State(state): State<AppState>,
    auth: Auth<SnapshotAccess>,
    ApiJson(report): ApiJson<AppliedReport>,
) -> ApiResult<StatusCode> {
    require_sdk_token(&auth.caller, "report an SDK instance's applied version")?;
    check_report(&report)?;
    state.envs.require(&report.env, "/env").await?;
    if !state.hub.is_version_of(&report.env, report.version).await? {
        let current = state
            .store
            .latest_env_state(&report.env)
            .await?
            .map_or(0, |s| s.version);
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/version",
            format!(
                "version {} is not a snapshot version of env {} (its current version is {current}); \
                 report only versions the stream sent",
                report.version, report.env
            ),
        ));
    }
    state
        .sdks
        .check_fleet_owner(&report.env, &report.instance, &auth.caller.token_id)
        .await?;
    state.sdks.report_applied(
        &report.env,
        &report.instance,
        &auth.caller.token_id,
        report.version,
        report.sdk,
    )?;
    // Propagation is timed to the version this replica serves: an older report says
    // nothing about how fast the current one travelled.
    if let Ok(current) = state.hub.current(&report.env).await
        && current.version == report.version
    {
        let published_ms = current.compiled.snapshot().published_at_ms;
        let secs = (crate::clock::now_ms() - published_ms).max(0) as f64 / 1000.0;
        metrics::histogram!("serin_propagation_seconds", "env" => report.env.clone()).record(secs);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SdksResponse {
    /// The env's current snapshot version on this replica.
    pub version: u64,
    /// Connected instances, and those seen in the last 10 minutes, by name.
    pub instances: Vec<SdkInstance>,
}

/// The SDK instances following the env on any replica (and those gone in
/// the last 10 minutes), each with the version last sent to it and the
/// version it reports serving, next to the env's current version.
#[utoipa::path(get, path = "/v1/envs/{env}/sdks", tag = "decisions",
    params(("env" = String, Path)),
    responses((status = 200, body = SdksResponse)), security(("bearer" = ["viewer"])))]
async fn list_sdks(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath(env): ApiPath<String>,
) -> ApiResult<Json<SdksResponse>> {
    require_env(&state, &env).await?;
    let version = state.hub.current(&env).await?.version;
    Ok(Json(SdksResponse {
        version,
        instances: state.sdks.list_fleet(&env).await?,
    }))
}
