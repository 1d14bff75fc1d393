//! The HTTP contract, checked by calling the routes: every status a route
//! answers must be documented for it in the served `/openapi.json`, every
//! error must be in the error shape with the status its code promises, and
//! every JSON success body must validate against the schema documented for it.
//!
//! The app runs in-process on a real SQLite store in a temporary directory.
//! The table below has one good request per operation; the test derives the
//! rest (each role and no token, malformed and unknown path parameters,
//! arrays and other bad bodies) and adds the conflicting states by hand. An
//! operation in the document without a row in the table fails the test, so a
//! new route cannot skip the contract.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use serin_core::bundle::Limits;
use serin_core::catalog::ModelCatalog;
use serin_server::ServerConfig;
use serin_store::Store;
use tower::ServiceExt;

struct App {
    router: Router,
    store: Store,
    _dir: tempfile::TempDir,
    admin: String,
    admin_id: String,
    viewer: String,
    sdk: String,
}

async fn start() -> App {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    let now = serin_server::clock::now_ms();
    let issued = store.bootstrap_admin(now).await.unwrap().unwrap();
    let (admin, admin_id) = (issued.token, issued.info.id);
    let viewer = store
        .create_token("viewer", "viewer", now, "test")
        .await
        .unwrap()
        .token;
    let sdk = store
        .create_token("sdk", "sdk", now, "test")
        .await
        .unwrap()
        .token;
    // The conflict cases below act on a lenient env nobody deployed to, and on
    // a strict one that refuses a direct deploy without force.
    store
        .create_env("staging", false, now, "test")
        .await
        .unwrap();
    store.create_env("prod", true, now, "test").await.unwrap();
    let app = serin_server::app(ServerConfig {
        store: store.clone(),
        catalog: ModelCatalog::builtin(),
        limits: Limits::DEFAULT,
        max_in_flight: 64,
        max_streams: 16,
        max_ui_streams: 16,
        refresh_interval: Duration::from_millis(200),
        tick_interval: Duration::from_secs(3600),
        run_controller: false,
        max_validations: 4,
        webhook_retry: serin_server::releases::RetryPolicy::DEFAULT,
        audit: serin_server::audit::AuditConfig {
            signer: Some(std::sync::Arc::new(
                serin_core::audit::SigningKey::from_seed(&[7; 32]).unwrap(),
            )),
            ..Default::default()
        },
    })
    .await
    .unwrap();
    App {
        router: app.router,
        store,
        _dir: dir,
        admin,
        admin_id,
        viewer,
        sdk,
    }
}

/// A request body: JSON, raw bytes with a content type, or none.
#[derive(Clone, Debug)]
enum Payload {
    None,
    Json(Value),
    Raw(&'static str, &'static str),
}

#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
    retry_after: Option<String>,
}

async fn call(
    app: &App,
    method: &str,
    path: &str,
    token: Option<&str>,
    payload: &Payload,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if path.starts_with("/ofrep/") {
        req = req.header("serin-env", "dev");
    }
    let body = match payload {
        Payload::None => Body::empty(),
        Payload::Json(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        Payload::Raw(ct, text) => {
            req = req.header(header::CONTENT_TYPE, *ct);
            Body::from(*text)
        }
    };
    let resp = app
        .router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A snapshot stream never ends; its status and headers are the answer.
    let body = if content_type.starts_with("text/event-stream") {
        Value::Null
    } else {
        let bytes = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
            .await
            .expect("body within 30 s")
            .unwrap()
            .to_bytes();
        if content_type.starts_with("application/json") {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("{method} {path}: JSON content type but not JSON ({e}): {bytes:?}")
            })
        } else {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    Answer {
        status,
        content_type,
        body,
        retry_after,
    }
}

/// The bundle directory of the examples, as the push API's `files` object.
fn files(prompt_suffix: &str) -> Value {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bundles/support");
    let mut map = serde_json::Map::new();
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        map: &mut serde_json::Map<String, Value>,
    ) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(root, &p, map);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                map.insert(rel, std::fs::read_to_string(&p).unwrap().into());
            }
        }
    }
    walk(&root, &root, &mut map);
    if let Some(Value::String(prompt)) = map.get_mut("prompt.md") {
        prompt.push_str(prompt_suffix);
    }
    Value::Object(map)
}

const POLICY: &str = "require: [candidate_pinned, deploy_announced]\n";

/// One good request per operation, in the order they run (state builds up:
/// bundles before deploys, a release before its commands). `{param}`s are
/// filled by [`good_param`].
fn table() -> Vec<(&'static str, &'static str, Payload)> {
    use Payload::{Json, None};
    let plan = json!({"steps": [{"canary": {"weight": "10%", "min_requests": 10}}, {"canary": {"weight": "50%", "min_requests": 10}}]});
    let event = json!({
        "request_id": "req-1", "agent": "support", "env": "dev", "snapshot_version": 1,
        "bundle": "support@2", "arm": "stable", "latency_ms": 120.0
    });
    vec![
        (
            "POST",
            "/v1/tokens",
            Json(json!({"role": "viewer", "name": "table"})),
        ),
        ("GET", "/v1/tokens", None),
        ("POST", "/v1/bundles", Json(json!({"files": files("")}))),
        (
            "POST",
            "/v1/bundles/validate",
            Json(json!({"files": files("")})),
        ),
        ("GET", "/v1/agents", None),
        ("GET", "/v1/agents/{agent}/bundles", None),
        ("GET", "/v1/agents/{agent}/bundles/{number}", None),
        ("GET", "/v1/pins", None),
        (
            "POST",
            "/v1/envs/{env}/agents/{agent}/deploy",
            Json(json!({"bundle": 1})),
        ),
        ("GET", "/v1/envs", None),
        (
            "POST",
            "/v1/envs",
            Json(json!({"name": "qa", "strict": false})),
        ),
        ("GET", "/v1/envs/{env}", None),
        ("GET", "/v1/envs/{env}/snapshot", None),
        ("GET", "/v1/envs/{env}/snapshot/stream", None),
        ("GET", "/v1/snapshots/{version}", None),
        (
            "POST",
            "/v1/decide",
            Json(json!({"agent": "support", "env": "dev", "request_id": "r-1", "user": "u-1"})),
        ),
        (
            "POST",
            "/v1/explain",
            Json(json!({"snapshot_version": 1, "request_id": "r-1"})),
        ),
        (
            "POST",
            "/v1/envs/{env}/agents/{agent}/kill",
            Json(json!({"reason": "incident"})),
        ),
        (
            "POST",
            "/v1/envs/{env}/agents/{agent}/unkill",
            Json(json!({"reason": "fixed"})),
        ),
        (
            "PUT",
            "/v1/envs/{env}/flags/{key}",
            Json(json!({"flag": {"on": false, "off": true}, "reason": "try"})),
        ),
        ("GET", "/v1/envs/{env}/flags", None),
        (
            "POST",
            "/ofrep/v1/evaluate/flags/{key}",
            Json(json!({"context": {"targetingKey": "u-1", "tenant": "acme"}})),
        ),
        (
            "POST",
            "/ofrep/v1/evaluate/flags",
            Json(json!({"context": {"targetingKey": "u-1"}})),
        ),
        ("GET", "/v1/envs/{env}/flags/{key}", None),
        ("DELETE", "/v1/envs/{env}/flags/{key}", None),
        (
            "POST",
            "/v1/envs/{env}/agents/{agent}/rollback",
            Json(json!({"reason": "back"})),
        ),
        ("GET", "/v1/envs/{env}/agents/{agent}/guardrails", None),
        (
            "PUT",
            "/v1/envs/{env}/agents/{agent}/guardrails",
            Json(json!({})),
        ),
        (
            "PUT",
            "/v1/envs/{env}/agents/{agent}/readiness/policy",
            Json(json!({"yaml": POLICY})),
        ),
        (
            "GET",
            "/v1/envs/{env}/agents/{agent}/readiness/policy",
            None,
        ),
        (
            "GET",
            "/v1/envs/{env}/agents/{agent}/readiness/policy/history",
            None,
        ),
        (
            "PUT",
            "/v1/envs/{env}/agents/{agent}/readiness/evidence/{key}",
            Json(json!({"status": "pass", "owner": "sam", "evidence": "posted in #launches"})),
        ),
        (
            "GET",
            "/v1/envs/{env}/agents/{agent}/readiness/evidence",
            None,
        ),
        (
            "GET",
            "/v1/envs/{env}/agents/{agent}/readiness/evidence/{key}",
            None,
        ),
        (
            "POST",
            "/v1/agents/{agent}/bundles/{n}/evals",
            Json(json!({"set": "golden-v1", "score": 0.9, "threshold": 0.8})),
        ),
        ("GET", "/v1/agents/{agent}/bundles/{n}/evals", None),
        (
            "POST",
            "/v1/envs/{env}/agents/{agent}/readiness/check",
            Json(json!({"bundle": 2})),
        ),
        (
            "POST",
            "/v1/envs/{env}/agents/{agent}/drills",
            Json(json!({"timeout_ms": 100})),
        ),
        ("GET", "/v1/envs/{env}/agents/{agent}/drills", None),
        (
            "POST",
            "/v1/envs/{env}/agents/{agent}/releases",
            Json(json!({"bundle": 1, "plan": plan})),
        ),
        ("GET", "/v1/envs/{env}/agents/{agent}/releases", None),
        ("GET", "/v1/envs/{env}/agents/{agent}/release", None),
        ("GET", "/v1/envs/{env}/agents/{agent}/release/stream", None),
        ("GET", "/v1/status", None),
        ("GET", "/v1/status/stream", None),
        (
            "POST",
            "/v1/envs/{env}/agents/{agent}/release/pause",
            Json(json!({})),
        ),
        ("POST", "/v1/envs/{env}/agents/{agent}/release/resume", None),
        (
            "POST",
            "/v1/envs/{env}/agents/{agent}/release/promote",
            Json(json!({"force": true, "reason": "enough"})),
        ),
        ("POST", "/v1/outcomes", Json(json!({"events": [event]}))),
        (
            "POST",
            "/v1/effects",
            Json(
                json!({"key": "eff-1", "agent": "support", "bundle": 2, "request_id": "r-1",
                "tool": "refund", "args_digest": "sha256:a"}),
            ),
        ),
        (
            "POST",
            "/v1/effects/{key}/result",
            Json(json!({"status": "committed", "detail": "done"})),
        ),
        ("GET", "/v1/agents/{agent}/effects?bundle=2", None),
        ("GET", "/v1/envs/{env}/approval-policy", None),
        (
            "PUT",
            "/v1/envs/{env}/approval-policy",
            Json(json!({"require": [], "agent_requests": {"max_pending": 1000}})),
        ),
        (
            "POST",
            "/v1/approvals",
            Json(
                json!({"env": "dev", "agent": "support", "bundle": 2, "tool": "refund",
                "args_digest": "sha256:a", "reason": "refund over 100", "snapshot_version": 1}),
            ),
        ),
        ("GET", "/v1/approvals?env=dev&status=pending", None),
        ("GET", "/v1/approvals/{id}", None),
        (
            "POST",
            "/v1/approvals/{id}/approve",
            Json(json!({"reason": "checked"})),
        ),
        (
            "POST",
            "/v1/approvals/{id}/deny",
            Json(json!({"reason": "not now"})),
        ),
        (
            "POST",
            "/v1/outcomes/windows",
            Json(json!({"windows": [{
                "window_id": "i-1/1", "agent": "support", "env": "dev", "snapshot_version": 1,
                "arms": [{"arm": "stable", "bundle": "support@2", "latency_ms": [120.0]}]
            }]})),
        ),
        ("POST", "/v1/traces", Json(json!({"resourceSpans": []}))),
        ("GET", "/v1/envs/{env}/agents/{agent}/release/report", None),
        (
            "POST",
            "/v1/envs/{env}/agents/{agent}/release/abort",
            Json(json!({"reason": "stop"})),
        ),
        (
            "POST",
            "/v1/sdk/applied",
            Json(json!({"env": "dev", "instance": "i-1", "version": 1, "sdk": "test/1"})),
        ),
        ("GET", "/v1/envs/{env}/sdks", None),
        ("GET", "/v1/audit", None),
        // The in-process server keeps wall time (making it adjustable would move
        // the clock of every test in this binary), so this good request is 409;
        // the binary's tests (`tests/it/clock.rs`) cover the 200.
        (
            "POST",
            "/v1/system/clock",
            Json(json!({"advance_ms": 1000})),
        ),
        ("GET", "/v1/system/quarantine", None),
        ("GET", "/v1/system/replicas", None),
        ("GET", "/v1/audit/head", None),
        ("GET", "/v1/audit/proof?from=1", None),
        ("GET", "/v1/audit/subtrees?size=1", None),
        ("GET", "/v1/audit/verify", None),
        ("GET", "/metrics", None),
        ("GET", "/openapi.json", None),
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("DELETE", "/v1/tokens/{id}", None),
    ]
}

fn good_param(template: &str, name: &str, ctx: &Ctx) -> String {
    match name {
        "env" => "dev".into(),
        "agent" => "support".into(),
        "number" | "n" => "2".into(),
        "version" => "1".into(),
        "key" if template.contains("/flags/") => "support.beta".into(),
        "key" if template.contains("/effects/") => "eff-1".into(),
        "key" => "deploy_announced".into(),
        "id" if template.ends_with("/approve") => ctx.approve_id.clone(),
        "id" if template.starts_with("/v1/approvals/") => ctx.deny_id.clone(),
        "id" => ctx.victim_id.clone(),
        other => panic!("no good value for path parameter {other} of {template}"),
    }
}

/// Values a client might send that do not name anything.
fn unknown_param(name: &str) -> Option<&'static str> {
    Some(match name {
        "agent" => "ghost",
        "number" | "n" => "99",
        "version" => "999999",
        "key" => "ghost_item",
        "id" => "nope",
        "env" => "nowhere",
        _ => return None,
    })
}

/// Values that are not valid for the parameter at all.
fn malformed_params(name: &str) -> &'static [&'static str] {
    match name {
        "agent" | "env" => &["Bad_Name", "a%20b"],
        "number" | "n" | "version" => &["0", "x", "99999999999999999999"],
        "key" => &["Bad%20Key"],
        _ => &[],
    }
}

fn fill(template: &str, f: impl Fn(&str) -> String) -> String {
    template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => f(name),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

fn params(template: &str) -> Vec<String> {
    serin_server::extract::path_params(template)
}

struct Ctx {
    victim_id: String,
    /// Agents' pending approval requests filed by someone other than the admin, one for the
    /// approve route and one for deny (a decided request cannot be decided again).
    approve_id: String,
    deny_id: String,
}

/// Files an agent-side request as another actor, straight into the store.
async fn file_approval(store: &Store, n: u128) -> String {
    use serin_core::approvals::*;
    let now = serin_server::clock::now_ms();
    let r = ApprovalRequest {
        id: new_id(n),
        kind: ApprovalKind::ToolCall,
        env: "dev".into(),
        agent: "support".into(),
        bundle: Some(2),
        requested_by: "token:agent".into(),
        reason: "refund".into(),
        details: json!({"tool": "refund"}),
        status: ApprovalStatus::Pending,
        created_at_ms: now,
        expires_at_ms: now + 3_600_000,
        decided_by: None,
        decided_at_ms: None,
        decision_reason: None,
        used_at_ms: None,
        snapshot_version: Some(1),
        overdue: false,
        counted: Counted::default(),
    };
    let row = serin_server::approvals::to_row(&r).unwrap();
    store
        .insert_approval(&row, "token:agent", None, &[])
        .await
        .unwrap();
    r.id
}

/// (template, method) → statuses seen.
type Seen = BTreeMap<(String, String), BTreeSet<u16>>;

struct Recorder<'a> {
    app: &'a App,
    doc: &'a Value,
    validators: BTreeMap<String, jsonschema::Validator>,
    seen: Seen,
    failures: Vec<String>,
}

impl Recorder<'_> {
    async fn run(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        payload: &Payload,
    ) -> Answer {
        // A row may carry a query string (`/v1/audit/proof?from=1`); the
        // operation is the path alone.
        let template = template.split('?').next().unwrap_or(template);
        let a = call(self.app, method, path, token, payload).await;
        self.seen
            .entry((template.to_owned(), method.to_owned()))
            .or_default()
            .insert(a.status);
        let what = format!("{method} {path} ({template}) -> {}: {}", a.status, a.body);
        let op = &self.doc["paths"][template][method.to_ascii_lowercase()];
        let documented = &op["responses"][a.status.to_string()];
        if documented.is_null() {
            self.failures.push(format!("undocumented status: {what}"));
        }
        if a.status >= 400 {
            let shape = if template.starts_with("/ofrep/") && a.body.get("errorCode").is_some() {
                ofrep_error_shape(&a)
            } else if template == "/v1/traces" && a.body["code"].is_i64() {
                otlp_error_shape(&a)
            } else {
                error_shape(&a)
            };
            if let Err(e) = shape {
                self.failures
                    .push(format!("not the error shape ({e}): {what}"));
            }
        } else if a.content_type.starts_with("application/json") {
            let schema = &documented["content"]["application/json"]["schema"];
            if !schema.is_null() {
                let key = schema.to_string();
                if !self.validators.contains_key(&key) {
                    let mut root = json!({"components": self.doc["components"].clone()});
                    for (k, v) in schema.as_object().unwrap() {
                        root[k] = v.clone();
                    }
                    let v = jsonschema::draft202012::new(&root)
                        .unwrap_or_else(|e| panic!("schema of {what} does not compile: {e}"));
                    self.validators.insert(key.clone(), v);
                }
                let errors: Vec<String> = self.validators[&key]
                    .iter_errors(&a.body)
                    .map(|e| format!("{} at {}", e, e.instance_path()))
                    .collect();
                if !errors.is_empty() {
                    self.failures
                        .push(format!("body does not match its schema {errors:?}: {what}"));
                }
            }
        }
        a
    }
}

const CODES: &[(&str, u16)] = &[
    ("bad_request", 400),
    ("invalid_json", 400),
    ("invalid_field", 422),
    ("invalid_bundle", 422),
    ("policy_violation", 422),
    ("not_ready", 409),
    ("unauthenticated", 401),
    ("forbidden", 403),
    ("not_found", 404),
    ("method_not_allowed", 405),
    ("conflict", 409),
    ("payload_too_large", 413),
    ("unsupported_media_type", 415),
    ("overloaded", 429),
    ("internal", 500),
    ("unavailable", 503),
];

/// OFREP's own error answers: 400 with one of its codes, 404 `FLAG_NOT_FOUND`.
fn ofrep_error_shape(a: &Answer) -> Result<(), String> {
    let code = a.body["errorCode"]
        .as_str()
        .ok_or("errorCode is not a string")?;
    let want = match code {
        "FLAG_NOT_FOUND" => 404,
        "PARSE_ERROR" | "TARGETING_KEY_MISSING" | "INVALID_CONTEXT" | "GENERAL" => 400,
        other => return Err(format!("unknown OFREP code {other}")),
    };
    if want != a.status {
        return Err(format!("OFREP code {code} promises {want}"));
    }
    if a.body["errorDetails"].as_str().is_none_or(|m| m.is_empty()) {
        return Err("empty errorDetails".into());
    }
    Ok(())
}

/// OTLP/HTTP failures: a `google.rpc.Status` with a gRPC code fitting the HTTP status.
fn otlp_error_shape(a: &Answer) -> Result<(), String> {
    let code = a.body["code"].as_i64().ok_or("code is not an integer")?;
    let fits = match a.status {
        400 | 415 => code == 3,
        413 | 429 => code == 8,
        503 => code == 14,
        _ => false,
    };
    if !fits {
        return Err(format!("gRPC code {code} does not fit status {}", a.status));
    }
    if a.body["message"].as_str().is_none_or(|m| m.is_empty()) {
        return Err("empty message".into());
    }
    Ok(())
}

fn error_shape(a: &Answer) -> Result<(), String> {
    if a.status == 503 && a.body.get("error").is_none() {
        // `/readyz` answers its health document when the store is down.
        return Ok(());
    }
    let err = a.body.get("error").ok_or("no `error` object")?;
    let obj = err.as_object().ok_or("`error` is not an object")?;
    for k in obj.keys() {
        if !["code", "message", "field", "details"].contains(&k.as_str()) {
            return Err(format!("unexpected key {k}"));
        }
    }
    let code = err["code"].as_str().ok_or("no code")?;
    let status = CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, s)| *s)
        .ok_or_else(|| format!("unknown code {code}"))?;
    if status != a.status {
        return Err(format!("code {code} promises {status}"));
    }
    if err["message"].as_str().is_none_or(|m| m.is_empty()) {
        return Err("empty message".into());
    }
    if !(err.get("field").is_none() || err["field"].is_string()) {
        return Err("field is not a string".into());
    }
    if a.status >= 500 && err.get("details").is_some() {
        return Err("a 5xx carries details".into());
    }
    if matches!(a.status, 429 | 503) && a.retry_after.is_none() {
        return Err("no Retry-After".into());
    }
    Ok(())
}

#[tokio::test]
async fn every_status_a_route_answers_is_documented_and_every_body_matches_its_schema() {
    let app = start().await;
    let doc = call(
        &app,
        "GET",
        "/openapi.json",
        Some(&app.admin),
        &Payload::None,
    )
    .await
    .body;
    assert!(doc["paths"].is_object(), "{doc}");
    let now = serin_server::clock::now_ms();
    let victim = app
        .store
        .create_token("viewer", "victim", now, "test")
        .await
        .unwrap();
    let ctx = Ctx {
        victim_id: victim.info.id.clone(),
        approve_id: file_approval(&app.store, 1).await,
        deny_id: file_approval(&app.store, 2).await,
    };
    let mut rec = Recorder {
        app: &app,
        doc: &doc,
        validators: BTreeMap::new(),
        seen: Seen::new(),
        failures: Vec::new(),
    };
    let admin = Some(app.admin.as_str());

    // Every documented operation has a row, and every row is documented.
    let table = table();
    let rows: BTreeSet<(String, String)> = table
        .iter()
        .map(|(m, t, _)| (t.split('?').next().unwrap_or(t).to_string(), m.to_string()))
        .collect();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((path.clone(), method.to_ascii_uppercase()));
        }
    }
    // The dashboard (`/ui`) is not an API: its pages are left out of the document on
    // purpose, so they have no row here; they are checked by the binary's `dashboard` tests.
    assert!(
        documented.iter().all(|(p, _)| !p.starts_with("/ui")),
        "dashboard pages leaked into /openapi.json"
    );
    let ui = call(&app, "GET", "/ui", None, &Payload::None).await;
    assert_eq!(ui.status, 200, "{ui:?}");
    assert!(ui.content_type.starts_with("text/html"), "{ui:?}");
    let missing: Vec<_> = documented.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "operations without a case in the table: {missing:?}"
    );
    let extra: Vec<_> = rows.difference(&documented).collect();
    assert!(
        extra.is_empty(),
        "table rows that are not in /openapi.json: {extra:?}"
    );

    // Two versions of support, both deployed in dev (so a rollback has a target).
    let p = Payload::Json(json!({"files": files("")}));
    rec.run("POST", "/v1/bundles", "/v1/bundles", admin, &p)
        .await;
    let p = Payload::Json(json!({"files": files("\nBe brief.\n")}));
    let a = rec
        .run("POST", "/v1/bundles", "/v1/bundles", admin, &p)
        .await;
    assert_eq!(a.body["id"], "support@2", "{:?}", a);
    for n in [1, 2] {
        let t = "/v1/envs/{env}/agents/{agent}/deploy";
        let a = rec
            .run(
                "POST",
                t,
                "/v1/envs/dev/agents/support/deploy",
                admin,
                &Payload::Json(json!({"bundle": n})),
            )
            .await;
        if a.status != 200 {
            rec.failures.push(format!(" want 200, got {a:?}"));
        }
    }

    // The good requests, as admin, then as every other caller.
    for (method, template, payload) in &table {
        let path = fill(template, |name| good_param(template, name, &ctx));
        let a = rec.run(method, template, &path, admin, payload).await;
        if a.status >= 400 && !matches!(*template, "/v1/sdk/applied" | "/v1/system/clock") {
            rec.failures.push(format!(
                "good request failed: {method} {path} -> {}: {}",
                a.status, a.body
            ));
        }
        for token in [
            None,
            Some(app.viewer.as_str()),
            Some(app.sdk.as_str()),
            Some("serin_nope_nope"),
        ] {
            if *template == "/v1/tokens/{id}" && token == Some(app.viewer.as_str()) {
                continue;
            }
            rec.run(method, template, &path, token, payload).await;
        }
    }

    // Malformed and unknown path parameters, one at a time.
    for (method, template, payload) in &table {
        for name in params(template) {
            // `GET /v1/envs/{env}/flags/{key}` looks a malformed key up and
            // answers 404 (documented); only the writes validate it.
            // OFREP looks keys up too: a key that names nothing is FLAG_NOT_FOUND.
            let lookup_only = (*method == "GET" && template.ends_with("/flags/{key}"))
                || template.starts_with("/ofrep/");
            let mut values: Vec<(String, bool)> = malformed_params(&name)
                .iter()
                .filter(|_| !(lookup_only && name == "key"))
                .map(|v| ((*v).to_owned(), true))
                .collect();
            if let Some(v) = unknown_param(&name) {
                values.push((v.to_owned(), false));
            }
            for (value, malformed) in values {
                let path = fill(template, |n| {
                    if n == name {
                        value.clone()
                    } else {
                        good_param(template, n, &ctx)
                    }
                });
                let a = rec.run(method, template, &path, admin, payload).await;
                if malformed && a.status != 400 {
                    rec.failures.push(format!(
                        "malformed path parameter {name}={value} answered {} (want 400): {method} {path}: {}",
                        a.status, a.body
                    ));
                }
                if malformed && a.status == 400 && a.body["error"]["field"] != name.as_str() {
                    rec.failures.push(format!(
                        "400 for {name}={value} does not name the parameter: {method} {path}: {}",
                        a.body
                    ));
                }
            }
        }
    }

    // Bad bodies: arrays where objects belong, unknown fields, broken JSON,
    // the wrong content type.
    for (method, template, payload) in &table {
        let Payload::Json(good) = payload else {
            continue;
        };
        let path = fill(template, |name| good_param(template, name, &ctx));
        let mut bad = vec![
            Payload::Json(json!([])),
            Payload::Json(json!(["viewer", "x"])),
            Payload::Json(json!({"surely_not_a_field": 1})),
            Payload::Raw("application/json", "{\"a\": "),
            Payload::Raw("application/json", "{\"a\": 1, \"a\": 2}"),
            Payload::Raw("text/plain", "{}"),
        ];
        if let Value::Object(fields) = good {
            // Each object-valued field sent as the array of its values.
            for (k, v) in fields {
                if let Value::Object(inner) = v {
                    let mut b = good.clone();
                    b[k] = Value::Array(inner.values().cloned().collect());
                    bad.push(Payload::Json(b));
                }
            }
        }
        for b in &bad {
            let a = rec.run(method, template, &path, admin, b).await;
            // Both ingest routes answer 200 to a body whose items are bad (each item is
            // judged on its own), and OTLP receivers must ignore unknown fields.
            if a.status < 400
                && !matches!(
                    *template,
                    "/v1/outcomes" | "/v1/outcomes/windows" | "/v1/traces"
                )
            {
                rec.failures.push(format!(
                    "bad body {b:?} accepted: {method} {path} -> {}: {}",
                    a.status, a.body
                ));
            }
        }
    }

    // Conflicting states.
    let deploy = "/v1/envs/{env}/agents/{agent}/deploy";
    let a = rec
        .run(
            "POST",
            deploy,
            "/v1/envs/prod/agents/support/deploy",
            admin,
            &Payload::Json(json!({"bundle": 1})),
        )
        .await;
    if a.status != 422 {
        rec.failures.push(format!(
            "a direct deploy into a strict env needs force:  want 422, got {a:?}"
        ));
    }
    let start = "/v1/envs/{env}/agents/{agent}/releases";
    let plan = json!({"steps": [{"canary": {"weight": "10%", "min_requests": 10}}]});
    let body = Payload::Json(json!({"bundle": 1, "plan": plan}));
    rec.run(
        "POST",
        start,
        "/v1/envs/dev/agents/support/releases",
        admin,
        &body,
    )
    .await;
    let a = rec
        .run(
            "POST",
            start,
            "/v1/envs/dev/agents/support/releases",
            admin,
            &body,
        )
        .await;
    if a.status != 409 {
        rec.failures
            .push(format!("a second active release:  want 409, got {a:?}"));
    }
    let drills = "/v1/envs/{env}/agents/{agent}/drills";
    let a = rec
        .run(
            "POST",
            drills,
            "/v1/envs/dev/agents/support/drills",
            admin,
            &Payload::Json(json!({})),
        )
        .await;
    if a.status != 409 {
        rec.failures
            .push(format!("a drill during a release:  want 409, got {a:?}"));
    }
    let resume = "/v1/envs/{env}/agents/{agent}/release/resume";
    let a = rec
        .run(
            "POST",
            resume,
            "/v1/envs/dev/agents/support/release/resume",
            admin,
            &Payload::None,
        )
        .await;
    if a.status != 422 {
        rec.failures
            .push(format!("resume when not paused:  want 422, got {a:?}"));
    }
    let promote = "/v1/envs/{env}/agents/{agent}/release/promote";
    let a = rec
        .run(
            "POST",
            promote,
            "/v1/envs/dev/agents/support/release/promote",
            admin,
            &Payload::Json(json!({})),
        )
        .await;
    if a.status != 422 {
        rec.failures.push(format!(
            "promote before the gate holds:  want 422, got {a:?}"
        ));
    }
    for (t, body) in [
        (
            "/v1/envs/{env}/agents/{agent}/rollback",
            json!({"reason": "x"}),
        ),
        (
            "/v1/envs/{env}/agents/{agent}/unkill",
            json!({"reason": "x"}),
        ),
        ("/v1/envs/{env}/agents/{agent}/kill", json!({"reason": "x"})),
        (deploy, json!({"bundle": 1})),
    ] {
        let path = fill(t, |n| {
            if n == "env" {
                "staging".into()
            } else {
                "support".into()
            }
        });
        rec.run("POST", t, &path, admin, &Payload::Json(body)).await;
    }
    let a = rec
        .run(
            "POST",
            "/v1/envs/{env}/agents/{agent}/rollback",
            "/v1/envs/staging/agents/support/rollback",
            admin,
            &Payload::Json(json!({"reason": "nothing to go back to"})),
        )
        .await;
    if a.status != 409 {
        rec.failures.push(format!(
            "rollback without a previous stable:  want 409, got {a:?}"
        ));
    }
    let a = rec
        .run(
            "POST",
            "/v1/envs/{env}/agents/{agent}/unkill",
            "/v1/envs/staging/agents/support/unkill",
            admin,
            &Payload::Json(json!({"reason": "not killed"})),
        )
        .await;
    // Nothing routed there: the agent does not exist in that env (404), or is not killed (409).
    assert!(matches!(a.status, 404 | 409 | 200), "{a:?}");
    let evals = "/v1/agents/{agent}/bundles/{n}/evals";
    let a = rec
        .run(
            "POST",
            evals,
            "/v1/agents/support/bundles/1/evals",
            admin,
            &Payload::Json(
                json!({"set": "s", "score": 1.0, "threshold": 0.5, "digest": "sha256:00"}),
            ),
        )
        .await;
    if a.status != 409 {
        rec.failures
            .push(format!("an eval of another digest:  want 409, got {a:?}"));
    }
    let me = app.admin_id.clone();
    let a = rec
        .run(
            "DELETE",
            "/v1/tokens/{id}",
            &format!("/v1/tokens/{me}"),
            admin,
            &Payload::None,
        )
        .await;
    if a.status != 409 {
        rec.failures
            .push(format!("a token revoking itself:  want 409, got {a:?}"));
    }

    // Every operation answered at least once with success.
    for (method, template, _) in &table {
        let template = template.split('?').next().unwrap_or(template);
        let statuses = &rec.seen[&(template.to_string(), method.to_string())];
        if !statuses.iter().any(|s| (200..300).contains(s)) && template != "/v1/system/clock" {
            rec.failures
                .push(format!("{method} {template} never succeeded: {statuses:?}"));
        }
    }
    assert!(
        rec.failures.is_empty(),
        "{} problems:\n{}",
        rec.failures.len(),
        rec.failures.join("\n")
    );
}

#[tokio::test]
async fn an_unreadable_stored_state_answers_500_without_its_cause() {
    let app = start().await;
    // The store persists what it is given; a state no serin-core can read
    // stands for a row damaged outside the server.
    let stored = app
        .store
        .update_env_state("qa", serin_server::clock::now_ms(), "test", |_| {
            Ok::<_, std::convert::Infallible>(serin_store::EnvStateChange {
                state: r#"{"agents": {"support": {"stack": null}}}"#.into(),
                action: "test.damage".into(),
                subject: "qa".into(),
                details: json!({}),
            })
        })
        .await
        .unwrap()
        .unwrap();
    let a = call(
        &app,
        "GET",
        &format!("/v1/snapshots/{}", stored.version),
        Some(&app.admin),
        &Payload::None,
    )
    .await;
    assert_eq!(a.status, 500, "{a:?}");
    assert_eq!(a.body["error"]["code"], "internal", "{a:?}");
    assert!(a.body["error"].get("details").is_none(), "{a:?}");
    assert!(!a.body.to_string().contains("invalid type"), "{a:?}");
}
