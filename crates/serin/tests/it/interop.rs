//! The interop endpoints (OFREP, OTLP traces, Prometheus) against the real server, first
//! over raw HTTP (every caller, bad input), then with the stock upstream clients: the
//! Python OpenFeature SDK with its OFREP provider and promtool.
//!
//! The Python clients run in a virtualenv under the target dir, created on first use from
//! the pinned `tests/python/requirements.txt`. Without python3 these tests fail, naming
//! what is missing, unless `SERIN_TEST_SKIP_PYTHON=1`; without promtool likewise unless
//! `SERIN_TEST_SKIP_PROMTOOL=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Backend, Server, sample_bundle};

/// support@1 deployed in dev, with one flag of each JSON type.
async fn server_with_flags() -> (Server, Backend, String, String) {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    cli.run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    cli.run(&["deploy", "support", "--env", "dev", "--bundle", "1"])
        .ok();
    let http = server.http(&admin);
    for (key, on, off) in [
        ("support.beta", json!(true), json!(false)),
        ("support.tone", json!("brief"), json!("plain")),
        ("support.max-tokens", json!(2048), json!(1024)),
        ("support.threshold", json!(0.75), json!(0.5)),
        ("support.params", json!({"temperature": 0.2}), json!({})),
    ] {
        let (status, body) = http
            .send(
                http.req(reqwest::Method::PUT, &format!("/v1/envs/dev/flags/{key}"))
                    .json(&json!({"flag": {"on": on, "off": off}, "reason": "interop test"})),
            )
            .await;
        assert_eq!(status, 200, "{key}: {body}");
    }
    let sdk = server.token(&admin, "sdk").await;
    (server, backend, admin, sdk)
}

async fn ofrep(
    server: &Server,
    token: &str,
    path: &str,
    env: Option<&str>,
    body: &Value,
    if_none_match: Option<&str>,
) -> (u16, Value, Option<String>) {
    let http = server.http(token);
    let mut req = http.req(reqwest::Method::POST, path).json(body);
    if let Some(env) = env {
        req = req.header("Serin-Env", env);
    }
    if let Some(tag) = if_none_match {
        req = req.header("If-None-Match", tag);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        etag,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_evaluates_flags_and_agents_on_the_decide_engine_and_refuses_bad_callers() {
    let (server, _backend, admin, sdk) = server_with_flags().await;
    let single = "/ofrep/v1/evaluate/flags";
    let ctx = json!({"context": {"targetingKey": "user-7", "tenant": "acme"}});

    let (status, body, _) = ofrep(
        &server,
        &sdk,
        &format!("{single}/support.tone"),
        Some("dev"),
        &ctx,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "brief");
    assert_eq!(body["variant"], "on");
    assert_eq!(body["key"], "support.tone");

    // The agent's routing is the same decision /v1/decide makes for the same unit.
    let (status, agent, _) = ofrep(
        &server,
        &sdk,
        &format!("{single}/serin.agent.support"),
        Some("dev"),
        &ctx,
        None,
    )
    .await;
    assert_eq!(status, 200, "{agent}");
    let (status, decided) = server
        .http(&sdk)
        .post(
            "/v1/decide",
            &json!({"agent": "support", "env": "dev", "request_id": "user-7", "user": "user-7", "tenant": "acme"}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(agent["value"], decided["bundle"]["id"]);
    assert_eq!(agent["variant"], decided["arm"]);
    assert_eq!(
        agent["metadata"]["snapshotVersion"],
        decided["snapshot_version"]
    );

    // Bulk: every flag and the agent; the same context and version answers 304.
    let (status, bulk, etag) = ofrep(&server, &sdk, single, Some("dev"), &ctx, None).await;
    assert_eq!(status, 200, "{bulk}");
    let keys: Vec<&str> = bulk["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"serin.agent.support"), "{keys:?}");
    assert!(keys.contains(&"support.params"), "{keys:?}");
    let etag = etag.expect("bulk answers carry an ETag");
    let (status, _, _) = ofrep(&server, &sdk, single, Some("dev"), &ctx, Some(&etag)).await;
    assert_eq!(status, 304);
    let other = json!({"context": {"targetingKey": "user-8"}});
    let (status, _, _) = ofrep(&server, &sdk, single, Some("dev"), &other, Some(&etag)).await;
    assert_eq!(status, 200, "another context is another answer");

    // A kill switch changes the snapshot: the old ETag no longer matches, and the agent
    // flag says killed with no value (the client's default applies).
    server
        .cli(&admin)
        .run(&["kill", "support", "--env", "dev", "--reason", "incident"])
        .ok();
    let (status, _, _) = ofrep(&server, &sdk, single, Some("dev"), &ctx, Some(&etag)).await;
    assert_eq!(status, 200);
    let (_, killed, _) = ofrep(
        &server,
        &sdk,
        &format!("{single}/serin.agent.support"),
        Some("dev"),
        &ctx,
        None,
    )
    .await;
    assert_eq!(killed["variant"], "killed", "{killed}");
    assert_eq!(killed["reason"], "DISABLED");
    assert!(killed.get("value").is_none(), "{killed}");

    // Bad input answers in the protocol's shape.
    let path = format!("{single}/support.beta");
    let nested = json!({"context": {"targetingKey": "u", "profile": {"a": 1}}});
    let long_key = json!({"context": {"targetingKey": "k".repeat(1 << 20)}});
    for (body, env, status, code) in [
        (json!({}), Some("dev"), 400, "TARGETING_KEY_MISSING"),
        (nested, Some("dev"), 400, "INVALID_CONTEXT"),
        (long_key, Some("dev"), 400, "INVALID_CONTEXT"),
        (json!({"context": 3}), Some("dev"), 400, "PARSE_ERROR"),
        (ctx.clone(), None, 400, "INVALID_CONTEXT"),
        (ctx.clone(), Some("nowhere"), 400, "INVALID_CONTEXT"),
    ] {
        let (got, answer, _) = ofrep(&server, &sdk, &path, env, &body, None).await;
        assert_eq!(got, status, "{answer}");
        assert_eq!(answer["errorCode"], code, "{answer}");
        assert_eq!(answer["key"], "support.beta", "{answer}");
        assert!(answer["errorDetails"].as_str().unwrap().len() > 5);
    }
    let (status, answer, _) = ofrep(
        &server,
        &sdk,
        &format!("{single}/support.ghost"),
        Some("dev"),
        &ctx,
        None,
    )
    .await;
    assert_eq!(
        (status, answer["errorCode"].as_str()),
        (404, Some("FLAG_NOT_FOUND"))
    );

    // A viewer may not evaluate; a stranger is not let in.
    let viewer = server.token(&admin, "viewer").await;
    for (token, want) in [(viewer.as_str(), 403), ("", 401), ("serin_nope_nope", 401)] {
        for p in [path.as_str(), single] {
            let (status, _, _) = ofrep(&server, token, p, Some("dev"), &ctx, None).await;
            assert_eq!(status, want, "{p} as {token:?}");
        }
    }

    // Errors are counted.
    let (_, metrics) = {
        let resp = server
            .http(&admin)
            .req(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    };
    assert!(
        metrics.contains("serin_ofrep_errors_total{code=\"TARGETING_KEY_MISSING\"}"),
        "{metrics}"
    );
}

/// The virtualenv's python with the pinned clients installed, or None when
/// `SERIN_TEST_SKIP_PYTHON=1`.
pub fn python() -> Option<PathBuf> {
    if std::env::var("SERIN_TEST_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        return None;
    }
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/requirements.txt");
    let pinned = std::fs::read_to_string(&requirements).unwrap();
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-venv");
    let bin = venv.join("bin/python");
    let ready = venv.join("serin-ready");
    // Tests of this binary share one environment: one builds it while the others wait.
    // Other processes (nextest) may build theirs at the same time: each builds in a
    // private directory and renames it into place, so none uses a half-installed one.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    if std::fs::read_to_string(&ready).ok().as_deref() != Some(pinned.as_str()) {
        let python3 = which("python3").unwrap_or_else(|| {
            panic!(
                "python3 is needed for the OpenFeature/OpenTelemetry client tests; install it \
                 (with venv) or set SERIN_TEST_SKIP_PYTHON=1"
            )
        });
        let staging = venv.with_extension(format!(
            "tmp-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&staging);
        run_ok(Command::new(python3).args(["-m", "venv"]).arg(&staging));
        run_ok(
            Command::new(staging.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements),
        );
        std::fs::write(staging.join("serin-ready"), &pinned).unwrap();
        let _ = std::fs::remove_dir_all(&venv);
        if std::fs::rename(&staging, &venv).is_err() {
            // Another process won the race; its environment is as good as ours.
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    // venv scripts hard-code their own path; the interpreter works after a rename.
    Some(bin)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_openfeature_sdk_resolves_flags_and_agents_over_ofrep() {
    let Some(python) = python() else { return };
    let (server, _backend, admin, sdk) = server_with_flags().await;
    let run = |python: &Path| -> Value {
        let out = run_ok(Command::new(python).arg(script("ofrep_client.py")).args([
            &server.url,
            &sdk,
            "dev",
        ]));
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let got = run(&python);
    assert_eq!(got["bool"]["value"], true, "{got}");
    assert_eq!(got["string"]["value"], "brief", "{got}");
    assert_eq!(got["integer"]["value"], 2048, "{got}");
    assert_eq!(got["float"]["value"], 0.75, "{got}");
    assert_eq!(got["object"]["value"], json!({"temperature": 0.2}), "{got}");
    assert_eq!(got["agent"]["value"], "support@1", "{got}");
    assert_eq!(got["agent"]["variant"], "stable", "{got}");
    assert!(
        got["agent"]["metadata"]["snapshotVersion"].is_u64(),
        "{got}"
    );
    assert_eq!(got["missing"]["error_code"], "FLAG_NOT_FOUND", "{got}");
    assert_eq!(got["missing"]["value"], false, "{got}");
    assert_eq!(
        got["no_key"]["error_code"], "TARGETING_KEY_MISSING",
        "{got}"
    );

    server
        .cli(&admin)
        .run(&["kill", "support", "--env", "dev", "--reason", "incident"])
        .ok();
    let got = run(&python);
    assert_eq!(got["agent"]["variant"], "killed", "{got}");
    assert_eq!(got["agent"]["reason"], "DISABLED", "{got}");
    assert_eq!(got["agent"]["value"], "fallback", "{got}");
}

/// support@1 stable in prod and a release of support@2 at 50% under `guardrails`.
async fn release_in_prod(guardrails: &str) -> (Server, Backend, String, tempfile::TempDir) {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    crate::harness::push_two_bundles(&cli, work.path());
    crate::harness::stable_then_release(
        &cli,
        work.path(),
        format!(
            "steps:\n  - canary: {{weight: 50%, min_duration: 1h, min_requests: 100000}}\n\
             promotion: manual\nstickiness: user\nguardrails:\n{guardrails}\n  settings: {{min_requests: 100}}\n\
             on_failure: rollback\n"
        ),
    );
    (server, backend, admin, work)
}

fn release_phase(server: &Server, admin: &str) -> Value {
    let out = server
        .cli(admin)
        .run(&[
            "release", "status", "support", "--env", "prod", "--output", "json",
        ])
        .ok();
    serde_json::from_str(&out.stdout).unwrap()
}

/// An OTLP/JSON export of one invoke_agent trace per request (a chat span and a tool span
/// below it), as the conventions shape it.
fn otlp_json(version: u64, requests: &[(usize, &str, &str, bool)]) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut spans = Vec::new();
    for &(i, bundle, arm, tool_fails) in requests {
        let trace = format!("{:032x}", i + 1);
        let (root, chat, tool) = (
            format!("{:016x}", 3 * i + 1),
            format!("{:016x}", 3 * i + 2),
            format!("{:016x}", 3 * i + 3),
        );
        let s = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
        let n = |k: &str, v: u64| json!({"key": k, "value": {"intValue": v.to_string()}});
        spans.push(json!({
            "traceId": trace, "spanId": root, "name": "invoke_agent support",
            "startTimeUnixNano": (now - 900_000_000).to_string(), "endTimeUnixNano": now.to_string(),
            "attributes": [s("gen_ai.operation.name", "invoke_agent"), s("gen_ai.agent.name", "support"),
                s("serin.bundle", bundle), s("serin.arm", arm), n("serin.snapshot_version", version),
                s("serin.request_id", &format!("trace-{i}")), s("serin.user", &format!("u{i}"))]
        }));
        spans.push(json!({
            "traceId": trace, "spanId": chat, "parentSpanId": root, "name": "chat",
            "startTimeUnixNano": (now - 800_000_000).to_string(), "endTimeUnixNano": (now - 200_000_000).to_string(),
            "attributes": [s("gen_ai.operation.name", "chat"), n("gen_ai.usage.input_tokens", 1000),
                n("gen_ai.usage.output_tokens", 200)]
        }));
        let mut t = json!({
            "traceId": trace, "spanId": tool, "parentSpanId": root, "name": "execute_tool",
            "startTimeUnixNano": (now - 200_000_000).to_string(), "endTimeUnixNano": (now - 100_000_000).to_string(),
            "attributes": [s("gen_ai.operation.name", "execute_tool")]
        });
        if tool_fails {
            t["status"] = json!({"code": 2, "message": "refused"});
            t["attributes"]
                .as_array_mut()
                .unwrap()
                .push(s("error.type", "tool_error"));
        }
        spans.push(t);
    }
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "serin.env", "value": {"stringValue": "prod"}}]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}]
    }]})
}

async fn post_traces(
    server: &Server,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let resp = server
        .http(token)
        .req(reqwest::Method::POST, "/v1/traces")
        .header("content-type", content_type)
        .body(body)
        .send()
        .await;
    match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        // An oversized body may be cut off mid-write once the server has answered 413.
        Err(e) => (0, Value::String(e.to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_traces_become_outcomes_and_a_canary_with_failing_tools_is_rolled_back() {
    let (server, _backend, admin, _work) = release_in_prod("  tool_call_success: {min: 98%}").await;
    let sdk = server.token(&admin, "sdk").await;
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    let version = snap["version"].as_u64().unwrap();

    // Foreign spans ride along and are ignored; nothing else in the export suffers.
    let mut export = otlp_json(version, &[(0, "support@1", "stable", false)]);
    export["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array_mut()
        .unwrap()
        .push(json!({"traceId": format!("{:032x}", 999_999), "spanId": "00000000000000aa", "name": "GET /"}));
    let (status, body) = post_traces(
        &server,
        &sdk,
        "application/json",
        export.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("1 spans ignored"),
        "{body}"
    );
    // The same export again is a duplicate, not a second outcome.
    let (status, _) = post_traces(
        &server,
        &sdk,
        "application/json",
        export.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);

    // Others may not write outcomes; bad exports answer in OTLP's shape and write nothing.
    let viewer = server.token(&admin, "viewer").await;
    for (token, want) in [(viewer.as_str(), 403), ("", 401)] {
        let (status, _) = post_traces(
            &server,
            token,
            "application/json",
            export.to_string().into_bytes(),
        )
        .await;
        assert_eq!(status, want);
    }
    let (status, body) = post_traces(
        &server,
        &sdk,
        "application/x-protobuf",
        b"\x0a\xff\xff\xff\xff\x0f".to_vec(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (400, None),
        "protobuf errors are protobuf"
    );
    let (status, body) = post_traces(
        &server,
        &sdk,
        "application/json",
        b"{\"resourceSpans\": 3}".to_vec(),
    )
    .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(3)), "{body}");
    let (status, body) = post_traces(&server, &sdk, "text/plain", b"{}".to_vec()).await;
    assert_eq!((status, body["code"].as_i64()), (415, Some(3)), "{body}");
    let many: Vec<Value> = (0..100_000)
        .map(|i| json!({"traceId": "0000000000000000000000000000000a", "spanId": format!("{i:016x}")}))
        .collect();
    let many = json!({"resourceSpans": [{"scopeSpans": [{"spans": many}]}]}).to_string();
    let (status, body) = post_traces(&server, &sdk, "application/json", many.into_bytes()).await;
    assert_eq!((status, body["code"].as_i64()), (413, Some(8)), "{body}");
    let (status, _) = post_traces(&server, &sdk, "application/json", vec![b' '; 50 << 20]).await;
    assert!(matches!(status, 413 | 0), "{status}");
    // Spans whose parent is missing, and a root whose version is the wrong type: rejected,
    // counted, and the export still answers 200.
    let mut bad = otlp_json(version, &[(1, "support@1", "stable", false)]);
    let spans = bad["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array_mut()
        .unwrap();
    spans[0]["attributes"][4] =
        json!({"key": "serin.snapshot_version", "value": {"arrayValue": {"values": []}}});
    spans.push(json!({"traceId": format!("{:032x}", 2), "spanId": "00000000000000bb", "parentSpanId": "00000000000000cc",
        "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}]}));
    let (status, body) = post_traces(
        &server,
        &sdk,
        "application/json",
        bad.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The root with its two children, and the orphan of the same trace.
    let rejected = body["partialSuccess"]["rejectedSpans"].to_string();
    assert_eq!(rejected.trim_matches('"'), "4", "{body}");

    // Traffic: the canary's tools fail one time in three; the stable's never.
    let mut requests = Vec::new();
    for i in 10..1210 {
        let canary = i % 2 == 0;
        let (bundle, arm) = if canary {
            ("support@2", "canary")
        } else {
            ("support@1", "stable")
        };
        requests.push((i, bundle, arm, canary && i % 3 == 0));
    }
    for chunk in requests.chunks(200) {
        let (status, body) = post_traces(
            &server,
            &sdk,
            "application/json",
            otlp_json(version, chunk).to_string().into_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["partialSuccess"].is_null() || body["partialSuccess"]["rejectedSpans"].is_null(),
            "{body}"
        );
    }
    let (_, g) = server
        .http(&admin)
        .get("/v1/envs/prod/agents/support/guardrails")
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = release_phase(&server, &admin);
        if v["release"]["phase"] == "rolled_back" {
            assert!(
                v["release"]["failure"]["guardrail"]
                    .as_str()
                    .unwrap()
                    .starts_with("tool_call_success"),
                "{v}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not rolled back: {v}\n{g}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn promtool() -> Option<PathBuf> {
    if std::env::var("SERIN_TEST_SKIP_PROMTOOL").is_ok_and(|v| v == "1") {
        return None;
    }
    Some(which("promtool").unwrap_or_else(|| {
        panic!(
            "promtool is needed to check /metrics and the alert rules; install Debian's \
             prometheus package (.ci/run does) or set SERIN_TEST_SKIP_PROMTOOL=1"
        )
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_during_a_release_passes_promtool_and_shows_the_release_state() {
    let Some(promtool) = promtool() else { return };
    let (server, _backend, admin, _work) =
        release_in_prod("  error_rate: {max: 5%, max_increase: 2pp}").await;
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    let version = snap["version"].as_u64().unwrap();
    let events: Vec<Value> = (0..50)
        .map(|i| {
            let (bundle, arm) = if i % 2 == 0 {
                ("support@2", "canary")
            } else {
                ("support@1", "stable")
            };
            json!({"request_id": format!("m-{i}"), "agent": "support", "env": "prod",
                "snapshot_version": version, "bundle": bundle, "arm": arm, "latency_ms": 100.0})
        })
        .collect();
    let (status, body) = server
        .http(&admin)
        .post("/v1/outcomes", &json!({"events": events}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server
        .http(&admin)
        .post(
            "/v1/decide",
            &json!({"agent": "support", "env": "prod", "request_id": "r"}),
        )
        .await;
    assert_eq!(status, 200);
    let viewer = server.token(&admin, "viewer").await;
    let scrape = server
        .http(&viewer)
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "serin_release_weight{agent=\"support\",env=\"prod\"} 0.5",
        "serin_release_phase{agent=\"support\",env=\"prod\",phase=\"canary\"} 1",
        "serin_agent_killed{agent=\"support\",env=\"prod\"} 0",
        "serin_guardrail_verdict{agent=\"support\",env=\"prod\",guardrail=\"error_rate.max\",verdict=\"pending\"} 1",
        "# HELP serin_decide_duration_seconds",
        "# HELP serin_http_requests_total",
        "serin_outcomes_accepted_total{agent=\"support\",env=\"prod\",arm=\"canary\"} 25",
        &format!("serin_snapshot_version{{env=\"prod\"}} {version}"),
        "serin_sdk_lag_seconds{env=\"prod\"} 0",
    ] {
        assert!(scrape.contains(line), "missing {line:?} in\n{scrape}");
    }
    // Every series has help text.
    for line in scrape.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            scrape.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), scrape.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{scrape}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = crate::harness::repo_root().join("docs/alerts/serin.rules.yml");
    run_ok(Command::new(&promtool).args(["check", "rules"]).arg(rules));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_opentelemetry_exporter_reports_outcomes_and_a_failing_canary_is_rolled_back() {
    let Some(python) = python() else { return };
    let (server, _backend, admin, _work) = release_in_prod("  tool_call_success: {min: 98%}").await;
    let sdk = server.token(&admin, "sdk").await;
    let out = run_ok(Command::new(&python).arg(script("otlp_agent.py")).args([
        &server.url,
        &sdk,
        "prod",
        "800",
        "3",
        "gzip",
    ]));
    let summary: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    // The rollback lands while the agent still runs: later requests route to the stable.
    assert!(
        summary["arms"]["canary"].as_u64().unwrap() > 50,
        "{summary}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = release_phase(&server, &admin);
        if v["release"]["phase"] == "rolled_back" {
            assert!(
                v["release"]["failure"]["guardrail"]
                    .as_str()
                    .unwrap()
                    .starts_with("tool_call_success"),
                "{v}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not rolled back: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // After the rollback the agent's flag routes everyone to the stable again.
    let (status, route, _) = ofrep(
        &server,
        &sdk,
        "/ofrep/v1/evaluate/flags/serin.agent.support",
        Some("prod"),
        &json!({"context": {"targetingKey": "user-2"}}),
        None,
    )
    .await;
    assert_eq!(
        (status, route["variant"].as_str()),
        (200, Some("stable")),
        "{route}"
    );
}

/// `serin bench interop` runs every path beside its baseline and reports both.
#[test]
fn the_interop_bench_measures_each_path_beside_its_native_twin() {
    let out = crate::harness::run_cli(
        &[
            "bench",
            "interop",
            "--requests",
            "50",
            "--events",
            "300",
            "--batch",
            "100",
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    for path in [
        "/decide/per_second",
        "/ofrep_single/p99_ms",
        "/ofrep_bulk/p50_ms",
    ] {
        assert!(
            v.pointer(path).unwrap().as_f64().unwrap() > 0.0,
            "{path}: {v}"
        );
    }
    assert!(v["otlp"]["spans_per_second"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["outcomes"]["events_per_second"].as_f64().unwrap() > 0.0,
        "{v}"
    );
}
