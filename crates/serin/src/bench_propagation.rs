//! `serin bench propagation`: how fast a rollback reaches every connected snapshot-stream
//! subscriber, and how much memory a server holds while they are connected.
//!
//! The servers are real `serin server` child processes (this same executable), so their
//! resident memory (`VmRSS`) is theirs alone, not the subscribers'. Without
//! `--database-url` one server runs on a temporary SQLite store; with it, `--replicas`
//! servers share a private schema of that PostgreSQL database (dropped afterwards). The
//! changes (rollback, redeploy, alternating) always go through the first replica:
//!
//! 1. with every replica up, the subscribers split evenly over them, so most of them hear
//!    of a change through another replica (LISTEN/NOTIFY, then a store read);
//! 2. then, as the baseline of the same run, with only the first replica left and every
//!    subscriber on it.
//!
//! Per change it times the change's HTTP response to the moment the last subscriber has
//! the new snapshot version.

// `serde_json::Value["key"]` yields Null for a missing key; it cannot panic.
#![allow(clippy::indexing_slicing)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Semaphore, mpsc};

use crate::bench::{percentile, target_ms};
use crate::out;

pub struct PropagationArgs {
    pub subscribers: usize,
    pub rollbacks: usize,
    pub replicas: usize,
    pub database_url: Option<String>,
    /// Agents deployed (in their own env) before the idle memory reading.
    pub agents: usize,
    pub output_json: bool,
}

/// Resident memory targets of the issue: idle with 100 agents, and with 1,000 subscribers.
const IDLE_RSS_TARGET_MB: f64 = 30.0;
const CONNECTED_RSS_TARGET_MB: f64 = 60.0;
/// Subscribers connecting at once; more only fills the listen backlog and makes SYNs wait
/// a second to be retried.
const CONNECTING_AT_ONCE: usize = 256;

fn bundle_files(agent: &str, revision: u32) -> Value {
    json!({
        "bundle.yaml": format!("agent: {agent}\nmodel:\n  provider: anthropic\n  snapshot: claude-opus-4-7-20260108\nprompt: prompt.md\n"),
        "prompt.md": format!("You are the benchmark agent {agent}, revision {revision}.\n"),
    })
}

/// Where the servers keep their state, removed when the run ends.
enum Storage {
    Sqlite(std::path::PathBuf),
    Postgres(serin_store::scratch::ScratchSchema, std::path::PathBuf),
}

impl Storage {
    fn server_args(&self) -> Vec<String> {
        match self {
            Storage::Sqlite(dir) => vec!["--data".into(), dir.display().to_string()],
            Storage::Postgres(schema, audit_key) => vec![
                "--database-url".into(),
                schema.url.clone(),
                "--audit-key".into(),
                audit_key.display().to_string(),
            ],
        }
    }

    async fn remove(self) {
        match self {
            Storage::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Storage::Postgres(schema, audit_key) => {
                if let Err(e) = schema.drop_schema().await {
                    out::note(&format!("could not drop schema {}: {e}", schema.schema));
                }
                let _ = std::fs::remove_file(audit_key);
            }
        }
    }
}

/// One `serin server` child process.
struct Replica {
    child: tokio::process::Child,
    pid: u32,
    base: String,
    /// The admin token the first server on a fresh store prints.
    bootstrap_token: Option<String>,
}

impl Replica {
    async fn start(storage: &Storage, max_streams: usize) -> anyhow::Result<Replica> {
        let exe = std::env::current_exe().context("locating the serin executable")?;
        // Streams hold their connection; room for all of them plus the API.
        let max_connections = max_streams + max_streams / 7 + 64;
        let mut child = tokio::process::Command::new(exe)
            .arg("server")
            .args(storage.server_args())
            .args(["--listen", "127.0.0.1:0"])
            .args(["--max-streams", &max_streams.to_string()])
            .args(["--max-connections", &max_connections.to_string()])
            .args(["--max-in-flight", "4096"])
            .env("SERIN_LOG", "warn")
            .env_remove("SERIN_TOKEN")
            .env_remove("SERIN_DATABASE_URL")
            .env_remove("SERIN_DATA")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting serin server")?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut bootstrap_token = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, lines.next_line())
                .await
                .map_err(|_| anyhow!("the server did not print its listening line in 60 s"))?
                .context("reading the server's output")?
                .ok_or_else(|| anyhow!("the server exited before listening"))?;
            if let Some(t) = line.trim().strip_prefix("SERIN_TOKEN=") {
                bootstrap_token = Some(t.to_owned());
            }
            if let Some(url) = line.strip_prefix("serin listening on ") {
                break url.trim().to_owned();
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Replica {
            child,
            pid,
            base,
            bootstrap_token,
        })
    }

    /// Resident memory in MB, from `/proc/<pid>/status` (None off Linux).
    fn rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    /// SIGTERM (a graceful drain), then SIGKILL if it takes over 10 s.
    async fn stop(mut self) {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Raises this process's open-file soft limit to the hard limit: every subscriber is a
/// socket here, and the servers (children) inherit the limit for their side.
fn raise_fd_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

fn rss_json(replicas: &[Replica]) -> Value {
    json!(replicas.iter().map(Replica::rss_mb).collect::<Vec<_>>())
}

fn max_rss(v: &Value) -> f64 {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .fold(f64::NAN, f64::max)
}

pub async fn propagation(args: PropagationArgs) -> anyhow::Result<()> {
    if args.replicas == 0 || args.subscribers == 0 {
        bail!("--replicas and --subscribers must be at least 1");
    }
    if args.replicas > 1 && args.database_url.is_none() {
        bail!("--replicas above 1 needs --database-url: replicas share PostgreSQL");
    }
    let fd_limit = raise_fd_limit();
    let tmp = std::env::temp_dir().join(format!(
        "serin-bench-propagation-{}-{}",
        std::process::id(),
        serin_server::clock::now_ms()
    ));
    let storage = match &args.database_url {
        Some(url) => {
            let schema = serin_store::scratch::create_schema(url, "serin_bench")
                .await
                .context("creating a private schema for the benchmark")?;
            Storage::Postgres(schema, tmp.with_extension("audit.key"))
        }
        None => Storage::Sqlite(tmp),
    };
    let result = run(&args, &storage, fd_limit).await;
    storage.remove().await;
    let report = result?;
    if args.output_json {
        out::json(&report);
    } else {
        print_report(&report);
    }
    Ok(())
}

async fn run(
    args: &PropagationArgs,
    storage: &Storage,
    fd_limit: Option<u64>,
) -> anyhow::Result<Value> {
    let mut replicas: Vec<Replica> = Vec::with_capacity(args.replicas);
    let result = measure(args, storage, fd_limit, &mut replicas).await;
    for r in replicas {
        r.stop().await;
    }
    result
}

async fn measure(
    args: &PropagationArgs,
    storage: &Storage,
    fd_limit: Option<u64>,
    replicas: &mut Vec<Replica>,
) -> anyhow::Result<Value> {
    // Every replica must take every subscriber in the single-replica phase.
    let max_streams = args.subscribers + 64;
    for _ in 0..args.replicas {
        // One at a time: the first creates the schema's tables and the admin token.
        replicas.push(Replica::start(storage, max_streams).await?);
    }
    let first = replicas.first().context("no replica started")?;
    let admin = first
        .bootstrap_token
        .clone()
        .context("the first server printed no admin token")?;
    let client = crate::client::Client::new(&crate::cli::ClientArgs {
        server: first.base.clone(),
        token: Some(admin.clone()),
        output: crate::cli::Output::Json,
    })?;
    setup(&client, args.agents).await?;
    // Let start-up allocations and the deploys' requests settle before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_json(replicas);

    let mut phases = Vec::new();
    if replicas.len() > 1 {
        phases.push(phase(args, &client, &admin, replicas).await?);
        // The baseline keeps only the replica the changes go through.
        for r in replicas.drain(1..) {
            r.stop().await;
        }
    }
    phases.push(phase(args, &client, &admin, replicas).await?);

    let backend = if args.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    Ok(json!({
        "subscribers": args.subscribers,
        "changes": args.rollbacks,
        "replicas": args.replicas,
        "store": backend,
        "open_file_limit": fd_limit,
        "target_p99_ms": target_ms(args.subscribers),
        "rss_mb": {
            "idle_agents": args.agents,
            "idle": idle_rss,
            "idle_target": IDLE_RSS_TARGET_MB,
            "connected_target_at_1000": CONNECTED_RSS_TARGET_MB,
        },
        "phases": phases,
    }))
}

/// Two bundles of agent `bench` in `dev` (bench@2 stable, bench@1 the previous one), and
/// `agents` more agents deployed in env `fleet`, away from the streams being timed.
async fn setup(client: &crate::client::Client, agents: usize) -> anyhow::Result<()> {
    let post = |path: &'static str, body: Value| async move {
        client
            .post::<_, Value>(path, &body)
            .await
            .with_context(|| format!("POST {path}"))
    };
    for rev in 1..=2 {
        post(
            "/v1/bundles",
            json!({ "files": bundle_files("bench", rev), "env": "dev" }),
        )
        .await?;
    }
    for bundle in 1..=2 {
        post(
            "/v1/envs/dev/agents/bench/deploy",
            json!({ "bundle": bundle }),
        )
        .await?;
    }
    if agents == 0 {
        return Ok(());
    }
    post("/v1/envs", json!({ "name": "fleet", "strict": false })).await?;
    for i in 0..agents {
        let agent = format!("fleet-{i:04}");
        client
            .post::<_, Value>(
                "/v1/bundles",
                &json!({ "files": bundle_files(&agent, 1), "env": "fleet" }),
            )
            .await
            .with_context(|| format!("pushing {agent}"))?;
        client
            .post::<_, Value>(
                &format!("/v1/envs/fleet/agents/{agent}/deploy"),
                &json!({ "bundle": 1 }),
            )
            .await
            .with_context(|| format!("deploying {agent}"))?;
    }
    Ok(())
}

/// Subscribers split evenly over `replicas`, changes through the first; the figures.
async fn phase(
    args: &PropagationArgs,
    client: &crate::client::Client,
    admin: &str,
    replicas: &[Replica],
) -> anyhow::Result<Value> {
    // Each subscriber reports (the version it received, when).
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let sub_client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let connecting = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let mut per_replica = vec![0usize; replicas.len()];
    let mut tasks = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let at = i % replicas.len();
        let (Some(replica), Some(count)) = (replicas.get(at), per_replica.get_mut(at)) else {
            continue;
        };
        *count += 1;
        let url = format!("{}/v1/envs/dev/snapshot/stream", replica.base);
        tasks.push(tokio::spawn(subscriber(
            sub_client.clone(),
            url,
            admin.to_owned(),
            connecting.clone(),
            tx.clone(),
        )));
    }
    drop(tx);
    let result = time_changes(args, client, replicas, &mut rx).await;
    for t in tasks {
        t.abort();
    }
    let (last_ms, any_ms, rss) = result?;
    Ok(json!({
        "replicas": replicas.len(),
        "subscribers_per_replica": per_replica,
        "last_subscriber_ms": {
            "p50": percentile(&last_ms, 50.0),
            "p99": percentile(&last_ms, 99.0),
            "max": last_ms.last().copied().unwrap_or(f64::NAN),
        },
        "any_subscriber_ms": {
            "p50": percentile(&any_ms, 50.0),
            "p99": percentile(&any_ms, 99.0),
        },
        "rss_connected_mb": rss,
    }))
}

/// Follows one stream, reporting each event's version; holds a connecting permit until its
/// first event.
async fn subscriber(
    http: reqwest::Client,
    url: String,
    token: String,
    connecting: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<(u64, Instant)>,
) {
    let Ok(mut permit) = connecting.acquire_owned().await.map(Some) else {
        return;
    };
    let Ok(resp) = http.get(url).bearer_auth(token).send().await else {
        return;
    };
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let id = event
                .split(|b| *b == b'\n')
                .find_map(|l| l.strip_prefix(b"id:"))
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(id) = id {
                let _ = tx.send((id, Instant::now()));
                permit = None;
            }
        }
    }
    drop(permit);
}

type Timings = (Vec<f64>, Vec<f64>, Value);

async fn time_changes(
    args: &PropagationArgs,
    client: &crate::client::Client,
    replicas: &[Replica],
    rx: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
) -> anyhow::Result<Timings> {
    // Wait until every subscriber has its first snapshot.
    let mut connected = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while connected < args.subscribers {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(_)) => connected += 1,
            _ => bail!(
                "only {connected} of {} subscribers connected",
                args.subscribers
            ),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_json(replicas);

    let mut last_ms = Vec::new();
    let mut any_ms = Vec::new();
    for i in 0..args.rollbacks {
        // Alternate: roll back to bench@1, then redeploy bench@2.
        let (path, body) = if i % 2 == 0 {
            (
                "/v1/envs/dev/agents/bench/rollback",
                json!({ "reason": "bench" }),
            )
        } else {
            ("/v1/envs/dev/agents/bench/deploy", json!({ "bundle": 2 }))
        };
        let (_, v): (_, Value) = client.post(path, &body).await?;
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
                    any_ms.push(lag.as_secs_f64() * 1e3);
                    worst = worst.max(lag);
                }
                Ok(Some(_)) => {}
                _ => bail!(
                    "change {i}: only {got} of {} subscribers saw v{version}",
                    args.subscribers
                ),
            }
        }
        last_ms.push(worst.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last_ms.sort_by(f64::total_cmp);
    any_ms.sort_by(f64::total_cmp);
    Ok((last_ms, any_ms, rss))
}

fn mb(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

fn list_mb(v: &Value) -> String {
    let cells: Vec<String> = v.as_array().into_iter().flatten().map(mb).collect();
    cells.join(" / ")
}

fn print_report(r: &Value) {
    out::line(&format!(
        "{} subscribers of env dev, {} rollbacks/redeploys through replica 1, {} store \
         (open-file limit {})",
        r["subscribers"],
        r["changes"],
        r["store"].as_str().unwrap_or("?"),
        r["open_file_limit"]
    ));
    let rows: Vec<Vec<String>> = r["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let subs: Vec<String> = p["subscribers_per_replica"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Value::to_string)
                .collect();
            vec![
                p["replicas"].to_string(),
                subs.join(" / "),
                format!(
                    "{:.1}",
                    p["last_subscriber_ms"]["p50"].as_f64().unwrap_or(f64::NAN)
                ),
                format!(
                    "{:.1}",
                    p["last_subscriber_ms"]["p99"].as_f64().unwrap_or(f64::NAN)
                ),
                format!(
                    "{:.1}",
                    p["last_subscriber_ms"]["max"].as_f64().unwrap_or(f64::NAN)
                ),
                format!(
                    "{:.1}",
                    p["any_subscriber_ms"]["p50"].as_f64().unwrap_or(f64::NAN)
                ),
                list_mb(&p["rss_connected_mb"]),
            ]
        })
        .collect();
    out::table(
        &[
            "replicas",
            "subscribers",
            "last p50 ms",
            "last p99 ms",
            "last max ms",
            "any p50 ms",
            "RSS connected MB",
        ],
        &rows,
    );
    out::line(&format!(
        "target: last subscriber p99 <= {} ms",
        r["target_p99_ms"]
    ));
    let rss = &r["rss_mb"];
    out::line(&format!(
        "server RSS idle with {} agents deployed: {} MB (max {:.1}; target <= {} MB); \
         with subscribers connected: target <= {} MB at 1,000",
        rss["idle_agents"],
        list_mb(&rss["idle"]),
        max_rss(&rss["idle"]),
        rss["idle_target"],
        rss["connected_target_at_1000"],
    ));
}
