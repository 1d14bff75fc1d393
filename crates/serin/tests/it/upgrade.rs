//! A store written by an earlier main must open, upgrade and serve.
//!
//! `tests/fixtures/store-1d239c7/serin.db` was written by the binary of main at
//! 1d239c7 with `tests/fixtures/make-store.sh`: two bundles, deploys to dev,
//! staging and prod, a tenant kill and a flag in dev, a readiness policy with
//! evidence and an eval, a rollback drill, a release in staging with 40
//! outcomes, and a release in prod started without any outcome. That last one
//! is what kept 1d239c7 itself from restarting (its empty sketches were stored
//! as `null`), so this test is also the regression test for that defect on a
//! real old store. Regenerate the fixture only to add a new old version, never
//! to make this test pass.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, Server};

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-1d239c7/serin.db")
}

fn old_store() -> Backend {
    let backend = Backend::sqlite();
    let Backend::Sqlite(dir) = &backend else {
        unreachable!()
    };
    std::fs::copy(fixture(), dir.path().join("serin.db")).unwrap();
    backend
}

/// An admin token minted offline into the old store, the way an operator who
/// lost the bootstrap token would.
fn admin_token(backend: &Backend) -> String {
    let Backend::Sqlite(dir) = backend else {
        unreachable!()
    };
    let out = crate::harness::run_cli(
        &[
            "token",
            "create",
            "--role",
            "admin",
            "--name",
            "upgrade-test",
            "--data",
            dir.path().to_str().unwrap(),
        ],
        &[],
    )
    .ok();
    out.stdout
        .split_whitespace()
        .find(|w| w.starts_with("serin_"))
        .unwrap_or_else(|| panic!("no token in {}", out.stdout))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_by_main_at_1d239c7_opens_upgrades_and_keeps_everything() {
    let backend = old_store();
    let admin = admin_token(&backend);
    let server = Server::start(&backend);
    assert!(
        server.bootstrap_token.is_none(),
        "an old store with tokens must not get a new bootstrap token"
    );
    let http = server.http(&admin);

    // Bundles and their numbering survive.
    let (status, body) = http.get("/v1/agents/support/bundles").await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"support@1") && ids.contains(&"support@2"),
        "{body}"
    );

    // Routing in dev: support@1 stable after the rollback, acme killed, the flag kept.
    let (status, snap) = http.get("/v1/envs/dev/snapshot").await;
    assert_eq!(status, 200, "{snap}");
    let text = snap.to_string();
    assert!(text.contains("acme"), "tenant kill lost: {text}");
    assert!(text.contains("support.fast-path"), "flag lost: {text}");
    let (status, d) = http
        .post(
            "/v1/decide",
            &json!({"agent": "support", "env": "dev", "request_id": "r-1", "user": "u-1"}),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["bundle"]["id"], "support@1", "{d}");

    // Both releases were resumed: staging with its 40 outcomes, prod with none.
    for env in ["staging", "prod"] {
        let (status, r) = http
            .get(&format!("/v1/envs/{env}/agents/support/release"))
            .await;
        assert_eq!(status, 200, "release in {env}: {r}");
        assert_eq!(r["release"]["candidate"]["id"], "support@2", "{r}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, g) = http.get("/v1/envs/staging/agents/support/guardrails").await;
        assert_eq!(status, 200, "{g}");
        if g.to_string().contains("\"n\":10") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "staging's canary evidence (10 requests) was not kept: {g}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Readiness records and the drill survive.
    let (status, policy) = http
        .get("/v1/envs/prod/agents/support/readiness/policy")
        .await;
    assert_eq!(status, 200, "{policy}");
    let (status, drills) = http.get("/v1/envs/staging/agents/support/drills").await;
    assert_eq!(status, 200, "{drills}");
    assert!(drills.to_string().contains("succeeded"), "{drills}");

    // The old audit chain still verifies, and new writes extend it.
    let (status, v) = http.get("/v1/audit/verify").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");

    // The upgraded store takes new evidence and survives another restart.
    let events: Vec<Value> = (0..20)
        .map(|i| {
            json!({"request_id": format!("up-{i}"), "agent": "support", "env": "prod",
                   "snapshot_version": 1, "bundle": if i % 2 == 0 { "support@2" } else { "support@1" },
                   "arm": if i % 2 == 0 { "canary" } else { "stable" },
                   "latency_ms": 100.0 + f64::from(i), "cost_usd": 0.001})
        })
        .collect();
    let (status, body) = http
        .post("/v1/outcomes", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 20, "{body}");
    server.stop();
    let server = Server::start(&backend);
    let (status, r) = server
        .http(&admin)
        .get("/v1/envs/prod/agents/support/release")
        .await;
    assert_eq!(status, 200, "{r}");
}
