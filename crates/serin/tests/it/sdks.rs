//! SDK instance reporting end to end: real SDKs follow the real server's
//! stream with explicit instance ids, report what they applied, and the
//! server lists them (`GET /v1/envs/{env}/sdks`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serin_sdk::Serin;

use crate::harness::{Backend, Cli, Http, Server, push_two_bundles};

/// A routing change in prod (strict: direct deploys need force and a reason);
/// returns the snapshot version carrying it.
fn change(cli: &Cli, args: &[&str]) -> u64 {
    let mut full = args.to_vec();
    full.extend(["--env", "prod", "--output", "json"]);
    let out = cli.run(&full).ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v["version"].as_u64().unwrap()
}

fn deploy(cli: &Cli, bundle: &str) -> u64 {
    change(
        cli,
        &[
            "deploy", "support", "--bundle", bundle, "--force", "--reason", "test",
        ],
    )
}

async fn start_sdk(server: &Server, token: &str, instance: &str) -> Serin {
    Serin::builder(server.url.clone(), token.to_owned(), "prod")
        .instance(instance)
        .backoff(Duration::from_millis(50), Duration::from_millis(250))
        .start_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap()
}

/// Polls the env's SDK list until `done` holds (at most 10 s).
async fn poll_sdks(http: &Http, what: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http.get("/v1/envs/prod/sdks").await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn instance<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == id)
        .unwrap_or(&Value::Null)
}

fn all_applied(body: &Value, ids: &[&str], version: u64) -> bool {
    ids.iter()
        .all(|id| instance(body, id)["applied_version"].as_u64() == Some(version))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdks_report_the_version_they_serve_and_the_server_lists_them() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());
    let v1 = deploy(&cli, "1");

    let sdk_token = server.token(&admin, "sdk").await;
    let viewer = server.http(&server.token(&admin, "viewer").await);
    let a = start_sdk(&server, &sdk_token, "it-a").await;
    let b = start_sdk(&server, &sdk_token, "pod-7:b").await;
    let ids = ["it-a", "pod-7:b"];
    poll_sdks(&viewer, "both SDKs on v1", |body| {
        all_applied(body, &ids, v1)
    })
    .await;

    let v2 = deploy(&cli, "2");
    let body = poll_sdks(&viewer, "both SDKs on v2", |body| {
        all_applied(body, &ids, v2)
    })
    .await;
    assert_eq!(body["version"], v2);
    let listed: Vec<&str> = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids, "sorted by instance");
    for id in ids {
        let i = instance(&body, id);
        assert_eq!(i["connected"], true, "{i}");
        assert_eq!(i["streams"], 1, "{i}");
        assert_eq!(i["last_sent_version"], v2, "{i}");
        assert!(i["sdk"].as_str().unwrap().starts_with("serin-rust/"), "{i}");
        assert!(i["connected_since_ms"].as_i64().is_some(), "{i}");
        assert!(i["applied_at_ms"].as_i64().is_some(), "{i}");
        assert!(i["last_seen_ms"].as_i64().is_some(), "{i}");
    }
    for sdk in [&a, &b] {
        assert_eq!(sdk.snapshot_version(), Some(v2));
        assert!(sdk.health().reports_sent >= 2);
    }

    // A rollback is a new version too: both report it.
    let v3 = change(&cli, &["rollback", "support", "--reason", "drill"]);
    poll_sdks(&viewer, "both SDKs on the rollback", |body| {
        all_applied(body, &ids, v3)
    })
    .await;
    let text = viewer
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("serin_sdk_instances_connected 2"),
        "{}",
        text.lines()
            .filter(|l| l.contains("serin_sdk"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // An SDK that shuts down stays listed, disconnected, with what it served.
    a.shutdown().await;
    let body = poll_sdks(&viewer, "it-a disconnected", |body| {
        instance(body, "it-a")["connected"] == false
    })
    .await;
    let gone = instance(&body, "it-a");
    assert_eq!(gone["streams"], 0);
    assert_eq!(gone["connected_since_ms"], Value::Null);
    assert_eq!(gone["applied_version"], v3);
    assert_eq!(instance(&body, "pod-7:b")["connected"], true);

    // An instance that never opened a stream is recorded all the same.
    let sdk_http = server.http(&sdk_token);
    let (status, body) = sdk_http
        .post(
            "/v1/sdk/applied",
            &json!({"env": "prod", "instance": "ghost", "version": v3}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let body = viewer.get("/v1/envs/prod/sdks").await.1;
    let ghost = instance(&body, "ghost");
    assert_eq!(ghost["connected"], false);
    assert_eq!(ghost["streams"], 0);
    assert_eq!(ghost["applied_version"], v3);
    assert_eq!(ghost["sdk"], Value::Null);
    b.shutdown().await;
}

#[tokio::test]
async fn bad_instance_ids_and_reports_are_refused_naming_the_field() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let sdk = server.http(&server.token(&admin, "sdk").await);
    let viewer = server.http(&server.token(&admin, "viewer").await);
    // Reports may claim only versions of the env, so it needs one.
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());
    let v = deploy(&cli, "1");

    for bad in ["a%20b", "a%2Fb", "", &"x".repeat(129)] {
        let (status, body) = sdk
            .get(&format!("/v1/envs/prod/snapshot/stream?instance={bad}"))
            .await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
        assert_eq!(body["error"]["field"], "instance", "{body}");
    }

    let ok = json!({"env": "prod", "instance": "pod-1", "version": v, "sdk": "serin-rust/0.1.0"});
    let cases = [
        (json!({"env": "Prod"}), "/env"),
        (json!({"instance": "a b"}), "/instance"),
        (json!({"instance": "x".repeat(129)}), "/instance"),
        (json!({"version": 0}), "/version"),
        (json!({"version": -1}), "/version"),
        (json!({"version": "3"}), "/version"),
        (json!({"sdk": "x".repeat(65)}), "/sdk"),
        (json!({"sdk": "bad\nname"}), "/sdk"),
        (json!({"extra": true}), "/extra"),
    ];
    for (patch, field) in cases {
        let mut body = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = sdk.post("/v1/sdk/applied", &body).await;
        assert!((400..500).contains(&status), "{body}: {status} {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let mut missing = ok.clone();
    missing.as_object_mut().unwrap().remove("version");
    let (status, answer) = sdk.post("/v1/sdk/applied", &missing).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_field");
    // Nothing invalid was recorded.
    let body = viewer.get("/v1/envs/prod/sdks").await.1;
    assert_eq!(body["instances"], json!([]), "{body}");
    assert_eq!(body["version"], v);

    // Roles: sdk posts, viewer reads; sdk may not read the list, and no
    // token at all may do either.
    let (status, _) = sdk.post("/v1/sdk/applied", &ok).await;
    assert_eq!(status, 204);
    let (status, body) = sdk.get("/v1/envs/prod/sdks").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = viewer.get("/v1/envs/prod/sdks").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instances"][0]["instance"], "pod-1");
    assert_eq!(body["instances"][0]["sdk"], "serin-rust/0.1.0");
    let anonymous = server.http("");
    assert_eq!(anonymous.post("/v1/sdk/applied", &ok).await.0, 401);
    assert_eq!(anonymous.get("/v1/envs/prod/sdks").await.0, 401);
    let (status, body) = viewer.get("/v1/envs/PROD/sdks").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "env");
}
