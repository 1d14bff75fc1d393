//! Rolling waves end to end: a three-region fleet of real SDK instances (each following the
//! snapshot stream with its region, deciding locally, reporting outcomes through its own
//! recorder) runs a waved release whose candidate regresses in one region only. That
//! region's wave is rolled back on its own evidence; the other two waves complete; and
//! `serin fleet` shows every instance on the right bundle.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serin_core::decision::Arm;
use serin_core::outcome::{OutcomeError, OutcomeEvent, ToolCalls};
use serin_sdk::{RequestContext, Serin};

use crate::harness::{Backend, Cli, Server, push_two_bundles};

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

async fn sdk(server: &Server, token: &str, region: &str, windows: bool) -> Serin {
    Serin::builder(server.url.clone(), token.to_owned(), "prod")
        .instance(format!("pod-{region}"))
        .region(region)
        .outcome_windows(windows)
        .backoff(Duration::from_millis(50), Duration::from_millis(250))
        .start_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap()
}

fn outcome(
    d: &serin_sdk::SdkDecision,
    request_id: String,
    user: &str,
    region: &str,
    err: bool,
) -> OutcomeEvent {
    let mut e: OutcomeEvent = serde_json::from_value(json!({
        "request_id": request_id, "agent": "support", "env": "prod",
        "snapshot_version": d.snapshot_version,
        "bundle": d.bundle.as_ref().map(|b| b.id.clone()).unwrap_or_default(),
        "arm": d.arm, "user": user, "region": region,
        "latency_ms": 400.0, "cost_usd": 0.01,
    }))
    .unwrap();
    e.tool_calls = ToolCalls { ok: 1, failed: 0 };
    if err {
        e.error = Some(OutcomeError {
            class: serin_core::outcome::ErrorClass::Permanent,
            code: None,
        });
    }
    e
}

fn release(cli: &Cli) -> Value {
    let out = cli
        .run(&[
            "release", "status", "support", "--env", "prod", "--output", "json",
        ])
        .ok();
    serde_json::from_str(&out.stdout).unwrap()
}

fn wave_states(v: &Value) -> Vec<(String, String)> {
    v["release"]["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_owned(),
                w["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_in_one_region_rolls_back_that_wave_and_the_others_complete() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());
    cli.run(&[
        "deploy", "support", "--env", "prod", "--bundle", "1", "--force", "--reason", "initial",
    ])
    .ok();
    let sdk_token = server.token(&admin, "sdk").await;
    // us reports event by event; eu and ap through aggregated windows.
    let fleet = [
        sdk(&server, &sdk_token, REGIONS[0], false).await,
        sdk(&server, &sdk_token, REGIONS[1], true).await,
        sdk(&server, &sdk_token, REGIONS[2], true).await,
    ];

    // eu-west second, so the release must go on past it.
    let plan = "steps:
  - canary: {weight: 50%, min_duration: 1s, min_requests: 150, require: no_fail}
  - canary: {weight: 100%, min_duration: 1s, min_requests: 100}
promotion: auto
stickiness: user
guardrails:
  error_rate: {max_increase: 2pp}
  settings: {min_requests: 100}
on_failure: rollback
waves:
  by: region
  bake: 1s
  min_outcomes: 100
  list:
    - {name: us, members: [us-east]}
    - {name: eu, members: [eu-west]}
    - {name: ap, members: [ap-south, ap-east]}
";
    let path = work.path().join("plan.yaml");
    std::fs::write(&path, plan).unwrap();
    let out = cli
        .run(&[
            "release",
            "start",
            "support",
            "--env",
            "prod",
            "--bundle",
            "2",
            "--plan",
            path.to_str().unwrap(),
            "--output",
            "json",
        ])
        .ok();
    let started: Value = serde_json::from_str(&out.stdout).unwrap();
    // ap-east is in the plan but no SDK reports it: said at start, never blocking.
    let warnings = started["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{started}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("wave ap: no SDK instance of prod reports region ap-east"),
        "{warnings:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut round = 0usize;
    let last = loop {
        let v = release(&cli);
        if v["release"]["phase"] != "canary" {
            break v;
        }
        assert!(Instant::now() < deadline, "stuck: {v}");
        for (sdk, region) in fleet.iter().zip(REGIONS) {
            for i in 0..60 {
                let user = format!("u{}", (round * 60 + i) % 3_000);
                let ctx = RequestContext {
                    request_id: format!("{region}-{round}-{i}"),
                    user: Some(user.clone()),
                    region: Some(region.to_owned()),
                    ..RequestContext::default()
                };
                let d = sdk.decide("support", &ctx).unwrap();
                // The candidate breaks in eu-west only (a region-specific dependency).
                let err = if d.arm == Arm::Canary && region == "eu-west" {
                    i.is_multiple_of(3)
                } else {
                    (round * 60 + i).is_multiple_of(100)
                };
                let e = outcome(&d, ctx.request_id.clone(), &user, region, err);
                assert!(sdk.record(e));
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    };

    // Every wave but eu went to the candidate; eu was drained on its own evidence.
    assert_eq!(last["release"]["phase"], "halted", "{last}");
    assert_eq!(
        wave_states(&last),
        vec![
            ("us".to_owned(), "done".to_owned()),
            ("eu".to_owned(), "rolled_back".to_owned()),
            ("ap".to_owned(), "done".to_owned())
        ],
        "{last}"
    );
    let eu = &last["release"]["waves"][1]["failure"];
    assert_eq!(eu["guardrail"], "error_rate.max_increase", "{eu}");
    assert!(eu["canary_value"].as_f64().unwrap() > 0.2, "{eu}");
    // The halt names the wave; the gate explains what a person may do.
    let history = last["release"]["history"].to_string();
    assert!(
        history.contains("wave eu: guardrail error_rate"),
        "{history}"
    );
    assert!(history.contains("wave eu was rolled back"), "{history}");
    // Every view tells the same story: the status lines and the report's waves section.
    let human = cli
        .run(&["release", "status", "support", "--env", "prod"])
        .ok();
    assert!(
        human.stdout.contains("waves    by region"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("eu           rolled_back"),
        "{}",
        human.stdout
    );
    let report = cli
        .run(&["release", "report", "support", "--env", "prod"])
        .ok();
    assert!(report.stdout.contains("## Waves"), "{}", report.stdout);
    assert!(
        report.stdout.contains("**eu** — rolled_back"),
        "{}",
        report.stdout
    );
    // The overview counts every wave's steps (3 waves x 2 steps).
    let out = cli.run(&["status", "--output", "json"]).ok();
    let overview: Value = serde_json::from_str(&out.stdout).unwrap();
    let prod = overview["envs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["env"] == "prod" || e["name"] == "prod")
        .unwrap_or_else(|| panic!("{overview}"));
    let support = &prod["agents"][0];
    assert_eq!(support["release"]["steps"], 6, "{support}");
    // The audit log has the scoped rollback.
    let audit = cli.run(&["audit", "list", "--output", "json"]).ok();
    assert!(
        audit.stdout.contains("release.wave_rollback"),
        "{}",
        audit.stdout
    );

    // Each instance serves what its wave says, as the engine decides and the fleet shows.
    let routed: Vec<(String, Arm)> = fleet
        .iter()
        .zip(REGIONS)
        .map(|(sdk, region)| {
            let ctx = RequestContext {
                request_id: "probe".into(),
                user: Some("probe-user".into()),
                region: Some(region.to_owned()),
                ..RequestContext::default()
            };
            let d = sdk.decide("support", &ctx).unwrap();
            (d.bundle.unwrap().id, d.arm)
        })
        .collect();
    assert_eq!(routed[0].0, "support@2");
    assert_eq!(routed[1], ("support@1".to_owned(), Arm::Stable));
    assert_eq!(routed[2].0, "support@2");

    let deadline = Instant::now() + Duration::from_secs(15);
    let fleet_view = loop {
        let out = cli
            .run(&["fleet", "support", "--env", "prod", "--output", "json"])
            .ok();
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        let serves: Vec<(String, String, String)> = v["serving"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["instance"].as_str().unwrap().to_owned(),
                    s["serves"].as_str().unwrap().to_owned(),
                    s["wave"].as_str().unwrap_or("-").to_owned(),
                )
            })
            .collect();
        let want = vec![
            (
                "pod-ap-south".to_owned(),
                "support@2".to_owned(),
                "ap".to_owned(),
            ),
            (
                "pod-eu-west".to_owned(),
                "support@1".to_owned(),
                "eu".to_owned(),
            ),
            (
                "pod-us-east".to_owned(),
                "support@2".to_owned(),
                "us".to_owned(),
            ),
        ];
        if serves == want {
            break v;
        }
        assert!(Instant::now() < deadline, "{serves:?}\n{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let regions: Vec<&str> = fleet_view["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, vec!["ap-south", "eu-west", "us-east"]);
    let table = cli.run(&["fleet", "support", "--env", "prod"]).ok();
    assert!(table.stdout.contains("WAVE"), "{}", table.stdout);
    assert!(table.stdout.contains("pod-eu-west"), "{}", table.stdout);

    // An unknown agent is refused with the nearest name.
    let bad = cli.run(&["fleet", "suport", "--env", "prod"]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr.contains("did you mean support"),
        "{}",
        bad.stderr
    );

    // A person drains everything: the abort is one command.
    cli.run(&[
        "release",
        "abort",
        "support",
        "--env",
        "prod",
        "--reason",
        "eu regression",
    ])
    .ok();
    let v = release(&cli);
    assert_eq!(v["release"]["phase"], "aborted", "{v}");
    for sdk in &fleet {
        sdk.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_waves_are_refused_with_the_field_and_a_restart_resumes_a_waved_release() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());
    cli.run(&[
        "deploy", "support", "--env", "prod", "--bundle", "1", "--force", "--reason", "initial",
    ])
    .ok();
    let http = server.http(&admin);
    let start = |plan: Value| {
        let http = &http;
        async move {
            http.post(
                "/v1/envs/prod/agents/support/releases",
                &json!({ "bundle": 2, "plan": plan }),
            )
            .await
        }
    };
    let base = json!({
        "steps": [{"canary": {"weight": "50%", "min_requests": 10}},
                  {"canary": {"weight": "100%", "min_requests": 10}}],
        "waves": {"by": "region", "list": [
            {"name": "us", "members": ["us-east"]},
            {"name": "eu", "members": ["eu-west"]}]}
    });
    let mut overlap = base.clone();
    overlap["waves"]["list"][1]["members"] = json!(["eu-west", "us-east"]);
    let mut zero_cap = base.clone();
    zero_cap["waves"]["max_step"] = json!("0%");
    let mut unknown = base.clone();
    unknown["waves"]["by"] = json!("zone");
    for (plan, field, words) in [
        (
            overlap,
            "/plan/waves/list/1/members",
            "us-east is in two waves",
        ),
        (zero_cap, "/plan/waves/max_step", "above 0%"),
        (unknown, "/plan/waves/by", "unknown variant"),
    ] {
        let (status, body) = start(plan).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
        assert!(
            body["error"]["message"].to_string().contains(words),
            "{body}"
        );
    }
    // Nothing was written.
    let (status, _) = http.get("/v1/envs/prod/agents/support/release").await;
    assert_eq!(status, 404);

    let (status, body) = start(base).await;
    assert_eq!(status, 201, "{body}");
    let routed = |snap: &Value| snap["agents"]["support"]["release"]["waves"].clone();
    let (_, snap) = http.get("/v1/envs/prod/snapshot").await;
    let before = routed(&snap);
    assert_eq!(before[0]["weight"], "50%", "{snap}");
    assert_eq!(before[1]["weight"], "0%", "{snap}");

    // A restart keeps the waves, their states and the routing.
    let server = {
        drop(http);
        server.stop();
        Server::start(&backend)
    };
    let http = server.http(&admin);
    let (status, v) = http.get("/v1/envs/prod/agents/support/release").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["release"]["waves"][0]["state"], "active", "{v}");
    assert_eq!(v["release"]["waves"][1]["state"], "pending", "{v}");
    let (_, snap) = http.get("/v1/envs/prod/snapshot").await;
    assert_eq!(routed(&snap), before);
    // The decision names the wave; a region in no wave stays on the stable.
    let (status, d) = http
        .post(
            "/v1/decide",
            &json!({"agent": "support", "env": "prod", "request_id": "r1", "user": "u1", "region": "eu-west"}),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(
        (d["arm"].as_str(), d["wave"].as_str()),
        (Some("stable"), Some("eu"))
    );
    let (_, d) = http
        .post(
            "/v1/decide",
            &json!({"agent": "support", "env": "prod", "request_id": "r1", "user": "u1", "region": "mars"}),
        )
        .await;
    assert_eq!(d["rule"], "outside_waves", "{d}");
}
