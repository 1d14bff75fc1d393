//! Full releases through the CLI against a real server, traffic reported as
//! outcomes, a real local webhook receiver.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, Cli, Receiver, Server, copy_dir, sample_bundle};

fn event(i: usize, arm: &str, bundle: &str, error: bool, version: u64) -> Value {
    json!({
        "request_id": format!("{arm}-{bundle}-{i}"), "agent": "support", "env": "prod",
        "snapshot_version": version, "bundle": bundle, "arm": arm, "user": format!("u{i}"),
        "latency_ms": 500.0 + (i % 40) as f64, "cost_usd": 0.01,
        "tool_calls": {"ok": 1, "failed": 0},
        "error": if error { json!({"class": "permanent"}) } else { Value::Null },
    })
}

/// Posts interleaved traffic: `n` canary requests with the given error period
/// (0 = none) and 9 stable requests for each.
/// Each event carries the snapshot version it was routed under, as an SDK's do: the
/// monitor judges it at that version's canary share.
async fn traffic(server: &Server, token: &str, start: usize, n: usize, canary_error_every: usize) {
    let (_, snap) = server.http(token).get("/v1/envs/prod/snapshot").await;
    let version = snap["version"].as_u64().unwrap();
    let mut events = Vec::new();
    for i in start..start + n {
        for j in 0..9 {
            let k = i * 9 + j;
            events.push(event(k, "stable", "support@1", k % 100 == 0, version));
        }
        let err = canary_error_every > 0 && i % canary_error_every == 0;
        events.push(event(i, "canary", "support@2", err, version));
    }
    for chunk in events.chunks(2000) {
        let (status, body) = server
            .http(token)
            .post("/v1/outcomes", &json!({ "events": chunk }))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["rejected"], 0, "{body}");
    }
}

fn plan(dir: &std::path::Path, promotion: &str, on_failure: &str, hook: &str) -> String {
    let path = dir.join(format!("plan-{promotion}-{on_failure}.yaml"));
    std::fs::write(
        &path,
        format!(
            "steps:\n  - canary: {{weight: 5%, min_duration: 1s, min_requests: 100}}\n  - canary: {{weight: 50%, min_duration: 1s, min_requests: 100}}\n\
             promotion: {promotion}\nstickiness: user\nexclude_tenants: [bigcorp]\n\
             guardrails:\n  error_rate: {{max: 5%, max_increase: 2pp}}\n  settings: {{min_requests: 100}}\n\
             on_failure: {on_failure}\nnotify: [{{webhook: \"{hook}\"}}]\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

async fn setup() -> (Backend, Server, String, tempfile::TempDir) {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    cli.run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    let dir = work.path().join("support");
    copy_dir(&sample_bundle(), &dir);
    std::fs::write(
        dir.join("prompt.md"),
        "You help with access requests via `create_support_ticket(`.\n",
    )
    .unwrap();
    cli.run(&["bundle", "push", dir.to_str().unwrap()]).ok();
    cli.run(&[
        "deploy", "support", "--env", "prod", "--bundle", "1", "--force", "--reason", "initial",
    ])
    .ok();
    (backend, server, admin, work)
}

fn status(cli: &Cli) -> Value {
    let out = cli
        .run(&[
            "release", "status", "support", "--env", "prod", "--output", "json",
        ])
        .ok();
    serde_json::from_str(&out.stdout).unwrap()
}

async fn wait_phase(cli: &Cli, phase: &str, step: Option<u64>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = status(cli);
        if v["release"]["phase"] == phase && step.is_none_or(|s| v["release"]["step"] == s) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "never reached {phase} {step:?}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_promotion_is_refused_until_the_gate_holds_then_completes() {
    let (_backend, server, admin, work) = setup().await;
    let cli = server.cli(&admin);
    let hook = Receiver::start().await;
    let plan = plan(work.path(), "manual", "rollback", &hook.url);
    let out = cli
        .run(&[
            "release", "start", "support", "--env", "prod", "--bundle", "2", "--plan", &plan,
        ])
        .ok();
    assert!(
        out.stdout.contains("CANARY at step 1/2 (5%)"),
        "{}",
        out.stdout
    );

    // A second release of the same agent is refused with the reason.
    let out = cli.run(&[
        "release", "start", "support", "--env", "prod", "--bundle", "2", "--plan", &plan,
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("already has an active release"),
        "{}",
        out.stderr
    );
    // Deploying directly while a release runs is refused too.
    let out = cli.run(&[
        "deploy", "support", "--env", "prod", "--bundle", "2", "--force", "--reason", "x",
    ]);
    assert_eq!(out.code, 1, "{out:#?}");

    // Too early: the gate lists what is missing, exit 1.
    let out = cli.run(&["release", "promote", "support", "--env", "prod"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stdout.contains("missing:") && out.stdout.contains("canary requests"),
        "{}",
        out.stdout
    );

    traffic(&server, &admin, 0, 150, 0).await;
    server
        .advance_clock(&admin, Duration::from_millis(1100))
        .await;
    let out = cli
        .run(&["release", "promote", "support", "--env", "prod"])
        .ok();
    assert!(out.stdout.contains("step 2/2 (50%)"), "{}", out.stdout);
    // The SDK-facing snapshot carries the new weight and the exclusions drop at the last step.
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    assert_eq!(
        snap["agents"]["support"]["release"]["weight"], "50%",
        "{snap}"
    );
    assert!(
        snap["agents"]["support"]["release"]["exclude_tenants"].is_null(),
        "{snap}"
    );

    let out = cli.run(&["release", "promote", "support", "--env", "prod", "--force"]);
    assert_eq!(out.code, 2, "--force needs --reason (usage): {out:#?}");
    traffic(&server, &admin, 150, 150, 0).await;
    server
        .advance_clock(&admin, Duration::from_millis(1100))
        .await;
    cli.run(&["release", "promote", "support", "--env", "prod"])
        .ok();
    let v = status(&cli);
    assert_eq!(v["release"]["phase"], "completed", "{v}");
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    assert_eq!(
        snap["agents"]["support"]["stable"]["id"], "support@2",
        "{snap}"
    );
    assert_eq!(
        snap["agents"]["support"]["previous"]["id"], "support@1",
        "old stable stays warm"
    );
    assert!(snap["agents"]["support"]["release"].is_null());
    let got = hook.wait_for(1).await;
    assert_eq!(got[0]["phase"], "completed", "{got:?}");

    let out = cli
        .run(&["release", "report", "support", "--env", "prod"])
        .ok();
    assert!(
        out.stdout.contains("# Release support-prod-1"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("| promote |"), "{}", out.stdout);
    assert!(
        out.stdout.contains("## Evidence at each transition"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("| error_rate.max | pass |"),
        "per-step values of both arms: {}",
        out.stdout
    );
    let out = cli
        .run(&[
            "release", "report", "support", "--env", "prod", "--output", "json",
        ])
        .ok();
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["phase"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_guardrail_rolls_back_automatically_and_the_webhook_is_told() {
    let (_backend, server, admin, work) = setup().await;
    let cli = server.cli(&admin);
    let hook = Receiver::start().await;
    let plan = plan(work.path(), "auto", "rollback", &hook.url);
    cli.run(&[
        "release", "start", "support", "--env", "prod", "--bundle", "2", "--plan", &plan,
    ])
    .ok();
    // The canary errs on one request in four.
    traffic(&server, &admin, 0, 400, 4).await;
    let v = wait_phase(&cli, "rolled_back", None).await;
    assert!(
        v["release"]["failure"]["guardrail"]
            .as_str()
            .unwrap()
            .starts_with("error_rate"),
        "{v}"
    );
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    assert!(
        snap["agents"]["support"]["release"].is_null(),
        "canary drained: {snap}"
    );
    assert_eq!(snap["agents"]["support"]["stable"]["id"], "support@1");
    let got = hook.wait_for(1).await;
    assert_eq!(got[0]["initiator"], "system", "{got:?}");
    assert_eq!(got[0]["phase"], "rolled_back");
    assert!(
        got[0]["failure"]["canary_value"].as_f64().unwrap() > 0.2,
        "{got:?}"
    );
    let v = status(&cli);
    assert!(v["notifications"][0]["delivered_at"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_promotion_halt_abort_and_resume_after_sigkill() {
    let (backend, server, admin, work) = setup().await;
    let cli = server.cli(&admin);
    let hook = Receiver::start().await;

    // Auto: healthy traffic promotes through both steps to completion.
    let auto = plan(work.path(), "auto", "halt", &hook.url);
    cli.run(&[
        "release", "start", "support", "--env", "prod", "--bundle", "2", "--plan", &auto,
    ])
    .ok();
    traffic(&server, &admin, 0, 150, 0).await;
    wait_phase(&cli, "canary", Some(1)).await;

    // SIGKILL mid-release: it resumes where it was.
    server.kill9();
    let server = Server::start(&backend);
    let cli = server.cli(&admin);
    let v = status(&cli);
    assert_eq!(
        (
            v["release"]["phase"].as_str(),
            v["release"]["step"].as_u64()
        ),
        (Some("canary"), Some(1)),
        "{v}"
    );
    // Halt: a regression at the 50% step freezes the weight and notifies.
    traffic(&server, &admin, 1000, 400, 4).await;
    let v = wait_phase(&cli, "halted", Some(1)).await;
    assert_eq!(
        v["release"]["failure"]["guardrail"]
            .as_str()
            .map(|g| g.starts_with("error_rate")),
        Some(true)
    );
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    assert_eq!(
        snap["agents"]["support"]["release"]["weight"], "50%",
        "halt keeps the weight: {snap}"
    );
    hook.wait_for(1).await;

    // Abort drains it, with a reason.
    let out = cli
        .run(&[
            "release",
            "abort",
            "support",
            "--env",
            "prod",
            "--reason",
            "giving up",
        ])
        .ok();
    assert!(out.stdout.contains("ABORTED"), "{}", out.stdout);
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    assert!(snap["agents"]["support"]["release"].is_null());
    let out = cli.run(&["release", "resume", "support", "--env", "prod"]);
    assert_eq!(out.code, 1, "nothing active to resume: {out:#?}");

    // A manual rollback during a release goes through the release.
    cli.run(&[
        "release", "start", "support", "--env", "prod", "--bundle", "2", "--plan", &auto,
    ])
    .ok();
    let out = cli
        .run(&["rollback", "support", "--env", "prod", "--reason", "pager"])
        .ok();
    assert!(out.stdout.contains("stable support@1"), "{}", out.stdout);
    let v = status(&cli);
    assert_eq!(v["release"]["phase"], "rolled_back", "{v}");
    let got = hook.wait_for(3).await;
    assert!(
        got.iter().any(|n| n["initiator"]
            .as_str()
            .is_some_and(|i| i.starts_with("token:"))),
        "{got:?}"
    );

    // Bad plans are refused with the field named, nothing stored.
    let bad = work.path().join("bad.yaml");
    std::fs::write(&bad, "steps:\n  - canary: {weight: 50%, min_duration: 1s, min_requests: 10}\n  - canary: {weight: 5%, min_duration: 1s, min_requests: 10}\n").unwrap();
    let out = cli.run(&[
        "release",
        "start",
        "support",
        "--env",
        "prod",
        "--bundle",
        "2",
        "--plan",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("/steps/1"), "{}", out.stderr);
    let (status_code, body) = server
        .http(&admin)
        .post(
            "/v1/envs/prod/agents/support/releases",
            &json!({"bundle": 2, "plan": {"steps": [], "colour": 1}}),
        )
        .await;
    assert_eq!(status_code, 422, "{body}");
    let (status_code, body) = server
        .http(&admin)
        .post("/v1/envs/staging/agents/support/releases", &json!({"bundle": 2, "plan": {"steps": [{"canary": {"weight": "5%", "min_requests": 10}}]}}))
        .await;
    assert_eq!(status_code, 409, "no stable in staging: {body}");
}

#[test]
fn serin_demo_rolls_back_the_regression_and_the_healthy_demo_completes() {
    let out = crate::harness::run_cli(&["demo"], &[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains("confirmed the breach"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("webhook delivered: rolled_back"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("# Release support-prod-1"),
        "{}",
        out.stdout
    );
    let out = crate::harness::run_cli(&["demo", "--healthy"], &[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains("webhook delivered: completed"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("stable support@2, previous support@1"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_many_points_loses_nothing_and_duplicates_nothing() {
    let (backend, mut server, admin, work) = setup().await;
    let hook = Receiver::start().await;
    let plan = plan(work.path(), "auto", "rollback", &hook.url);
    server
        .cli(&admin)
        .run(&[
            "release", "start", "support", "--env", "prod", "--bundle", "2", "--plan", &plan,
        ])
        .ok();
    let mut seen_steps = Vec::new();
    // Traffic in slices, a SIGKILL after each: the release must keep its
    // place, never restart, and finish exactly once.
    for round in 0..6 {
        traffic(&server, &admin, round * 60, 60, 0).await;
        tokio::time::sleep(Duration::from_millis(300 + 150 * round as u64)).await;
        server.kill9();
        server = Server::start(&backend);
        let v = status(&server.cli(&admin));
        let step = v["release"]["step"].as_u64().unwrap();
        let phase = v["release"]["phase"].as_str().unwrap().to_owned();
        assert_eq!(v["release"]["id"], "support-prod-1", "{v}");
        if let Some((last_step, last_phase)) = seen_steps.last().cloned() {
            assert!(
                step >= last_step,
                "went backwards: {last_phase}/{last_step} -> {phase}/{step}"
            );
        }
        seen_steps.push((step, phase));
    }
    traffic(&server, &admin, 1000, 400, 0).await;
    let cli = server.cli(&admin);
    let v = wait_phase(&cli, "completed", None).await;
    let history = v["release"]["history"].as_array().unwrap();
    let starts = history.iter().filter(|t| t["event"] == "start").count();
    let completes = history.iter().filter(|t| t["to"] == "completed").count();
    assert_eq!((starts, completes), (1, 1), "{history:?}");
    let (_, releases) = server
        .http(&admin)
        .get("/v1/envs/prod/agents/support/releases")
        .await;
    assert_eq!(
        releases.as_array().unwrap().len(),
        1,
        "no duplicate release"
    );
    let out = cli.run(&["audit", "verify"]).ok();
    assert!(out.stdout.contains("intact"), "{}", out.stdout);
    let (_, audit) = server.http(&admin).get("/v1/audit?limit=1000").await;
    let completions = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "release.complete")
        .count();
    assert_eq!(completions, 1, "one completion audited");
    assert_eq!(hook.wait_for(1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_is_retried_and_never_blocks_the_release() {
    let (_backend, server, admin, work) = setup().await;
    let cli = server.cli(&admin);
    let live = Receiver::start().await;
    // Nothing listens on port 9 here: every delivery to it fails at once.
    let dead = "http://127.0.0.1:9/hooks";
    let path = work.path().join("plan-two-hooks.yaml");
    std::fs::write(
        &path,
        format!(
            "steps:\n  - canary: {{weight: 5%, min_duration: 1s, min_requests: 100}}\n\
             promotion: auto\non_failure: rollback\n\
             guardrails:\n  error_rate: {{max: 5%}}\n  settings: {{min_requests: 100}}\n\
             notify: [{{webhook: \"{dead}\"}}, {{webhook: \"{}\"}}]\n",
            live.url
        ),
    )
    .unwrap();
    cli.run(&[
        "release",
        "start",
        "support",
        "--env",
        "prod",
        "--bundle",
        "2",
        "--plan",
        path.to_str().unwrap(),
    ])
    .ok();
    traffic(&server, &admin, 0, 150, 0).await;
    wait_phase(&cli, "completed", None).await;
    // The live receiver got its notification although the other one is down.
    assert_eq!(live.wait_for(1).await[0]["phase"], "completed");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = status(&cli);
        let dead_row = v["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["url"] == dead)
            .cloned()
            .unwrap();
        if dead_row["attempts"].as_i64().unwrap() >= 2 {
            assert!(dead_row["delivered_at"].is_null(), "{dead_row}");
            assert!(
                dead_row["last_error"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty()),
                "{dead_row}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead webhook was not retried: {dead_row}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resp = server
        .http(&admin)
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("serin_webhook_deliveries_total{result=\"failed\"}"),
        "{text}"
    );
}
