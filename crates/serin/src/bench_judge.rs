//! `serin bench judge`: the guardrails' judgement measured end to end. Real releases run
//! through an embedded server (temporary SQLite store, its own release controller, the
//! adjustable clock so `min_duration` passes without waiting); many agents run at once, each
//! with a stable bundle, a candidate and one release, in waves. Every request is decided
//! locally on the env's snapshot as the SDK follows it, by sticky users of heavy-tailed
//! volumes (some in excluded tenants); outcomes come from the simulator's arm models and are
//! posted late and in fixed-size batches, each with the snapshot version it was routed
//! under. The same configuration then runs in the simulator, and both sets of figures are
//! printed side by side.

// `serde_json::Value["key"]` yields Null for a missing key; it cannot panic.
#![allow(clippy::indexing_slicing)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use serde::Serialize;
use serde_json::{Value, json};
use serin_core::decision::{Arm, Context, Reason};
use serin_core::guardrails::GuardrailConfig;
use serin_core::guardrails::sim::{
    ArmModel, CountInterval, Interval, JudgeScenario, Oracle, Pipe, Population, ReleaseSim,
    SimJudgeReport, Traffic, alpha_each, clopper_pearson, judge_report, median_of, ratio, run_seed,
    sim_rng,
};
use serin_core::outcome::OutcomeEvent;
use serin_sdk::Serin;

use crate::bench::Embedded;
use crate::out;

/// The plan's weights; `--min-requests` gives each its least canary outcomes.
pub const WEIGHTS: [&str; 5] = ["1%", "5%", "25%", "50%", "100%"];
const SHARES: [f64; 5] = [0.01, 0.05, 0.25, 0.5, 1.0];
/// Every step also waits this long; the bench moves the server's clock instead of waiting.
const MIN_DURATION: &str = "1m";
/// Clock steps: `ADVANCE_MS` every `ADVANCE_EVERY` of wall time, so a step's minute passes
/// in 0.6 s while an hour (when an idle monitor would leave memory) takes 36 s.
const ADVANCE_MS: i64 = 10_000;
const ADVANCE_EVERY: Duration = Duration::from_millis(100);
const ENV: &str = "dev";

/// Which guardrails the plans carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Guardrails {
    /// `GuardrailConfig::spec_default`.
    Spec,
    /// `GuardrailConfig::no_regression`.
    Zero,
}

impl Guardrails {
    fn config(self) -> GuardrailConfig {
        match self {
            Guardrails::Spec => GuardrailConfig::spec_default(),
            Guardrails::Zero => GuardrailConfig::no_regression(),
        }
    }
}

#[derive(Debug)]
pub struct JudgeArgs {
    pub releases: usize,
    pub batch: usize,
    pub guardrails: Guardrails,
    pub scenario: JudgeScenario,
    pub seed: u64,
    /// Agents (each with one release) running at once.
    pub concurrency: usize,
    /// Least canary outcomes per step, one per entry of [`WEIGHTS`].
    pub min_requests: Vec<u64>,
    pub users: u32,
    pub volume_shape: f64,
    pub mean_delay: f64,
    pub sim_runs: usize,
    pub tick_ms: u64,
    pub output_json: bool,
}

/// One outcome POST of one agent: when it was sent and acknowledged (server clock and
/// wall), and the canary outcomes delivered up to and including it.
#[derive(Debug, Clone, Copy)]
struct Post {
    sent_ms: i64,
    acked_ms: i64,
    acked: Instant,
    canary_through: u64,
}

/// What the snapshot watcher saw of one agent's release.
#[derive(Debug, Default, Clone, Copy)]
struct Watch {
    routed: bool,
    /// The first moment the SDK's snapshot no longer routed the release.
    ended: Option<Instant>,
}

type Watches = Arc<Mutex<HashMap<String, Watch>>>;

/// One release, measured.
#[derive(Debug, Clone, Serialize)]
struct ReleaseResult {
    agent: String,
    release: String,
    phase: String,
    /// The guardrail named in the release's failure.
    guardrail: Option<String>,
    /// A bound latched `fail` (from the verdicts and the evidence at each transition).
    latched: bool,
    /// The release was promoted (or completed) after a bound had latched.
    promoted_after_fail: bool,
    /// Canary outcomes delivered through the POST whose acknowledgement latched the fail.
    canary_at_fail: Option<u64>,
    oracle_two_sample_at: Option<u64>,
    oracle_one_sample_at: Option<u64>,
    /// That POST's acknowledgement -> the SDK's snapshot no longer routes the canary.
    fail_to_drained_ms: Option<f64>,
    requests: u64,
    outcomes_posted: u64,
    stuck: bool,
    /// For a stuck release, its live view when the bench gave up (release with its step and
    /// gate, verdicts), so a stuck release can be diagnosed after the store is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    stuck_view: Option<Value>,
}

#[derive(Debug, Serialize)]
struct Figures {
    releases: usize,
    completed: usize,
    rolled_back: usize,
    stuck: usize,
    rollback_rate: f64,
    /// Exact (Clopper-Pearson) 95% interval of the rollback rate.
    rollback_interval: Interval,
    rolled_back_by: BTreeMap<String, usize>,
    /// Releases promoted or completed after a bound had latched `fail` (must be 0).
    promoted_after_fail: usize,
    /// Canary outcomes until the first latch; `None`: not reached in half the releases.
    detect_median: Option<u64>,
    detect_interval: Option<CountInterval>,
    /// The SPRT oracles on the very outcomes this bench posted.
    oracle_two_sample_median: Option<u64>,
    oracle_one_sample_median: Option<u64>,
    ratio_to_oracle: Option<f64>,
    /// Against the simulator's two-sample oracle for the same configuration.
    ratio_to_sim_oracle: Option<f64>,
    fail_to_drained_ms: Option<Latency>,
    outcomes_posted: u64,
    wall_s: f64,
}

#[derive(Debug, Serialize)]
struct Latency {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct StepConfig {
    weight: &'static str,
    min_requests: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    guardrails: Guardrails,
    batch: usize,
    seed: u64,
    steps: Vec<StepConfig>,
    min_duration: &'static str,
    traffic: Traffic,
    controller_tick_ms: u64,
    server: Figures,
    simulator: SimJudgeReport,
    releases: Vec<ReleaseResult>,
}

fn bundle_files(agent: &str, revision: u32) -> Value {
    json!({
        "bundle.yaml": format!("agent: {agent}\nmodel:\n  provider: anthropic\n  snapshot: claude-opus-4-7-20260108\nprompt: prompt.md\n"),
        "prompt.md": format!("You are {agent}, revision {revision}.\n"),
    })
}

fn plan(min_requests: &[u64], excluded: &[String], config: &GuardrailConfig) -> Value {
    let steps: Vec<Value> = WEIGHTS
        .iter()
        .zip(min_requests)
        .map(|(w, n)| {
            json!({"canary": {"weight": w, "min_duration": MIN_DURATION, "min_requests": n}})
        })
        .collect();
    json!({
        "steps": steps,
        "promotion": "auto",
        "stickiness": "user",
        "exclude_tenants": excluded,
        "guardrails": config,
        "on_failure": "rollback",
    })
}

/// Nearest-rank percentile of ascending `sorted`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    // Sample sizes → f64 and back; the rank is clamped into range.
    let rank = (p / 100.0 * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted
        .get(rank.min(sorted.len()).saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN)
}

pub async fn judge(args: JudgeArgs) -> anyhow::Result<()> {
    if args.min_requests.len() != WEIGHTS.len() {
        return Err(anyhow!(
            "--min-requests takes {} numbers, one per step ({}); got {}",
            WEIGHTS.len(),
            WEIGHTS.join(", "),
            args.min_requests.len()
        ));
    }
    let config = args.guardrails.config();
    let canary_model = args.scenario.canary(&config)?;
    let control_model = ArmModel::baseline();
    let traffic = Traffic {
        users: args.users.max(1),
        volume_shape: args.volume_shape,
        mean_delay: args.mean_delay,
        ..Traffic::production(
            args.batch
                .clamp(1, serin_server::guardrails::MAX_BATCH_EVENTS),
        )
    };
    let steps: Vec<(f64, u64)> = SHARES
        .iter()
        .copied()
        .zip(args.min_requests.iter().copied())
        .collect();
    // A release gets 20 times the traffic its plan needs before it counts as stuck.
    let needed: f64 = steps.iter().map(|(s, n)| *n as f64 / s).sum();
    let max_requests = (needed * 20.0) as u64 + 100_000;

    // The bench owns this process, so its clock may move (as `--adjustable-clock` allows).
    serin_server::clock::make_adjustable();
    let server = Embedded::bare(64, Duration::from_millis(args.tick_ms.max(10))).await?;
    let sdk_token = server
        .post(
            "/v1/tokens",
            json!({ "role": "sdk", "name": "bench-judge" }),
        )
        .await?["token"]
        .as_str()
        .context("no sdk token")?
        .to_owned();
    let sdk = Serin::builder(server.base.clone(), sdk_token.clone(), ENV)
        .start()
        .await
        .map_err(|e| anyhow!("the SDK could not start: {e}"))?;
    // The server closes a keep-alive connection idle for 10 s; on a loaded machine an
    // agent can pause that long, and a POST started on a connection the server is closing
    // fails with a broken pipe. Drop idle connections first.
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .build()?;
    let population = Arc::new(Population::new(&traffic, args.seed));
    let plan_json = plan(
        &args.min_requests,
        &population.excluded_tenant_keys(),
        &config,
    );

    let watches: Watches = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = spawn_watcher(sdk.clone(), watches.clone(), stop.clone());
    let clock = spawn_clock(&server, stop.clone());

    let started = Instant::now();
    let mut results: Vec<ReleaseResult> = Vec::with_capacity(args.releases);
    let concurrency = args.concurrency.max(1);
    let mut next = 0usize;
    let shared = Arc::new(Shared {
        base: server.base.clone(),
        sdk_token,
        http,
        sdk: sdk.clone(),
        population,
        control: control_model.clone(),
        canary: canary_model.clone(),
        alpha_each: alpha_each(&config),
        batch: traffic.batch,
        mean_delay: traffic.mean_delay,
        max_requests,
        seed: args.seed,
    });
    while next < args.releases {
        let wave: Vec<usize> = (next..(next + concurrency).min(args.releases)).collect();
        next += wave.len();
        let mut tasks = Vec::with_capacity(wave.len());
        let mut started_wave = Vec::with_capacity(wave.len());
        for k in wave {
            let agent = format!("judge-{k}");
            for rev in 1..=2 {
                server
                    .post(
                        "/v1/bundles",
                        json!({ "files": bundle_files(&agent, rev), "env": ENV }),
                    )
                    .await?;
            }
            server
                .post(
                    &format!("/v1/envs/{ENV}/agents/{agent}/deploy"),
                    json!({ "bundle": 1 }),
                )
                .await?;
            if let Ok(mut w) = watches.lock() {
                w.insert(agent.clone(), Watch::default());
            }
            let view = server
                .post(
                    &format!("/v1/envs/{ENV}/agents/{agent}/releases"),
                    json!({ "bundle": 2, "plan": plan_json }),
                )
                .await?;
            let release = view["release"]["id"]
                .as_str()
                .context("the release start answered no id")?
                .to_owned();
            started_wave.push((k, agent, release));
        }
        // Traffic starts once the whole wave is set up: big outcome batches would otherwise
        // hold up the later starts (and a start that waits is not what is measured here).
        for (k, agent, release) in started_wave {
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                drive(&shared, k as u64, agent, release).await
            }));
        }
        for t in tasks {
            let run = t.await.context("a release driver panicked")??;
            results.push(finish(&server, &watches, run).await?);
        }
    }
    let wall = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.await;
    let _ = clock.await;
    sdk.shutdown().await;
    server.stop().await;

    let sim = ReleaseSim {
        control: control_model,
        canary: canary_model,
        steps: steps.clone(),
        traffic: traffic.clone(),
        // The controller's tick in requests of one agent: this run's pace.
        tick_every: tick_requests(&results, wall, args.tick_ms, concurrency),
        max_requests,
    };
    let simulator = judge_report(&sim, &config, args.sim_runs.max(1), args.seed)?;
    let server_figures = figures(&results, &simulator, wall);
    let report = Report {
        scenario: args.scenario.name(),
        guardrails: args.guardrails,
        batch: traffic.batch,
        seed: args.seed,
        steps: WEIGHTS
            .iter()
            .zip(&args.min_requests)
            .map(|(w, n)| StepConfig {
                weight: w,
                min_requests: *n,
            })
            .collect(),
        min_duration: MIN_DURATION,
        traffic,
        controller_tick_ms: args.tick_ms,
        server: server_figures,
        simulator,
        releases: results,
    };
    if args.output_json {
        out::json(&report);
    } else {
        print_human(&report);
    }
    Ok(())
}

/// What every release driver shares.
struct Shared {
    base: String,
    sdk_token: String,
    http: reqwest::Client,
    sdk: Serin,
    population: Arc<Population>,
    control: ArmModel,
    canary: ArmModel,
    alpha_each: f64,
    batch: usize,
    mean_delay: f64,
    max_requests: u64,
    seed: u64,
}

/// A release's traffic as its driver saw it.
struct Run {
    agent: String,
    release: String,
    posts: Vec<Post>,
    oracle: Option<Oracle>,
    requests: u64,
    outcomes_posted: u64,
    stuck: bool,
}

/// An outcome in flight: whether its tenant was excluded from the release, the canary's
/// share under the version it was routed by, and the event.
type Flight = (bool, f64, OutcomeEvent);

/// The body of `POST /v1/outcomes`.
#[derive(Serialize)]
struct EventBatch<'a> {
    events: &'a [&'a OutcomeEvent],
}

/// Sends one agent's requests until its release no longer routes (drained or completed).
async fn drive(s: &Shared, k: u64, agent: String, release: String) -> anyhow::Result<Run> {
    let mut rng = sim_rng(run_seed(s.seed, k));
    let mut pipe: Pipe<Flight> = Pipe::new(s.mean_delay, s.batch);
    let mut oracle = Oracle::new(&s.control, &s.canary, s.alpha_each);
    let mut run = Run {
        agent: agent.clone(),
        release: release.clone(),
        posts: Vec::new(),
        oracle: None,
        requests: 0,
        outcomes_posted: 0,
        stuck: false,
    };
    // Until the SDK has the release's first snapshot, "no release" means "not yet".
    let deadline = Instant::now() + Duration::from_secs(30);
    while !routes(&s.sdk, &agent) {
        if Instant::now() > deadline {
            return Err(anyhow!(
                "the SDK never saw release {release} of {agent} routed"
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let url = format!("{}/v1/outcomes", s.base);
    let mut canary_delivered = 0u64;
    let mut i = 0u64;
    loop {
        i += 1;
        if i > s.max_requests {
            run.stuck = true;
            break;
        }
        let Some(snapshot) = s.sdk.snapshot() else {
            return Err(anyhow!("the SDK lost its snapshot"));
        };
        let user = s.population.draw(&mut rng);
        let tenant = s.population.tenant(user);
        let (user_key, tenant_key) = (Population::user_key(user), Population::tenant_key(tenant));
        let request_id = format!("{agent}-{i}");
        let ctx = Context {
            request_id: &request_id,
            user: Some(&user_key),
            tenant: Some(&tenant_key),
            ..Context::default()
        };
        let d = snapshot
            .decide(&agent, &ctx)
            .map_err(|e| anyhow!("deciding for {agent}: {e}"))?;
        if d.release.is_none() {
            break;
        }
        let (excluded, share) = match d.reason {
            Reason::TenantExcluded => (true, 0.0),
            Reason::Canary { weight, .. } | Reason::Stable { weight, .. } => {
                (false, f64::from(weight.basis_points()) / 10_000.0)
            }
            _ => (false, 0.0),
        };
        let Some(bundle) = d.bundle else { continue };
        let mut e = outcome(
            &request_id,
            &agent,
            bundle.id.clone(),
            d.arm,
            d.snapshot_version,
        );
        e.user = Some(user_key);
        e.tenant = Some(tenant_key);
        let model = if d.arm == Arm::Canary {
            &s.canary
        } else {
            &s.control
        };
        model.fill(&mut e, &mut rng);
        pipe.send(i, (excluded, share, e), &mut rng);
        while let Some(batch) = pipe.batch(i) {
            for (excluded, share, e) in &batch {
                if e.arm == Arm::Canary {
                    canary_delivered += 1;
                }
                if !excluded && let Some(o) = oracle.as_mut() {
                    o.observe(e, *share);
                }
            }
            if let Some(o) = oracle.as_mut() {
                o.look();
            }
            let events: Vec<&OutcomeEvent> = batch.iter().map(|(_, _, e)| e).collect();
            // Straight to text: `json!` would build (and drop) a tree of every event first,
            // which cost the bench as much CPU as the server spent ingesting.
            let body = serde_json::to_string(&EventBatch { events: &events })?;
            let sent_ms = serin_server::clock::now_ms();
            let mut attempt = 0;
            let resp = loop {
                attempt += 1;
                let sent = s
                    .http
                    .post(&url)
                    .bearer_auth(&s.sdk_token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(resp) => break resp,
                    // Retrying is safe: the server counts each request id once.
                    Err(e) if attempt < 3 => {
                        tracing::warn!(error = %e, "outcome POST failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let acked_ms = serin_server::clock::now_ms();
            let acked = Instant::now();
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            let counted =
                v["accepted"].as_u64().unwrap_or(0) + v["duplicates"].as_u64().unwrap_or(0);
            if !status.is_success() || counted != batch.len() as u64 {
                return Err(anyhow!("outcomes of {agent} refused: HTTP {status}: {v}"));
            }
            run.outcomes_posted += batch.len() as u64;
            run.posts.push(Post {
                sent_ms,
                acked_ms,
                acked,
                canary_through: canary_delivered,
            });
        }
        if i.is_multiple_of(512) {
            tokio::task::yield_now().await;
        }
    }
    run.requests = i;
    run.oracle = oracle;
    Ok(run)
}

fn routes(sdk: &Serin, agent: &str) -> bool {
    sdk.snapshot().is_some_and(|s| {
        s.snapshot()
            .agents
            .get(agent)
            .is_some_and(|a| a.release.is_some())
    })
}

fn outcome(request_id: &str, agent: &str, bundle: String, arm: Arm, version: u64) -> OutcomeEvent {
    OutcomeEvent {
        request_id: request_id.to_owned(),
        trace_id: None,
        agent: agent.to_owned(),
        env: ENV.to_owned(),
        snapshot_version: version,
        bundle,
        arm,
        user: None,
        tenant: None,
        workload: None,
        instance: None,
        region: None,
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

/// Notes, per agent, the first moment the SDK's snapshot stops routing its release.
fn spawn_watcher(
    sdk: Serin,
    watches: Watches,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(snap) = sdk.snapshot()
                && snap.version() != seen
            {
                seen = snap.version();
                let now = Instant::now();
                if let Ok(mut w) = watches.lock() {
                    for (agent, watch) in w.iter_mut() {
                        let routed = snap
                            .snapshot()
                            .agents
                            .get(agent)
                            .is_some_and(|a| a.release.is_some());
                        if routed {
                            watch.routed = true;
                        } else if watch.routed && watch.ended.is_none() {
                            watch.ended = Some(now);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

/// Moves the server's clock on through the admin API, so `min_duration` is stepped over.
fn spawn_clock(
    server: &Embedded,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let url = format!("{}/v1/system/clock", server.base);
    let admin = server.admin.clone();
    let http = reqwest::Client::new();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(ADVANCE_EVERY);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            every.tick().await;
            let sent = http
                .post(&url)
                .bearer_auth(&admin)
                .json(&json!({ "advance_ms": ADVANCE_MS }))
                .send()
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "could not advance the clock");
            }
        }
    })
}

/// The ended release as the server tells it, with the driver's measurements.
async fn finish(server: &Embedded, watches: &Watches, run: Run) -> anyhow::Result<ReleaseResult> {
    let v = server
        .get(&format!("/v1/envs/{ENV}/agents/{}/release", run.agent))
        .await?;
    let r = &v["release"];
    let phase = r["phase"].as_str().unwrap_or("?").to_owned();
    let mut latched_at: Option<i64> = None;
    let mut note = |verdicts: &Value| {
        for x in verdicts.as_array().into_iter().flatten() {
            if let Some(at) = x["latched_at_ms"].as_i64() {
                latched_at = Some(latched_at.map_or(at, |l| l.min(at)));
            }
        }
    };
    note(&v["verdicts"]);
    for ev in r["evidence"].as_array().into_iter().flatten() {
        note(&ev["verdicts"]);
    }
    let promoted_after_fail = latched_at.is_some_and(|at| promoted_after(r, at));
    // The POST whose handling latched: the server minted `at` between its send and ack.
    let post = latched_at.and_then(|at| {
        run.posts
            .iter()
            .find(|p| p.sent_ms <= at && at <= p.acked_ms)
            .or_else(|| run.posts.iter().find(|p| p.acked_ms >= at))
            .copied()
    });
    let ended = watches
        .lock()
        .ok()
        .and_then(|w| w.get(&run.agent).and_then(|x| x.ended));
    let fail_to_drained_ms = match (post, ended) {
        (Some(p), Some(end)) if phase == "rolled_back" => {
            Some(end.saturating_duration_since(p.acked).as_secs_f64() * 1e3)
        }
        _ => None,
    };
    if let Ok(mut w) = watches.lock() {
        w.remove(&run.agent);
    }
    Ok(ReleaseResult {
        agent: run.agent,
        release: run.release,
        phase,
        guardrail: r["failure"]["guardrail"].as_str().map(str::to_owned),
        latched: latched_at.is_some(),
        promoted_after_fail,
        canary_at_fail: post.map(|p| p.canary_through),
        oracle_two_sample_at: run.oracle.as_ref().and_then(Oracle::two_sample_at),
        oracle_one_sample_at: run.oracle.as_ref().and_then(Oracle::one_sample_at),
        fail_to_drained_ms,
        requests: run.requests,
        outcomes_posted: run.outcomes_posted,
        stuck: run.stuck,
        stuck_view: run.stuck.then_some(v),
    })
}

/// Whether the release moved up a step, or completed, strictly after `latched_at`.
fn promoted_after(release: &Value, latched_at: i64) -> bool {
    let mut step = 0u64;
    for t in release["history"].as_array().into_iter().flatten() {
        let to = t["to"].as_str().unwrap_or("");
        let next = t["step"].as_u64().unwrap_or(step);
        let up = to == "completed" || (to == "canary" && next > step);
        if up && t["at_ms"].as_i64().is_some_and(|at| at > latched_at) {
            return true;
        }
        step = next;
    }
    false
}

/// How many requests one agent sent per controller tick in this run, for the simulator.
fn tick_requests(results: &[ReleaseResult], wall: Duration, tick_ms: u64, agents: usize) -> u64 {
    let requests: u64 = results.iter().map(|r| r.requests).sum();
    let agents = agents.min(results.len()).max(1) as f64;
    // Requests per agent per wall ms, times the tick.
    let per_ms = requests as f64 / agents / (wall.as_secs_f64() * 1e3).max(1.0);
    ((per_ms * tick_ms as f64).round() as u64).max(1)
}

fn figures(results: &[ReleaseResult], sim: &SimJudgeReport, wall: Duration) -> Figures {
    let n = results.len();
    let count = |f: &dyn Fn(&ReleaseResult) -> bool| results.iter().filter(|r| f(r)).count();
    let rolled_back = count(&|r| r.phase == "rolled_back");
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for r in results.iter().filter(|r| r.phase == "rolled_back") {
        *by.entry(r.guardrail.clone().unwrap_or_else(|| "-".to_owned()))
            .or_default() += 1;
    }
    let (detect_median, detect_interval) =
        median_of(results.iter().map(|r| r.canary_at_fail).collect());
    let (oracle_two, _) = median_of(results.iter().map(|r| r.oracle_two_sample_at).collect());
    let (oracle_one, _) = median_of(results.iter().map(|r| r.oracle_one_sample_at).collect());
    let mut drain: Vec<f64> = results
        .iter()
        .filter_map(|r| r.fail_to_drained_ms)
        .collect();
    drain.sort_by(f64::total_cmp);
    Figures {
        releases: n,
        completed: count(&|r| r.phase == "completed"),
        rolled_back,
        stuck: count(&|r| r.stuck),
        // Release counts → f64.
        rollback_rate: rolled_back as f64 / n.max(1) as f64,
        rollback_interval: clopper_pearson(rolled_back as u64, n as u64, 0.95),
        rolled_back_by: by,
        promoted_after_fail: count(&|r| r.promoted_after_fail),
        detect_median,
        detect_interval,
        oracle_two_sample_median: oracle_two,
        oracle_one_sample_median: oracle_one,
        ratio_to_oracle: ratio(detect_median, oracle_two),
        ratio_to_sim_oracle: ratio(detect_median, sim.oracle_two_sample_median),
        fail_to_drained_ms: (!drain.is_empty()).then(|| Latency {
            n: drain.len(),
            p50: percentile(&drain, 50.0),
            p99: percentile(&drain, 99.0),
            max: drain.last().copied().unwrap_or(f64::NAN),
        }),
        outcomes_posted: results.iter().map(|r| r.outcomes_posted).sum(),
        wall_s: wall.as_secs_f64(),
    }
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "never".to_owned(), |x| x.to_string())
}

fn show_interval(i: Option<CountInterval>) -> String {
    i.map_or_else(
        || "-".to_owned(),
        |(lo, hi)| format!("[{}, {}]", show(lo), show(hi)),
    )
}

fn print_human(r: &Report) {
    let (s, m) = (&r.server, &r.simulator);
    let steps: Vec<String> = r
        .steps
        .iter()
        .map(|s| format!("{} (>= {} canary)", s.weight, s.min_requests))
        .collect();
    out::line(&format!(
        "Judge benchmark: scenario {}, {} guardrails, outcomes in batches of {}, seed {}",
        r.scenario,
        match r.guardrails {
            Guardrails::Spec => "SPEC",
            Guardrails::Zero => "zero-tolerance",
        },
        r.batch,
        r.seed
    ));
    out::line(&format!(
        "plan: {}, min_duration {} each, promotion auto; controller tick {} ms",
        steps.join(" -> "),
        r.min_duration,
        r.controller_tick_ms
    ));
    out::line(&format!(
        "traffic: {} sticky users (Pareto shape {}, heaviest user {:.2}% of requests), {} tenants ({} excluded), outcomes ~{} requests late",
        r.traffic.users,
        r.traffic.volume_shape,
        m.heaviest_user_share * 100.0,
        r.traffic.tenants,
        r.traffic.excluded_tenants,
        r.traffic.mean_delay
    ));
    out::line("");
    let pct = |x: f64| format!("{:.2}%", x * 100.0);
    let rows = vec![
        vec![
            "releases".to_owned(),
            s.releases.to_string(),
            m.runs.to_string(),
        ],
        vec![
            "completed / rolled back / stuck".to_owned(),
            format!("{} / {} / {}", s.completed, s.rolled_back, s.stuck),
            format!("{} / {} / {}", m.completed, m.rolled_back, m.stuck),
        ],
        vec![
            "rollback rate [95% exact]".to_owned(),
            format!(
                "{} [{}, {}]",
                pct(s.rollback_rate),
                pct(s.rollback_interval.low),
                pct(s.rollback_interval.high)
            ),
            format!(
                "{} [{}, {}]",
                pct(m.rollback_rate),
                pct(m.rollback_interval.low),
                pct(m.rollback_interval.high)
            ),
        ],
        vec![
            "canary outcomes to fail, median [95%]".to_owned(),
            format!(
                "{} {}",
                show(s.detect_median),
                show_interval(s.detect_interval)
            ),
            format!(
                "{} {}",
                show(m.detect_median),
                show_interval(m.detect_interval)
            ),
        ],
        vec![
            "SPRT oracle two-sample / one-sample, median".to_owned(),
            format!(
                "{} / {}",
                show(s.oracle_two_sample_median),
                show(s.oracle_one_sample_median)
            ),
            format!(
                "{} / {}",
                show(m.oracle_two_sample_median),
                show(m.oracle_one_sample_median)
            ),
        ],
        vec![
            "ratio to two-sample oracle".to_owned(),
            format!(
                "{} (to the simulator's: {})",
                s.ratio_to_oracle
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
                s.ratio_to_sim_oracle
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"))
            ),
            m.ratio_to_oracle
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
        ],
    ];
    out::table(&["", "server", "simulator"], &rows);
    out::line("");
    if !s.rolled_back_by.is_empty() {
        let by: Vec<String> = s
            .rolled_back_by
            .iter()
            .map(|(g, n)| format!("{g} x{n}"))
            .collect();
        out::line(&format!("rolled back by: {}", by.join(", ")));
    }
    out::line(&format!(
        "promoted or completed after a latched fail: {}",
        s.promoted_after_fail
    ));
    match &s.fail_to_drained_ms {
        Some(l) => out::line(&format!(
            "fail latched -> canary drained in the SDK's snapshot: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} releases)",
            l.p50, l.p99, l.max, l.n
        )),
        None => out::line("fail latched -> canary drained: no rollback to time"),
    }
    out::line(&format!(
        "{} outcomes posted in {:.1} s",
        s.outcomes_posted, s.wall_s
    ));
    for rel in r.releases.iter().filter(|x| x.stuck) {
        let Some(v) = &rel.stuck_view else { continue };
        let missing: Vec<&str> = v["gate"]["missing"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let pending: Vec<String> = v["verdicts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["status"] != "pass")
            .map(|x| {
                format!(
                    "{} {} (e {}, canary {} vs control {})",
                    x["guardrail"].as_str().unwrap_or("?"),
                    x["status"].as_str().unwrap_or("?"),
                    x["statistic"],
                    x["canary"]["value"],
                    x["control"]["value"]
                )
            })
            .collect();
        out::line(&format!(
            "stuck: {} ({}) at step {} after {} requests; gate missing: {}; not passing: {}",
            rel.agent,
            rel.release,
            v["release"]["step"],
            rel.requests,
            if missing.is_empty() {
                "-".to_owned()
            } else {
                missing.join("; ")
            },
            if pending.is_empty() {
                "-".to_owned()
            } else {
                pending.join("; ")
            },
        ));
    }
}
