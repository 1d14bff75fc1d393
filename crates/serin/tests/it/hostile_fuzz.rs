//! Fuzzing findings replayed against a real server: outcome counters and scores an sdk token
//! can send that overflowed the guardrail monitor or the minute rollups (a panic answered 500;
//! an infinite eval-score sum was persisted as `null` and the server could not restart).

use serde_json::{Value, json};

use crate::harness::{Backend, Server, sample_bundle};

fn event(id: &str, arm: &str, extra: Value) -> Value {
    let mut e = json!({
        "request_id": id, "agent": "support", "env": "dev", "snapshot_version": 1,
        "bundle": "support@1", "arm": arm, "latency_ms": 120.0,
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

#[tokio::test]
async fn outcome_counts_and_scores_that_would_overflow_are_refused_and_the_server_restarts() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    cli.run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    cli.run(&["deploy", "support", "--env", "dev", "--bundle", "1"])
        .ok();
    let sdk = server.token(&admin, "sdk").await;
    let http = server.http(&sdk);

    let huge_score = json!({"eval": {"score": 1e308, "passed": true}});
    let batch = json!({"events": [
        event("tools", "canary", json!({"tool_calls": {"ok": u64::MAX, "failed": 1}})),
        event("tokens-1", "stable", json!({"tokens": {"input": u64::MAX}})),
        event("tokens-2", "stable", json!({"tokens": {"input": u64::MAX}})),
        event("score-1", "stable", huge_score.clone()),
        event("score-2", "stable", huge_score),
        event("fine", "stable", json!({"tokens": {"input": 1200, "output": 300}, "eval": {"score": 1.0, "passed": true}})),
    ]});
    let (status, body) = http.post("/v1/outcomes", &batch).await;
    assert_eq!(status, 200, "{body}");
    let codes: Vec<(&str, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["code"].as_str().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            ("invalid_tool_calls", "/events/0/tool_calls/ok"),
            ("invalid_tokens", "/events/1/tokens/input"),
            ("invalid_tokens", "/events/2/tokens/input"),
            ("invalid_eval", "/events/3/eval/score"),
            ("invalid_eval", "/events/4/eval/score"),
        ]
    );
    assert_eq!(body["accepted"], 1, "{body}");

    // What was acknowledged must read back: the server starts again on the same store.
    server.stop();
    let server = Server::start(&backend);
    let (status, body) = server
        .http(&admin)
        .get("/v1/envs/dev/agents/support/guardrails")
        .await;
    assert_eq!(status, 200, "{body}");
}
