//! Judgement through the real server: outcomes judged at the weight of the
//! snapshot version they were routed under, excluded tenants kept out of the
//! comparison, and a latched fail acted on without waiting for a tick.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, Cli, Server, push_two_bundles, stable_then_release};

fn event(id: &str, arm: &str, version: u64, tenant: &str, error: bool) -> Value {
    let bundle = if arm == "canary" {
        "support@2"
    } else {
        "support@1"
    };
    json!({
        "request_id": id, "agent": "support", "env": "prod", "snapshot_version": version,
        "bundle": bundle, "arm": arm, "user": id, "tenant": tenant,
        "latency_ms": 400.0, "cost_usd": 0.01, "tool_calls": {"ok": 1, "failed": 0},
        "error": if error { json!({"class": "permanent"}) } else { Value::Null },
    })
}

/// A server whose controller ticks once a minute, with support@1 stable in prod
/// and a release of support@2 running at 50% (then 100%; rollback on failure), tenant
/// bigcorp excluded until the final step.
/// The `Backend` owns the store's directory: keep it alive as long as the server.
async fn setup(work: &std::path::Path) -> (Backend, Server, String, Cli) {
    let backend = Backend::sqlite();
    let server = Server::start_with(&backend, 0, &["--tick-ms", "60000"]);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    push_two_bundles(&cli, work);
    stable_then_release(
        &cli,
        work,
        "steps:\n  - canary: {weight: 50%, min_duration: 1h, min_requests: 100000}\n\
         \x20 - canary: {weight: 100%, min_duration: 1h, min_requests: 100000}\n\
         exclude_tenants: [bigcorp]\n\
         guardrails:\n  error_rate: {max_increase: 2pp}\n  settings: {min_requests: 100}\n",
    );
    (backend, server, admin, cli)
}

async fn version(server: &Server, admin: &str) -> u64 {
    let (_, snap) = server.http(admin).get("/v1/envs/prod/snapshot").await;
    snap["version"].as_u64().unwrap()
}

async fn release(server: &Server, admin: &str) -> Value {
    let (status, body) = server
        .http(admin)
        .get("/v1/envs/prod/agents/support/release")
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_from_a_snapshot_version_that_does_not_exist_yet_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let (_backend, server, admin, _cli) = setup(work.path()).await;
    let v = version(&server, &admin).await;
    let (status, body) = server
        .http(&admin)
        .post(
            "/v1/outcomes",
            &json!({"events": [
                event("ok-1", "stable", v, "acme", false),
                event("future-1", "canary", v + 1000, "acme", false),
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(
        body["errors"][0]["code"], "unknown_snapshot_version",
        "{body}"
    );
    assert_eq!(
        body["errors"][0]["field"], "/events/1/snapshot_version",
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_from_before_the_release_and_from_excluded_tenants_are_not_judged() {
    let work = tempfile::tempdir().unwrap();
    let (_backend, server, admin, _cli) = setup(work.path()).await;
    let v = version(&server, &admin).await;
    // Stable outcomes routed before the release started, and excluded tenants' (always
    // stable while the exclusion routes): neither may count as control.
    let mut events = Vec::new();
    for i in 0..300 {
        events.push(event(&format!("old-{i}"), "stable", 1, "acme", true));
        events.push(event(&format!("big-{i}"), "stable", v, "bigcorp", true));
    }
    for i in 0..50 {
        events.push(event(&format!("c-{i}"), "canary", v, "acme", false));
        events.push(event(&format!("s-{i}"), "stable", v, "acme", false));
    }
    let (status, body) = server
        .http(&admin)
        .post("/v1/outcomes", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 700, "{body}");
    let r = release(&server, &admin).await;
    let verdict = &r["verdicts"][0];
    assert_eq!(verdict["control"]["n"], 50, "{r}");
    assert_eq!(verdict["canary"]["n"], 50, "{r}");
    assert_eq!(verdict["control"]["value"], 0.0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latched_fail_rolls_back_without_waiting_for_the_controller_tick() {
    let work = tempfile::tempdir().unwrap();
    let (_backend, server, admin, _cli) = setup(work.path()).await;
    let v = version(&server, &admin).await;
    let mut events = Vec::new();
    for i in 0..600 {
        events.push(event(&format!("s-{i}"), "stable", v, "acme", i % 100 == 0));
        events.push(event(&format!("c-{i}"), "canary", v, "acme", i % 4 == 0));
    }
    let (status, body) = server
        .http(&admin)
        .post("/v1/outcomes", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    // The controller ticks once a minute here; the latch wakes it.
    let posted = Instant::now();
    loop {
        let r = release(&server, &admin).await;
        if r["release"]["phase"] == "rolled_back" {
            let failed = r["verdicts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["status"] == "fail")
                .cloned()
                .unwrap_or(Value::Null);
            assert!(failed["latched_at_ms"].is_i64(), "{r}");
            break;
        }
        assert!(
            posted.elapsed() < Duration::from_secs(10),
            "not rolled back 10 s after the fail latched: {r}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    assert!(snap["agents"]["support"]["release"].is_null(), "{snap}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_promotion_checkpoint_that_finds_a_breach_rolls_back_within_its_window() {
    let work = tempfile::tempdir().unwrap();
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    push_two_bundles(&cli, work.path());
    stable_then_release(
        &cli,
        work.path(),
        "steps:\n  - canary: {weight: 50%, min_duration: 1s, min_requests: 500}\n\
         promotion: auto\n\
         guardrails:\n  error_rate: {max_increase: 2pp}\n  settings: {min_requests: 100}\n\
         watch: {checkpoints: [1h, 2h], rollback_within: 90m, min_requests: 100}\n",
    );
    let v = version(&server, &admin).await;
    let mut events = Vec::new();
    for i in 0..700 {
        events.push(event(&format!("s-{i}"), "stable", v, "acme", false));
        events.push(event(&format!("c-{i}"), "canary", v, "acme", false));
    }
    let (status, body) = server
        .http(&admin)
        .post("/v1/outcomes", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    server.advance_clock(&admin, Duration::from_secs(2)).await;
    let completed = wait_for(&server, &admin, |r| r["release"]["phase"] == "completed").await;
    assert!(
        completed["release"]["watch"]["next_due_ms"].is_i64(),
        "{completed}"
    );

    // The new stable turns bad after the release.
    let v = version(&server, &admin).await;
    let mut events = Vec::new();
    for i in 0..300 {
        let mut e = event(&format!("after-{i}"), "stable", v, "acme", i % 3 == 0);
        e["bundle"] = json!("support@2");
        events.push(e);
    }
    let (status, body) = server
        .http(&admin)
        .post("/v1/outcomes", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    server
        .advance_clock(&admin, Duration::from_secs(3_601))
        .await;
    let watched = wait_for(&server, &admin, |r| {
        r["release"]["watch"]["results"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let result = &watched["release"]["watch"]["results"][0];
    assert_eq!(result["verdict"], "breach", "{watched}");
    assert_eq!(result["action"], "rolled_back", "{watched}");
    let finding = result["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["guardrail"] == "error_rate.max_increase")
        .unwrap();
    assert_eq!(finding["breached"], true, "{finding}");
    assert_eq!(finding["current_n"], 300, "{finding}");
    assert_eq!(finding["baseline_n"], 700, "{finding}");
    // Rolled back: support@1 is the stable again, and the watch has ended.
    assert!(
        watched["release"]["watch"]["next_due_ms"].is_null(),
        "{watched}"
    );
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    assert_eq!(
        snap["agents"]["support"]["stable"]["id"], "support@1",
        "{snap}"
    );
    let (_, audit) = server.http(&admin).get("/v1/audit?limit=20").await;
    assert!(
        audit.to_string().contains("release.watch_rollback"),
        "{audit}"
    );
    let out = cli
        .run(&["release", "status", "support", "--env", "prod"])
        .ok();
    assert!(
        out.stdout.contains("watch    ended")
            && out.stdout.contains("checkpoint 1 at")
            && out
                .stdout
                .contains("breach, rolled back: error_rate.max_increase"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holdback_keeps_a_control_so_a_regression_at_the_final_step_still_rolls_back() {
    let work = tempfile::tempdir().unwrap();
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    push_two_bundles(&cli, work.path());
    stable_then_release(
        &cli,
        work.path(),
        "steps:\n  - canary: {weight: 50%, min_duration: 1s, min_requests: 200, require: no_fail}\n\
         \x20 - canary: {weight: 100%, min_duration: 1h, min_requests: 100000}\n\
         holdback: 5%\n\
         promotion: auto\n\
         guardrails:\n  error_rate: {max_increase: 2pp}\n  settings: {min_requests: 100}\n",
    );
    let v = version(&server, &admin).await;
    let mut events = Vec::new();
    for i in 0..300 {
        events.push(event(&format!("s-{i}"), "stable", v, "acme", false));
        events.push(event(&format!("c-{i}"), "canary", v, "acme", false));
    }
    let (status, body) = server
        .http(&admin)
        .post("/v1/outcomes", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    server.advance_clock(&admin, Duration::from_secs(2)).await;
    let last = wait_for(&server, &admin, |r| r["release"]["step"] == 1).await;
    assert_eq!(last["release"]["phase"], "canary", "{last}");
    assert_eq!(last["weight"], json!("95%"), "{last}");

    // The final step routes 95%: the old stable keeps 5% as the control.
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    let routed = &snap["agents"]["support"]["release"];
    assert_eq!(routed["candidate"]["id"], "support@2", "{snap}");
    assert_eq!(routed["weight"], json!("95%"), "{snap}");

    // The candidate regresses at the final step; the 5% control shows it.
    let v = version(&server, &admin).await;
    let mut events = Vec::new();
    for i in 0..400 {
        events.push(event(&format!("s2-{i}"), "stable", v, "acme", false));
        events.push(event(&format!("c2-{i}"), "canary", v, "acme", i % 4 == 0));
    }
    let (status, body) = server
        .http(&admin)
        .post("/v1/outcomes", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    let done = wait_for(&server, &admin, |r| r["release"]["phase"] == "rolled_back").await;
    assert_eq!(
        done["release"]["failure"]["guardrail"], "error_rate.max_increase",
        "{done}"
    );
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    assert!(snap["agents"]["support"]["release"].is_null(), "{snap}");
    assert_eq!(
        snap["agents"]["support"]["stable"]["id"], "support@1",
        "{snap}"
    );
}

async fn wait_for(server: &Server, admin: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = release(server, admin).await;
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "never got there: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
