//! Several servers on one store: PostgreSQL replicas fan changes out to each other's SDKs
//! through LISTEN/NOTIFY (with the store poll set to ten minutes, so nothing else could carry
//! them in time), and a second server on one SQLite data directory is refused.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serin_sdk::{Arm, RequestContext, Serin};

use crate::harness::{BIN, Backend, Server, run_cli, sample_bundle};

/// So long that only the listener can deliver a change within a test's lifetime.
const NO_POLL: &[&str] = &["--refresh-ms", "600000"];
/// The bound the issue sets on a replica's SDKs converging after a commit elsewhere.
const CONVERGE_WITHIN: Duration = Duration::from_secs(2);

/// Replica A (bootstraps the store, deploys support@1 to dev) and replica B on the same
/// PostgreSQL schema, and an SDK following B. None when PostgreSQL tests are skipped.
struct TwoReplicas {
    backend: Backend,
    a: Server,
    b: Server,
    admin: String,
    sdk: Serin,
    _cache: tempfile::TempDir,
}

async fn two_replicas() -> Option<TwoReplicas> {
    let backend = Backend::postgres().await?;
    let a = Server::start_with(&backend, 0, NO_POLL);
    let admin = a.bootstrap_token.clone().unwrap();
    // Started after A, so the store already has its admin token.
    let b = Server::start_with(&backend, 0, NO_POLL);
    a.cli(&admin)
        .run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    let (status, body) = a
        .http(&admin)
        .post("/v1/envs/dev/agents/support/deploy", &json!({"bundle": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    let deployed = body["version"].as_u64().unwrap();
    let sdk_token = a.token(&admin, "sdk").await;
    wait_ready(&b, |r| r["replica"]["listener_connected"] == true).await;

    let cache = tempfile::tempdir().unwrap();
    let sdk = Serin::builder(b.url.clone(), sdk_token, "dev")
        .cache_dir(cache.path())
        .backoff(Duration::from_millis(50), Duration::from_millis(250))
        .start_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    assert_eq!(sdk.snapshot_version(), Some(deployed));
    assert_eq!(decide(&sdk), Arm::Stable);
    Some(TwoReplicas {
        backend,
        a,
        b,
        admin,
        sdk,
        _cache: cache,
    })
}

fn decide(sdk: &Serin) -> Arm {
    let ctx = RequestContext {
        user: Some("u-1".into()),
        ..RequestContext::new("r-1")
    };
    sdk.decide("support", &ctx).unwrap().arm
}

/// POSTs a routing change to `server` and returns the version it committed.
async fn commit(server: &Server, admin: &str, path: &str) -> u64 {
    let (status, body) = server
        .http(admin)
        .post(path, &json!({"reason": "replica test"}))
        .await;
    assert_eq!(status, 200, "{path}: {body}");
    body["version"].as_u64().unwrap()
}

/// How long after `since` the SDK serves `version`; panics past [`CONVERGE_WITHIN`].
async fn converged(sdk: &Serin, version: u64, since: Instant) -> Duration {
    loop {
        let took = since.elapsed();
        if sdk.snapshot_version().is_some_and(|v| v >= version) {
            return took;
        }
        assert!(
            took < CONVERGE_WITHIN,
            "the SDK on replica B still serves {:?} {took:?} after v{version} was committed on A",
            sdk.snapshot_version()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_ready(server: &Server, until: impl Fn(&Value) -> bool) -> Value {
    let http = server.http("");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http.get("/readyz").await;
        assert_eq!(status, 200, "{body}");
        if until(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz never got there: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_committed_on_one_replica_reaches_an_sdk_on_another_within_two_seconds() {
    let Some(r) = two_replicas().await else {
        return;
    };
    let since = Instant::now();
    let killed = commit(&r.a, &r.admin, "/v1/envs/dev/agents/support/kill").await;
    let took = converged(&r.sdk, killed, since).await;
    eprintln!("replicas: kill on A reached the SDK on B in {took:?}");
    assert_eq!(decide(&r.sdk), Arm::Killed);

    let ready = wait_ready(&r.b, |r| r["replica"]["caught_up"] == true).await;
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["store"], "postgres", "{ready}");
    assert_eq!(ready["replica"]["backend"], "postgres", "{ready}");
    assert_eq!(ready["replica"]["listener_connected"], true, "{ready}");
    assert_eq!(ready["replica"]["behind"], json!([]), "{ready}");
    assert_eq!(ready["replica"]["journal_behind"], 0, "{ready}");
    drop(r.sdk);
    r.b.stop();
    r.a.stop();
    drop(r.backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_listener_session_is_cut_still_converges_within_two_seconds() {
    let Some(r) = two_replicas().await else {
        return;
    };
    let Backend::Postgres(db) = &r.backend else {
        unreachable!()
    };
    let probe = serin_store::Store::open_postgres(db.url()).await.unwrap();
    let session = format!("serin-listener/{}", r.b.pid());
    let cut = probe
        .query_text_for_tests(&format!(
            "SELECT CAST(COUNT(pg_terminate_backend(pid)) AS TEXT) FROM pg_stat_activity \
             WHERE application_name = '{session}'"
        ))
        .await
        .unwrap();
    assert_eq!(cut.as_deref(), Some("1"), "B has one listener session");

    // Committed at once, most likely before B has reconnected: only the catch-up read after
    // the reconnect can deliver it then.
    let since = Instant::now();
    let killed = commit(&r.a, &r.admin, "/v1/envs/dev/agents/support/kill").await;
    let took = converged(&r.sdk, killed, since).await;
    eprintln!("replicas: with B's listener cut, the kill on A reached the SDK on B in {took:?}");
    assert_eq!(decide(&r.sdk), Arm::Killed);

    let ready = wait_ready(&r.b, |r| r["replica"]["listener_connected"] == true).await;
    assert_eq!(ready["replica"]["caught_up"], true, "{ready}");
    let (status, metrics) = {
        let resp =
            r.b.http(&r.admin)
                .req(reqwest::Method::GET, "/metrics")
                .send()
                .await
                .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    assert_eq!(status, 200);
    assert!(
        metrics.lines().any(
            |l| l.starts_with("serin_snapshot_listener_reconnects_total") && l.ends_with(" 1")
        ),
        "B reconnected once: {metrics}"
    );

    // And the new session carries the next change as the first one did.
    let since = Instant::now();
    let unkilled = commit(&r.a, &r.admin, "/v1/envs/dev/agents/support/unkill").await;
    let took = converged(&r.sdk, unkilled, since).await;
    eprintln!("replicas: after B reconnected, the unkill on A reached the SDK on B in {took:?}");
    assert_eq!(decide(&r.sdk), Arm::Stable);
    probe.close().await;
    drop(r.sdk);
    r.b.stop();
    r.a.stop();
    drop(r.backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_sqlite_data_dir_is_refused_and_the_first_keeps_serving() {
    let backend = Backend::sqlite();
    let Backend::Sqlite(dir) = &backend else {
        unreachable!()
    };
    let first = Server::start(&backend);
    let admin = first.bootstrap_token.clone().unwrap();
    let data = dir.path().display().to_string();

    let started = Instant::now();
    let mut second = Command::new(BIN)
        .args(["server", "--data", &data, "--listen", "127.0.0.1:0"])
        .env("SERIN_LOG", "warn")
        .env_remove("SERIN_DATABASE_URL")
        .env_remove("SERIN_DATA")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = second.kill();
            panic!("the second server on {data} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = second.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(2), "{stdout}{stderr}");
    assert!(!stdout.contains("listening"), "it never served: {stdout}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    let line = errors[0];
    assert!(line.contains(&data), "{line}");
    assert!(line.contains(&format!("pid {}", first.pid())), "{line}");
    assert!(line.contains("in use by another server"), "{line}");

    // The first server never noticed.
    let (status, body) = first.http("").get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replica"]["backend"], "sqlite", "{body}");
    assert!(
        body["replica"].get("listener_connected").is_none(),
        "SQLite has no listener: {body}"
    );
    assert!(
        body["replica"].get("journal_behind").is_none(),
        "SQLite has no outcome journal: {body}"
    );
    first
        .cli(&admin)
        .run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();

    // Offline verbs are not servers: they write beside the running one, which serves it.
    let out = run_cli(
        &["token", "create", "--role", "viewer", "--data", &data],
        &[],
    )
    .ok();
    let viewer = out.stdout.trim().to_owned();
    assert_eq!(first.http(&viewer).get("/v1/agents").await.0, 200);

    // Once the first has gone, the directory is free again.
    first.stop();
    let again = Server::start(&backend);
    assert_eq!(again.http(&viewer).get("/v1/agents").await.0, 200);
    again.stop();
}
