//! Restarts never fail on data, and acknowledged evidence survives them: a
//! real server is stopped (SIGTERM and SIGKILL) and started again over the
//! same store, including over rows corrupted behind its back.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, Cli, Server, push_two_bundles};

/// support@1 stable in dev; returns the admin token.
fn deploy_stable(server: &Server, work: &std::path::Path) -> String {
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    push_two_bundles(&cli, work);
    cli.run(&["deploy", "support", "--env", "dev", "--bundle", "1"])
        .ok();
    admin
}

fn plan(dir: &std::path::Path) -> String {
    let path = dir.join("plan.yaml");
    std::fs::write(
        &path,
        "steps:\n  - canary: {weight: 5%, min_duration: 1s, min_requests: 100}\n  - canary: {weight: 50%, min_duration: 1s, min_requests: 100}\n\
         promotion: manual\nstickiness: user\n\
         guardrails:\n  error_rate: {max: 5%}\n  settings: {min_requests: 100}\n\
         on_failure: rollback\n",
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn start_release(cli: &Cli, work: &std::path::Path) {
    let plan = plan(work);
    let out = cli
        .run(&[
            "release", "start", "support", "--env", "dev", "--bundle", "2", "--plan", &plan,
        ])
        .ok();
    assert!(out.stdout.contains("CANARY"), "{}", out.stdout);
}

fn status(cli: &Cli) -> Value {
    let out = cli
        .run(&[
            "release", "status", "support", "--env", "dev", "--output", "json",
        ])
        .ok();
    serde_json::from_str(&out.stdout).unwrap()
}

fn event(id: &str, arm: &str, bundle: &str) -> Value {
    json!({
        "request_id": id, "agent": "support", "env": "dev", "snapshot_version": 1,
        "bundle": bundle, "arm": arm, "user": format!("u-{id}"),
        "latency_ms": 250.0, "cost_usd": 0.01,
    })
}

async fn post_outcomes(server: &Server, token: &str, events: &[Value]) -> Value {
    let (status, body) = server
        .http(token)
        .post("/v1/outcomes", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rejected"], 0, "{body}");
    body
}

/// This hour's cost of the agent in dev, summed by the server from the stored
/// minute rollups.
fn hour_cost(cli: &Cli) -> f64 {
    let out = cli
        .run(&["guardrails", "support", "--env", "dev", "--output", "json"])
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v["burn_rate"]["current_hour"].as_f64().unwrap()
}

/// Waits until at least 25 s remain in the current hour, so one test's
/// rollups all land in the hour the burn rate reports.
async fn away_from_the_hour_boundary() {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let left = 3_600_000 - ms % 3_600_000;
    if left < 25_000 {
        tokio::time::sleep(Duration::from_millis(left + 100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_running_release_restarts_after_sigkill_and_sigterm_and_resumes_it() {
    let backend = Backend::sqlite();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&backend);
    let admin = deploy_stable(&server, work.path());
    start_release(&server.cli(&admin), work.path());
    let before = status(&server.cli(&admin));
    assert_eq!(before["release"]["phase"], "canary", "{before}");

    server.kill9();
    let server = Server::start(&backend);
    let after = status(&server.cli(&admin));
    assert_eq!(after["release"]["id"], before["release"]["id"]);
    assert_eq!(after["release"]["phase"], "canary", "{after}");
    assert!(after["needs_attention"].is_null(), "{after}");

    server.stop();
    let server = Server::start(&backend);
    let cli = server.cli(&admin);
    let resumed = status(&cli);
    assert_eq!(resumed["release"]["phase"], "canary", "{resumed}");
    // It is live: the controller still takes commands for it.
    cli.run(&["release", "pause", "support", "--env", "dev"])
        .ok();
    assert_eq!(status(&cli)["release"]["phase"], "paused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_canary_outcome_from_an_sdk_token_does_not_stop_the_next_start() {
    let backend = Backend::sqlite();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&backend);
    let admin = deploy_stable(&server, work.path());
    let sdk = server.token(&admin, "sdk").await;
    // No release: the first canary outcome creates a monitor whose stable arm is empty.
    post_outcomes(&server, &sdk, &[event("only-one", "canary", "support@2")]).await;

    server.stop();
    let server = Server::start(&backend);
    let (status, body) = server.http(&admin).get("/v1/system/quarantine").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([]), "{body}");
    let out = server
        .cli(&admin)
        .run(&["guardrails", "support", "--env", "dev", "--output", "json"])
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["comparisons"][0]["canary"]["requests"], 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_of_one_minute_accepted_before_a_restart_are_added_to_not_overwritten() {
    away_from_the_hour_boundary().await;
    let backend = Backend::sqlite();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&backend);
    let admin = deploy_stable(&server, work.path());
    let sdk = server.token(&admin, "sdk").await;
    let batch = |from: usize| -> Vec<Value> {
        (from..from + 5)
            .map(|i| event(&format!("r{i}"), "stable", "support@1"))
            .collect()
    };
    post_outcomes(&server, &sdk, &batch(0)).await;
    post_outcomes(&server, &sdk, &batch(5)).await;
    let cost = hour_cost(&server.cli(&admin));
    assert!((cost - 0.10).abs() < 1e-9, "{cost}");

    server.kill9();
    let server = Server::start(&backend);
    // Likely the same minute as the first batches: the stored row must grow.
    post_outcomes(&server, &sdk, &batch(10)).await;
    post_outcomes(&server, &sdk, &batch(15)).await;
    let cost = hour_cost(&server.cli(&admin));
    assert!(
        (cost - 0.20).abs() < 1e-9,
        "20 events of $0.01 each, got {cost}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_retried_after_a_sigkill_restart_counts_as_duplicates() {
    away_from_the_hour_boundary().await;
    let backend = Backend::sqlite();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&backend);
    let admin = deploy_stable(&server, work.path());
    let sdk = server.token(&admin, "sdk").await;
    let batch: Vec<Value> = (0..8)
        .map(|i| event(&format!("retry-{i}"), "stable", "support@1"))
        .collect();
    let first = post_outcomes(&server, &sdk, &batch).await;
    assert_eq!(
        (first["accepted"].clone(), first["duplicates"].clone()),
        (json!(8), json!(0))
    );

    server.kill9();
    let server = Server::start(&backend);
    let again = post_outcomes(&server, &sdk, &batch).await;
    assert_eq!(
        (again["accepted"].clone(), again["duplicates"].clone()),
        (json!(0), json!(8)),
        "{again}"
    );
    let cost = hour_cost(&server.cli(&admin));
    assert!((cost - 0.08).abs() < 1e-9, "counted once: {cost}");
    // A partly new batch: only the new ids count.
    let mut mixed = batch[..3].to_vec();
    mixed.push(event("retry-new", "stable", "support@1"));
    let mixed = post_outcomes(&server, &sdk, &mixed).await;
    assert_eq!(
        (mixed["accepted"].clone(), mixed["duplicates"].clone()),
        (json!(1), json!(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_monitor_and_a_corrupt_release_are_quarantined_and_kill_and_rollback_still_work()
{
    let backend = Backend::sqlite();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&backend);
    let admin = deploy_stable(&server, work.path());
    let cli = server.cli(&admin);
    start_release(&cli, work.path());
    // A second agent with a release whose row will be corrupted.
    let other = work.path().join("other");
    crate::harness::copy_dir(&crate::harness::sample_bundle(), &other);
    let manifest = std::fs::read_to_string(other.join("bundle.yaml")).unwrap();
    std::fs::write(
        other.join("bundle.yaml"),
        manifest.replacen("agent: support", "agent: billing", 1),
    )
    .unwrap();
    cli.run(&["bundle", "push", other.to_str().unwrap()]).ok();
    std::fs::write(other.join("prompt.md"), "Billing, briefly.\n").unwrap();
    cli.run(&["bundle", "push", other.to_str().unwrap()]).ok();
    cli.run(&["deploy", "billing", "--env", "dev", "--bundle", "1"])
        .ok();
    let plan = plan(work.path());
    cli.run(&[
        "release", "start", "billing", "--env", "dev", "--bundle", "2", "--plan", &plan,
    ])
    .ok();
    server.stop();

    let Backend::Sqlite(dir) = &backend else {
        unreachable!()
    };
    let store = serin_store::Store::open_sqlite(dir.path()).await.unwrap();
    store
        .execute_unchecked_for_tests(
            "UPDATE guardrail_monitors SET state = '{\"config\": 17' \
             WHERE agent = 'support' AND candidate = 'support@2'; \
             UPDATE releases SET state = 'not json at all' WHERE agent = 'billing'",
        )
        .await
        .unwrap();
    store.close().await;

    let server = Server::start(&backend);
    let cli = server.cli(&admin);
    let http = server.http(&admin);
    // Visible: the quarantine listing with the raw text, the metric, the release status.
    let (code, q) = http.get("/v1/system/quarantine").await;
    assert_eq!(code, 200, "{q}");
    let rows = q["rows"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["key"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("monitor", "dev/support/support@2")), "{q}");
    assert!(kinds.contains(&("release", "billing-dev-1")), "{q}");
    assert!(rows.iter().any(|r| r["raw"] == "not json at all"), "{q}");
    let viewer = server.token(&admin, "viewer").await;
    let (code, _) = server.http(&viewer).get("/v1/system/quarantine").await;
    assert_eq!(code, 403);
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
        metrics.contains("serin_quarantined_rows{kind=\"monitor\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("serin_quarantined_rows{kind=\"release\"} 1"),
        "{metrics}"
    );
    let v = status(&cli);
    assert_eq!(v["release"]["phase"], "canary", "{v}");
    assert!(
        v["needs_attention"]
            .as_str()
            .unwrap()
            .contains("unreadable"),
        "{v}"
    );
    let out = cli
        .run(&["release", "status", "support", "--env", "dev"])
        .ok();
    assert!(out.stdout.contains("NEEDS ATTENTION"), "{}", out.stdout);
    // Not promoted, even forced; the controller leaves it where it is.
    let out = cli.run(&[
        "release", "promote", "support", "--env", "dev", "--force", "--reason", "try",
    ]);
    assert_ne!(out.code, 0, "{out:#?}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(status(&cli)["release"]["step"], 0);

    // Kill and rollback answer 200 on both agents.
    for agent in ["support", "billing"] {
        let (code, body) = http
            .post(
                &format!("/v1/envs/dev/agents/{agent}/kill"),
                &json!({"reason": "incident"}),
            )
            .await;
        assert_eq!(code, 200, "{agent}: {body}");
        let (code, body) = http
            .post(
                &format!("/v1/envs/dev/agents/{agent}/unkill"),
                &json!({"reason": "over"}),
            )
            .await;
        assert_eq!(code, 200, "{agent}: {body}");
        let (code, body) = http
            .post(
                &format!("/v1/envs/dev/agents/{agent}/rollback"),
                &json!({"reason": "bad data"}),
            )
            .await;
        assert_eq!(code, 200, "{agent}: {body}");
        assert_eq!(body["action"], "release.rolled_back", "{body}");
    }
    // Both canaries are drained.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, snap) = http.get("/v1/envs/dev/snapshot").await;
        assert_eq!(code, 200, "{snap}");
        let drained = ["support", "billing"]
            .iter()
            .all(|a| snap["agents"][a]["release"].is_null());
        if drained {
            break;
        }
        assert!(Instant::now() < deadline, "{snap}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
