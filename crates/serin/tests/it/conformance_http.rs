//! The conformance vectors over HTTP: each vector's state is built through the public API
//! (bundles, deploys, releases with the vector's weight, stickiness and exclusions, kills,
//! tenant kills, flags) in an env of its own, then every case is sent to `POST /v1/decide`.
//!
//! Release ids, the bucketing salt of release arms, are minted by the server, so a
//! bucketed arm cannot equal the committed one (ARCHITECTURE.md, "Conformance over
//! HTTP"). Every case is checked against the engine run on the snapshot the server itself
//! serves; everything that does not depend on the release id (kills, exclusions, no
//! release, unknown agent, flags, and the stickiness a bucketed reason names) is checked
//! against the committed expectation; ramp monotonicity is checked on one release promoted
//! through its weights.

use std::path::Path;

use serde_json::{Value, json};
use serin_engine::conformance::{Expect, VectorFile, observe};
use serin_engine::decision::CompiledSnapshot;

use crate::harness::{Backend, Cli, Http, Server, copy_dir, sample_bundle};

fn vectors() -> Vec<(String, VectorFile)> {
    let dir = crate::harness::repo_root().join("crates/serin-engine/testdata/conformance");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_str().unwrap().to_owned();
            (
                name,
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
            )
        })
        .collect()
}

/// Pushes `agent@1..=n`: the sample bundle renamed, each number with its own prompt.
fn push_bundles(cli: &Cli, work: &Path, agent: &str, n: u64) {
    for i in 1..=n {
        let dir = work.join(format!("{agent}-{i}"));
        copy_dir(&sample_bundle(), &dir);
        let manifest = std::fs::read_to_string(dir.join("bundle.yaml")).unwrap();
        std::fs::write(
            dir.join("bundle.yaml"),
            manifest.replace("agent: support", &format!("agent: {agent}")),
        )
        .unwrap();
        let prompt = std::fs::read_to_string(dir.join("prompt.md")).unwrap();
        std::fs::write(dir.join("prompt.md"), format!("{prompt}\nVersion {i}.\n")).unwrap();
        let out = cli.run(&["bundle", "push", dir.to_str().unwrap()]).ok();
        assert!(
            out.stdout.contains(&format!("{agent}@{i}")),
            "{}",
            out.stdout
        );
    }
}

fn number(r: &Value) -> Option<u64> {
    r.get("number").and_then(Value::as_u64)
}

/// Builds the vector's routing for every agent in env `env` through the CLI and API.
async fn build(cli: &Cli, http: &Http, work: &Path, env: &str, snapshot: &Value) {
    let agents = snapshot["agents"].as_object().unwrap();
    for (agent, routing) in agents {
        let stable = number(&routing["stable"]);
        let previous = number(&routing["previous"]);
        let release = routing.get("release").filter(|r| !r.is_null());
        let candidate = release.and_then(|r| number(&r["candidate"]));
        let most = [stable, previous, candidate].into_iter().flatten().max();
        if let Some(n) = most
            && !std::fs::exists(work.join(format!("{agent}-{n}"))).unwrap()
        {
            push_bundles(cli, work, agent, n);
        }
        for n in [previous, stable].into_iter().flatten() {
            cli.run(&["deploy", agent, "--env", env, "--bundle", &n.to_string()])
                .ok();
        }
        if let (Some(r), Some(n)) = (release, candidate) {
            let weight = r["weight"].as_str().unwrap();
            let excluded: Vec<&str> = r["exclude_tenants"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let plan = work.join(format!("{env}-{agent}-plan.yaml"));
            // Exclusions hold until the final step, so the vector's weight is a first step
            // with a later one after it.
            std::fs::write(
                &plan,
                format!(
                    "steps:\n  - canary: {{weight: {weight}, min_duration: 1h}}\n  - canary: {{weight: 99%, min_duration: 1h}}\nstickiness: {}\nexclude_tenants: {}\n",
                    r["stickiness"].as_str().unwrap_or("user"),
                    serde_json::to_string(&excluded).unwrap()
                ),
            )
            .unwrap();
            // A weight a plan cannot start at leaves the agent without a release on the
            // server; only the engine comparison covers it then.
            let _ = cli.run(&[
                "release",
                "start",
                agent,
                "--env",
                env,
                "--bundle",
                &n.to_string(),
                "--plan",
                plan.to_str().unwrap(),
            ]);
        }
        if routing["killed"] == true {
            let _ = cli.run(&["kill", agent, "--env", env, "--reason", "conformance"]);
        }
        for t in routing["killed_tenants"].as_array().into_iter().flatten() {
            let _ = cli.run(&[
                "kill",
                agent,
                "--env",
                env,
                "--tenant",
                t.as_str().unwrap(),
                "--reason",
                "conformance",
            ]);
        }
    }
    for (key, flag) in snapshot["flags"].as_object().into_iter().flatten() {
        let (status, body) = http
            .send(
                http.req(reqwest::Method::PUT, &format!("/v1/envs/{env}/flags/{key}"))
                    .json(&json!({ "flag": flag })),
            )
            .await;
        assert_eq!(status, 200, "flag {key}: {body}");
    }
}

/// The parts of an agent's routing a decision depends on, release id aside.
fn shape(routing: &Value) -> Value {
    let r = &routing["release"];
    json!({
        "stable": routing["stable"]["id"],
        "killed": routing["killed"],
        "killed_tenants": routing.get("killed_tenants").cloned().unwrap_or(json!([])),
        "release": if r.is_null() { Value::Null } else { json!({
            "candidate": r["candidate"]["id"], "weight": r["weight"],
            "stickiness": r.get("stickiness").cloned().unwrap_or(json!("user")),
            "exclude_tenants": r.get("exclude_tenants").cloned().unwrap_or(json!([])),
            // Waves come only from a waved plan's release, which `build` does not run: a
            // waved vector is checked against the engine on the served snapshot alone.
            "waves": r.get("waves").cloned().unwrap_or(json!([])),
        })},
    })
}

async fn decide(http: &Http, env: &str, agent: &str, context: &Value) -> (u16, Value) {
    let mut body = context.clone();
    body["agent"] = json!(agent);
    body["env"] = json!(env);
    http.post("/v1/decide", &body).await
}

/// What `POST /v1/decide` answered, in the vectors' form as far as the wire carries it.
fn answered(status: u16, body: &Value) -> Value {
    if status != 200 {
        return json!({ "status": status });
    }
    let flags: serde_json::Map<String, Value> = body["flags"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["value"].clone()))
        .collect();
    json!({ "arm": body["arm"], "bundle": body["bundle"]["id"], "reason": body["rule"], "flags": flags })
}

/// An unknown agent is 404, unless its name is not even a valid agent name (the server
/// checks names before it looks): then 422.
fn expected(agent: &str, e: &Expect) -> Value {
    match &e.error {
        Some(_) if serin_engine::slug::validate_agent(agent).is_err() => json!({ "status": 422 }),
        Some(_) => json!({ "status": 404 }),
        None => json!({
            "arm": e.arm, "bundle": e.bundle.clone().flatten(), "reason": e.reason, "flags": e.flags,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decide_over_http_passes_the_conformance_vectors() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let http = server.http(&admin);
    let work = tempfile::tempdir().unwrap();
    let (mut engine_checked, mut committed_checked) = (0, 0);
    for (name, file) in vectors() {
        if !file.monotonic.is_empty() {
            continue; // one salt across agents: checked by the ramp test below
        }
        let env = format!("cf-{name}");
        server.create_env(&admin, &env, false);
        build(&cli, &http, work.path(), &env, &file.snapshot).await;
        let (status, served) = http.get(&format!("/v1/envs/{env}/snapshot")).await;
        assert_eq!(status, 200, "{served}");
        let snap = CompiledSnapshot::from_json(served.to_string().as_bytes()).unwrap();
        for case in &file.cases {
            let ctx = serde_json::to_value(&case.context).unwrap();
            let (status, body) = decide(&http, &env, &case.agent, &ctx).await;
            let got = answered(status, &body);
            let engine = observe(&snap, &case.agent, &case.context.as_context());
            assert_eq!(
                got,
                expected(&case.agent, &engine),
                "{name}/{}: /v1/decide vs the engine on the served snapshot",
                case.name
            );
            engine_checked += 1;

            let want = case.expect.as_ref().unwrap();
            let served_agent = &served["agents"][&case.agent];
            let vector_agent = &file.snapshot["agents"][&case.agent];
            let same_routing =
                !served_agent.is_null() && shape(served_agent) == shape(vector_agent);
            let bucketed = matches!(
                want.reason.as_deref(),
                Some("canary_bucket" | "stable_bucket")
            );
            if want.error.as_deref() == Some("unknown_agent") && vector_agent.is_null() {
                assert_eq!(got, expected(&case.agent, want), "{name}/{}", case.name);
                committed_checked += 1;
            } else if same_routing && !bucketed {
                assert_eq!(
                    got,
                    expected(&case.agent, want),
                    "{name}/{}: against the committed vector",
                    case.name
                );
                committed_checked += 1;
            } else if same_routing {
                assert_eq!(got["flags"], json!(want.flags), "{name}/{}", case.name);
                assert_eq!(engine.sticky_by, want.sticky_by, "{name}/{}", case.name);
                assert_eq!(
                    engine.fell_back_to_request, want.fell_back_to_request,
                    "{name}/{}",
                    case.name
                );
                committed_checked += 1;
            }
        }
    }
    assert!(engine_checked > 100, "{engine_checked} {committed_checked}");
    assert!(
        committed_checked >= 99,
        "only {committed_checked} cases matched a buildable routing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_promoted_over_http_never_moves_a_unit_out_of_the_canary() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let http = server.http(&admin);
    let work = tempfile::tempdir().unwrap();
    let (_, file) = vectors().into_iter().find(|(n, _)| n == "ramp").unwrap();
    push_bundles(&cli, work.path(), "ramp", 2);
    cli.run(&["deploy", "ramp", "--env", "dev", "--bundle", "1"])
        .ok();
    let plan = work.path().join("plan.yaml");
    std::fs::write(
        &plan,
        "steps:\n  - canary: {weight: 5%, min_duration: 1h}\n  - canary: {weight: 25%, min_duration: 1h}\n  - canary: {weight: 50%, min_duration: 1h}\n",
    )
    .unwrap();
    cli.run(&[
        "release",
        "start",
        "ramp",
        "--env",
        "dev",
        "--bundle",
        "2",
        "--plan",
        plan.to_str().unwrap(),
    ])
    .ok();
    let mut contexts: Vec<Value> = file
        .cases
        .iter()
        .map(|c| serde_json::to_value(&c.context).unwrap())
        .collect();
    contexts.dedup();
    let mut in_canary = vec![false; contexts.len()];
    for step in 0..3 {
        if step > 0 {
            cli.run(&[
                "release",
                "promote",
                "ramp",
                "--env",
                "dev",
                "--force",
                "--reason",
                "conformance",
            ])
            .ok();
        }
        for (i, ctx) in contexts.iter().enumerate() {
            let (status, body) = decide(&http, "dev", "ramp", ctx).await;
            assert_eq!(status, 200, "{body}");
            let canary = body["arm"] == "canary";
            assert!(
                canary || !in_canary[i],
                "step {step}: {ctx} left the canary"
            );
            in_canary[i] = canary;
        }
    }
    assert!(
        in_canary.iter().any(|c| *c),
        "no unit reached the canary at 50%"
    );
}
