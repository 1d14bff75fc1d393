//! The server's injectable clock: time-based rules are tested by moving the
//! clock, not by sleeping.

use serde_json::json;

use crate::harness::{Backend, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_moves_an_adjustable_clock_forward_and_evidence_expires_on_it() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let http = server.http(&admin);

    for (who, token) in [
        ("viewer", server.token(&admin, "viewer").await),
        ("deployer", server.token(&admin, "deployer").await),
        ("sdk", server.token(&admin, "sdk").await),
        ("nobody", String::new()),
    ] {
        let (status, body) = server
            .http(&token)
            .post("/v1/system/clock", &json!({"advance_ms": 1000}))
            .await;
        let want = if who == "nobody" { 401 } else { 403 };
        assert_eq!(status, want, "{who}: {body}");
    }
    for bad in [
        json!({"advance_ms": 0}),
        json!({"advance_ms": -1}),
        json!({"advance_ms": 1e15 as i64}),
    ] {
        let (status, body) = http.post("/v1/system/clock", &bad).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["field"], "/advance_ms", "{body}");
    }

    let cli = server.cli(&admin);
    cli.run(&[
        "bundle",
        "push",
        crate::harness::sample_bundle().to_str().unwrap(),
    ])
    .ok();
    let work = tempfile::tempdir().unwrap();
    let policy = work.path().join("readiness.yaml");
    std::fs::write(&policy, "require: [deploy_announced]\n").unwrap();
    cli.run(&[
        "readiness",
        "apply",
        "support",
        "--env",
        "dev",
        policy.to_str().unwrap(),
    ])
    .ok();
    cli.run(&[
        "evidence",
        "set",
        "support",
        "--env",
        "dev",
        "deploy_announced",
        "--status",
        "pass",
        "--owner",
        "jordan",
        "--evidence",
        "https://chat.example/launch",
        "--expires",
        "7d",
    ])
    .ok();
    let check = |cli: &crate::harness::Cli| {
        cli.run(&[
            "readiness",
            "check",
            "support",
            "--env",
            "dev",
            "--bundle",
            "1",
        ])
    };
    let before = check(&cli);
    assert_eq!(before.code, 0, "{before:#?}");

    // Eight days later, without waiting eight days.
    let (status, moved) = http
        .post(
            "/v1/system/clock",
            &json!({"advance_ms": 8 * 86_400_000_i64}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert!(
        moved["offset_ms"].as_i64().unwrap() >= 8 * 86_400_000,
        "{moved}"
    );
    let after = check(&cli);
    assert_eq!(after.code, 1, "{after:#?}");
    assert!(after.stdout.contains("expired"), "{after:#?}");

    // The step is on the record.
    let (_, audit) = http.get("/v1/audit").await;
    assert!(
        audit.to_string().contains("system.clock_advance"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_flag_keeps_wall_time() {
    let backend = Backend::sqlite();
    let server = Server::start_plain_clock(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let (status, body) = server
        .http(&admin)
        .post("/v1/system/clock", &json!({"advance_ms": 1000}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--adjustable-clock"),
        "{body}"
    );
}
