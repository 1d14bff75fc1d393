//! `serin bench ingest` and the embedded server the in-process benchmarks share
//! (`serin bench propagation` runs real server processes: `bench_propagation`).

// `serde_json::Value["key"]` yields Null for a missing key; it cannot panic.
#![allow(clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde_json::{Value, json};
use serin_core::bundle::Limits;
use serin_server::ServerConfig;
use serin_store::Store;

use crate::out;

fn bundle_files(revision: u32) -> Value {
    json!({
        "bundle.yaml": "agent: bench\nmodel:\n  provider: anthropic\n  snapshot: claude-opus-4-7-20260108\nprompt: prompt.md\n",
        "prompt.md": format!("You are the benchmark agent, revision {revision}.\n"),
    })
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest-rank percentile.
    let rank = (p / 100.0 * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted
        .get(rank.min(sorted.len()) - 1)
        .copied()
        .unwrap_or(f64::NAN)
}

/// A server on a temporary SQLite store, in this process, with an admin
/// token and two bundles of agent `bench` deployed in `dev` (support@2 stable,
/// support@1 the previous one).
pub(crate) struct Embedded {
    dir: std::path::PathBuf,
    store: Store,
    pub(crate) admin: String,
    pub(crate) base: String,
    /// The CLI's API client, as the admin.
    client: crate::client::Client,
    /// Raw HTTP, for sending pre-serialized bodies.
    pub(crate) http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Embedded {
    pub(crate) async fn start(max_streams: usize) -> anyhow::Result<Embedded> {
        let e = Embedded::bare(max_streams, Duration::from_millis(500)).await?;
        for rev in 1..=2 {
            e.post(
                "/v1/bundles",
                json!({ "files": bundle_files(rev), "env": "dev" }),
            )
            .await?;
        }
        e.post("/v1/envs/dev/agents/bench/deploy", json!({ "bundle": 1 }))
            .await?;
        e.post("/v1/envs/dev/agents/bench/deploy", json!({ "bundle": 2 }))
            .await?;
        Ok(e)
    }

    /// An empty embedded server (admin token only).
    pub(crate) async fn bare(max_streams: usize, tick: Duration) -> anyhow::Result<Embedded> {
        let dir = tempdir()?;
        let store = Store::open_sqlite(&dir).await?;
        let admin = store
            .bootstrap_admin(serin_server::clock::now_ms())
            .await?
            .ok_or_else(|| anyhow!("a fresh store should mint a bootstrap token"))?
            .token;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = serin_server::app(ServerConfig {
            store: store.clone(),
            catalog: serin_core::catalog::ModelCatalog::builtin(),
            limits: Limits::DEFAULT,
            max_in_flight: 1024,
            max_streams,
            max_ui_streams: 64,
            refresh_interval: Duration::from_secs(5),
            tick_interval: tick,
            run_controller: true,
            max_validations: 4,
            webhook_retry: serin_server::releases::RetryPolicy::DEFAULT,
            audit: Default::default(),
        })
        .await
        .map_err(|e| anyhow!("could not start: {}", e.message))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serin_server::serve(listener, app, async {
            let _ = stop_rx.await;
        }));
        let base = format!("http://{addr}");
        let client = crate::client::Client::new(&crate::cli::ClientArgs {
            server: base.clone(),
            token: Some(admin.clone()),
            output: crate::cli::Output::Json,
        })?;
        Ok(Embedded {
            dir,
            store,
            admin,
            base,
            client,
            http: reqwest::Client::new(),
            stop: Some(stop_tx),
            server,
        })
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        Ok(self.client.post(path, &body).await?.1)
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.client.get(path).await
    }

    pub(crate) async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        self.client.get_text(path).await
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        self.store.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// TARGETS.md: p99 <= 50 ms with 1,000 subscribers, <= 150 ms with 10,000.
pub(crate) fn target_ms(subscribers: usize) -> u32 {
    if subscribers <= 1000 { 50 } else { 150 }
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "serin-bench-{}-{}",
        std::process::id(),
        serin_server::clock::now_ms()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub struct IngestArgs {
    pub events: usize,
    pub batch: usize,
    pub concurrency: usize,
    /// Send the same outcomes as windows (`POST /v1/outcomes/windows`), one window of
    /// `batch` requests per body, as an SDK with `outcome_windows` does.
    pub windows: bool,
    pub output_json: bool,
}

pub(crate) fn outcome(i: usize, canary: bool) -> Value {
    json!({
        "request_id": format!("r-{i}"), "agent": "bench", "env": "dev", "snapshot_version": 2,
        "bundle": if canary { "bench@1" } else { "bench@2" },
        "arm": if canary { "canary" } else { "stable" },
        "user": format!("u-{}", i % 10_000), "tenant": format!("t-{}", i % 100),
        "instance": format!("i-{}", i % 16), "region": "local",
        "latency_ms": 400.0 + (i % 997) as f64, "stages": {"llm": 300.0, "tools": 50.0},
        "cost_usd": 0.002, "tokens": {"input": 900, "output": 200},
        "error": if i.is_multiple_of(97) { json!({"class": "transient"}) } else { Value::Null },
        "tool_calls": {"ok": 2, "failed": 0}, "refused": false,
        "eval": if i.is_multiple_of(20) { json!({"score": 0.9, "passed": true}) } else { Value::Null },
    })
}

/// One body holding `events` as one window (both arms), as an aggregating SDK sends them.
fn window_body(b: usize, events: &[Value]) -> Value {
    use serin_core::decision::Arm;
    use serin_core::outcome::{ArmWindow, OutcomeEvent};
    let mut parts: Vec<ArmWindow> = Vec::new();
    for v in events {
        let Ok(e) = serde_json::from_value::<OutcomeEvent>(v.clone()) else {
            continue;
        };
        match parts.iter_mut().find(|p| p.arm == e.arm) {
            Some(p) => p.add(&e),
            None => {
                let mut p = ArmWindow::new(e.arm, e.bundle.clone());
                p.add(&e);
                parts.push(p);
            }
        }
    }
    parts.sort_by_key(|p| p.arm == Arm::Canary);
    json!({ "windows": [{
        "window_id": format!("bench/{b}"), "agent": "bench", "env": "dev",
        // 64 instances: each may report 50,000 requests a second (INSTANCE_EVENTS_PER_SECOND),
        // and a fleet sending a million a second has at least twenty.
        "snapshot_version": 2, "instance": format!("i-{}", b % 64), "arms": parts,
    }]})
}

/// `serin bench ingest`: outcome events per second through `POST /v1/outcomes`
/// on the embedded SQLite store (parse, validate, dedup, aggregate into the
/// guardrail monitor, durable in one transaction per group of concurrent batches). The in-run baseline
/// is the same batches sent to `/v1/outcomes` as empty `{"events": []}`
/// requests: the cost of HTTP and auth alone.
pub async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let server = Arc::new(Embedded::start(16).await?);
    let batch = args.batch.clamp(1, 10_000);
    let batches: Vec<Arc<String>> = (0..args.events.div_ceil(batch))
        .map(|b| {
            let events: Vec<Value> = (b * batch..((b + 1) * batch).min(args.events))
                .map(|i| outcome(i, i.is_multiple_of(10)))
                .collect();
            if args.windows {
                Arc::new(window_body(b, &events).to_string())
            } else {
                Arc::new(json!({ "events": events }).to_string())
            }
        })
        .collect();
    let (route, empty) = if args.windows {
        ("/v1/outcomes/windows", json!({ "windows": [] }))
    } else {
        ("/v1/outcomes", json!({ "events": [] }))
    };
    let empty = Arc::new(empty.to_string());

    let run = |bodies: Vec<Arc<String>>| {
        let server = server.clone();
        let concurrency = args.concurrency.max(1);
        async move {
            let queue = Arc::new(tokio::sync::Mutex::new(bodies));
            let started = Instant::now();
            let mut workers = Vec::new();
            for _ in 0..concurrency {
                let queue = queue.clone();
                let server = server.clone();
                workers.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    loop {
                        let Some(body) = queue.lock().await.pop() else {
                            break;
                        };
                        let t = Instant::now();
                        let resp = server
                            .http
                            .post(format!("{}{route}", server.base))
                            .bearer_auth(&server.admin)
                            .header("content-type", "application/json")
                            .body(body.as_str().to_owned())
                            .send()
                            .await?;
                        let status = resp.status();
                        let v: Value = resp.json().await.unwrap_or(Value::Null);
                        if !status.is_success() || v["rejected"].as_u64().unwrap_or(0) > 0 {
                            return Err(anyhow!("ingest refused: HTTP {status}: {v}"));
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok::<Vec<f64>, anyhow::Error>(lat)
                }));
            }
            let mut lat = Vec::new();
            for w in workers {
                lat.extend(w.await??);
            }
            Ok::<(Duration, Vec<f64>), anyhow::Error>((started.elapsed(), lat))
        }
    };
    let (base_elapsed, _) = run(vec![empty; batches.len()]).await?;
    let (elapsed, mut lat) = run(batches.clone()).await?;
    lat.sort_by(f64::total_cmp);
    let per_sec = args.events as f64 / elapsed.as_secs_f64();
    let report = json!({
        "events": args.events,
        "batch": batch,
        "concurrency": args.concurrency,
        "events_per_second": per_sec,
        "batch_ms": { "p50": percentile(&lat, 50.0), "p99": percentile(&lat, 99.0) },
        "baseline_empty_batches_s": base_elapsed.as_secs_f64(),
        "ingest_s": elapsed.as_secs_f64(),
        "ratio_to_baseline": elapsed.as_secs_f64() / base_elapsed.as_secs_f64().max(1e-9),
        "windows": args.windows,
        "target_events_per_second": if args.windows { 1_000_000 } else { 150_000 },
    });
    if let Ok(s) = Arc::try_unwrap(server) {
        s.stop().await;
    }
    if args.output_json {
        out::json(&report);
    } else {
        let (unit, target) = if args.windows {
            ("requests in windows of", 1_000_000)
        } else {
            ("events in batches of", 150_000)
        };
        out::line(&format!(
            "{} {unit} {batch}, {} concurrent clients, embedded SQLite",
            args.events, args.concurrency
        ));
        out::line(&format!(
            "{per_sec:.0} events/s (target >= {target}); batch p50 {:.1} ms, p99 {:.1} ms",
            percentile(&lat, 50.0),
            percentile(&lat, 99.0)
        ));
        out::line(&format!(
            "same number of empty batches (HTTP + auth only): {:.2} s vs {:.2} s with events (x{:.1})",
            base_elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() / base_elapsed.as_secs_f64().max(1e-9)
        ));
    }
    Ok(())
}
