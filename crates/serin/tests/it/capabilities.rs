//! The capability catalog against a real server: a bundle adding an irreversible tool shows
//! it first in `serin bundle diff`, `serin capabilities` and the release report; a write tool
//! without an owner is refused by the CLI and the API alike; names are checked.

use std::path::Path;

use serde_json::{Value, json};

use crate::harness::{Backend, Server, copy_dir, files_json, repo_root, sample_bundle};

/// The sample bundle (a read tool and a write tool) plus `examples/tools/refund.json`.
fn with_refund(work: &Path) -> std::path::PathBuf {
    let dir = work.join("with-refund");
    copy_dir(&sample_bundle(), &dir);
    std::fs::copy(
        repo_root().join("examples/tools/refund.json"),
        dir.join("tools/refund.json"),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_irreversible_tool_is_called_out_first_everywhere() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();

    // support@1: the sample, whose lookup_account is read (declared in bundle.yaml) and
    // create_support_ticket write (declared in its tool file).
    let out = cli
        .run(&["bundle", "validate", sample_bundle().to_str().unwrap()])
        .ok();
    assert!(out.stdout.contains("(0 warnings)"), "{}", out.stdout);
    cli.run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    let v2 = with_refund(work.path());
    let out = cli.run(&["bundle", "push", v2.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("support@2"), "{}", out.stdout);

    // The diff leads with the capability change, flagged as needing approval.
    let out = cli.run(&["bundle", "diff", "support@1", "support@2"]).ok();
    let text = out.stdout;
    let flagged = "! added irreversible tool refund (owner payments-team, max_amount 500)";
    let at = text.find(flagged).unwrap_or_else(|| panic!("{text}"));
    let tools = text.find("tools:").unwrap_or_else(|| panic!("{text}"));
    assert!(at < tools, "capabilities must come first:\n{text}");
    let out = cli
        .run(&[
            "bundle",
            "diff",
            "support@1",
            "support@2",
            "--output",
            "json",
        ])
        .ok();
    let diff: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        diff["capabilities"],
        json!([{"tool": "refund", "kind": "added", "class": "irreversible",
            "detail": "added irreversible tool refund (owner payments-team, max_amount 500)",
            "needs_approval": true}]),
        "{diff}"
    );
    // The way back removes it, which needs no approval.
    let out = cli.run(&["bundle", "diff", "support@2", "support@1"]).ok();
    assert!(
        out.stdout
            .contains("    removed irreversible tool refund (owner payments-team, max_amount 500)"),
        "{}",
        out.stdout
    );

    // Stable only, then during a release of support@2: both, and the change.
    cli.run(&[
        "deploy", "support", "--env", "prod", "--bundle", "1", "--force", "--reason", "initial",
    ])
    .ok();
    let out = cli.run(&["capabilities", "support", "--env", "prod"]).ok();
    assert!(
        out.stdout
            .contains("support in prod: stable support@1, no release running"),
        "{}",
        out.stdout
    );
    let plan = repo_root().join("examples/plans/canary.yaml");
    cli.run(&[
        "release",
        "start",
        "support",
        "--env",
        "prod",
        "--bundle",
        "2",
        "--plan",
        plan.to_str().unwrap(),
    ])
    .ok();
    let out = cli.run(&["capabilities", "support", "--env", "prod"]).ok();
    let text = out.stdout;
    assert!(
        text.contains("stable support@1, candidate support@2"),
        "{text}"
    );
    let candidate = text
        .find("candidate support@2\n")
        .unwrap_or_else(|| panic!("{text}"));
    let (stable_part, candidate_part) = text.split_at(candidate);
    assert!(!stable_part.contains("refund"), "{text}");
    let row = |part: &str, tool: &str| -> Vec<String> {
        part.lines()
            .find(|l| l.trim_start().starts_with(&format!("{tool} ")))
            .unwrap_or_else(|| panic!("no row for {tool}:\n{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        row(stable_part, "lookup_account"),
        ["lookup_account", "read", "identity-team", "-"]
    );
    assert_eq!(
        row(stable_part, "create_support_ticket"),
        [
            "create_support_ticket",
            "write",
            "support-team",
            "max_calls_per_request=3"
        ]
    );
    assert_eq!(
        row(candidate_part, "refund"),
        ["refund", "irreversible", "payments-team", "max_amount=500"]
    );
    assert!(candidate_part.contains(&format!("  {flagged}")), "{text}");
    let out = cli
        .run(&[
            "capabilities",
            "support",
            "--env",
            "prod",
            "--output",
            "json",
        ])
        .ok();
    let caps: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(caps["stable"]["bundle"], "support@1");
    assert_eq!(caps["candidate"]["bundle"], "support@2");
    assert_eq!(caps["stable"]["tools"].as_array().unwrap().len(), 2);
    let refund = caps["candidate"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "refund")
        .unwrap();
    assert_eq!(
        refund,
        &json!({"name": "refund", "class": "irreversible", "declared": true,
            "owner": "payments-team", "limits": {"max_amount": 500}})
    );
    assert_eq!(caps["changes"][0]["needs_approval"], true, "{caps}");
    assert_eq!(caps["changes"].as_array().unwrap().len(), 1, "{caps}");

    // The release report opens with the same change, in Markdown and JSON.
    let viewer = server.http(&admin);
    let resp = viewer
        .req(
            reqwest::Method::GET,
            "/v1/envs/prod/agents/support/release/report",
        )
        .send()
        .await
        .unwrap();
    let md = resp.text().await.unwrap();
    let caps_at = md
        .find("## Capabilities (support@1 → support@2)")
        .unwrap_or_else(|| panic!("{md}"));
    assert!(caps_at < md.find("## Readiness at start").unwrap(), "{md}");
    assert!(
        md.contains(
            "- **needs approval** — added irreversible tool refund (owner payments-team, max_amount 500)"
        ),
        "{md}"
    );
    let (status, report) = viewer
        .get("/v1/envs/prod/agents/support/release/report?format=json")
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["capabilities"][0]["tool"], "refund", "{report}");
    assert_eq!(report["capabilities"][0]["needs_approval"], true);
    let (_, view) = viewer.get("/v1/envs/prod/agents/support/release").await;
    assert_eq!(view["capabilities"][0]["kind"], "added", "{view}");

    // Names are checked, with the nearest suggested; both refusals exit 1.
    let out = cli.run(&["capabilities", "suport", "--env", "prod"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("did you mean support?"), "{out:#?}");
    let out = cli.run(&["capabilities", "support", "--env", "prdo"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("did you mean prod?"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_tool_without_an_owner_is_refused_by_cli_and_api() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("ownerless");
    copy_dir(&sample_bundle(), &dir);
    std::fs::write(
        dir.join("tools/close_account.json"),
        r#"{"name": "close_account", "description": "Close an account.",
            "input_schema": {"type": "object"}, "capability": {"effect": "write"}}"#,
    )
    .unwrap();

    let out = cli.run(&["bundle", "validate", dir.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stdout.contains(
            "error: tools/close_account.json /capability/owner: a write tool needs an `owner`"
        ),
        "{out:#?}"
    );
    let out = cli.run(&["bundle", "push", dir.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");

    // The API runs the same validation on the same files.
    let (status, body) = server
        .http(&admin)
        .post("/v1/bundles", &json!({ "files": files_json(&dir) }))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_bundle", "{body}");
    let problems = body["error"]["details"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["file"] == "tools/close_account.json"
                && p["location"] == "/capability/owner"
                && p["code"] == "missing_owner"),
        "{body}"
    );

    // Declared in bundle.yaml instead, for a tool that does not exist: the nearest is named.
    std::fs::remove_file(dir.join("tools/close_account.json")).unwrap();
    let manifest = std::fs::read_to_string(dir.join("bundle.yaml")).unwrap();
    std::fs::write(
        dir.join("bundle.yaml"),
        format!("{manifest}  lookup_acount: {{effect: read}}\n"),
    )
    .unwrap();
    let out = cli.run(&["bundle", "validate", dir.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stdout.contains(
            "error: bundle.yaml /capabilities/lookup_acount: capabilities names tool `lookup_acount`, which the bundle does not define; did you mean lookup_account?"
        ),
        "{out:#?}"
    );
    let (status, body) = server
        .http(&admin)
        .post("/v1/bundles", &json!({ "files": files_json(&dir) }))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["details"]["problems"][0]["location"], "/capabilities/lookup_acount",
        "{body}"
    );
}
