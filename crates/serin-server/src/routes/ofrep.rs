//! OFREP 0.3.0, the OpenFeature Remote Evaluation Protocol: any OpenFeature client with an
//! OFREP provider evaluates Serin's flags and routes agents without a Serin SDK.
//!
//! Every Serin flag is an OFREP flag of the same key; each agent with a stable bundle is also
//! the string flag `serin.agent.<agent>` (value: the decided bundle id, variant: the arm).
//! Both are evaluated on the env's published `CompiledSnapshot`, the one `/v1/decide` uses.
//! The env comes from the `Serin-Env` header (tokens carry no env scope). Errors the
//! protocol defines (400, 404) answer in its shape; the rest (401, 403, 413, 415, 429)
//! keep Serin's shape, which OFREP clients treat by status alone. See docs/ofrep.md.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use serin_core::decision::{Arm, CompiledSnapshot, Context, Decision, FlagEvaluation, FlagReason};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::extract::{ApiPath, Auth, DecideAccess, JsonBytes};

/// The key prefix under which agents' routing is exposed; Serin flags may not use it.
pub const AGENT_FLAG_PREFIX: &str = "serin.agent.";
/// The header naming the env to evaluate in.
pub const ENV_HEADER: &str = "serin-env";
/// Longest targeting key or attribute value, as for `/v1/decide`'s `request_id`.
const MAX_ATTRIBUTE_BYTES: usize = 256;
/// Attributes in one context; more is a client bug, not a richer targeting.
const MAX_ATTRIBUTES: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(evaluate_flag))
        .routes(routes!(evaluate_flags))
}

/// An OFREP evaluation request: `{"context": {"targetingKey": "...", ...}}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct OfrepRequest {
    /// `targetingKey` (required: Serin buckets on it) and flat string attributes `user`,
    /// `tenant`, `workload`, `instance`, `region`, `pool`, `requestId`; other scalar attributes are
    /// ignored; arrays and objects are refused.
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
}

/// One evaluation: success (`value`, `reason`, `variant`, `metadata`) or, in a bulk answer
/// or a 4xx, failure (`errorCode`, `errorDetails`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfrepEvaluation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Any JSON value; absent for a killed agent, so the client's default applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// `STATIC`, `DEFAULT`, `TARGETING_MATCH`, `SPLIT` or `DISABLED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `on`/`off` for flags, the arm (`stable`, `canary`, `killed`) for agents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// `FLAG_NOT_FOUND`, `PARSE_ERROR`, `TARGETING_KEY_MISSING` or `INVALID_CONTEXT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_details: Option<String>,
}

/// The bulk answer: every flag of the env and every routable agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct OfrepBulk {
    pub flags: Vec<OfrepEvaluation>,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// The protocol's error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfrepCode {
    FlagNotFound,
    ParseError,
    TargetingKeyMissing,
    InvalidContext,
}

impl OfrepCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OfrepCode::FlagNotFound => "FLAG_NOT_FOUND",
            OfrepCode::ParseError => "PARSE_ERROR",
            OfrepCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            OfrepCode::InvalidContext => "INVALID_CONTEXT",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            OfrepCode::FlagNotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A failure in the protocol's shape; `key` is set on single-flag routes.
#[derive(Debug)]
pub struct OfrepError {
    pub code: OfrepCode,
    pub details: String,
    pub key: Option<String>,
}

impl OfrepError {
    fn new(code: OfrepCode, details: impl Into<String>) -> Self {
        OfrepError {
            code,
            details: details.into(),
            key: None,
        }
    }

    fn evaluation(&self, key: Option<String>) -> OfrepEvaluation {
        OfrepEvaluation {
            key,
            value: None,
            reason: None,
            variant: None,
            metadata: None,
            error_code: Some(self.code.as_str().to_owned()),
            error_details: Some(self.details.clone()),
        }
    }
}

impl IntoResponse for OfrepError {
    fn into_response(self) -> Response {
        metrics::counter!("serin_ofrep_errors_total", "code" => self.code.as_str()).increment(1);
        let body = self.evaluation(self.key.clone());
        (self.code.status(), axum::Json(body)).into_response()
    }
}

/// What a handler answers: a protocol error, or one of Serin's (auth, limits, store).
pub enum Answer {
    Ofrep(OfrepError),
    Serin(crate::error::ApiError),
}

impl From<OfrepError> for Answer {
    fn from(e: OfrepError) -> Self {
        Answer::Ofrep(e)
    }
}

impl From<crate::error::ApiError> for Answer {
    fn from(e: crate::error::ApiError) -> Self {
        Answer::Serin(e)
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Ofrep(e) => e.into_response(),
            Answer::Serin(e) => e.into_response(),
        }
    }
}

/// The evaluation context, read into the attributes Serin targets on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OfrepContext {
    pub targeting_key: String,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub workload: Option<String>,
    pub instance: Option<String>,
    pub region: Option<String>,
    pub pool: Option<String>,
    pub request_id: Option<String>,
}

impl OfrepContext {
    /// The engine's context: the targeting key is the user (the default stickiness) and the
    /// request id unless the context names them.
    pub fn engine(&self) -> Context<'_> {
        Context {
            request_id: self.request_id.as_deref().unwrap_or(&self.targeting_key),
            user: Some(self.user.as_deref().unwrap_or(&self.targeting_key)),
            tenant: self.tenant.as_deref(),
            workload: self.workload.as_deref(),
            instance: self.instance.as_deref(),
            region: self.region.as_deref(),
            pool: self.pool.as_deref(),
        }
    }

    /// Canonical text of what evaluation depends on, for the bulk ETag.
    fn fingerprint(&self) -> String {
        let f = |o: &Option<String>| o.as_deref().unwrap_or("\u{0}").to_owned();
        [
            self.targeting_key.clone(),
            f(&self.user),
            f(&self.tenant),
            f(&self.workload),
            f(&self.instance),
            f(&self.region),
            f(&self.pool),
            f(&self.request_id),
        ]
        .join("\u{1}")
    }
}

/// Reads an evaluation request body. Every refusal names the field and why.
pub fn parse_request(bytes: &[u8]) -> Result<OfrepContext, OfrepError> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| OfrepError::new(OfrepCode::ParseError, format!("invalid JSON body: {e}")))?;
    let Value::Object(body) = body else {
        return Err(OfrepError::new(
            OfrepCode::ParseError,
            "the body must be a JSON object {\"context\": {...}}",
        ));
    };
    if let Some(k) = body.keys().find(|k| k.as_str() != "context") {
        return Err(OfrepError::new(
            OfrepCode::ParseError,
            format!("/{k}: unknown field; the body has only `context`"),
        ));
    }
    let context = match body.get("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(OfrepError::new(
                OfrepCode::ParseError,
                "/context: must be an object",
            ));
        }
    };
    parse_context(&context)
}

fn parse_context(context: &Map<String, Value>) -> Result<OfrepContext, OfrepError> {
    if context.len() > MAX_ATTRIBUTES {
        return Err(OfrepError::new(
            OfrepCode::InvalidContext,
            format!(
                "/context: {} attributes, over the limit of {MAX_ATTRIBUTES}",
                context.len()
            ),
        ));
    }
    let mut out = OfrepContext::default();
    for (name, value) in context {
        let field = format!("/context/{name}");
        let slot = match name.as_str() {
            "targetingKey" => None,
            "user" => Some(&mut out.user),
            "tenant" => Some(&mut out.tenant),
            "workload" => Some(&mut out.workload),
            "instance" => Some(&mut out.instance),
            "region" => Some(&mut out.region),
            "pool" => Some(&mut out.pool),
            "requestId" => Some(&mut out.request_id),
            _ => {
                if matches!(value, Value::Array(_) | Value::Object(_)) {
                    return Err(OfrepError::new(
                        OfrepCode::InvalidContext,
                        format!(
                            "{field}: nested values are not supported; Serin targets flat string attributes"
                        ),
                    ));
                }
                continue;
            }
        };
        let Value::String(s) = value else {
            return Err(OfrepError::new(
                OfrepCode::InvalidContext,
                format!("{field}: must be a string"),
            ));
        };
        if s.len() > MAX_ATTRIBUTE_BYTES {
            return Err(OfrepError::new(
                OfrepCode::InvalidContext,
                format!(
                    "{field}: {} bytes, over the limit of {MAX_ATTRIBUTE_BYTES}",
                    s.len()
                ),
            ));
        }
        match slot {
            None => out.targeting_key = s.clone(),
            Some(slot) if !s.is_empty() => *slot = Some(s.clone()),
            Some(_) => {}
        }
    }
    if out.targeting_key.is_empty() {
        return Err(OfrepError::new(
            OfrepCode::TargetingKeyMissing,
            "/context/targetingKey: required; Serin buckets flags and releases on it",
        ));
    }
    Ok(out)
}

fn env_of(headers: &HeaderMap) -> Result<String, OfrepError> {
    let env = headers
        .get(ENV_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    if env.is_empty() {
        return Err(OfrepError::new(
            OfrepCode::InvalidContext,
            "no env: send the env to evaluate in as the `Serin-Env` header",
        ));
    }
    serin_core::slug::validate_env(env).map_err(|e| {
        OfrepError::new(OfrepCode::InvalidContext, format!("Serin-Env header: {e}"))
    })?;
    Ok(env.to_owned())
}

async fn snapshot(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<crate::hub::Published>, Answer> {
    let env = env_of(headers)?;
    state
        .envs
        .require(&env, "Serin-Env")
        .await
        .map_err(|e| match e.code {
            crate::error::ErrorCode::NotFound => Answer::Ofrep(OfrepError::new(
                OfrepCode::InvalidContext,
                format!("Serin-Env header: {}", e.message),
            )),
            _ => Answer::Serin(e),
        })?;
    Ok(state.hub.current(&env).await?)
}

fn flag_reason(r: FlagReason) -> &'static str {
    match r {
        FlagReason::Disabled => "DISABLED",
        FlagReason::Denied(_) | FlagReason::Allowed(_) => "TARGETING_MATCH",
        FlagReason::Rule { rollout, .. } if rollout.basis_points() < 10_000 => "SPLIT",
        FlagReason::Rule { .. } => "TARGETING_MATCH",
        FlagReason::Rollout { rollout, .. }
            if rollout.basis_points() > 0 && rollout.basis_points() < 10_000 =>
        {
            "SPLIT"
        }
        FlagReason::Rollout { .. } => "DEFAULT",
    }
}

fn flag_evaluation(f: &FlagEvaluation<'_>, version: u64) -> OfrepEvaluation {
    OfrepEvaluation {
        key: Some(f.key.to_owned()),
        value: Some(f.value.clone()),
        reason: Some(flag_reason(f.reason).to_owned()),
        variant: Some(if f.on { "on" } else { "off" }.to_owned()),
        metadata: Some(json!({
            "snapshotVersion": version,
            "rule": f.reason.code(),
            "explanation": f.reason.to_string(),
        })),
        error_code: None,
        error_details: None,
    }
}

fn arm_name(arm: Arm) -> &'static str {
    match arm {
        Arm::Stable => "stable",
        Arm::Canary => "canary",
        Arm::Killed => "killed",
    }
}

fn agent_evaluation(key: &str, d: &Decision<'_>, ctx: &Context<'_>) -> OfrepEvaluation {
    use serin_core::decision::Reason as R;
    let reason = match d.reason {
        R::AgentKilled | R::TenantKilled => "DISABLED",
        R::TenantExcluded => "TARGETING_MATCH",
        R::NoRelease | R::OutsideWaves => "STATIC",
        R::Canary { .. } | R::Stable { .. } => "SPLIT",
    };
    let mut metadata = Map::new();
    metadata.insert("snapshotVersion".into(), d.snapshot_version.into());
    metadata.insert("arm".into(), arm_name(d.arm).into());
    metadata.insert("rule".into(), d.reason.code().into());
    metadata.insert("explanation".into(), d.explain(ctx).into());
    if let Some(r) = d.release {
        metadata.insert("releaseId".into(), r.into());
    }
    if let Some(b) = d.bundle {
        metadata.insert("bundleDigest".into(), b.digest.clone().into());
    }
    OfrepEvaluation {
        key: Some(key.to_owned()),
        value: d.bundle.map(|b| Value::String(b.id.clone())),
        reason: Some(reason.to_owned()),
        variant: Some(arm_name(d.arm).to_owned()),
        metadata: Some(Value::Object(metadata)),
        error_code: None,
        error_details: None,
    }
}

/// Evaluates one key on a snapshot: an agent's routing or a flag.
pub fn evaluate(
    snap: &CompiledSnapshot,
    key: &str,
    ctx: &OfrepContext,
) -> Result<OfrepEvaluation, OfrepError> {
    let engine_ctx = ctx.engine();
    if let Some(agent) = key.strip_prefix(AGENT_FLAG_PREFIX) {
        return match snap.decide(agent, &engine_ctx) {
            Ok(d) => Ok(agent_evaluation(key, &d, &engine_ctx)),
            Err(e) => Err(OfrepError::new(
                OfrepCode::FlagNotFound,
                format!("{e} (snapshot v{})", snap.version()),
            )),
        };
    }
    snap.flag(key, &engine_ctx)
        .map(|f| flag_evaluation(&f, snap.version()))
        .ok_or_else(|| {
            OfrepError::new(
                OfrepCode::FlagNotFound,
                format!(
                    "no flag {key} in env {} (snapshot v{}); agents are serin.agent.<agent>",
                    snap.env(),
                    snap.version()
                ),
            )
        })
}

/// Evaluate one flag, or an agent's routing as `serin.agent.<agent>`.
#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags/{key}", tag = "ofrep",
    params(("key" = String, Path), ("Serin-Env" = String, Header, description = "The env to evaluate in")),
    request_body = OfrepRequest,
    responses(
        (status = 200, body = OfrepEvaluation),
        (status = 400, description = "PARSE_ERROR, TARGETING_KEY_MISSING or INVALID_CONTEXT", body = OfrepEvaluation),
        (status = 404, description = "FLAG_NOT_FOUND (or, in Serin's shape, no such route)", body = OfrepEvaluation),
    ),
    security(("bearer" = ["sdk"])))]
async fn evaluate_flag(
    State(state): State<AppState>,
    _auth: Auth<DecideAccess>,
    ApiPath(key): ApiPath<String>,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, Answer> {
    let keyed = |mut e: OfrepError| {
        e.key = Some(key.clone());
        e
    };
    let ctx = parse_request(&body).map_err(keyed)?;
    let published = snapshot(&state, &headers).await.map_err(|a| match a {
        Answer::Ofrep(e) => Answer::Ofrep(keyed(e)),
        other => other,
    })?;
    let started = std::time::Instant::now();
    let eval = evaluate(&published.compiled, &key, &ctx).map_err(keyed)?;
    record_decide(published.compiled.env(), "ofrep", started);
    metrics::counter!("serin_ofrep_evaluations_total", "kind" => "single").increment(1);
    Ok(axum::Json(eval).into_response())
}

/// Every flag of the env and every agent's routing for one context. `ETag` changes with
/// the snapshot version and the context; `If-None-Match` with the current one answers 304.
#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags", tag = "ofrep",
    params(("Serin-Env" = String, Header, description = "The env to evaluate in"),
        ("If-None-Match" = Option<String>, Header, description = "The ETag of an earlier answer")),
    request_body = OfrepRequest,
    responses(
        (status = 200, body = OfrepBulk, headers(("ETag" = String))),
        (status = 304, description = "Nothing changed since the ETag sent"),
        (status = 400, description = "PARSE_ERROR, TARGETING_KEY_MISSING or INVALID_CONTEXT", body = OfrepEvaluation),
    ),
    security(("bearer" = ["sdk"])))]
async fn evaluate_flags(
    State(state): State<AppState>,
    _auth: Auth<DecideAccess>,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, Answer> {
    let ctx = parse_request(&body)?;
    let published = snapshot(&state, &headers).await?;
    let snap = &published.compiled;
    let etag = format!(
        "\"{}-{:016x}\"",
        snap.version(),
        xxhash_rust::xxh3::xxh3_64(format!("{}\u{2}{}", snap.env(), ctx.fingerprint()).as_bytes())
    );
    metrics::counter!("serin_ofrep_evaluations_total", "kind" => "bulk").increment(1);
    if if_none_match(&headers, &etag) {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        return Ok(resp);
    }
    let started = std::time::Instant::now();
    let answer = bulk(snap, &ctx, &etag);
    record_decide(snap.env(), "ofrep_bulk", started);
    Ok(answer)
}

fn record_decide(env: &str, route: &'static str, started: std::time::Instant) {
    metrics::histogram!("serin_decide_duration_seconds", "env" => env.to_owned(), "route" => route)
        .record(started.elapsed().as_secs_f64());
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

fn bulk(snap: &CompiledSnapshot, ctx: &OfrepContext, etag: &str) -> Response {
    let engine_ctx = ctx.engine();
    let s = snap.snapshot();
    let mut flags = Vec::with_capacity(s.flags.len() + s.agents.len());
    for agent in s.agents.keys() {
        let key = format!("{AGENT_FLAG_PREFIX}{agent}");
        match snap.decide(agent, &engine_ctx) {
            Ok(d) => flags.push(agent_evaluation(&key, &d, &engine_ctx)),
            // An agent with no stable has nothing to route to yet: it is not a flag.
            Err(_) => continue,
        }
    }
    for key in s.flags.keys() {
        if let Some(f) = snap.flag(key, &engine_ctx) {
            flags.push(flag_evaluation(&f, snap.version()));
        }
    }
    let body = OfrepBulk {
        flags,
        metadata: json!({"snapshotVersion": snap.version(), "env": snap.env()}),
    };
    let mut resp = axum::Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(body: &str, want: Result<&str, OfrepCode>) {
        match (parse_request(body.as_bytes()), want) {
            (Ok(c), Ok(key)) => assert_eq!(c.targeting_key, key, "{body}"),
            (Err(e), Err(code)) => assert_eq!(e.code, code, "{body}: {}", e.details),
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn contexts_are_read_flat_and_refused_with_the_protocols_codes() {
        check(r#"{"context":{"targetingKey":"u1"}}"#, Ok("u1"));
        check(
            r#"{"context":{"targetingKey":"u1","plan":"pro","n":3,"b":true}}"#,
            Ok("u1"),
        );
        check(r#"{}"#, Err(OfrepCode::TargetingKeyMissing));
        check(
            r#"{"context":{"tenant":"a"}}"#,
            Err(OfrepCode::TargetingKeyMissing),
        );
        check(r#"{"context":"#, Err(OfrepCode::ParseError));
        check(r#"[]"#, Err(OfrepCode::ParseError));
        check(r#"{"context":[]}"#, Err(OfrepCode::ParseError));
        check(r#"{"ctx":{}}"#, Err(OfrepCode::ParseError));
        check(
            r#"{"context":{"targetingKey":"u1","a":{"b":1}}}"#,
            Err(OfrepCode::InvalidContext),
        );
        check(
            r#"{"context":{"targetingKey":1}}"#,
            Err(OfrepCode::InvalidContext),
        );
        check(
            r#"{"context":{"targetingKey":"u1","tenant":["a"]}}"#,
            Err(OfrepCode::InvalidContext),
        );
        let long = format!(
            r#"{{"context":{{"targetingKey":"{}"}}}}"#,
            "k".repeat(1 << 20)
        );
        check(&long, Err(OfrepCode::InvalidContext));
    }

    #[test]
    fn the_targeting_key_is_the_user_and_request_unless_the_context_names_them() {
        let c = parse_request(br#"{"context":{"targetingKey":"k","tenant":"t"}}"#).unwrap();
        let e = c.engine();
        assert_eq!(
            (e.user, e.request_id, e.tenant),
            (Some("k"), "k", Some("t"))
        );
        let c = parse_request(br#"{"context":{"targetingKey":"k","user":"u","requestId":"r"}}"#)
            .unwrap();
        let e = c.engine();
        assert_eq!((e.user, e.request_id), (Some("u"), "r"));
    }
}
