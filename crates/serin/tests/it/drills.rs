//! Rollback drills end to end: real SDKs on the real server's stream confirm each leg, the
//! timing is recorded, the env ends where it started, and readiness sees the drill.

use std::time::Duration;

use serde_json::{Value, json};
use serin_sdk::Serin;

use crate::harness::{Backend, Cli, Server, push_two_bundles, start_release};

/// support@1 then support@2 deployed in prod: the stack is [1, 2].
pub(crate) fn two_stables(cli: &Cli, work: &std::path::Path) {
    push_two_bundles(cli, work);
    for n in ["1", "2"] {
        cli.run(&[
            "deploy", "support", "--env", "prod", "--bundle", n, "--force", "--reason", "setup",
        ])
        .ok();
    }
}

pub(crate) async fn sdk(server: &Server, token: &str, instance: &str) -> Serin {
    Serin::builder(server.url.clone(), token.to_owned(), "prod")
        .instance(instance)
        .backoff(Duration::from_millis(50), Duration::from_millis(250))
        .start_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap()
}

/// `serin drill rollback support --env prod --timeout T --output json`: its exit code and report.
pub(crate) fn drill_json(cli: &Cli, timeout: &str) -> (i32, Value) {
    let out = cli.run(&[
        "drill",
        "rollback",
        "support",
        "--env",
        "prod",
        "--timeout",
        timeout,
        "--output",
        "json",
    ]);
    let d = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    (out.code, d)
}

pub(crate) fn stable(server_cli: &Cli) -> String {
    let out = server_cli
        .run(&["snapshot", "--env", "prod", "--output", "json"])
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v["agents"]["support"]["stable"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_is_confirmed_by_every_sdk_timed_recorded_and_seen_by_readiness() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    two_stables(&cli, work.path());
    let sdk_token = server.token(&admin, "sdk").await;
    let a = sdk(&server, &sdk_token, "drill-a").await;
    let b = sdk(&server, &sdk_token, "drill-b").await;
    assert_eq!(stable(&cli), "support@2");

    let deployer = server.cli(&server.token(&admin, "deployer").await);
    let (code, d) = drill_json(&deployer, "10s");
    assert_eq!(code, 0, "{d:#}");
    assert_eq!(d["outcome"], "succeeded", "{d:#}");
    assert_eq!(
        (d["from"].as_str(), d["to"].as_str()),
        (Some("support@2"), Some("support@1"))
    );
    for leg in ["rollback", "forward"] {
        assert_eq!(d[leg]["sdks"], 2, "{leg}: {d:#}");
        assert_eq!(d[leg]["confirmed"], 2, "{leg}: {d:#}");
        let ms = d[leg]["duration_ms"].as_f64().unwrap();
        assert!(ms > 0.0 && ms < 10_000.0, "{leg}: {ms}");
        let instances: Vec<&str> = d[leg]["confirmations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["instance"].as_str().unwrap())
            .collect();
        assert!(
            instances.contains(&"drill-a") && instances.contains(&"drill-b"),
            "{d:#}"
        );
    }
    assert!(d["forward"]["version"].as_u64() > d["rollback"]["version"].as_u64());
    // The env ends where it started, and both SDKs serve it.
    assert_eq!(stable(&cli), "support@2");
    let forward = d["forward"]["version"].as_u64().unwrap();
    for s in [&a, &b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while s.snapshot_version() < Some(forward) {
            assert!(std::time::Instant::now() < deadline, "sdk never caught up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // The human form, a second drill, and the history with its summary.
    let out = deployer
        .run(&["drill", "rollback", "support", "--env", "prod"])
        .ok();
    assert!(out.stdout.contains("2/2 SDKs confirmed"), "{}", out.stdout);
    let out = cli
        .run(&["drill", "history", "support", "--env", "prod"])
        .ok();
    assert!(
        out.stdout.contains("support-prod-drill-2"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("2 drill(s), 2 succeeded"),
        "{}",
        out.stdout
    );
    let audit = cli.run(&["audit", "list", "--output", "json"]).ok();
    let audit: Value = serde_json::from_str(&audit.stdout).unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "drill.start",
        "drill.rollback",
        "drill.forward",
        "drill.finish",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }

    // Readiness sees the recent successful drill.
    let policy = work.path().join("readiness.yaml");
    std::fs::write(
        &policy,
        "require: [rollback_drill_recent, rollback_target_warm]\n",
    )
    .unwrap();
    cli.run(&[
        "readiness",
        "apply",
        "support",
        "--env",
        "prod",
        policy.to_str().unwrap(),
    ])
    .ok();
    let out = cli
        .run(&[
            "readiness",
            "check",
            "support",
            "--env",
            "prod",
            "--bundle",
            "1",
            "--output",
            "json",
        ])
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ready"], true, "{v:#}");

    // A connected client that never reports what it applied fails the drill (exit 1), and
    // the env is rolled forward all the same.
    let silent = server
        .http(&sdk_token)
        .req(
            reqwest::Method::GET,
            "/v1/envs/prod/snapshot/stream?instance=silent",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(silent.status(), 200);
    let (code, d) = drill_json(&deployer, "1s");
    assert_eq!(code, 1, "{d:#}");
    assert_eq!(d["outcome"], "failed", "{d:#}");
    assert_eq!(d["rollback"]["lagging"], json!(["silent"]), "{d:#}");
    assert!(d["error"].as_str().unwrap().contains("silent"), "{d:#}");
    assert_eq!(stable(&cli), "support@2");
    drop(silent);

    // Drills are refused while a release is active.
    start_release(
        &cli,
        work.path(),
        "1",
        "steps:\n  - canary: {weight: 5%, min_duration: 1h}\n",
    );
    let out = deployer.run(&["drill", "rollback", "support", "--env", "prod"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("release"), "{}", out.stderr);
    a.shutdown().await;
    b.shutdown().await;
    server.stop();
}
