//! Routing end to end: the real server, the CLI, and several real SDK
//! instances following the snapshot stream.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serin_sdk::{Arm, RequestContext, Serin};

use crate::harness::{Backend, Cli, Server, copy_dir, sample_bundle};

async fn sdk_token(server: &Server, admin: &str) -> String {
    let (status, body) = server
        .http(admin)
        .post("/v1/tokens", &json!({"role": "sdk", "name": "fleet"}))
        .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// Pushes the sample as support@1 and a variant with another prompt as support@2.
fn push_two_versions(cli: &Cli) -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    let sample = sample_bundle();
    cli.run(&["bundle", "push", sample.to_str().unwrap()]).ok();
    let dir = work.path().join("support");
    copy_dir(&sample, &dir);
    let mut prompt = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("prompt.md"))
        .unwrap();
    writeln!(prompt, "\nBe brief.").unwrap();
    let out = cli.run(&["bundle", "push", dir.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("support@2"), "{}", out.stdout);
    work
}

async fn start_sdk(server: &Server, token: &str, cache: &std::path::Path) -> Serin {
    Serin::builder(server.url.clone(), token.to_owned(), "dev")
        .cache_dir(cache)
        .backoff(Duration::from_millis(50), Duration::from_millis(250))
        .start_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap()
}

/// Waits until every SDK serves `version` (or newer).
async fn converge(fleet: &[Serin], version: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let versions: Vec<Option<u64>> = fleet.iter().map(Serin::snapshot_version).collect();
        if versions.iter().all(|v| v.is_some_and(|v| v >= version)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fleet stuck at {versions:?}, wanted v{version}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn change(cli: &Cli, args: &[&str]) -> u64 {
    let mut full = args.to_vec();
    full.extend(["--output", "json"]);
    let out = cli.run(&full).ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v["version"].as_u64().unwrap()
}

fn bundle_of(sdk: &Serin, ctx: &RequestContext) -> (Arm, Option<String>, bool) {
    let d = sdk.decide("support", ctx).unwrap();
    (d.arm, d.bundle.map(|b| b.id), d.stale)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_converges_on_each_change_and_keeps_serving_while_the_server_is_down() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let _work = push_two_versions(&cli);
    let v1 = change(
        &cli,
        &["deploy", "support", "--env", "dev", "--bundle", "1"],
    );

    let token = sdk_token(&server, &admin).await;
    let caches = tempfile::tempdir().unwrap();
    let mut fleet = Vec::new();
    for i in 0..3 {
        fleet.push(start_sdk(&server, &token, &caches.path().join(format!("sdk{i}"))).await);
    }
    converge(&fleet, v1).await;

    // A subscriber that never reads its stream must not hold the others back.
    let mut lazy = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    write!(
        lazy,
        "GET /v1/envs/dev/snapshot/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();

    let user = RequestContext {
        user: Some("u-1".into()),
        ..RequestContext::new("r-1")
    };
    let mut acme = RequestContext {
        tenant: Some("acme".into()),
        ..RequestContext::new("r-2")
    };
    acme.user = Some("u-2".into());
    for sdk in &fleet {
        assert_eq!(
            bundle_of(sdk, &user),
            (Arm::Stable, Some("support@1".into()), false)
        );
    }

    let v2 = change(
        &cli,
        &["deploy", "support", "--env", "dev", "--bundle", "2"],
    );
    converge(&fleet, v2).await;
    for sdk in &fleet {
        assert_eq!(bundle_of(sdk, &user).1.as_deref(), Some("support@2"));
    }

    let v = change(
        &cli,
        &["kill", "support", "--env", "dev", "--reason", "incident 42"],
    );
    converge(&fleet, v).await;
    for sdk in &fleet {
        assert_eq!(bundle_of(sdk, &user), (Arm::Killed, None, false));
    }
    let v = change(
        &cli,
        &["unkill", "support", "--env", "dev", "--reason", "fixed"],
    );
    converge(&fleet, v).await;
    let v = change(
        &cli,
        &[
            "kill",
            "support",
            "--env",
            "dev",
            "--tenant",
            "acme",
            "--reason",
            "acme asked",
        ],
    );
    converge(&fleet, v).await;
    for sdk in &fleet {
        assert_eq!(bundle_of(sdk, &acme).0, Arm::Killed);
        assert_eq!(bundle_of(sdk, &user).0, Arm::Stable);
    }

    let v = change(
        &cli,
        &[
            "flag",
            "set",
            "support.fast-path",
            "--env",
            "dev",
            "--on",
            "\"fast\"",
            "--off",
            "\"slow\"",
            "--deny-tenant",
            "acme",
        ],
    );
    converge(&fleet, v).await;
    for sdk in &fleet {
        let d = sdk.decide("support", &user).unwrap();
        assert_eq!(d.flag("support.fast-path"), Some(&json!("fast")));
    }

    // One command, no version to type: support@1 is back everywhere.
    let v_rollback = change(
        &cli,
        &["rollback", "support", "--env", "dev", "--reason", "drill"],
    );
    converge(&fleet, v_rollback).await;
    for sdk in &fleet {
        assert_eq!(
            bundle_of(sdk, &user),
            (Arm::Stable, Some("support@1".into()), false)
        );
    }
    drop(lazy);

    // Server gone: the fleet keeps deciding from its last snapshot, marked stale.
    let port = server.port();
    server.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fleet.iter().all(|s| s.health().stale) {
        assert!(
            Instant::now() < deadline,
            "SDKs never noticed the server left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for sdk in &fleet {
        assert_eq!(
            bundle_of(sdk, &user),
            (Arm::Stable, Some("support@1".into()), true)
        );
        let d = sdk.decide("support", &user).unwrap();
        assert!(d.reason_text.contains("stale"), "{}", d.reason_text);
    }

    // A new SDK started while the server is down serves from its disk cache
    // (written off the hot path, so give the writer a moment).
    let cache_file = caches.path().join("sdk0").join("serin-snapshot-dev.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cached: Option<Value> = std::fs::read(&cache_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if cached.is_some_and(|c| c["version"] == v_rollback) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the SDK never cached v{v_rollback}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let late = Serin::builder(format!("http://127.0.0.1:{port}"), token.clone(), "dev")
        .cache_dir(caches.path().join("sdk0"))
        .start_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let first_decision = late.decide("support", &user).unwrap();
    eprintln!(
        "fail-static start to first decision: {:?}",
        started.elapsed()
    );
    assert!(first_decision.stale);
    assert_eq!(
        first_decision.bundle.map(|b| b.id).as_deref(),
        Some("support@1")
    );

    // The server returns on the same port: everyone reconnects and is fresh.
    let server = Server::start_on(&backend, port);
    let v = change(
        &server.cli(&admin),
        &["deploy", "support", "--env", "dev", "--bundle", "2"],
    );
    fleet.push(late);
    converge(&fleet, v).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.iter().any(|s| s.health().stale) {
        assert!(
            Instant::now() < deadline,
            "SDKs stayed stale after the server came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for sdk in &fleet {
        assert_eq!(bundle_of(sdk, &user).1.as_deref(), Some("support@2"));
    }

    // A decision made under an older snapshot is reproduced by explain.
    let out = server
        .cli(&admin)
        .run(&[
            "explain",
            "--snapshot",
            &v2.to_string(),
            "--request-id",
            "r-1",
            "--user",
            "u-1",
            "--output",
            "json",
        ])
        .ok();
    let explained: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(explained["arm"], "stable");
    assert_eq!(explained["bundle"]["id"], "support@2");
    assert_eq!(explained["snapshot_version"], v2);
    assert_eq!(explained["rule"], "no_release");
    let out = server
        .cli(&admin)
        .run(&[
            "explain",
            "--snapshot",
            &v_rollback.to_string(),
            "--request-id",
            "r-2",
            "--tenant",
            "acme",
        ])
        .ok();
    assert!(out.stdout.contains("killed"), "{}", out.stdout);

    // Every change is in the audit log with its actor and reason.
    let out = server
        .cli(&admin)
        .run(&["audit", "list", "--output", "json"])
        .ok();
    let audit: Value = serde_json::from_str(&out.stdout).unwrap();
    let rollback = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollback")
        .unwrap();
    assert_eq!(rollback["details"]["reason"], "drill");
    assert!(rollback["actor"].as_str().unwrap().starts_with("token:"));

    for sdk in &fleet {
        sdk.shutdown().await;
    }
    server.stop();
}

#[tokio::test]
async fn strict_envs_refuse_direct_deploys_and_moving_aliases() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let _work = push_two_versions(&cli);

    let out = cli.run(&["deploy", "support", "--env", "prod", "--bundle", "1"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("strict"), "{}", out.stderr);
    let out = cli.run(&[
        "deploy", "support", "--env", "prod", "--bundle", "1", "--force",
    ]);
    assert_eq!(out.code, 2, "--force needs --reason (usage): {out:#?}");
    cli.run(&[
        "deploy",
        "support",
        "--env",
        "prod",
        "--bundle",
        "1",
        "--force",
        "--reason",
        "bootstrap prod",
    ])
    .ok();

    // A bundle on a moving alias can be pushed for dev but never reach prod.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("support");
    copy_dir(&sample_bundle(), &dir);
    let manifest = std::fs::read_to_string(dir.join("bundle.yaml")).unwrap();
    std::fs::write(
        dir.join("bundle.yaml"),
        manifest.replace("claude-opus-4-7-20260108", "claude-opus-4-7"),
    )
    .unwrap();
    let out = cli
        .run(&["bundle", "push", dir.to_str().unwrap(), "--env", "dev"])
        .ok();
    assert!(out.stdout.contains("support@3"), "{}", out.stdout);
    let out = cli.run(&[
        "deploy", "support", "--env", "prod", "--bundle", "3", "--force", "--reason", "try",
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("moving model alias"), "{}", out.stderr);
    cli.run(&["deploy", "support", "--env", "dev", "--bundle", "3"])
        .ok();
}

#[tokio::test]
async fn routing_bad_input_gets_clear_errors_and_changes_nothing() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let _work = push_two_versions(&cli);
    let http = server.http(&admin);

    // Nothing routed in dev yet: the agent is unknown there.
    let out = cli.run(&["rollback", "support", "--env", "dev", "--reason", "x"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("support"), "{}", out.stderr);
    cli.run(&["deploy", "support", "--env", "dev", "--bundle", "1"])
        .ok();
    let out = cli.run(&["rollback", "support", "--env", "dev", "--reason", "x"]);
    assert!(
        out.stderr.contains("previous"),
        "nothing to roll back to: {}",
        out.stderr
    );
    let out = cli.run(&["unkill", "support", "--env", "dev", "--reason", "x"]);
    assert_eq!(out.code, 1, "{out:#?}");
    // A name that does not exist is the server saying no: exit 1.
    let out = cli.run(&["deploy", "support", "--env", "dev", "--bundle", "9"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("no bundle support@9"), "{}", out.stderr);
    let (status, body) = http
        .post(
            "/v1/envs/dev/agents/support/rollback",
            &json!({"reason": "  "}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/reason")),
        "{body}"
    );

    let sdk = sdk_token(&server, &admin).await;
    let decide = |agent: &str, env: &str| json!({"agent": agent, "env": env, "request_id": "r-1", "user": "u"});
    let (status, body) = server
        .http(&sdk)
        .post("/v1/decide", &decide("support", "dev"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["bundle"]["id"], "support@1");
    assert!(
        body["bundle"]["prompt"].as_str().unwrap().len() > 10,
        "the whole bundle comes back"
    );
    let (status, body) = server
        .http(&sdk)
        .post("/v1/decide", &decide("nobody", "dev"))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server
        .http(&sdk)
        .post("/v1/decide", &decide("support", "staging"))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server
        .http(&sdk)
        .post("/v1/decide", &decide("../x", "dev"))
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/agent")),
        "{body}"
    );
    // sdk tokens decide and stream, nothing else.
    let (status, _) = server
        .http(&sdk)
        .post(
            "/v1/envs/dev/agents/support/rollback",
            &json!({"reason": "x"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = server.http(&sdk).get("/v1/agents").await;
    assert_eq!(status, 403);
    let viewer = {
        let (_, b) = http.post("/v1/tokens", &json!({"role": "viewer"})).await;
        b["token"].as_str().unwrap().to_owned()
    };
    let (status, _) = server
        .http(&viewer)
        .post("/v1/decide", &decide("support", "dev"))
        .await;
    assert_eq!(status, 403);

    // Flags: absurd rollouts and rules that can never match are refused.
    let put = |flag: Value| {
        let http = server.http(&admin);
        async move {
            http.send(
                http.req(reqwest::Method::PUT, "/v1/envs/dev/flags/support.x")
                    .json(&json!({"flag": flag})),
            )
            .await
        }
    };
    let (status, body) = put(json!({"rollout": "150%"})).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/flag/rollout")),
        "{body}"
    );
    let (status, body) =
        put(json!({"rules": [{"attribute": "tenant", "op": "in", "values": []}]})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["field"]
            .as_str()
            .unwrap()
            .starts_with("/flag/rules/0"),
        "{body}"
    );
    let (status, body) = put(json!({"colour": "red"})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = put(json!({"key": "support.y"})).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/flag/key")),
        "{body}"
    );
    let (status, body) = put(json!({"rollout": "25%", "on": "blue"})).await;
    assert_eq!(status, 200, "{body}");
    let out = cli.run(&["flag", "list", "--env", "dev"]).ok();
    assert!(
        out.stdout.contains("support.x") && out.stdout.contains("25%"),
        "{}",
        out.stdout
    );

    // Nothing refused above produced a snapshot version.
    let (_, envs) = http.get("/v1/envs").await;
    let (_, audit) = http.get("/v1/audit?limit=1000").await;
    let changes = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["details"]["env"] == "dev")
        .count();
    assert_eq!(
        envs[0]["version"].as_i64().unwrap() as usize,
        changes,
        "{envs} vs {changes} audited changes"
    );
}
