//! `serin bench propagation`: how fast a rollback reaches every connected
//! subscriber. Starts an embedded server on a temporary SQLite store, opens N
//! snapshot streams over loopback, then alternates deploy/rollback and times,
//! per change, the gap between the change's HTTP response and the moment the
//! last subscriber has received the new snapshot version.

// `serde_json::Value["key"]` yields Null for a missing key; it cannot panic.
#![allow(clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use futures_util::StreamExt;
use serde_json::{Value, json};
use serin_core::bundle::Limits;
use serin_server::ServerConfig;
use serin_store::Store;
use tokio::sync::mpsc;

use crate::out;

pub struct PropagationArgs {
    pub subscribers: usize,
    pub rollbacks: usize,
    pub output_json: bool,
}

fn bundle_files(revision: u32) -> Value {
    json!({
        "bundle.yaml": "agent: bench\nmodel:\n  provider: anthropic\n  snapshot: claude-opus-4-7-20260108\nprompt: prompt.md\n",
        "prompt.md": format!("You are the benchmark agent, revision {revision}.\n"),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
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

pub async fn propagation(args: PropagationArgs) -> anyhow::Result<()> {
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
        max_streams: args.subscribers + 16,
        refresh_interval: Duration::from_secs(5),
    })
    .await
    .map_err(|e| anyhow!("could not start: {}", e.message))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serin_server::serve(listener, app, async {
        let _ = stop_rx.await;
    }));
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let http = http.clone();
        let base = base.clone();
        let admin = admin.clone();
        async move {
            let resp = http
                .post(format!("{base}{path}"))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await?;
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                return Err(anyhow!("{path}: HTTP {status}: {v}"));
            }
            Ok::<Value, anyhow::Error>(v)
        }
    };
    for rev in 1..=2 {
        post(
            "/v1/bundles".into(),
            json!({ "files": bundle_files(rev), "env": "dev" }),
        )
        .await?;
    }
    post(
        "/v1/envs/dev/agents/bench/deploy".into(),
        json!({ "bundle": 1 }),
    )
    .await?;
    post(
        "/v1/envs/dev/agents/bench/deploy".into(),
        json!({ "bundle": 2 }),
    )
    .await?;

    // Each subscriber reports (its index, version, arrival instant).
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let mut tasks = Vec::with_capacity(args.subscribers);
    let sub_client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    for _ in 0..args.subscribers {
        let tx = tx.clone();
        let url = format!("{base}/v1/envs/dev/snapshot/stream");
        let c = sub_client.clone();
        let token = admin.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(resp) = c.get(url).bearer_auth(token).send().await else {
                return;
            };
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    if let Some(id) = event
                        .lines()
                        .find_map(|l| l.strip_prefix("id:"))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    {
                        let _ = tx.send((id, Instant::now()));
                    }
                }
            }
        }));
    }
    drop(tx);
    // Wait until every subscriber has its first snapshot.
    let mut connected = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected < args.subscribers {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(_)) => connected += 1,
            _ => {
                return Err(anyhow!(
                    "only {connected} of {} subscribers connected",
                    args.subscribers
                ));
            }
        }
    }

    let mut last_client_ms = Vec::new();
    let mut all_ms = Vec::new();
    for i in 0..args.rollbacks {
        // Alternate: rollback to bundle 1, then redeploy bundle 2.
        let v = if i % 2 == 0 {
            post(
                "/v1/envs/dev/agents/bench/rollback".into(),
                json!({ "reason": "bench" }),
            )
            .await?
        } else {
            post(
                "/v1/envs/dev/agents/bench/deploy".into(),
                json!({ "bundle": 2 }),
            )
            .await?
        };
        let acked = Instant::now();
        let version = v["version"]
            .as_u64()
            .context("change answered no version")?;
        let mut got = 0;
        let mut worst = Duration::ZERO;
        let deadline = acked + Duration::from_secs(30);
        while got < args.subscribers {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some((id, at))) if id == version => {
                    got += 1;
                    let lag = at.saturating_duration_since(acked);
                    all_ms.push(lag.as_secs_f64() * 1e3);
                    worst = worst.max(lag);
                }
                Ok(Some(_)) => {}
                _ => {
                    return Err(anyhow!(
                        "change {i}: only {got} of {} subscribers saw v{version}",
                        args.subscribers
                    ));
                }
            }
        }
        last_client_ms.push(worst.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        t.abort();
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    last_client_ms.sort_by(f64::total_cmp);
    all_ms.sort_by(f64::total_cmp);
    let report = json!({
        "subscribers": args.subscribers,
        "changes": args.rollbacks,
        "last_subscriber_ms": {
            "p50": percentile(&last_client_ms, 50.0),
            "p99": percentile(&last_client_ms, 99.0),
            "max": last_client_ms.last().copied().unwrap_or(f64::NAN),
        },
        "any_subscriber_ms": {
            "p50": percentile(&all_ms, 50.0),
            "p99": percentile(&all_ms, 99.0),
        },
        "target_p99_ms": target_ms(args.subscribers),
    });
    if args.output_json {
        out::json(&report);
    } else {
        out::line(&format!(
            "{} subscribers, {} rollbacks/redeploys over loopback",
            args.subscribers, args.rollbacks
        ));
        out::line(&format!(
            "ack -> last subscriber has it: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= {} ms)",
            report["last_subscriber_ms"]["p50"]
                .as_f64()
                .unwrap_or(f64::NAN),
            report["last_subscriber_ms"]["p99"]
                .as_f64()
                .unwrap_or(f64::NAN),
            report["last_subscriber_ms"]["max"]
                .as_f64()
                .unwrap_or(f64::NAN),
            target_ms(args.subscribers),
        ));
        out::line(&format!(
            "ack -> any one subscriber: p50 {:.1} ms, p99 {:.1} ms",
            report["any_subscriber_ms"]["p50"]
                .as_f64()
                .unwrap_or(f64::NAN),
            report["any_subscriber_ms"]["p99"]
                .as_f64()
                .unwrap_or(f64::NAN),
        ));
    }
    Ok(())
}

/// TARGETS.md: p99 <= 50 ms with 1,000 subscribers, <= 150 ms with 10,000.
fn target_ms(subscribers: usize) -> u32 {
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
