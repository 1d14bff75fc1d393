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
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth, Caller, ReadAccess, SnapshotAccess};
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
    /// Where the instance runs (`[A-Za-z0-9._:-]{1,128}` each).
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub pool: Option<String>,
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
    if let Some(v) = &r.region {
        check_instance(v, ErrorCode::InvalidField, "/region")?;
    }
    if let Some(v) = &r.pool {
        check_instance(v, ErrorCode::InvalidField, "/pool")?;
    }
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
    state.sdks.set_place(
        &report.env,
        &report.instance,
        &auth.caller.token_id,
        crate::sdks::Place {
            region: report.region,
            pool: report.pool,
        },
    );
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
    /// With `?agent=`: what each instance serves of that agent, in `instances`' order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<Vec<Serving>>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SdksQuery {
    /// An agent routed in the env: add what each instance serves of it (`serving`).
    pub agent: Option<String>,
}

/// What one instance serves of one agent, under the snapshot version it applied: the wave
/// its region, pool or instance id falls in (a waved release), and the bundles its requests
/// get. Requests carry their own region and pool; an instance's reported ones stand for
/// its traffic here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Serving {
    pub instance: String,
    /// Current version minus the applied one; absent before the first report.
    pub lag: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
    pub stable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    /// The candidate's share of the instance's requests (`0%` without a release).
    pub canary_weight: String,
    pub killed: bool,
    /// In one phrase: `support@5`, `support@4, 25% on support@5`, `killed`.
    pub serves: String,
}

/// What an instance at `place` serves of `agent` under `snap` (`None`: not routed there).
fn serving_of(
    snap: &serin_core::decision::CompiledSnapshot,
    agent: &str,
    inst: &SdkInstance,
    current: u64,
) -> Serving {
    let lag = inst.applied_version.map(|v| current.saturating_sub(v));
    let mut out = Serving {
        instance: inst.instance.clone(),
        lag,
        wave: None,
        stable: None,
        candidate: None,
        canary_weight: serin_core::decision::Percent::ZERO.to_string(),
        killed: false,
        serves: String::new(),
    };
    let wire = snap.snapshot();
    let Some(routing) = wire.agents.get(agent) else {
        out.serves = format!("not routed at version {}", snap.version());
        return out;
    };
    out.stable = routing.stable.as_ref().map(|b| b.id.clone());
    out.killed = routing.killed;
    let mut weight = serin_core::decision::Percent::ZERO;
    if let Some(rel) = &routing.release {
        out.candidate = Some(rel.candidate.id.clone());
        weight = rel.weight;
        if !rel.waves.is_empty() {
            let mut ctx = serin_core::decision::Context::new("");
            ctx.instance = Some(inst.instance.as_str());
            ctx.region = inst.region.as_deref();
            ctx.pool = inst.pool.as_deref();
            let found = serin_core::decision::WaveIndex::new(agent, rel.waves.clone())
                .ok()
                .flatten()
                .and_then(|ix| ix.route(&ctx).map(|w| (w.name.clone(), w.weight)));
            match found {
                Some((name, w)) => {
                    out.wave = Some(name);
                    weight = w;
                }
                None => weight = serin_core::decision::Percent::ZERO,
            }
        }
    }
    out.canary_weight = weight.to_string();
    let stable = out.stable.clone().unwrap_or_else(|| "nothing".to_owned());
    out.serves = if out.killed {
        "killed".to_owned()
    } else {
        match &out.candidate {
            Some(c) if weight == serin_core::decision::Percent::FULL => c.clone(),
            Some(c) if weight != serin_core::decision::Percent::ZERO => {
                format!("{stable}, {weight} on {c}")
            }
            _ => stable,
        }
    };
    out
}

/// The SDK instances following the env on any replica (and those gone in
/// the last 10 minutes), each with the version last sent to it and the
/// version it reports serving, next to the env's current version. With
/// `agent`, also what each serves of that agent (its wave and bundles).
#[utoipa::path(get, path = "/v1/envs/{env}/sdks", tag = "decisions",
    params(("env" = String, Path), SdksQuery),
    responses((status = 200, body = SdksResponse), (status = 404, description = "No such env, or the agent is not routed in it", body = crate::error::ErrorBody)), security(("bearer" = ["viewer"])))]
async fn list_sdks(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiPath(env): ApiPath<String>,
    ApiQuery(query): ApiQuery<SdksQuery>,
) -> ApiResult<Json<SdksResponse>> {
    require_env(&state, &env).await?;
    let current = state.hub.current(&env).await?;
    let version = current.version;
    let instances = state.sdks.list_fleet(&env).await?;
    let serving = match &query.agent {
        None => None,
        Some(agent) => {
            let known = current.compiled.snapshot();
            if !known.agents.contains_key(agent) {
                return Err(ApiError::field(
                    ErrorCode::NotFound,
                    "agent",
                    slug::not_found_message(
                        "agent",
                        agent,
                        known.agents.keys().map(String::as_str),
                    ),
                ));
            }
            let mut snapshots = std::collections::BTreeMap::new();
            let mut out = Vec::with_capacity(instances.len());
            for inst in &instances {
                let Some(v) = inst.applied_version else {
                    out.push(Serving {
                        instance: inst.instance.clone(),
                        lag: None,
                        wave: None,
                        stable: None,
                        candidate: None,
                        canary_weight: serin_core::decision::Percent::ZERO.to_string(),
                        killed: false,
                        serves: "unknown: no version applied yet".to_owned(),
                    });
                    continue;
                };
                if let std::collections::btree_map::Entry::Vacant(slot) = snapshots.entry(v) {
                    slot.insert(state.hub.historical(v).await?);
                }
                if let Some(snap) = snapshots.get(&v) {
                    out.push(serving_of(snap, agent, inst, version));
                }
            }
            Some(out)
        }
    };
    Ok(Json(SdksResponse {
        version,
        instances,
        serving,
    }))
}
