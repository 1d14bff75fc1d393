//! Names that exist, and changes that can be served: a flag value nested past every SDK's
//! parser limit, oversized flags, mistyped agents and envs, env creation by the wrong role.

use serde_json::{Value, json};

use crate::harness::{Backend, Http, Server, push_two_bundles};

/// `true` inside `arrays` nested arrays (its depth is `arrays + 1`).
fn nested(arrays: usize) -> Value {
    let mut v = Value::Bool(true);
    for _ in 0..arrays {
        v = Value::Array(vec![v]);
    }
    v
}

async fn put_flag(http: &Http, env: &str, key: &str, flag: Value) -> (u16, Value) {
    http.send(
        http.req(reqwest::Method::PUT, &format!("/v1/envs/{env}/flags/{key}"))
            .json(&json!({ "flag": flag })),
    )
    .await
}

async fn env_version(http: &Http, env: &str) -> i64 {
    let (status, body) = http.get(&format!("/v1/envs/{env}")).await;
    assert_eq!(status, 200, "{body}");
    body["version"].as_i64().unwrap()
}

async fn audit_count(http: &Http, action: &str) -> usize {
    let (status, audit) = http.get("/v1/audit?limit=1000").await;
    assert_eq!(status, 200, "{audit}");
    audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .count()
}

/// Snapshot, decide, kill, unkill and rollback all answer 200 in `env`.
async fn env_is_served(server: &Server, admin: &str, sdk: &str, env: &str) {
    let (status, body) = server
        .http(sdk)
        .get(&format!("/v1/envs/{env}/snapshot"))
        .await;
    assert_eq!(status, 200, "snapshot: {body}");
    let (status, body) = server
        .http(sdk)
        .post(
            "/v1/decide",
            &json!({"agent": "support", "env": env, "request_id": "r-1", "user": "u"}),
        )
        .await;
    assert_eq!(status, 200, "decide: {body}");
    let http = server.http(admin);
    for verb in ["kill", "unkill"] {
        let (status, body) = http
            .post(
                &format!("/v1/envs/{env}/agents/support/{verb}"),
                &json!({"reason": "drill"}),
            )
            .await;
        assert_eq!(status, 200, "{verb}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_nested_past_the_parser_limit_is_refused_before_commit_and_the_env_keeps_serving() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());
    cli.run(&["deploy", "support", "--env", "dev", "--bundle", "1"])
        .ok();
    cli.run(&["deploy", "support", "--env", "dev", "--bundle", "2"])
        .ok();
    let sdk = server.token(&admin, "sdk").await;
    let http = server.http(&admin);
    let before = env_version(&http, "dev").await;
    let sets_before = audit_count(&http, "flag.set").await;

    // 125 nested arrays encode, and parse alone and in this request (serde_json allows up to
    // 127), but not three levels down in the stored state or the snapshot.
    let (status, body) = put_flag(&http, "dev", "support.x", json!({ "on": nested(125) })).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/flag/on")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("32"),
        "the message states the limit: {body}"
    );
    // Just past the documented limit, and the same value as `off`, are refused too.
    let (status, body) = put_flag(&http, "dev", "support.x", json!({ "on": nested(32) })).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/flag/on")),
        "{body}"
    );
    let (status, body) = put_flag(&http, "dev", "support.x", json!({ "off": nested(125) })).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/flag/off")),
        "{body}"
    );

    // Nothing was committed: no new env version, no audit row.
    assert_eq!(env_version(&http, "dev").await, before);
    assert_eq!(audit_count(&http, "flag.set").await, sets_before);
    env_is_served(&server, &admin, &sdk, "dev").await;
    let (status, body) = http
        .post(
            "/v1/envs/dev/agents/support/rollback",
            &json!({"reason": "drill"}),
        )
        .await;
    assert_eq!(status, 200, "rollback: {body}");

    // At the limit (depth 32) is accepted and served.
    let (status, body) = put_flag(&http, "dev", "support.x", json!({ "on": nested(31) })).await;
    assert_eq!(status, 200, "{body}");
    env_is_served(&server, &admin, &sdk, "dev").await;

    // And after a restart.
    server.stop();
    let server = Server::start(&backend);
    env_is_served(&server, &admin, &sdk, "dev").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_flag_values_rules_and_lists_are_refused_naming_the_field() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());
    cli.run(&["deploy", "support", "--env", "dev", "--bundle", "1"])
        .ok();
    let http = server.http(&admin);
    let before = env_version(&http, "dev").await;
    let many: Vec<String> = (0..10_001).map(|i| format!("u{i}")).collect();
    let rule = |values: &[String]| json!({"attribute": "tenant", "op": "in", "values": values});
    let cases = [
        (json!({ "on": "x".repeat(70 * 1024) }), "/flag/on"),
        (json!({ "allow": { "users": many } }), "/flag/allow/users"),
        (json!({ "deny": { "tenants": many } }), "/flag/deny/tenants"),
        (
            json!({ "allow": { "users": ["u".repeat(300)] } }),
            "/flag/allow/users",
        ),
        (
            json!({ "rules": (0..101).map(|i| rule(&[format!("t{i}")])).collect::<Vec<_>>() }),
            "/flag/rules",
        ),
        (json!({ "rules": [rule(&many)] }), "/flag/rules/0/values"),
    ];
    for (flag, field) in cases {
        let (status, body) = put_flag(&http, "dev", "support.x", flag).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some(field)),
            "{body}"
        );
    }
    assert_eq!(env_version(&http, "dev").await, before, "nothing committed");
    // A flag scoped to an agent that does not exist is a typo, not a new flag.
    let (status, body) = put_flag(&http, "dev", "suport.x", json!({})).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean support?"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_mistyped_agent_exits_1_suggests_the_real_one_and_changes_nothing() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    server.create_env(&admin, "prod", true);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());
    cli.run(&[
        "deploy", "support", "--env", "prod", "--bundle", "1", "--force", "--reason", "first",
    ])
    .ok();
    let http = server.http(&admin);
    let (_, snapshot_before) = http.get("/v1/envs/prod/snapshot").await;

    let out = cli.run(&["kill", "suport", "--env", "prod", "--reason", "incident"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("did you mean support?"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("KILLED"), "{}", out.stdout);
    let out = cli.run(&["unkill", "suport", "--env", "prod", "--reason", "x"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("did you mean support?"),
        "{}",
        out.stderr
    );
    let out = cli.run(&["rollback", "suport", "--env", "prod", "--reason", "x"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("did you mean support?"),
        "{}",
        out.stderr
    );
    // Deploying an agent that has no bundles names the nearest one that has.
    let out = cli.run(&[
        "deploy", "suport", "--env", "prod", "--bundle", "1", "--force", "--reason", "x",
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("did you mean support?"),
        "{}",
        out.stderr
    );

    let (_, snapshot_after) = http.get("/v1/envs/prod/snapshot").await;
    assert_eq!(snapshot_after, snapshot_before, "the snapshot is unchanged");
    assert_eq!(snapshot_after["agents"]["support"]["killed"], false);
    assert!(snapshot_after["agents"].get("suport").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_to_a_mistyped_env_is_refused_and_creates_no_env() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    server.create_env(&admin, "prod", true);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());
    let out = cli.run(&[
        "deploy", "support", "--env", "prdo", "--bundle", "1", "--force", "--reason", "x",
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("no env prdo; did you mean prod?"),
        "{}",
        out.stderr
    );
    let http = server.http(&admin);
    let (status, body) = http
        .post(
            "/v1/envs/prdo/agents/support/deploy",
            &json!({"bundle": 1, "force": true, "reason": "x"}),
        )
        .await;
    assert_eq!(
        (
            status,
            body["error"]["code"].as_str(),
            body["error"]["field"].as_str()
        ),
        (404, Some("not_found"), Some("env")),
        "{body}"
    );
    let (status, _) = http.get("/v1/envs/prdo").await;
    assert_eq!(status, 404);
    let (_, envs) = http.get("/v1/envs").await;
    let names: Vec<&str> = envs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["env"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dev", "prod"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_env_scoped_route_answers_404_with_a_suggestion_for_an_unknown_env() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_env(&admin, "prod", true);
    let sdk = server.token(&admin, "sdk").await;
    let viewer = server.token(&admin, "viewer").await;
    let as_sdk = server.http(&sdk);
    let as_admin = server.http(&admin);
    let as_viewer = server.http(&viewer);

    let expect_404 = |status: u16, body: &Value, field: &str| {
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (404, Some(field)),
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("did you mean prod?"),
            "{body}"
        );
    };
    let (s, b) = as_sdk.get("/v1/envs/prdo/snapshot").await;
    expect_404(s, &b, "env");
    let (s, b) = as_sdk.get("/v1/envs/prdo/snapshot/stream").await;
    expect_404(s, &b, "env");
    let (s, b) = as_sdk
        .post(
            "/v1/decide",
            &json!({"agent": "support", "env": "prdo", "request_id": "r"}),
        )
        .await;
    expect_404(s, &b, "/env");
    let event = json!({
        "request_id": "r-1", "agent": "support", "env": "prdo", "bundle": "support@1",
        "arm": "stable", "snapshot_version": 1, "ts": "2026-01-01T00:00:00Z",
        "latency_ms": 10.0, "outcome": "success"
    });
    let (s, b) = as_sdk
        .post("/v1/outcomes", &json!({ "events": [event] }))
        .await;
    expect_404(s, &b, "/events/0/env");
    for path in [
        "/v1/envs/prdo/flags",
        "/v1/envs/prdo/flags/support.x",
        "/v1/envs/prdo/sdks",
        "/v1/envs/prdo/agents/support/release",
        "/v1/envs/prdo/agents/support/guardrails",
        "/v1/envs/prdo/agents/support/readiness/policy",
        "/v1/envs/prdo/agents/support/drills",
    ] {
        let (s, b) = as_viewer.get(path).await;
        expect_404(s, &b, "env");
    }
    for path in [
        "/v1/envs/prdo/agents/support/kill",
        "/v1/envs/prdo/agents/support/unkill",
        "/v1/envs/prdo/agents/support/rollback",
    ] {
        let (s, b) = as_admin.post(path, &json!({"reason": "x"})).await;
        expect_404(s, &b, "env");
    }
    // None of it created the env.
    let (s, _) = as_admin.get("/v1/envs/prdo").await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_create_envs_once_and_the_registry_sets_the_pin_policy() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    for role in ["deployer", "approver", "viewer", "sdk"] {
        let token = server.token(&admin, role).await;
        let (status, body) = server
            .http(&token)
            .post("/v1/envs", &json!({"name": "prod"}))
            .await;
        assert_eq!(status, 403, "{role}: {body}");
    }
    let (status, body) = server
        .http("")
        .post("/v1/envs", &json!({"name": "prod"}))
        .await;
    assert_eq!(status, 401, "{body}");

    let cli = server.cli(&admin);
    let out = cli.run(&["env", "create", "prod"]).ok();
    assert!(
        out.stdout.contains("prod") && out.stdout.contains("strict"),
        "{}",
        out.stdout
    );
    // A second create is a conflict (exit code per the CLI's 409 mapping).
    let out = cli.run(&["env", "create", "prod", "--lenient"]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    let (status, body) = server
        .http(&admin)
        .post("/v1/envs", &json!({"name": "dev"}))
        .await;
    assert_eq!(status, 409, "dev exists from the start: {body}");
    let (status, body) = server
        .http(&admin)
        .post("/v1/envs", &json!({"name": "Prod!"}))
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/name")),
        "{body}"
    );
    cli.run(&["env", "create", "qa", "--lenient"]).ok();

    let out = cli.run(&["env", "list"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].starts_with("dev\tlenient"), "{}", out.stdout);
    assert!(lines[1].starts_with("prod\tstrict"), "{}", out.stdout);
    assert!(lines[2].starts_with("qa\tlenient"), "{}", out.stdout);
    let out = cli.run(&["env", "show", "qa", "--output", "json"]).ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (v["strict"].as_bool(), v["pin_policy"].as_str()),
        (Some(false), Some("dev"))
    );
    let out = cli.run(&["env", "show", "porod"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("did you mean prod?"), "{}", out.stderr);

    // The policy comes from the registry, not the name: qa takes direct deploys, prod does not.
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());
    cli.run(&["deploy", "support", "--env", "qa", "--bundle", "1"])
        .ok();
    let out = cli.run(&["deploy", "support", "--env", "prod", "--bundle", "1"]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("strict"), "{}", out.stderr);
    let (_, audit) = server.http(&admin).get("/v1/audit?limit=1000").await;
    let created: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "env.create")
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        created.len(),
        2,
        "prod and qa were created, each audited once: {created:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_state_that_cannot_be_served_is_quarantined_without_taking_the_server_down() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    server.create_env(&admin, "qa", false);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());
    for env in ["dev", "qa"] {
        cli.run(&["deploy", "support", "--env", env, "--bundle", "1"])
            .ok();
    }
    let sdk = server.token(&admin, "sdk").await;
    let http = server.http(&admin);
    let good = env_version(&http, "dev").await;
    let (_, snapshot) = http.get("/v1/envs/dev/snapshot").await;
    server.stop();

    // What an older server committed: the flag that bricked an env, as the newest dev state.
    let Backend::Sqlite(dir) = &backend else {
        unreachable!()
    };
    let store = serin_store::Store::open_sqlite(dir.path()).await.unwrap();
    let state: Value = serde_json::from_str(
        &store
            .query_text_for_tests(&format!(
                "SELECT state FROM env_states WHERE version = {good}"
            ))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let mut broken = state.clone();
    broken["flags"] = json!({ "support.x": { "key": "support.x", "on": nested(125) } });
    let sql = format!(
        "INSERT INTO env_states (version, env, state, created_at_ms, created_by) \
         VALUES ((SELECT MAX(version) + 1 FROM env_states), 'dev', '{}', 1, 'old-server')",
        broken.to_string().replace('\'', "''")
    );
    store.execute_unchecked_for_tests(&sql).await.unwrap();
    store.close().await;

    let server = Server::start(&backend);
    let http = server.http(&admin);
    // The last good version is served; the other env is untouched.
    let (status, body) = server.http(&sdk).get("/v1/envs/dev/snapshot").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], snapshot["version"]);
    let (status, body) = server.http(&sdk).get("/v1/envs/qa/snapshot").await;
    assert_eq!(status, 200, "{body}");
    // Changes build on the last good state: the unreadable one stays quarantined.
    for verb in ["kill", "unkill"] {
        let (status, body) = http
            .post(
                &format!("/v1/envs/dev/agents/support/{verb}"),
                &json!({"reason": "x"}),
            )
            .await;
        assert_eq!(status, 200, "{verb}: {body}");
    }
    let (_, body) = server.http(&sdk).get("/v1/envs/dev/snapshot").await;
    assert!(
        body["flags"].get("support.x").is_none(),
        "{}",
        body["flags"]
    );
    env_is_served(&server, &admin, &sdk, "dev").await;
}
