//! Readiness: the template, then the gate end to end through the CLI against a real server.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, Cli, Server, push_two_bundles, run_cli};

#[test]
fn readiness_init_writes_the_seed_checklist_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readiness.yaml");
    let f = file.to_str().unwrap();
    let out = run_cli(
        &[
            "readiness",
            "init",
            "--template",
            "seed-checklist",
            "--file",
            f,
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("30 checks"), "{}", out.stdout);
    let text = std::fs::read_to_string(&file).unwrap();
    serin_core::readiness::Policy::parse_and_validate(&text).unwrap();
    let out = run_cli(&["readiness", "init", "--file", f], &[]);
    assert_eq!(out.code, 2, "no silent overwrite: {out:#?}");
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    let out = run_cli(
        &[
            "readiness",
            "init",
            "--template",
            "nope",
            "--file",
            f,
            "--force",
        ],
        &[],
    );
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("seed-checklist"), "{}", out.stderr);
}

// ----- the gate, end to end through the CLI against a real server -------------------------

const POLICY: &str = "\
require:
  - oncall_owner
  - deploy_announced
  - candidate_pinned
  - rollback_target_warm
  - auto_rollback_wired
  - initial_exposure_bounded
  - high_value_tenants_excluded
  - offline_eval_passed
warn: [dashboard_linked]
block_if:
  - {item: deploy_announced, status: fail}
rollout_mode:
  max_exposure: 5%
  high_value_tenants: [bigcorp]
items:
  oncall_owner: {title: An on-call owner is named for the launch, category: rollback, owner_hint: sre}
";

const PLAN: &str = "\
steps:
  - canary: {weight: 5%, min_duration: 1h, min_requests: 100}
  - canary: {weight: 50%, min_duration: 1h, min_requests: 100}
exclude_tenants: [bigcorp]
on_failure: rollback
";

/// support@1 deployed as the stable of prod, support@2 pushed as the candidate.
fn two_bundles(cli: &Cli, work: &std::path::Path) {
    push_two_bundles(cli, work);
    cli.run(&[
        "deploy", "support", "--env", "prod", "--bundle", "1", "--force", "--reason", "initial",
    ])
    .ok();
}

fn check_json(cli: &Cli, plan: &str) -> (i32, Value) {
    let out = cli.run(&[
        "readiness",
        "check",
        "support",
        "--env",
        "prod",
        "--bundle",
        "2",
        "--plan",
        plan,
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    (out.code, v)
}

fn unmet(v: &Value) -> BTreeSet<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["level"] == "required" && i["status"] != "pass")
        .map(|i| i["key"].as_str().unwrap().to_owned())
        .collect()
}

fn status_of(v: &Value, key: &str) -> String {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == key)
        .unwrap_or_else(|| panic!("no item {key} in {v}"))["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_refuses_until_ready_expiry_flips_it_and_overrides_are_audited() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    two_bundles(&cli, work.path());
    let policy = work.path().join("readiness.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let policy = policy.to_str().unwrap();
    let plan = work.path().join("plan.yaml");
    std::fs::write(&plan, PLAN).unwrap();
    let plan = plan.to_str().unwrap();

    // Without a policy nothing is required, and the check says so.
    let out = cli
        .run(&[
            "readiness",
            "check",
            "support",
            "--env",
            "prod",
            "--bundle",
            "2",
        ])
        .ok();
    assert!(out.stdout.contains("no readiness policy"), "{}", out.stdout);

    let out = cli
        .run(&["readiness", "apply", "support", "--env", "prod", policy])
        .ok();
    assert!(out.stdout.contains("policy v1"), "{}", out.stdout);
    let out = cli
        .run(&["readiness", "apply", "support", "--env", "prod", policy])
        .ok();
    assert!(out.stdout.contains("unchanged"), "{}", out.stdout);

    // Evidence missing: not ready, exit 1, exactly the missing items.
    let (code, v) = check_json(&cli, plan);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["ready"], false);
    assert_eq!(
        unmet(&v),
        set(&["oncall_owner", "deploy_announced", "offline_eval_passed"]),
        "{v:#}"
    );
    assert_eq!(v["policy_version"], 1);
    // Computed items say how they were computed.
    let pinned = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == "candidate_pinned")
        .unwrap();
    assert_eq!(pinned["source"], "computed");
    assert!(
        pinned["how"]
            .as_str()
            .unwrap()
            .contains("claude-opus-4-7-20260108"),
        "{pinned}"
    );
    let out = cli.run(&[
        "readiness",
        "check",
        "support",
        "--env",
        "prod",
        "--bundle",
        "2",
        "--plan",
        plan,
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    for needle in [
        "ITEM",
        "oncall_owner",
        "missing",
        "attested",
        "computed",
        "not ready",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {}", out.stdout);
    }
    // Without the plan, plan items are missing too.
    let out = cli.run(&[
        "readiness",
        "check",
        "support",
        "--env",
        "prod",
        "--bundle",
        "2",
    ]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("no --plan given"), "{}", out.stdout);

    // The gate: release start refused with the same table; nothing started.
    let start = [
        "release", "start", "support", "--env", "prod", "--bundle", "2", "--plan", plan,
    ];
    let out = cli.run(&start);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("oncall_owner"), "{}", out.stdout);
    assert!(out.stderr.contains("release refused"), "{}", out.stderr);
    let (status, list) = server
        .http(&admin)
        .get("/v1/envs/prod/agents/support/releases")
        .await;
    assert_eq!(status, 200);
    assert_eq!(list, json!([]), "a refused start leaves no release");

    // A deployer may not override; an admin may, with a reason, and it is audited.
    let deployer = server.cli(&server.token(&admin, "deployer").await);
    let mut forced: Vec<&str> = start.to_vec();
    forced.extend([
        "--override-readiness",
        "--reason",
        "sev2 hotfix, owner on call",
    ]);
    let out = deployer.run(&forced);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("admin"), "{}", out.stderr);
    cli.run(&forced).ok();
    let audit = cli.run(&["audit", "list", "--output", "json"]).ok();
    let audit: Value = serde_json::from_str(&audit.stdout).unwrap();
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "release.readiness_override")
        .unwrap_or_else(|| panic!("no override in the audit log: {audit:#}"));
    assert_eq!(entry["details"]["reason"], "sev2 hotfix, owner on call");
    assert!(
        entry["details"]["unmet"]
            .as_array()
            .unwrap()
            .contains(&json!("oncall_owner"))
    );
    let report = cli
        .run(&["release", "report", "support", "--env", "prod"])
        .ok();
    assert!(
        report.stdout.contains("gate overridden") && report.stdout.contains("sev2 hotfix"),
        "{}",
        report.stdout
    );
    cli.run(&[
        "release",
        "abort",
        "support",
        "--env",
        "prod",
        "--reason",
        "redo it properly",
    ])
    .ok();

    // Evidence recorded and computed items satisfied: ready, exit 0.
    cli.run(&[
        "evidence",
        "set",
        "support",
        "--env",
        "prod",
        "oncall_owner",
        "--status",
        "pass",
        "--owner",
        "sam (sre)",
        "--evidence",
        "pagerduty:support-primary",
        "--expires",
        "4s",
    ])
    .ok();
    cli.run(&[
        "evidence",
        "set",
        "support",
        "--env",
        "prod",
        "deploy_announced",
        "--status",
        "pass",
        "--owner",
        "jordan",
        "--evidence",
        "https://chat.example/launch",
    ])
    .ok();
    // An eval on another set than the bundle's eval_set (golden-v3) does not count.
    cli.run(&[
        "eval",
        "record",
        "support",
        "--bundle",
        "2",
        "--set",
        "smoke",
        "--score",
        "1",
        "--threshold",
        "0.5",
    ])
    .ok();
    let (code, v) = check_json(&cli, plan);
    assert_eq!(code, 1);
    assert_eq!(unmet(&v), set(&["offline_eval_passed"]), "{v:#}");
    let out = cli
        .run(&[
            "eval",
            "record",
            "support",
            "--bundle",
            "2",
            "--set",
            "golden-v3",
            "--score",
            "0.94",
            "--threshold",
            "0.9",
        ])
        .ok();
    assert!(out.stdout.contains("pass"), "{}", out.stdout);
    let (code, v) = check_json(&cli, plan);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["ready"], true);
    assert_eq!(status_of(&v, "oncall_owner"), "pass");
    let oncall = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == "oncall_owner")
        .unwrap();
    assert_eq!(oncall["owner"], "sam (sre)");
    assert_eq!(oncall["source"], "attested");

    // The evidence expires: not ready again.
    server.advance_clock(&admin, Duration::from_secs(5)).await;
    let (code, v) = check_json(&cli, plan);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(status_of(&v, "oncall_owner"), "expired");
    assert_eq!(unmet(&v), set(&["oncall_owner"]));

    // A failed announcement fires the block_if rule even though the item is required anyway.
    cli.run(&[
        "evidence",
        "set",
        "support",
        "--env",
        "prod",
        "oncall_owner",
        "--status",
        "pass",
        "--owner",
        "sam (sre)",
    ])
    .ok();
    cli.run(&[
        "evidence",
        "set",
        "support",
        "--env",
        "prod",
        "deploy_announced",
        "--status",
        "fail",
        "--owner",
        "jordan",
        "--next-action",
        "post in #launches",
    ])
    .ok();
    let (code, v) = check_json(&cli, plan);
    assert_eq!(code, 1);
    assert_eq!(v["blocked_by"].as_array().unwrap().len(), 1, "{v:#}");
    cli.run(&[
        "evidence",
        "set",
        "support",
        "--env",
        "prod",
        "deploy_announced",
        "--status",
        "pass",
        "--owner",
        "jordan",
    ])
    .ok();

    // Ready: release start is allowed and the report shows the gate it passed.
    let out = cli.run(&start).ok();
    assert!(out.stdout.contains("CANARY"), "{}", out.stdout);
    let report = cli
        .run(&[
            "release", "report", "support", "--env", "prod", "--output", "json",
        ])
        .ok();
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(report["readiness"]["ready"], true, "{report:#}");
    assert_eq!(report["readiness"]["policy_version"], 1);
    assert!(report["readiness"].get("override").is_none());

    // Evidence history keeps every record; the list shows the newest.
    let out = cli
        .run(&[
            "evidence",
            "list",
            "support",
            "--env",
            "prod",
            "deploy_announced",
            "--output",
            "json",
        ])
        .ok();
    let history: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 3, "{history:#}");
    assert_eq!(history[0]["status"], "pass");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_readiness_input_is_refused_and_nothing_is_stored() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    two_bundles(&cli, work.path());
    let http = server.http(&admin);
    let path = "/v1/envs/prod/agents/support/readiness";

    // Policies: an unknown item and a never-evaluable block_if rule, with their pointers.
    for (yaml, field, needle) in [
        ("require: [oncall_ownr]\n", "/require/0", "oncall_ownr"),
        (
            "block_if:\n  - {computed: deploy_announced}\n",
            "/block_if/0/computed",
            "attested",
        ),
        ("require: [candidate_pinned]\nsurprise: 1\n", "", "surprise"),
    ] {
        let (status, body) = http
            .send(
                http.req(reqwest::Method::PUT, &format!("{path}/policy"))
                    .json(&json!({ "yaml": yaml })),
            )
            .await;
        assert_eq!(status, 422, "{yaml}: {body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{body}");
        if !field.is_empty() {
            assert_eq!(body["error"]["field"], field, "{body}");
        }
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
        let file = work.path().join("bad.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = cli.run(&[
            "readiness",
            "apply",
            "support",
            "--env",
            "prod",
            file.to_str().unwrap(),
        ]);
        assert_eq!(out.code, 2, "{out:#?}");
        assert!(out.stderr.contains(needle), "{}", out.stderr);
    }
    let (status, _) = http.get(&format!("{path}/policy")).await;
    assert_eq!(status, 404, "no policy was stored");

    // Evidence: unknown key, computed key, bad status, empty owner, bad expiry.
    for (key, body, field) in [
        (
            "oncall_ownr",
            json!({"status": "pass", "owner": "sam"}),
            "key",
        ),
        (
            "candidate_pinned",
            json!({"status": "pass", "owner": "sam"}),
            "key",
        ),
        (
            "deploy_announced",
            json!({"status": "done", "owner": "sam"}),
            "/status",
        ),
        (
            "deploy_announced",
            json!({"status": "pass", "owner": "  "}),
            "/owner",
        ),
        (
            "deploy_announced",
            json!({"status": "pass", "owner": "sam", "expires": "7w"}),
            "/expires",
        ),
        (
            "deploy_announced",
            json!({"status": "pass", "owner": "sam", "evidence": ""}),
            "/evidence",
        ),
    ] {
        let (status, answer) = http
            .send(
                http.req(reqwest::Method::PUT, &format!("{path}/evidence/{key}"))
                    .json(&body),
            )
            .await;
        assert_eq!(status, 422, "{key} {body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let out = cli.run(&[
        "evidence",
        "set",
        "support",
        "--env",
        "prod",
        "deploy_announced",
        "--status",
        "ok",
        "--owner",
        "sam",
    ]);
    assert_eq!(out.code, 1, "the server refuses the status: {out:#?}");
    assert!(
        out.stderr.contains("pass, fail, partial, n/a"),
        "{}",
        out.stderr
    );
    let (status, list) = http.get(&format!("{path}/evidence")).await;
    assert_eq!(status, 200);
    assert_eq!(list, json!([]), "no evidence was stored");

    // Evals: unknown bundle, empty set, wrong digest, non-number score.
    let evals = "/v1/agents/support/bundles";
    let (status, _) = http
        .post(
            &format!("{evals}/9/evals"),
            &json!({"set": "golden-v3", "score": 0.9, "threshold": 0.8}),
        )
        .await;
    assert_eq!(status, 404);
    for (body, field) in [
        (json!({"set": "", "score": 0.9, "threshold": 0.8}), "/set"),
        (
            json!({"set": "golden-v3", "score": 0.9, "threshold": 0.8, "digest": "sha256:00"}),
            "/digest",
        ),
        (
            json!({"set": "golden-v3", "score": "high", "threshold": 0.8}),
            "/score",
        ),
    ] {
        let (status, answer) = http.post(&format!("{evals}/2/evals"), &body).await;
        assert!(status == 422 || status == 409, "{body}: {status} {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (_, list) = http.get(&format!("{evals}/2/evals")).await;
    assert_eq!(list, json!([]), "no eval was stored");

    // An override needs a reason (API) and the flag needs --reason (CLI).
    let (status, answer) = http
        .post(
            "/v1/envs/prod/agents/support/releases",
            &json!({"bundle": 2, "plan": {"steps": [{"canary": {"weight": "5%"}}]}, "override_readiness": true}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "/reason");
    let out = cli.run(&[
        "release",
        "start",
        "support",
        "--env",
        "prod",
        "--bundle",
        "2",
        "--plan",
        "x.yaml",
        "--override-readiness",
    ]);
    assert_eq!(out.code, 2, "{out:#?}");

    let audit = cli.run(&["audit", "list", "--output", "json"]).ok();
    let audit: Value = serde_json::from_str(&audit.stdout).unwrap();
    assert!(
        audit.as_array().unwrap().iter().all(|e| {
            let a = e["action"].as_str().unwrap();
            !a.starts_with("readiness.") && !a.starts_with("evidence.") && !a.starts_with("eval.")
        }),
        "refused input left audit entries: {audit:#}"
    );
    server.stop();
}
