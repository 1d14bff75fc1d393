//! The side-effect ledger against a real server: retries never act twice, results settle
//! once, roles hold, and an intent whose process died shows `unknown` after the sweep.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Backend, Server, push_two_bundles};

fn intent(key: &str, timeout_ms: Option<i64>) -> serde_json::Value {
    let mut v = json!({"key": key, "agent": "support", "bundle": 2, "request_id": "req-1",
        "tool": "refund", "args_digest": "sha256:abc"});
    if let Some(t) = timeout_ms {
        v["timeout_ms"] = json!(t);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_run_once_results_settle_once_and_dead_intents_become_unknown() {
    let backend = Backend::sqlite();
    let server = Server::start_with(&backend, 0, &["--tick-ms", "100"]);
    let admin = server.bootstrap_token.clone().unwrap();
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&server.cli(&admin), work.path());
    let sdk = server.http(&server.token(&admin, "sdk").await);
    let viewer_token = server.token(&admin, "viewer").await;
    let viewer = server.http(&viewer_token);

    // A retried intent with the same key returns the first record and does not create one.
    let (status, first) = sdk
        .post("/v1/effects", &intent("support/2/req-1/refund", None))
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["created"], true);
    assert_eq!(first["effect"]["status"], "intent");
    assert_eq!(first["effect"]["timeout_ms"], 300_000);
    let (status, again) = sdk
        .post("/v1/effects", &intent("support/2/req-1/refund", None))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["created"], false);
    assert_eq!(again["effect"], first["effect"]);
    // The same key for another call is a conflict, not a silent overwrite.
    let mut reused = intent("support/2/req-1/refund", None);
    reused["args_digest"] = json!("sha256:other");
    let (status, body) = sdk.post("/v1/effects", &reused).await;
    assert_eq!(status, 409, "{body}");

    // One result; the same again is fine; a different one is 409.
    let path = "/v1/effects/support%2F2%2Freq-1%2Frefund/result";
    let key_path = "/v1/effects/support:2:req-1/result";
    sdk.post("/v1/effects", &intent("support:2:req-1", None))
        .await;
    let (status, body) = sdk
        .post(
            key_path,
            &json!({"status": "committed", "detail": "refunded"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "committed");
    let (status, body) = sdk.post(key_path, &json!({"status": "committed"})).await;
    assert_eq!(
        (status, &body["detail"]),
        (200, &json!("refunded")),
        "{body}"
    );
    let (status, body) = sdk.post(key_path, &json!({"status": "failed"})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["field"], "/status", "{body}");
    // A key with slashes is addressed percent-encoded as one path segment.
    let (status, body) = sdk.post(path, &json!({"status": "failed"})).await;
    assert_eq!(
        (status, &body["key"]),
        (200, &json!("support/2/req-1/refund")),
        "{body}"
    );
    let (status, body) = sdk
        .post(
            "/v1/effects/never-recorded/result",
            &json!({"status": "failed"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["field"], "key", "{body}");

    // Bad fields and unknown agents or bundles are named.
    let mut bad = intent("k-bad", Some(25 * 3_600_000));
    let (status, body) = sdk.post("/v1/effects", &bad).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("/timeout_ms")),
        "{body}"
    );
    bad = intent("k bad", None);
    let (status, body) = sdk.post("/v1/effects", &bad).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("/key")),
        "{body}"
    );
    bad = intent("k-ghost", None);
    bad["agent"] = json!("suport");
    let (status, body) = sdk.post("/v1/effects", &bad).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("support"),
        "{body}"
    );
    bad["agent"] = json!("support");
    bad["bundle"] = json!(9);
    let (status, body) = sdk.post("/v1/effects", &bad).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (404, json!("/bundle")),
        "{body}"
    );

    // Roles: a viewer cannot record, an sdk token cannot read the ledger.
    let (status, _) = viewer.post("/v1/effects", &intent("k-viewer", None)).await;
    assert_eq!(status, 403);
    let (status, _) = sdk.get("/v1/agents/support/effects?bundle=2").await;
    assert_eq!(status, 403);

    // A process that recorded its intent and was killed never posts a result: once its
    // timeout has passed, the sweep marks it unknown.
    let (status, body) = sdk
        .post("/v1/effects", &intent("dead-proc", Some(60_000)))
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, listed) = viewer
        .get("/v1/agents/support/effects?bundle=2&status=unknown")
        .await;
    assert_eq!(listed, json!([]), "nothing is unknown before the timeout");
    server.advance_clock(&admin, Duration::from_secs(61)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let unknown = loop {
        let (status, listed) = viewer
            .get("/v1/agents/support/effects?bundle=2&status=unknown")
            .await;
        assert_eq!(status, 200, "{listed}");
        if listed.as_array().is_some_and(|a| !a.is_empty()) {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep never marked the dead intent unknown"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Only the dead intent is unknown; the settled ones kept their results.
    let keys: Vec<&str> = unknown
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["dead-proc"]);

    let out = server
        .cli(&viewer_token)
        .run(&["effects", "support", "--bundle", "2", "--status", "unknown"])
        .ok();
    assert!(out.stdout.contains("dead-proc"), "{}", out.stdout);
    assert!(out.stdout.contains("1 unknown; WARNING"), "{}", out.stdout);
    let out = server
        .cli(&viewer_token)
        .run(&["effects", "support", "--bundle", "2", "--output", "json"])
        .ok();
    let all: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");

    // The ledger's writes are in the audit log.
    let (_, audit) = server.http(&admin).get("/v1/audit?limit=100").await;
    let text = audit.to_string();
    for action in ["effect.intent", "effect.result", "effect.expire"] {
        assert!(text.contains(action), "{action} missing from {text}");
    }
}
