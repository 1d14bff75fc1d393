use crate::harness::{Backend, Server, copy_dir, run_cli, sample_bundle};

/// The whole bundle lifecycle through the CLI; run on both backends.
async fn bundle_lifecycle(backend: Backend) {
    let server = Server::start(&backend);
    let token = server
        .bootstrap_token
        .clone()
        .expect("first start prints an admin token");
    let cli = server.cli(&token);
    let sample = sample_bundle();
    let sample = sample.to_str().unwrap();

    let out = cli.run(&["bundle", "validate", sample]).ok();
    assert!(out.stdout.contains("ok: support sha256:"), "{}", out.stdout);

    let out = cli.run(&["bundle", "push", sample]).ok();
    assert!(
        out.stdout.contains("pushed support@1 (sha256:"),
        "{}",
        out.stdout
    );
    let first_digest = out
        .stdout
        .split('(')
        .nth(1)
        .unwrap()
        .trim_end_matches([')', '\n'])
        .to_owned();

    // Same content again: same number, nothing written.
    let out = cli.run(&["bundle", "push", sample]).ok();
    assert!(
        out.stdout.contains(&format!(
            "unchanged: support@1 already holds this content ({first_digest})"
        )),
        "{}",
        out.stdout
    );

    // A changed prompt and a changed tool schema make support@2.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("support");
    copy_dir(&sample_bundle(), &dir);
    let prompt = std::fs::read_to_string(dir.join("prompt.md")).unwrap();
    std::fs::write(
        dir.join("prompt.md"),
        format!("{prompt}\nAlways answer in French.\n"),
    )
    .unwrap();
    let tool_path = dir.join("tools/create_support_ticket.json");
    let mut tool: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tool_path).unwrap()).unwrap();
    tool["input_schema"]["properties"]["priority"] =
        serde_json::json!({"type": "string", "enum": ["low", "high"]});
    std::fs::write(&tool_path, serde_json::to_string_pretty(&tool).unwrap()).unwrap();
    let out = cli.run(&["bundle", "push", dir.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("pushed support@2"), "{}", out.stdout);

    let out = cli.run(&["bundle", "list", "support"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[1].starts_with("support@2"),
        "newest first: {}",
        out.stdout
    );
    assert!(lines[2].starts_with("support@1"), "{}", out.stdout);

    let out = cli
        .run(&["bundle", "list", "support", "--output", "json"])
        .ok();
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list[1]["digest"], first_digest.as_str());

    let out = cli.run(&["bundle", "list"]).ok();
    assert!(
        out.stdout.contains("support") && out.stdout.contains("support@2"),
        "{}",
        out.stdout
    );

    let out = cli.run(&["bundle", "show", "support@1"]).ok();
    assert!(
        out.stdout.contains("claude-opus-4-7-20260108"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("create_support_ticket"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("Always answer in French."),
        "{}",
        out.stdout
    );

    let out = cli.run(&["bundle", "diff", "support@1", "support@2"]).ok();
    assert!(
        out.stdout.contains("+Always answer in French."),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("create_support_ticket"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("priority"), "{}", out.stdout);

    let out = cli.run(&["bundle", "diff", "support@1", "support@1"]).ok();
    assert!(out.stdout.contains("identical"), "{}", out.stdout);

    let out = cli.run(&["bundle", "show", "support@9"]);
    assert_eq!(out.code, 1, "the server says no: {out:#?}");
    assert!(out.stderr.contains("no bundle support@9"), "{}", out.stderr);

    let out = cli.run(&["pins", "--output", "json"]).ok();
    let pins: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(pins[0]["bundle"], "support@2");

    // Restart on the same store: everything is still there, and no second
    // bootstrap token is minted.
    server.stop();
    let server = Server::start(&backend);
    assert!(server.bootstrap_token.is_none());
    let cli = server.cli(&token);
    let out = cli.run(&["bundle", "list", "support"]).ok();
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    let out = cli.run(&["bundle", "push", sample]).ok();
    assert!(
        out.stdout.contains("unchanged: support@1"),
        "{}",
        out.stdout
    );

    let out = cli.run(&["audit", "verify"]).ok();
    assert!(out.stdout.contains("audit chain intact"), "{}", out.stdout);
}

#[tokio::test]
async fn bundle_lifecycle_on_sqlite() {
    bundle_lifecycle(Backend::sqlite()).await;
}

#[tokio::test]
async fn bundle_lifecycle_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    bundle_lifecycle(backend).await;
}

#[tokio::test]
async fn an_acknowledged_push_survives_sigkill() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let token = server.bootstrap_token.clone().unwrap();
    let sample = sample_bundle();
    server
        .cli(&token)
        .run(&["bundle", "push", sample.to_str().unwrap()])
        .ok();
    server.kill9();
    let server = Server::start(&backend);
    let out = server
        .cli(&token)
        .run(&["bundle", "show", "support@1"])
        .ok();
    assert!(out.stdout.contains("support@1"), "{}", out.stdout);
}

#[tokio::test]
async fn invalid_bundle_reports_every_problem_and_stores_nothing() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let token = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&token);

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("support");
    copy_dir(&sample_bundle(), &dir);
    let manifest = std::fs::read_to_string(dir.join("bundle.yaml")).unwrap();
    std::fs::write(
        dir.join("bundle.yaml"),
        manifest.replace("claude-opus-4-7-20260108", "claude-opus-4-7") + "colour: blue\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("tools/broken.json"),
        r#"{"name":"broken","description":"x","input_schema":{"type":12}}"#,
    )
    .unwrap();

    let out = cli.run(&["bundle", "validate", dir.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("bundle.yaml"), "{}", out.stdout);
    assert!(
        out.stdout.contains("colour"),
        "unknown field named: {}",
        out.stdout
    );
    assert!(out.stdout.contains("tools/broken.json"), "{}", out.stdout);
    assert!(
        out.stderr.contains("is not a valid bundle"),
        "{}",
        out.stderr
    );

    // Without the unknown field, the alias is the remaining error; `--env dev`
    // demotes it to a warning that says what the alias means today.
    std::fs::write(
        dir.join("bundle.yaml"),
        manifest.replace("claude-opus-4-7-20260108", "claude-opus-4-7"),
    )
    .unwrap();
    std::fs::remove_file(dir.join("tools/broken.json")).unwrap();
    let out = cli.run(&["bundle", "validate", dir.to_str().unwrap(), "--env", "prod"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stdout
            .contains("currently means claude-opus-4-7-20260108"),
        "{}",
        out.stdout
    );
    let out = cli
        .run(&["bundle", "validate", dir.to_str().unwrap(), "--env", "dev"])
        .ok();
    assert!(out.stdout.contains("warning"), "{}", out.stdout);

    let out = cli.run(&["bundle", "push", dir.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("nothing was pushed"), "{}", out.stderr);

    // The server enforces the same rules for clients that skip the CLI.
    let http = server.http(&token);
    let (status, body) = http
        .post(
            "/v1/bundles",
            &serde_json::json!({"files": crate::harness::files_json(&dir)}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_bundle");
    let problems = body["error"]["details"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["code"] == "unpinned_model" && p["file"] == "bundle.yaml"),
        "{body}"
    );

    let (status, _) = http.get("/v1/agents/support/bundles").await;
    assert_eq!(status, 404, "nothing may be stored");
}

#[test]
fn validate_needs_no_server_and_rejects_a_missing_directory() {
    let out = run_cli(&["bundle", "validate", "/nonexistent/serin-bundle"], &[]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("bundle.yaml"), "{out:#?}");
}

#[test]
fn client_verbs_without_a_server_exit_2_with_one_line() {
    for server in ["http://127.0.0.1:9", "https://127.0.0.1:9"] {
        let out = run_cli(
            &["bundle", "list"],
            &[("SERIN_SERVER", server), ("SERIN_TOKEN", "x")],
        );
        assert_eq!(out.code, 2, "{out:#?}");
        assert!(
            out.stderr
                .starts_with("error: could not reach the Serin server"),
            "{}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = run_cli(&["bundle", "show"], &[]);
    assert_eq!(out.code, 2, "{out:#?}");
    let out = run_cli(
        &[
            "bundle",
            "show",
            "support-3",
            "--server",
            "http://127.0.0.1:9",
        ],
        &[],
    );
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("AGENT@N"), "{}", out.stderr);
}
