//! Approvals against a real server: a release adding an irreversible tool waits for a second
//! person, is denied, then approved and proceeds; requests expire into denials; agents' own
//! requests are bounded; and a candidate whose approval requests pile up is rolled back by
//! its guardrail.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, Receiver, Server, copy_dir, sample_bundle};

const POLICY: &str = "\
require: [capability_change, promote_full, unkill]
expiry: 15m
agent_requests: {expiry: 10m, max_pending: 3}
";

/// support@1 (the sample) and support@2, which adds an irreversible `refund` tool.
fn push_refund_bundle(server: &Server, admin: &str, work: &Path) {
    let cli = server.cli(admin);
    cli.run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    let dir = work.join("support");
    copy_dir(&sample_bundle(), &dir);
    std::fs::write(
        dir.join("tools/refund.json"),
        json!({
            "name": "refund",
            "description": "Refund an order.",
            "input_schema": {"type": "object", "properties": {"order": {"type": "string"},
                "amount": {"type": "number"}}, "required": ["order", "amount"]},
            "capability": {"effect": "irreversible", "owner": "payments-team",
                "limits": {"max_amount": 500}}
        })
        .to_string(),
    )
    .unwrap();
    let out = cli.run(&["bundle", "push", dir.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("support@2"), "{}", out.stdout);
    cli.run(&[
        "deploy", "support", "--env", "prod", "--bundle", "1", "--force", "--reason", "initial",
    ])
    .ok();
}

/// A server (tick 100 ms) with prod and staging, support@1 stable in prod, support@2 adding an
/// irreversible tool, and `policy` applied to prod by the admin.
struct Setup {
    _backend: Backend,
    server: Server,
    admin: String,
    work: tempfile::TempDir,
}

fn setup(policy: &str) -> Setup {
    let backend = Backend::sqlite();
    let server = Server::start_with(&backend, 0, &["--tick-ms", "100"]);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let work = tempfile::tempdir().unwrap();
    push_refund_bundle(&server, &admin, work.path());
    let file = write(work.path(), "policy.yaml", policy);
    let out = server
        .cli(&admin)
        .run(&["approvals", "policy", "--env", "prod", "--file", &file])
        .ok();
    assert!(
        out.stdout.contains("prod approval policy v1"),
        "{}",
        out.stdout
    );
    Setup {
        _backend: backend,
        server,
        admin,
        work,
    }
}

fn write(work: &Path, name: &str, text: &str) -> String {
    let p = work.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

/// The pending requests of prod, polled until `n` are there.
async fn pending(server: &Server, token: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = server
            .http(token)
            .get("/v1/approvals?env=prod&status=pending")
            .await;
        assert_eq!(status, 200, "{body}");
        let items = body.as_array().unwrap().clone();
        if items.len() >= n {
            return items;
        }
        assert!(Instant::now() < deadline, "no {n} pending requests: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `release start` of support@2 in prod.
fn start_args<'a>(plan: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "release", "start", "support", "--env", "prod", "--bundle", "2", "--plan", plan,
    ];
    a.extend_from_slice(extra);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_adding_an_irreversible_tool_waits_is_denied_then_approved_and_proceeds() {
    let hooks = Receiver::start().await;
    let Setup {
        _backend,
        server,
        admin,
        work,
    } = setup(&format!(
        "{POLICY}notify: [{{webhook: \"{}\"}}]\n",
        hooks.url
    ));
    let requester = server.token(&admin, "deployer").await;
    let other_deployer = server.token(&admin, "deployer").await;
    let approver = server.token(&admin, "approver").await;
    let viewer = server.token(&admin, "viewer").await;
    let plan = write(
        work.path(),
        "plan.yaml",
        "steps:\n  - canary: {weight: 10%, min_duration: 1h}\n",
    );

    // The start waits; the approver denies it; the CLI says so and exits 1.
    let cli = server.cli(&requester);
    let args: Vec<String> = start_args(&plan, &[])
        .iter()
        .map(|s| s.to_string())
        .collect();
    let waiting = std::thread::spawn(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        cli.run(&a)
    });
    let first = pending(&server, &approver, 1).await.remove(0);
    assert_eq!(first["kind"], "release_start", "{first}");
    assert_eq!(first["bundle"], 2, "{first}");
    let changes = first["details"]["capabilities"].to_string();
    assert!(
        changes.contains("refund") && changes.contains("irreversible"),
        "{first}"
    );
    assert!(
        first["details"]["readiness"]["verdict"].is_string(),
        "{first}"
    );
    let id = first["id"].as_str().unwrap().to_owned();
    // Neither a viewer nor the requester (a deployer) can decide.
    let (status, body) = server
        .http(&viewer)
        .post(
            &format!("/v1/approvals/{id}/approve"),
            &json!({"reason": "lgtm"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = server
        .http(&requester)
        .post(
            &format!("/v1/approvals/{id}/approve"),
            &json!({"reason": "lgtm"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // A decision needs a reason.
    let (status, body) = server
        .http(&approver)
        .post(&format!("/v1/approvals/{id}/deny"), &json!({"reason": " "}))
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/reason")),
        "{body}"
    );
    let out = server.cli(&approver).run(&[
        "approvals",
        "deny",
        &id,
        "--reason",
        "refund limit not reviewed by payments",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("denied"), "{}", out.stdout);
    let denied = waiting.join().unwrap();
    assert_eq!(denied.code, 1, "{denied:?}");
    assert!(
        denied.stderr.contains("denied by") && denied.stderr.contains("refund limit not reviewed"),
        "{denied:?}"
    );
    let (status, body) = server
        .http(&admin)
        .get("/v1/envs/prod/agents/support/releases")
        .await;
    assert_eq!(
        (status, body.as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );
    // A decided request stays decided.
    let (status, body) = server
        .http(&approver)
        .post(
            &format!("/v1/approvals/{id}/approve"),
            &json!({"reason": "oops"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // Asked again without waiting, approved by another person, spent by the requester.
    let out = server
        .cli(&requester)
        .run(&[start_args(&plan, &["--no-wait", "--output", "json"]).as_slice()].concat())
        .ok();
    let second: Value = serde_json::from_str(&out.stdout).unwrap();
    let id2 = second["id"].as_str().unwrap().to_owned();
    assert_ne!(id2, id);
    // Repeating the action while it waits finds the same request rather than filing another.
    let out = server
        .cli(&requester)
        .run(&[start_args(&plan, &["--no-wait", "--output", "json"]).as_slice()].concat())
        .ok();
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap()["id"],
        id2.as_str()
    );
    // Spending a request that is not approved yet is refused.
    let out = server
        .cli(&requester)
        .run(&start_args(&plan, &["--approval", &id2]));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not approved"), "{out:?}");
    let out = server
        .cli(&approver)
        .run(&[
            "approvals",
            "approve",
            &id2,
            "--reason",
            "payments reviewed the limit",
        ])
        .ok();
    assert!(out.stdout.contains("approved"), "{}", out.stdout);
    // Only the requester spends it.
    let out = server
        .cli(&other_deployer)
        .run(&start_args(&plan, &["--approval", &id2]));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("only the requester"), "{out:?}");
    let out = server
        .cli(&requester)
        .run(&start_args(&plan, &["--approval", &id2]))
        .ok();
    assert!(out.stdout.contains("support@2"), "{}", out.stdout);
    let (status, body) = server
        .http(&viewer)
        .get("/v1/envs/prod/agents/support/release")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["release"]["phase"], "canary", "{body}");
    let (_, spent) = server
        .http(&viewer)
        .get(&format!("/v1/approvals/{id2}"))
        .await;
    assert!(spent["used_at_ms"].is_i64(), "{spent}");

    // Every step is in the audit log, and the webhook heard of each request and decision.
    let (_, audit) = server.http(&admin).get("/v1/audit?limit=200").await;
    let audit = audit.to_string();
    for a in [
        "approvals.policy",
        "approval.request",
        "approval.deny",
        "approval.approve",
        "approval.use",
        "release.approved",
    ] {
        assert!(
            audit.contains(&format!("\"{a}\"")),
            "{a} missing from {audit}"
        );
    }
    let events: Vec<String> = hooks
        .wait_for(4)
        .await
        .iter()
        .map(|v| v["event"].as_str().unwrap_or("-").to_owned())
        .collect();
    for e in ["approval.request", "approval.deny", "approval.approve"] {
        assert!(
            events.iter().any(|x| x == e),
            "{e} not delivered: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_expire_into_denials_and_nobody_approves_their_own() {
    let Setup {
        _backend,
        server,
        admin,
        work: _work,
    } = setup(POLICY);
    let approver = server.token(&admin, "approver").await;
    let http = server.http(&admin);
    let (status, body) = http
        .post(
            "/v1/envs/prod/agents/support/kill",
            &json!({"reason": "incident 7"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Kill is never held; unkill is.
    let (status, body) = http
        .post(
            "/v1/envs/prod/agents/support/unkill",
            &json!({"reason": "fixed"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["approval"]["kind"], "unkill");
    // An admin who asked cannot approve their own request.
    let (status, body) = http
        .post(
            &format!("/v1/approvals/{id}/approve"),
            &json!({"reason": "mine"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requester"),
        "{body}"
    );
    // Past its expiry it reads expired at once, cannot be approved, and the sweep records it.
    server
        .advance_clock(&admin, Duration::from_secs(16 * 60))
        .await;
    let (_, now) = http.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(now["status"], "expired", "{now}");
    let (status, body) = server
        .http(&approver)
        .post(
            &format!("/v1/approvals/{id}/approve"),
            &json!({"reason": "late"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, audit) = http.get("/v1/audit?limit=100").await;
        if audit.to_string().contains("approval.expire") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep never expired {id}: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = server
        .cli(&admin)
        .run(&["approvals", "list", "--env", "prod", "--status", "expired"])
        .ok();
    assert!(
        out.stdout.contains(&id) && out.stdout.contains("unkill"),
        "{}",
        out.stdout
    );
    // An expired request permits nothing: the agent stays killed.
    let (status, body) = http
        .post(
            "/v1/envs/prod/agents/support/unkill",
            &json!({"reason": "fixed", "approval": id}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    // An approval named where none is needed is refused, not silently ignored.
    let (status, body) = http
        .post(
            "/v1/envs/prod/agents/support/kill",
            &json!({"reason": "again", "approval": id}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/approval")),
        "{body}"
    );
    // A flood from one agent stops at the policy's pending cap (3 here) with 429.
    let sdk = server.http(&server.token(&admin, "sdk").await);
    for n in 0..4 {
        let (status, body) = sdk
            .post(
                "/v1/approvals",
                &json!({"env": "prod", "agent": "support", "bundle": 1, "tool": "refund",
                    "args_digest": format!("sha256:{n}"), "reason": "refund"}),
            )
            .await;
        let want = if n < 3 { 201 } else { 429 };
        assert_eq!(status, want, "request {n}: {body}");
    }
    // Bad policies are refused with the field; nothing is written.
    let (status, body) = http
        .req(reqwest::Method::PUT, "/v1/envs/prod/approval-policy")
        .json(&json!({"require": ["unkill"], "approvers": ["viewer"]}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    let body: Value = body.json().await.unwrap();
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/approvers/0")),
        "{body}"
    );
    let (_, current) = http.get("/v1/envs/prod/approval-policy").await;
    assert_eq!(current["version"], 1, "{current}");
    let (status, body) = http.get("/v1/envs/prdo/approval-policy").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.to_string().contains("prod"),
        "the nearest env is suggested: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_ask_within_bounds_and_a_growing_backlog_rolls_the_candidate_back() {
    // Agents may have many requests pending here; the operator actions are not reserved.
    let Setup {
        _backend,
        server,
        admin,
        work,
    } = setup("agent_requests: {expiry: 10m, max_pending: 1000}\n");
    let sdk = server.token(&admin, "sdk").await;
    let approver = server.token(&admin, "approver").await;
    let agent = server.http(&sdk);
    let ask = |bundle: u64, version: u64, n: usize| {
        json!({"env": "prod", "agent": "support", "bundle": bundle, "tool": "refund",
            "args_digest": format!("sha256:{n}"), "reason": "refund over 100",
            "request_id": format!("r-{bundle}-{n}"), "snapshot_version": version})
    };

    // Bad requests name their field; unknown names suggest the nearest.
    let mut bad = ask(2, 1, 0);
    bad["agent"] = json!("suport");
    let (status, body) = agent.post("/v1/approvals", &bad).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (404, Some("/agent")),
        "{body}"
    );
    assert!(body.to_string().contains("support"), "{body}");
    let mut bad = ask(2, 1, 0);
    bad["bundle"] = json!(9);
    let (status, _) = agent.post("/v1/approvals", &bad).await;
    assert_eq!(status, 404);
    let mut bad = ask(2, 1, 0);
    bad["expires_in_ms"] = json!(0);
    let (status, body) = agent.post("/v1/approvals", &bad).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/expires_in_ms")),
        "{body}"
    );

    // An agent's request is decided by a person; the agent learns of it by long-polling.
    let (status, filed) = agent.post("/v1/approvals", &ask(1, 1, 0)).await;
    assert_eq!(status, 201, "{filed}");
    let id = filed["id"].as_str().unwrap().to_owned();
    let poll = {
        let agent = server.http(&sdk);
        let id = id.clone();
        tokio::spawn(async move {
            agent
                .get(&format!("/v1/approvals/{id}?wait_ms=20000"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = server
        .http(&approver)
        .post(
            &format!("/v1/approvals/{id}/approve"),
            &json!({"reason": "ok, under limit"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, decided) = poll.await.unwrap();
    assert_eq!(
        (status, decided["status"].as_str()),
        (200, Some("approved")),
        "{decided}"
    );
    // An sdk token reads agents' requests only, and cannot decide them.
    let (status, _) = agent
        .post(&format!("/v1/approvals/{id}/deny"), &json!({"reason": "x"}))
        .await;
    assert_eq!(status, 403);

    // The release judges approvals: canary vs control, per request.
    let plan = write(
        work.path(),
        "plan.yaml",
        "steps:\n  - canary: {weight: 20%, min_duration: 1h}\n\
         guardrails:\n  approvals: {max_ratio: 2, denial_max_ratio: 2, wait: 5m}\n\
         on_failure: rollback\n",
    );
    let out = server
        .cli(&admin)
        .run(&[
            "release",
            "start",
            "support",
            "--env",
            "prod",
            "--bundle",
            "2",
            "--plan",
            &plan,
            "--override-readiness",
            "--reason",
            "test",
        ])
        .ok();
    assert!(out.stdout.contains("support@2"), "{}", out.stdout);
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    let version = snap["version"].as_u64().unwrap();
    // Both arms serve traffic at the routed share: 800 stable, 200 canary.
    let mut events = Vec::new();
    for i in 0..1000 {
        let (arm, bundle) = if i % 5 == 0 {
            ("canary", "support@2")
        } else {
            ("stable", "support@1")
        };
        events.push(json!({
            "request_id": format!("o-{i}"), "agent": "support", "env": "prod",
            "snapshot_version": version, "bundle": bundle, "arm": arm, "user": format!("u{i}"),
            "latency_ms": 900.0, "cost_usd": 0.01, "error": null, "refused": false,
        }));
    }
    let (status, body) = server
        .http(&sdk)
        .post("/v1/outcomes", &json!({"events": events}))
        .await;
    assert_eq!(
        (status, body["rejected"].as_u64()),
        (200, Some(0)),
        "{body}"
    );
    // The candidate asks for a person on a quarter of its requests; the stable on 1%.
    for n in 0..50 {
        let (status, body) = agent.post("/v1/approvals", &ask(2, version, n)).await;
        assert_eq!(status, 201, "{body}");
    }
    for n in 0..8 {
        let (status, body) = agent.post("/v1/approvals", &ask(1, version, 100 + n)).await;
        assert_eq!(status, 201, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let release = loop {
        let (_, body) = server
            .http(&admin)
            .get("/v1/envs/prod/agents/support/release")
            .await;
        if body["release"]["phase"] == "rolled_back" {
            break body;
        }
        assert!(Instant::now() < deadline, "not rolled back: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        release.to_string().contains("approvals.max_ratio"),
        "the failing guardrail is named: {release}"
    );
    // Each request was counted once, however often the sweep ran.
    let (_, listed) = server
        .http(&admin)
        .get("/v1/approvals?env=prod&kind=tool_call&status=pending&limit=1000")
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 58, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_to_full_waits_for_an_approver_and_earlier_steps_do_not() {
    let Setup {
        _backend,
        server,
        admin,
        work,
    } = setup("require: [promote_full]\n");
    let deployer = server.token(&admin, "deployer").await;
    let approver = server.token(&admin, "approver").await;
    // Only capability changes are not reserved here: the start goes through at once.
    let plan = write(
        work.path(),
        "plan.yaml",
        "steps:\n  - canary: {weight: 10%, min_duration: 1h}\n  - canary: {weight: 50%, min_duration: 1h}\n",
    );
    let out = server.cli(&deployer).run(&start_args(&plan, &[])).ok();
    assert!(out.stdout.contains("support@2"), "{}", out.stdout);
    let http = server.http(&deployer);
    let promote = "/v1/envs/prod/agents/support/release/promote";
    let forced = json!({"force": true, "reason": "skip the wait in this test"});
    // 10% -> 50% is not reserved.
    let (status, body) = http.post(promote, &forced).await;
    assert_eq!(status, 200, "{body}");
    // 50% -> 100% (completing the release) is.
    let (status, body) = http.post(promote, &forced).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["approval"]["kind"], "promote_full", "{body}");
    let id = body["approval"]["id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .http(&approver)
        .post(
            &format!("/v1/approvals/{id}/approve"),
            &json!({"reason": "numbers look fine"}),
        )
        .await;
    assert_eq!(status, 200);
    // An approval for a promotion cannot be spent on an unkill.
    let (status, body) = http
        .post(
            "/v1/envs/prod/agents/support/unkill",
            &json!({"reason": "x", "approval": id}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("/approval")),
        "{body}"
    );
    let mut with = forced.clone();
    with["approval"] = json!(id);
    let (status, body) = http.post(promote, &with).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["release"]["phase"], "completed", "{body}");
}
