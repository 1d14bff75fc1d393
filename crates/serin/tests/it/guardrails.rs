//! Outcomes posted to a real server turn into verdicts that survive a restart.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serin_sdk::{OutcomeEvent, Serin};

use crate::harness::{Backend, Server, copy_dir, sample_bundle};

fn event(i: usize, arm: &str, bundle: &str, error: bool) -> Value {
    json!({
        "request_id": format!("{arm}-{i}"), "agent": "support", "env": "dev",
        "snapshot_version": 1, "bundle": bundle, "arm": arm,
        "user": format!("u{i}"), "instance": format!("i-{}", i % 4),
        "latency_ms": 800.0 + (i % 50) as f64, "stages": {"llm": 600.0},
        "cost_usd": 0.01, "tool_calls": {"ok": 2, "failed": 0},
        "error": if error { json!({"class": "permanent", "code": "bad_tool_args"}) } else { Value::Null },
        "refused": false,
    })
}

async fn setup() -> (Backend, Server, String, tempfile::TempDir) {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    cli.run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    let dir = work.path().join("support");
    copy_dir(&sample_bundle(), &dir);
    std::fs::write(
        dir.join("prompt.md"),
        "You help with access requests. Use `create_support_ticket(`.\n",
    )
    .unwrap();
    cli.run(&["bundle", "push", dir.to_str().unwrap()]).ok();
    cli.run(&["deploy", "support", "--env", "dev", "--bundle", "1"])
        .ok();
    (backend, server, admin, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regressing_canary_fails_its_error_guardrail_and_the_evidence_survives_a_restart() {
    let (backend, server, admin, work) = setup().await;
    let http = server.http(&admin);
    let config = work.path().join("guardrails.yaml");
    std::fs::write(
        &config,
        "error_rate: {max: 2%, max_increase: 1pp}\nlatency_p95_ms: {max_increase: 200}\nsettings: {min_requests: 100}\n",
    )
    .unwrap();
    let out = server
        .cli(&admin)
        .run(&[
            "guardrails",
            "support",
            "--env",
            "dev",
            "--set",
            config.to_str().unwrap(),
        ])
        .ok();
    assert!(out.stdout.contains("set"), "{}", out.stdout);

    // Interleaved as live traffic is (control is only compared while the
    // canary runs): control 2,000 requests at 1% errors, canary 400 at 20%.
    let mut events: Vec<Value> = Vec::new();
    for i in 0..2000 {
        events.push(event(i, "stable", "support@1", i % 100 == 0));
        if i % 5 == 0 {
            let j = i / 5;
            events.push(event(j, "canary", "support@2", j % 5 == 0));
        }
    }
    for chunk in events.chunks(600) {
        let (status, body) = http.post("/v1/outcomes", &json!({"events": chunk})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["rejected"], 0, "{body}");
    }
    // A retried batch is not counted twice.
    let (status, body) = http
        .post("/v1/outcomes", &json!({"events": &events[..600]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(0), Some(600)),
        "{body}"
    );

    let check = |v: &Value| {
        let c = &v["comparisons"][0];
        assert_eq!(c["candidate"], "support@2", "{v}");
        assert_eq!(c["overall"], "fail", "{v}");
        assert_eq!(c["canary"]["requests"], 400, "{v}");
        // The very first stable request came before any canary one.
        assert_eq!(c["control"]["requests"], 1999, "{v}");
        let verdicts = c["verdicts"].as_array().unwrap();
        let err = verdicts
            .iter()
            .find(|x| x["guardrail"] == "error_rate.max")
            .unwrap();
        assert_eq!(err["status"], "fail", "{err}");
        assert!(
            (err["canary"]["value"].as_f64().unwrap() - 0.2).abs() < 1e-9,
            "{err}"
        );
        assert!(
            err["statistic"].as_f64().unwrap() >= err["statistic_threshold"].as_f64().unwrap(),
            "{err}"
        );
        let lat = verdicts
            .iter()
            .find(|x| x["guardrail"] == "latency_p95_ms.max_increase")
            .unwrap();
        assert_ne!(lat["status"], "fail", "identical latencies: {lat}");
    };
    let (status, v) = http.get("/v1/envs/dev/agents/support/guardrails").await;
    assert_eq!(status, 200, "{v}");
    check(&v);
    let out = server
        .cli(&admin)
        .run(&["guardrails", "support", "--env", "dev"])
        .ok();
    assert!(
        out.stdout.contains("support@2 vs stable in dev: FAIL"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("error_rate.max"), "{}", out.stdout);

    // kill -9: everything acknowledged is still there after a restart.
    server.kill9();
    let server = Server::start(&backend);
    let (status, v) = server
        .http(&admin)
        .get("/v1/envs/dev/agents/support/guardrails")
        .await;
    assert_eq!(status, 200, "{v}");
    check(&v);
    assert!(
        v["burn_rate"]["current_hour"].as_f64().unwrap() > 23.0,
        "2,400 requests at $0.01: {v}"
    );
}

#[tokio::test]
async fn bad_outcomes_are_refused_one_by_one_with_reasons() {
    let (_backend, server, admin, _work) = setup().await;
    let sdk = {
        let (_, b) = server
            .http(&admin)
            .post("/v1/tokens", &json!({"role": "sdk"}))
            .await;
        b["token"].as_str().unwrap().to_owned()
    };
    let http = server.http(&sdk);
    let mut bad_latency = event(1, "stable", "support@1", false);
    bad_latency["latency_ms"] = json!(-5);
    let mut unknown_agent = event(2, "stable", "support@1", false);
    unknown_agent["agent"] = json!("billing");
    unknown_agent["bundle"] = json!("billing@1");
    let mut unknown_bundle = event(3, "canary", "support@9", false);
    unknown_bundle["bundle"] = json!("support@9");
    let mut killed = event(4, "killed", "support@1", false);
    killed["arm"] = json!("killed");
    let mut future = event(5, "stable", "support@1", false);
    future["at_ms"] = json!(4_102_444_800_000i64);
    let mut extra = event(6, "stable", "support@1", false);
    extra["colour"] = json!("red");
    let good = event(7, "stable", "support@1", false);
    let batch = json!({"events": [bad_latency, unknown_agent, unknown_bundle, killed, future, extra, good]});
    let (status, body) = http.post("/v1/outcomes", &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(1), Some(6)),
        "{body}"
    );
    let codes: Vec<(&str, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["code"].as_str().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("invalid_latency", "/events/0/latency_ms"),
            ("unknown_agent", "/events/1/agent"),
            ("unknown_bundle", "/events/2/bundle"),
            ("invalid_arm", "/events/3/arm"),
            ("future_timestamp", "/events/4/at_ms"),
            ("invalid_event", "/events/5/colour"),
        ]
    );

    let (status, body) = http
        .post("/v1/outcomes", &json!({"events": "all of them"}))
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/events")),
        "{body}"
    );
    let many: Vec<Value> = (0..10_001).map(|_| json!({})).collect();
    let (status, body) = http.post("/v1/outcomes", &json!({"events": many})).await;
    assert_eq!(status, 422, "{body}");
    let huge = json!({"events": [{"request_id": "x".repeat(10 * 1024 * 1024)}]});
    if let Some((status, body)) = http.post_oversized("/v1/outcomes", &huge).await {
        assert_eq!(status, 413, "{body}");
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    }
    // Outcomes are the sdk role's business; a viewer may not post them.
    let (_, v) = server
        .http(&admin)
        .post("/v1/tokens", &json!({"role": "viewer"}))
        .await;
    let (status, _) = server
        .http(v["token"].as_str().unwrap())
        .post("/v1/outcomes", &json!({"events": []}))
        .await;
    assert_eq!(status, 403);

    let resp = server
        .http(&admin)
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("serin_outcomes_total"), "{text}");
    assert!(text.contains("invalid_latency"), "{text}");
}

/// Events are read straight from the body's bytes: a batch mixing good and malformed events
/// answers each bad one by its index and field (nested fields too) and counts the rest, and a
/// fault of the body anywhere (a repeated key, a number out of range) still refuses the batch.
#[tokio::test]
async fn malformed_events_are_named_by_field_and_body_faults_refuse_the_batch() {
    let (_backend, server, admin, _work) = setup().await;
    let http = server.http(&admin);
    let good = |i| event(i, "stable", "support@1", false);
    let mut nested = good(1);
    nested["tokens"] = json!({"input": "many"});
    let mut as_array = good(2);
    as_array["tool_calls"] = json!([2, 0]);
    // A `[` in a string is no array: counted.
    let mut bracket = good(3);
    bracket["request_id"] = json!("stable-[3]");
    let not_an_object = json!(["stable-4", "support"]);
    let mut bad_stage = good(5);
    bad_stage["stages"] = json!({"llm": "slow"});
    let batch =
        json!({"events": [good(0), nested, as_array, bracket, not_an_object, bad_stage, good(6)]});
    let (status, body) = http.post("/v1/outcomes", &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(3), Some(4)),
        "{body}"
    );
    let errors: Vec<(&str, &str, Option<&str>)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap(),
                e["field"].as_str().unwrap(),
                e["request_id"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            ("invalid_event", "/events/1/tokens/input", Some("stable-1")),
            ("invalid_event", "/events/2/tool_calls", Some("stable-2")),
            ("invalid_event", "/events/4", None),
            ("invalid_event", "/events/5/stages/llm", Some("stable-5")),
        ],
        "{body}"
    );
    assert!(
        body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("/tokens/input: invalid type: string \"many\""),
        "{body}"
    );

    let raw = |text: String| {
        http.send(
            http.req(reqwest::Method::POST, "/v1/outcomes")
                .header("content-type", "application/json")
                .body(text),
        )
    };
    let text = good(10).to_string();
    // A key named twice refuses the whole body, wherever it is.
    let twice = text.replacen(
        "\"agent\":\"support\"",
        "\"agent\":\"support\",\"agent\":\"support\"",
        1,
    );
    assert_ne!(twice, text);
    let (status, body) = raw(format!("{{\"events\":[{},{twice}]}}", good(11))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_field")),
        "{body}"
    );
    assert!(
        body["error"]["field"]
            .as_str()
            .unwrap()
            .starts_with("/events/1"),
        "{body}"
    );
    let stage_twice = text.replacen("\"llm\":600.0", "\"llm\":600.0,\"llm\":1.0", 1);
    assert_ne!(stage_twice, text);
    let (status, body) = raw(format!("{{\"events\":[{stage_twice}]}}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_field")),
        "{body}"
    );
    let huge = text.replacen("\"cost_usd\":0.01", "\"cost_usd\":1e400", 1);
    assert_ne!(huge, text);
    let (status, body) = raw(format!("{{\"events\":[{huge}]}}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_json")),
        "{body}"
    );
    let (status, body) = raw(format!("{{\"events\":[{text}]}} and more")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_json")),
        "{body}"
    );
    // None of the refused bodies counted anything.
    let (status, body) = raw(format!("{{\"events\":[{text}]}}")).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_records_outcomes_in_the_background_and_drops_rather_than_blocks() {
    let (_backend, server, admin, _work) = setup().await;
    let (_, b) = server
        .http(&admin)
        .post("/v1/tokens", &json!({"role": "sdk"}))
        .await;
    let token = b["token"].as_str().unwrap().to_owned();
    let sdk = Serin::builder(server.url.clone(), token.clone(), "dev")
        .outcomes(1000, 50, Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    for i in 0..120 {
        let e: OutcomeEvent =
            serde_json::from_value(event(i, "stable", "support@1", false)).unwrap();
        assert!(sdk.record(e));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while sdk.outcome_stats().sent < 120 {
        assert!(
            Instant::now() < deadline,
            "stats: {:?}",
            sdk.outcome_stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sdk.outcome_stats().rejected, 0);

    // With the server gone and a tiny queue, record() returns at once and counts drops.
    let port = server.port();
    server.kill9();
    let lonely = Serin::builder(format!("http://127.0.0.1:{port}"), token, "dev")
        .outcomes(10, 5, Duration::from_millis(50))
        .start_timeout(Duration::from_millis(200));
    // No cache and no server: start fails fast, as documented.
    assert!(lonely.start().await.is_err());
    let started = Instant::now();
    let mut dropped = 0;
    for i in 0..5000 {
        let e: OutcomeEvent =
            serde_json::from_value(event(10_000 + i, "stable", "support@1", false)).unwrap();
        if !sdk.record(e) {
            dropped += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "record() must not block"
    );
    assert!(
        dropped > 0 && sdk.outcome_stats().dropped >= dropped,
        "{:?}",
        sdk.outcome_stats()
    );
    sdk.shutdown().await;
}

/// Group commit stores concurrent batches together; each must still be answered for its own
/// events, and a request id sent in two batches of one group must count once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_sharing_request_ids_count_each_id_once_and_answer_for_their_own_events()
{
    let (_backend, server, admin, _work) = setup().await;
    let sdk = server.token(&admin, "sdk").await;
    let http = server.http(&sdk);
    const BATCHES: usize = 24;
    const PER: usize = 40;
    let mut tasks = Vec::new();
    for b in 0..BATCHES {
        // Batch b holds ids b*20 .. b*20+40: every id but the first and last 20 is in two
        // batches, so sending them all at once puts pairs of overlapping batches in a group.
        let mut events: Vec<Value> = (b * 20..b * 20 + PER)
            .map(|i| event(i, "stable", "support@1", false))
            .collect();
        let mut bad = event(100_000 + b, "stable", "support@1", false);
        bad["latency_ms"] = json!(-1);
        events.insert(b % PER, bad);
        let req = http
            .req(reqwest::Method::POST, "/v1/outcomes")
            .json(&json!({ "events": events }));
        tasks.push(tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }));
    }
    let mut accepted = 0;
    let mut duplicates = 0;
    for (b, t) in tasks.into_iter().enumerate() {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        accepted += body["accepted"].as_u64().unwrap();
        duplicates += body["duplicates"].as_u64().unwrap();
        assert_eq!(body["rejected"], 1, "{body}");
        // The rejection names this batch's own position of its bad event.
        assert_eq!(
            body["errors"][0]["field"],
            format!("/events/{}/latency_ms", b % PER),
            "{body}"
        );
        assert_eq!(
            body["accepted"].as_u64().unwrap() + body["duplicates"].as_u64().unwrap(),
            PER as u64,
            "{body}"
        );
    }
    let unique = ((BATCHES - 1) * 20 + PER) as u64;
    assert_eq!(accepted, unique, "each request id counted once");
    assert_eq!(duplicates, (BATCHES * PER) as u64 - unique);
    // Everything was stored: sent again, all of it is a duplicate.
    let again: Vec<Value> = (0..unique as usize)
        .map(|i| event(i, "stable", "support@1", false))
        .collect();
    let (status, body) = http.post("/v1/outcomes", &json!({ "events": again })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(0), Some(unique)),
        "{body}"
    );
}

/// Outcome windows (both arms' counts plus each request's latency and cost) judge as events
/// do: a canary with 20% errors fails, a retried window counts once, bad windows are refused
/// by field, and the evidence survives kill -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_windows_judge_dedup_refuse_and_survive_a_restart() {
    let (backend, server, admin, work) = setup().await;
    let config = work.path().join("guardrails.yaml");
    std::fs::write(
        &config,
        "error_rate: {max: 2%, max_increase: 1pp}\nlatency_p95_ms: {max_increase: 200}\nsettings: {min_requests: 100}\n",
    )
    .unwrap();
    server
        .cli(&admin)
        .run(&[
            "guardrails",
            "support",
            "--env",
            "dev",
            "--set",
            config.to_str().unwrap(),
        ])
        .ok();
    let sdk = server.token(&admin, "sdk").await;
    let http = server.http(&sdk);
    // Four windows of 500 control and 100 canary requests: control 1% errors, canary 20%.
    let window = |k: usize| {
        let latency = |n: usize| -> Vec<f64> { (0..n).map(|i| 800.0 + (i % 50) as f64).collect() };
        json!({
            "window_id": format!("i-1/{k}"), "agent": "support", "env": "dev",
            "snapshot_version": 1, "instance": "i-1",
            "arms": [
                {"arm": "stable", "bundle": "support@1", "latency_ms": latency(500),
                 "cost_usd": vec![0.01; 500], "errors": {"permanent": 5},
                 "tool_calls": {"ok": 1000}, "tool_requests": 500},
                {"arm": "canary", "bundle": "support@2", "latency_ms": latency(100),
                 "cost_usd": vec![0.01; 100], "errors": {"permanent": 20},
                 "tool_calls": {"ok": 200}, "tool_requests": 100},
            ],
        })
    };
    let windows: Vec<Value> = (0..4).map(window).collect();
    let (status, body) = http
        .post("/v1/outcomes/windows", &json!({ "windows": windows }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["accepted"].as_u64(),
            body["requests"].as_u64(),
            body["rejected"].as_u64()
        ),
        (Some(4), Some(2400), Some(0)),
        "{body}"
    );
    // A retried window counts once; a bad one is refused by its field, beside a good one.
    let mut bad = window(9);
    bad["arms"][1]["errors"]["permanent"] = json!(101);
    let mut future = window(10);
    future["snapshot_version"] = json!(99);
    let (status, body) = http
        .post(
            "/v1/outcomes/windows",
            &json!({ "windows": [window(0), bad, future] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["accepted"].as_u64(),
            body["duplicates"].as_u64(),
            body["rejected"].as_u64()
        ),
        (Some(0), Some(1), Some(2)),
        "{body}"
    );
    assert_eq!(
        body["errors"][0]["field"], "/windows/1/arms/1/errors",
        "{body}"
    );
    assert_eq!(body["errors"][0]["code"], "invalid_count", "{body}");
    assert_eq!(
        body["errors"][1]["code"], "unknown_snapshot_version",
        "{body}"
    );
    // Unknown env: the whole body, 404 naming the window; malformed: 422 naming the field.
    let mut stray = window(11);
    stray["env"] = json!("prdo");
    let (status, body) = http
        .post("/v1/outcomes/windows", &json!({ "windows": [stray] }))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http
        .post(
            "/v1/outcomes/windows",
            &json!({ "windows": [{"window_id": "x", "agent": "support"}] }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    // Outcomes are the sdk role's business.
    let viewer = server.token(&admin, "viewer").await;
    let (status, _) = server
        .http(&viewer)
        .post("/v1/outcomes/windows", &json!({ "windows": [window(12)] }))
        .await;
    assert_eq!(status, 403);

    let check = |v: &Value| {
        let c = &v["comparisons"][0];
        assert_eq!(c["candidate"], "support@2", "{v}");
        assert_eq!(c["overall"], "fail", "{v}");
        assert_eq!(c["canary"]["requests"], 400, "{v}");
        assert_eq!(c["control"]["requests"], 2000, "{v}");
        let verdicts = c["verdicts"].as_array().unwrap();
        let err = verdicts
            .iter()
            .find(|x| x["guardrail"] == "error_rate.max")
            .unwrap();
        assert_eq!(err["status"], "fail", "{err}");
        let lat = verdicts
            .iter()
            .find(|x| x["guardrail"] == "latency_p95_ms.max_increase")
            .unwrap();
        assert_ne!(lat["status"], "fail", "identical latencies: {lat}");
    };
    let (status, v) = server
        .http(&admin)
        .get("/v1/envs/dev/agents/support/guardrails")
        .await;
    assert_eq!(status, 200, "{v}");
    check(&v);
    server.kill9();
    let server = Server::start(&backend);
    let (status, v) = server
        .http(&admin)
        .get("/v1/envs/dev/agents/support/guardrails")
        .await;
    assert_eq!(status, 200, "{v}");
    check(&v);
}

/// An SDK set to send windows reports the same traffic in a handful of windows, and the
/// server counts every request of both arms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_sending_windows_reports_every_request_of_both_arms() {
    let (_backend, server, admin, work) = setup().await;
    let config = work.path().join("guardrails.yaml");
    std::fs::write(
        &config,
        "error_rate: {max: 2%}\nsettings: {min_requests: 10}\n",
    )
    .unwrap();
    server
        .cli(&admin)
        .run(&[
            "guardrails",
            "support",
            "--env",
            "dev",
            "--set",
            config.to_str().unwrap(),
        ])
        .ok();
    let token = server.token(&admin, "sdk").await;
    let sdk = Serin::builder(server.url.clone(), token, "dev")
        .outcomes(10_000, 1_000, Duration::from_millis(200))
        .outcome_windows(true)
        .start()
        .await
        .unwrap();
    for i in 0..900 {
        let (arm, bundle) = if i % 3 == 0 {
            ("canary", "support@2")
        } else {
            ("stable", "support@1")
        };
        let e: OutcomeEvent = serde_json::from_value(event(i, arm, bundle, i % 50 == 0)).unwrap();
        assert!(sdk.record(e));
    }
    // One bad outcome goes as an event and is refused alone, never sinking its window.
    let mut bad: OutcomeEvent =
        serde_json::from_value(event(5_000, "canary", "support@2", false)).unwrap();
    bad.latency_ms = -5.0;
    assert!(sdk.record(bad));
    let deadline = Instant::now() + Duration::from_secs(10);
    while sdk.outcome_stats().sent < 900 || sdk.outcome_stats().rejected < 1 {
        assert!(
            Instant::now() < deadline,
            "stats: {:?}",
            sdk.outcome_stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sdk.outcome_stats().sent, 900);
    assert_eq!(sdk.outcome_stats().rejected, 1);
    sdk.shutdown().await;
    let (status, v) = server
        .http(&admin)
        .get("/v1/envs/dev/agents/support/guardrails")
        .await;
    assert_eq!(status, 200, "{v}");
    let c = &v["comparisons"][0];
    assert_eq!(c["candidate"], "support@2", "{v}");
    assert_eq!(c["canary"]["requests"], 300, "{v}");
    assert_eq!(c["control"]["requests"], 600, "{v}");
    assert_eq!(c["canary"]["errors_permanent"], 6, "{v}");
    let metrics = server
        .http(&admin)
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("serin_outcome_windows_total{result=\"accepted\"}"),
        "{metrics}"
    );
}
