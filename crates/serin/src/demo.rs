//! `serin demo`: the whole loop on an embedded server. Two bundles, a
//! simulated fleet deciding through the real SDK and reporting outcomes, a
//! release under an automatic plan, a local webhook receiver, and the deploy
//! report at the end. By default the candidate breaks one workload's tool
//! calls, which only shows at scale; `--healthy` ramps cleanly to 100%.

// `serde_json::Value["key"]` yields Null for a missing key; it cannot panic.
#![allow(clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rand::Rng;
use serde_json::{Value, json};
use serin_core::decision::Arm;
use serin_core::guardrails::sim::{ArmModel, sim_rng};
use serin_core::outcome::OutcomeEvent;
use serin_sdk::{RequestContext, Serin};

use crate::bench::Embedded;
use crate::{CheckFailed, out};

const BUNDLE_YAML: &str = include_str!("../../../examples/bundles/support/bundle.yaml");
const PROMPT: &str = include_str!("../../../examples/bundles/support/prompt.md");
const EXAMPLE_LOCKED: &str =
    include_str!("../../../examples/bundles/support/examples/locked-account.yaml");
const EXAMPLE_STUCK: &str =
    include_str!("../../../examples/bundles/support/examples/stuck-access-request.yaml");
const TOOL_TICKET: &str =
    include_str!("../../../examples/bundles/support/tools/create_support_ticket.json");
const TOOL_LOOKUP: &str =
    include_str!("../../../examples/bundles/support/tools/lookup_account.json");

const WORKLOADS: [&str; 3] = ["lookup", "ticket", "refund"];
/// Requests the simulated fleet serves per second.
const RATE: u64 = 1500;

fn files(prompt_suffix: &str) -> Value {
    json!({
        "bundle.yaml": BUNDLE_YAML,
        "prompt.md": format!("{PROMPT}{prompt_suffix}"),
        "examples/locked-account.yaml": EXAMPLE_LOCKED,
        "examples/stuck-access-request.yaml": EXAMPLE_STUCK,
        "tools/create_support_ticket.json": TOOL_TICKET,
        "tools/lookup_account.json": TOOL_LOOKUP,
    })
}

fn plan(webhook: &str) -> Value {
    json!({
        "steps": [
            {"canary": {"weight": "5%", "min_duration": "6s", "min_requests": 300}},
            {"canary": {"weight": "25%", "min_duration": "6s", "min_requests": 1500}},
            {"canary": {"weight": "50%", "min_duration": "6s", "min_requests": 3000}},
        ],
        "promotion": "auto",
        "stickiness": "user",
        "exclude_tenants": ["bigcorp"],
        "guardrails": {
            "error_rate": {"max": "2%", "max_increase": "1pp"},
            "latency_p95_ms": {"max_increase": 200},
            "tool_call_success": {"min": "97%"},
            "refusal_rate": {"max_ratio": 1.5},
            "settings": {"min_requests": 200},
        },
        "on_failure": "rollback",
        "notify": [{"webhook": webhook}],
    })
}

/// A local webhook receiver: prints and keeps what it gets.
async fn receiver() -> anyhow::Result<(String, Arc<Mutex<Vec<Value>>>)> {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hooks/serin",
        axum::routing::post(move |body: axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                if let Ok(mut g) = sink.lock() {
                    g.push(body.0);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks/serin", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, got))
}

fn blank_event() -> OutcomeEvent {
    OutcomeEvent {
        request_id: String::new(),
        trace_id: None,
        agent: "support".into(),
        env: "prod".into(),
        snapshot_version: 0,
        bundle: String::new(),
        arm: Arm::Stable,
        user: None,
        tenant: None,
        workload: None,
        instance: None,
        region: Some("local".into()),
        pool: None,
        at_ms: None,
        latency_ms: 0.0,
        stages: Default::default(),
        cost_usd: 0.0,
        tokens: Default::default(),
        error: None,
        tool_calls: Default::default(),
        refused: false,
        eval: None,
    }
}

/// The fleet: decides each request through the SDK and reports its outcome,
/// drawn from the stable model or, for the candidate, a model that may break
/// the `refund` workload's tool calls.
fn spawn_fleet(
    sdk: Serin,
    healthy: bool,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut rng = sim_rng(7);
        let stable = ArmModel::baseline();
        let mut broken = ArmModel::baseline();
        // One workload in three: visible only once enough canary traffic flows.
        broken.tool_call_failure_rate = 0.12;
        let mut served = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tick.tick().await;
            for _ in 0..RATE / 10 {
                served += 1;
                let user = format!("user-{}", rng.random_range(0..20_000u32));
                let tenant = if rng.random_bool(0.1) {
                    "bigcorp".to_owned()
                } else {
                    format!("t-{}", rng.random_range(0..300u32))
                };
                let workload = WORKLOADS[rng.random_range(0..WORKLOADS.len())];
                let ctx = RequestContext {
                    user: Some(user.clone()),
                    tenant: Some(tenant.clone()),
                    workload: Some(workload.to_owned()),
                    instance: Some(format!("pod-{}", served % 8)),
                    ..RequestContext::new(format!("req-{served}"))
                };
                let Ok(d) = sdk.decide("support", &ctx) else {
                    continue;
                };
                let Some(bundle) = d.bundle.as_ref() else {
                    continue;
                };
                let mut e = blank_event();
                e.request_id = ctx.request_id.clone();
                e.snapshot_version = d.snapshot_version;
                e.bundle = bundle.id.clone();
                e.arm = d.arm;
                e.user = Some(user);
                e.tenant = Some(tenant);
                e.workload = Some(workload.to_owned());
                e.instance = ctx.instance.clone();
                let model = if d.arm == Arm::Canary && !healthy && workload == "refund" {
                    &broken
                } else {
                    &stable
                };
                model.fill(&mut e, &mut rng);
                sdk.record(e);
            }
        }
        served
    })
}

fn line_for(v: &Value) -> String {
    let r = &v["release"];
    let step = r["step"].as_u64().unwrap_or(0) as usize;
    let weight = v["weight"]
        .as_str()
        .or_else(|| r["plan"]["steps"][step]["canary"]["weight"].as_str())
        .unwrap_or("?");
    let verdicts: Vec<String> = v["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["status"] != "pass")
        .map(|x| {
            format!(
                "{}={}",
                x["guardrail"].as_str().unwrap_or("?"),
                x["status"].as_str().unwrap_or("?")
            )
        })
        .collect();
    format!(
        "  {:<11} step {}/{} at {:>3}  canary requests {:>6}  {}",
        r["phase"].as_str().unwrap_or("?"),
        step + 1,
        r["plan"]["steps"].as_array().map_or(0, Vec::len),
        weight,
        v["canary_requests"],
        if verdicts.is_empty() {
            "all guardrails pass".to_owned()
        } else {
            verdicts.join(" ")
        },
    )
}

pub async fn run(healthy: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    out::line("serin demo: an embedded server on a temporary SQLite store");
    let server = Embedded::bare(64, Duration::from_millis(250)).await?;
    let (hook_url, hooks) = receiver().await?;
    out::line(&format!("  webhook receiver listening at {hook_url}"));

    let v1 = server
        .post("/v1/bundles", json!({ "files": files("") }))
        .await?;
    let v2 = server
        .post(
            "/v1/bundles",
            json!({ "files": files("\nWhen a refund is asked for, call tools with the amount in cents.\n") }),
        )
        .await?;
    out::line(&format!(
        "  pushed {} (stable) and {} (candidate)",
        v1["id"].as_str().unwrap_or("?"),
        v2["id"].as_str().unwrap_or("?")
    ));
    // Envs exist only once created; prod is strict, so the first stable is a forced deploy.
    server
        .post("/v1/envs", json!({ "name": "prod", "strict": true }))
        .await?;
    server
        .post(
            "/v1/envs/prod/agents/support/deploy",
            json!({ "bundle": 1, "force": true, "reason": "demo: initial stable" }),
        )
        .await?;
    let sdk_token = server
        .post("/v1/tokens", json!({ "role": "sdk", "name": "demo-fleet" }))
        .await?["token"]
        .as_str()
        .context("no sdk token")?
        .to_owned();
    let sdk = Serin::builder(server.base.clone(), sdk_token, "prod")
        .outcomes(20_000, 500, Duration::from_millis(200))
        .start()
        .await
        .map_err(|e| anyhow!("the SDK could not start: {e}"))?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fleet = spawn_fleet(sdk.clone(), healthy, stop.clone());
    out::line(&format!(
        "  a simulated fleet serves {RATE} requests/s through the SDK ({})",
        if healthy {
            "the candidate is healthy"
        } else {
            "the candidate breaks tool calls of the refund workload"
        }
    ));
    // Some stable-only traffic first, then the release.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = server
        .post(
            "/v1/envs/prod/agents/support/releases",
            json!({ "bundle": 2, "plan": plan(&hook_url) }),
        )
        .await?;
    let id = r["release"]["id"].as_str().unwrap_or("?").to_owned();
    out::line(&format!(
        "  release {id} started: support@1 -> support@2, plan 5% -> 25% -> 50% -> 100%, auto promotion"
    ));

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    let final_view = loop {
        let v = server.get("/v1/envs/prod/agents/support/release").await?;
        let line = line_for(&v);
        if line != last {
            out::line(&line);
            last = line;
        }
        let phase = v["release"]["phase"].as_str().unwrap_or("");
        if !matches!(phase, "pending" | "canary" | "paused" | "promoting") {
            break v;
        }
        if Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = fleet.await.unwrap_or(0);
    sdk.shutdown().await;

    let phase = final_view["release"]["phase"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    if let Some(f) = final_view["release"]["failure"].as_object() {
        out::line(&format!(
            "  guardrail {} confirmed the breach: canary {} vs stable {} ({})",
            f.get("guardrail").and_then(Value::as_str).unwrap_or("?"),
            f.get("canary_value")
                .and_then(Value::as_f64)
                .map(|x| format!("{x:.4}"))
                .unwrap_or_default(),
            f.get("control_value")
                .and_then(Value::as_f64)
                .map(|x| format!("{x:.4}"))
                .unwrap_or_default(),
            f.get("threshold").and_then(Value::as_str).unwrap_or(""),
        ));
    }
    // The webhook delivery (the notifier retries until the receiver has it).
    let wait = Instant::now() + Duration::from_secs(10);
    let delivered = loop {
        let got = hooks.lock().map(|g| g.clone()).unwrap_or_default();
        if let Some(n) = got.last() {
            break Some(n.clone());
        }
        if Instant::now() > wait {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match &delivered {
        Some(n) => out::line(&format!(
            "  webhook delivered: {} of {} by {}",
            n["phase"].as_str().unwrap_or("?"),
            n["release"].as_str().unwrap_or("?"),
            n["initiator"].as_str().unwrap_or("?")
        )),
        None => out::line("  webhook: nothing delivered"),
    }
    let snapshot = server.get("/v1/envs/prod/snapshot").await?;
    out::line(&format!(
        "  routing now: stable {}, previous {} (warm in every SDK), {} requests served in {:.0} s",
        snapshot["agents"]["support"]["stable"]["id"]
            .as_str()
            .unwrap_or("?"),
        snapshot["agents"]["support"]["previous"]["id"]
            .as_str()
            .unwrap_or("-"),
        served,
        started.elapsed().as_secs_f64()
    ));
    out::line("");
    let report = server
        .get_text(&format!(
            "/v1/envs/prod/agents/support/release/report?release={id}"
        ))
        .await?;
    out::line(report.trim_end());
    server.stop().await;

    let expected = if healthy { "completed" } else { "rolled_back" };
    if phase != expected || delivered.is_none() {
        return Err(CheckFailed(format!(
            "the demo release ended {phase}, expected {expected}{}",
            if delivered.is_none() {
                ", and no webhook arrived"
            } else {
                ""
            }
        ))
        .into());
    }
    Ok(())
}
