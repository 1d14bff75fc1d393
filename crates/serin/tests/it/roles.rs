use reqwest::Method;
use serde_json::json;

use crate::harness::{Backend, Server, files_json, run_cli, sample_bundle};

#[tokio::test]
async fn every_role_gets_exactly_the_routes_it_needs() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let deployer = server.token(&admin, "deployer").await;
    let approver = server.token(&admin, "approver").await;
    let viewer = server.token(&admin, "viewer").await;
    let sdk = server.token(&admin, "sdk").await;
    let push = json!({"files": files_json(&sample_bundle())});

    // (token, push status, list status, token-create status)
    let cases = [
        (&admin, 201, 200, 201),
        (&deployer, 200, 200, 403),
        (&approver, 403, 200, 403),
        (&viewer, 403, 200, 403),
        (&sdk, 403, 403, 403),
    ];
    for (i, (token, push_status, list_status, create_status)) in cases.into_iter().enumerate() {
        let http = server.http(token);
        let (status, body) = http.post("/v1/bundles", &push).await;
        assert_eq!(status, push_status, "case {i} push: {body}");
        if status == 403 {
            assert_eq!(body["error"]["code"], "forbidden", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("deployer"),
                "{body}"
            );
        }
        let (status, body) = http.get("/v1/agents").await;
        assert_eq!(status, list_status, "case {i} list: {body}");
        let (status, body) = http.post("/v1/tokens", &json!({"role": "viewer"})).await;
        assert_eq!(status, create_status, "case {i} token create: {body}");
    }

    // The CLI says the same in one line and exits 1 (the server said no).
    let out = server
        .cli(&viewer)
        .run(&["bundle", "push", sample_bundle().to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("role viewer may not"), "{}", out.stderr);
}

#[tokio::test]
async fn missing_wrong_and_revoked_tokens_are_refused_with_401() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let viewer = server.token(&admin, "viewer").await;

    let (status, body) = server.http("").get("/v1/agents").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthenticated");

    // Right id, wrong secret.
    let id = viewer.split('_').nth(1).unwrap();
    let forged = format!("serin_{id}_{}", "0".repeat(64));
    for bad in [
        forged.as_str(),
        "serin_nothing",
        "garbage",
        &format!("{viewer}x"),
    ] {
        let (status, body) = server.http(bad).get("/v1/agents").await;
        assert_eq!(status, 401, "{bad}: {body}");
    }
    let http = server.http("");
    let (status, _) = http
        .send(
            http.req(Method::GET, "/v1/agents")
                .header("Authorization", "Basic abc"),
        )
        .await;
    assert_eq!(status, 401);

    assert_eq!(server.http(&viewer).get("/v1/agents").await.0, 200);
    let out = server.cli(&admin).run(&["token", "revoke", id]).ok();
    assert!(out.stdout.contains("revoked"), "{}", out.stdout);
    assert_eq!(server.http(&viewer).get("/v1/agents").await.0, 401);

    // Health endpoints need no token; everything else does.
    assert_eq!(server.http("").get("/healthz").await.0, 200);
    assert_eq!(server.http("").get("/readyz").await.0, 200);
    assert_eq!(server.http("").get("/metrics").await.0, 401);
    assert_eq!(server.http("").get("/openapi.json").await.0, 401);
}

#[tokio::test]
async fn token_create_offline_writes_into_the_store_and_online_through_the_api() {
    let backend = Backend::sqlite();
    let Backend::Sqlite(dir) = &backend else {
        unreachable!()
    };
    let data = dir.path().to_str().unwrap();
    // Offline before any server ran: the store is created on the spot.
    let out = run_cli(&["token", "create", "--role", "admin", "--data", data], &[]).ok();
    let offline_admin = out.stdout.trim().to_owned();
    assert!(offline_admin.starts_with("serin_"), "{out:#?}");

    let server = Server::start(&backend);
    assert!(
        server.bootstrap_token.is_none(),
        "a store with a token gets no bootstrap token"
    );
    let cli = server.cli(&offline_admin);
    let out = cli
        .run(&["token", "create", "--role", "deployer", "--name", "ci"])
        .ok();
    let deployer = out.stdout.trim();
    assert_eq!(server.http(deployer).get("/v1/agents").await.0, 200);

    let out = cli.run(&["token", "create", "--role", "root"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("--role"), "{}", out.stderr);

    let out = cli.run(&["token", "list", "--output", "json"]).ok();
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!out.stdout.contains(deployer), "secrets never listed");

    let out = cli.run(&["audit", "list", "--output", "json"]).ok();
    let audit: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "token.create"),
        "{audit}"
    );
}
