//! The contract as a client sees it: the CLI's exit codes tell a refusal (1)
//! from a usage or connection error (2), a missing token is one clear line,
//! arrays never pass for objects, and a bad path parameter is a 400 that
//! names it.

use serde_json::{Value, json};

use crate::harness::{Backend, Server, push_two_bundles, run_cli, sample_bundle};

#[tokio::test]
async fn server_refusals_and_conflicts_exit_1_while_usage_and_connection_errors_exit_2() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    server.create_envs(&admin);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());

    // 404: the named bundle does not exist.
    let out = cli.run(&["bundle", "show", "support@9"]);
    assert_eq!(out.code, 1, "{out:#?}");
    // 409: nothing deployed, so nothing to roll back to.
    let out = cli.run(&["rollback", "support", "--env", "dev", "--reason", "x"]);
    assert_eq!(out.code, 1, "{out:#?}");
    // 422: a strict env refuses a direct deploy without --force.
    let out = cli.run(&["deploy", "support", "--env", "prod", "--bundle", "1"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("strict"), "{}", out.stderr);
    // 403: a viewer may not push.
    let viewer = server.token(&admin, "viewer").await;
    let out = server
        .cli(&viewer)
        .run(&["bundle", "push", sample_bundle().to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("role viewer may not"), "{}", out.stderr);
    // 409 from the release machine: a second active release.
    let plan = work.path().join("plan.yaml");
    std::fs::write(
        &plan,
        "steps:\n  - canary: {weight: 5%, min_requests: 10}\n",
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    cli.run(&["deploy", "support", "--env", "dev", "--bundle", "1"])
        .ok();
    let start = [
        "release", "start", "support", "--env", "dev", "--bundle", "2", "--plan", plan,
    ];
    cli.run(&start).ok();
    let out = cli.run(&start);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("already has an active release"),
        "{}",
        out.stderr
    );

    // 401 is a credentials problem: fixed in the caller's setup, like usage.
    let out = server.cli("serin_nope_nope").run(&["bundle", "list"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("unknown or revoked"), "{}", out.stderr);
    // A malformed name is a usage error, caught before any request.
    let out = cli.run(&["rollback", "Support!", "--env", "dev", "--reason", "x"]);
    assert_eq!(out.code, 2, "{out:#?}");
    // No server at all.
    let out = run_cli(
        &["bundle", "list"],
        &[("SERIN_SERVER", "http://127.0.0.1:9"), ("SERIN_TOKEN", "x")],
    );
    assert_eq!(out.code, 2, "{out:#?}");
}

#[tokio::test]
async fn a_missing_token_is_one_line_that_says_to_set_serin_token() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    for token in [None, Some("")] {
        let mut env = vec![("SERIN_SERVER", server.url.as_str())];
        if let Some(t) = token {
            env.push(("SERIN_TOKEN", t));
        }
        let out = run_cli(&["bundle", "list"], &env);
        assert_eq!(out.code, 2, "{out:#?}");
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains("set SERIN_TOKEN"), "{}", out.stderr);
        assert!(out.stderr.contains("--token"), "{}", out.stderr);
    }
}

#[tokio::test]
async fn json_arrays_are_refused_where_objects_are_expected_at_every_depth() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let http = server.http(&admin);
    let (_, before) = http.get("/v1/tokens").await;

    // serde would read a struct from the array of its fields: a token.
    let (status, body) = http.post("/v1/tokens", &json!(["viewer", "x"])).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field", "{body}");
    assert_eq!(body["error"]["field"], "/", "{body}");
    let (_, after) = http.get("/v1/tokens").await;
    assert_eq!(before, after, "no token was created");

    // Nested: a flag rule given as an array of its fields.
    let flag = json!({"flag": {"rules": [["user", "in", ["u1"], "100%"]]}});
    let resp = http
        .req(reqwest::Method::PUT, "/v1/envs/dev/flags/support.beta")
        .json(&flag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["field"], "/flag/rules/0", "{body}");
    let (status, body) = http.get("/v1/envs/dev/flags/support.beta").await;
    assert_eq!(status, 404, "nothing was written: {body}");

    // A repeated key is not silently resolved either.
    let resp = http
        .req(reqwest::Method::POST, "/v1/tokens")
        .header("content-type", "application/json")
        .body(r#"{"role": "viewer", "role": "admin"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let (_, after) = http.get("/v1/tokens").await;
    assert_eq!(before, after, "no token was created");
}

#[tokio::test]
async fn a_bad_path_parameter_answers_400_naming_the_parameter() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let http = server.http(&admin);
    for (path, param) in [
        ("/v1/agents/support/bundles/0/evals", "n"),
        ("/v1/agents/support/bundles/x/evals", "n"),
        ("/v1/agents/support/bundles/99999999999999999999/evals", "n"),
        ("/v1/agents/Support/bundles/1/evals", "agent"),
        ("/v1/snapshots/x", "version"),
        ("/v1/agents/support/bundles/-1", "number"),
    ] {
        let (status, body) = http.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{path}: {body}");
        assert_eq!(body["error"]["field"], param, "{path}: {body}");
    }
    let (status, body) = http
        .post(
            "/v1/agents/support/bundles/0/evals",
            &json!({"set": "golden", "score": 1.0, "threshold": 0.5}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "n", "{body}");
}
