//! Shared evidence: outcomes sent to any replica on one PostgreSQL schema reach the leader's
//! monitors (through the outcome journal), are counted once however often a batch is retried
//! on other replicas, and every replica shows the same verdicts. Skipped, like every
//! PostgreSQL test, with `SERIN_TEST_SKIP_POSTGRES=1`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Replicas, Server, push_two_bundles, stable_then_release};

/// Controller ticks this often, so a latched fail is acted on at once either way.
const FLAGS: &[&str] = &["--tick-ms", "100"];
/// How long any replica may take to show what the leader stored.
const AGREE_WITHIN: Duration = Duration::from_secs(10);

/// A deployment of `n` replicas with support@1 stable in prod and a release of support@2 at
/// 50% (a step that never promotes by itself; rollback on a guardrail fail), started through
/// the leader. Answers the replicas, the leader's index and the release's snapshot version.
async fn deployment(n: usize, work: &std::path::Path) -> Option<(Replicas, usize, u64)> {
    let r = Replicas::start(n, FLAGS).await?;
    let (leader, _) = r.leader(Duration::from_secs(10)).await;
    let s = r.server(leader);
    s.create_env(&r.admin, "prod", true);
    let cli = s.cli(&r.admin);
    push_two_bundles(&cli, work);
    stable_then_release(
        &cli,
        work,
        "steps:\n  - canary: {weight: 50%, min_duration: 1h, min_requests: 100000}\n\
         guardrails:\n  error_rate: {max_increase: 2pp}\n  settings: {min_requests: 100}\n",
    );
    let (_, snap) = s.http(&r.admin).get("/v1/envs/prod/snapshot").await;
    let version = snap["version"].as_u64().unwrap();
    Some((r, leader, version))
}

fn event(id: &str, arm: &str, version: u64, error: bool) -> Value {
    let bundle = if arm == "canary" {
        "support@2"
    } else {
        "support@1"
    };
    json!({
        "request_id": id, "agent": "support", "env": "prod", "snapshot_version": version,
        "bundle": bundle, "arm": arm, "user": id, "tenant": "acme",
        "latency_ms": 400.0, "cost_usd": 0.01, "tool_calls": {"ok": 1, "failed": 0},
        "error": if error { json!({"class": "permanent"}) } else { Value::Null },
    })
}

/// Batch `k` of a deterministic stream: 50 canary and 50 stable outcomes, the canary failing
/// one request in `canary_errors_every` (0: never), the stable one in a hundred.
fn batch(k: usize, version: u64, canary_errors_every: usize) -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..50 {
        let n = k * 50 + i;
        events.push(event(
            &format!("s-{n}"),
            "stable",
            version,
            n.is_multiple_of(100),
        ));
        let failed = canary_errors_every > 0 && n.is_multiple_of(canary_errors_every);
        events.push(event(&format!("c-{n}"), "canary", version, failed));
    }
    events
}

async fn post(server: &Server, token: &str, events: &[Value]) -> Value {
    let (status, body) = server
        .http(token)
        .post("/v1/outcomes", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rejected"], 0, "{body}");
    body
}

async fn release(server: &Server, token: &str) -> Value {
    let (status, body) = server
        .http(token)
        .get("/v1/envs/prod/agents/support/release")
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `server`'s release view until `done` holds; panics after [`AGREE_WITHIN`].
async fn wait_release(
    server: &Server,
    token: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + AGREE_WITHIN;
    loop {
        let r = release(server, token).await;
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not within {AGREE_WITHIN:?}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn error_rate(view: &Value) -> &Value {
    view["verdicts"]
        .as_array()
        .and_then(|v| {
            v.iter()
                .find(|v| v["guardrail"] == "error_rate.max_increase")
        })
        .unwrap_or(&Value::Null)
}

/// Sends the regression stream (batches one after another, to replica `k % n` of the
/// deployment) until it is rolled back; answers the canary requests the latched fail was
/// judged on.
async fn canary_n_at_rollback(n: usize) -> Option<u64> {
    let work = tempfile::tempdir().unwrap();
    let (r, leader, version) = deployment(n, work.path()).await?;
    for k in 0..12 {
        post(r.server(k % n), &r.admin, &batch(k, version, 4)).await;
    }
    let rolled_back = wait_release(r.server(leader), &r.admin, "rollback", |v| {
        v["release"]["phase"] == "rolled_back"
    })
    .await;
    let fail = error_rate(&rolled_back);
    assert_eq!(fail["status"], "fail", "{rolled_back}");
    assert!(fail["latched_at_ms"].is_i64(), "{rolled_back}");
    Some(fail["canary"]["n"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_spread_over_three_replicas_rolls_back_on_the_evidence_one_would_need() {
    let started = Instant::now();
    let Some(one) = canary_n_at_rollback(1).await else {
        return;
    };
    let three = canary_n_at_rollback(3).await.unwrap();
    eprintln!("canary requests at the latched fail: one replica {one}, three replicas {three}");
    let (low, high) = (one as f64 * 0.9, one as f64 * 1.1);
    assert!(
        (low..=high).contains(&(three as f64)),
        "three replicas latched at {three} canary requests, one replica at {one}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_retried_on_another_replica_is_counted_once() {
    let work = tempfile::tempdir().unwrap();
    let Some((r, leader, version)) = deployment(3, work.path()).await else {
        return;
    };
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let first = batch(0, version, 0);
    let body = post(r.server(others[0]), &r.admin, &first).await;
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(100), Some(0))
    );
    let counted = wait_release(r.server(leader), &r.admin, "the first batch", |v| {
        error_rate(v)["canary"]["n"] == 50
    })
    .await;
    // The client saw no answer and retries on another replica, then on the leader.
    for at in [others[1], leader] {
        let body = post(r.server(at), &r.admin, &first).await;
        assert_eq!(
            (body["accepted"].as_u64(), body["duplicates"].as_u64()),
            (Some(0), Some(100)),
            "retry on replica {at}: {body}"
        );
    }
    // A later batch through the same replica: once it is counted, anything the retries had
    // journalled before it would have been counted too (the journal is applied in order).
    post(r.server(others[1]), &r.admin, &batch(1, version, 0)).await;
    let after = wait_release(r.server(leader), &r.admin, "the second batch", |v| {
        error_rate(v)["canary"]["n"] != 50
    })
    .await;
    assert_eq!(error_rate(&after)["canary"]["n"], 100, "{counted}\n{after}");
    assert_eq!(error_rate(&after)["control"]["n"], 100, "{after}");
}

/// One window of 50 canary and 50 stable requests (what an SDK aggregates before sending),
/// no errors on either side.
fn window(id: &str, version: u64) -> Value {
    let part = |arm: &str, bundle: &str| {
        json!({
            "arm": arm, "bundle": bundle, "latency_ms": vec![400.0; 50],
            "cost_usd": vec![0.01; 50],
            "errors": {"transient": 0, "permanent": 0, "external": 0},
            "refusals": 0, "tool_calls": {"ok": 50, "failed": 0}, "tool_requests": 50,
            "evals": {"samples": 0, "passed": 0, "score_sum": 0.0},
            "tokens": {"input": 0, "output": 0}, "traced": 0,
        })
    };
    json!({
        "window_id": id, "agent": "support", "env": "prod", "snapshot_version": version,
        "arms": [part("canary", "support@2"), part("stable", "support@1")],
    })
}

async fn post_windows(server: &Server, token: &str, windows: &[Value]) -> Value {
    let (status, body) = server
        .http(token)
        .post("/v1/outcomes/windows", &json!({ "windows": windows }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rejected"], 0, "{body}");
    body
}

/// Windows go through the outcome journal as events do: a follower journals them, the
/// leader's monitor applies them, and a window retried on another replica counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_sent_to_a_follower_reach_the_leader_and_a_retried_window_counts_once() {
    let work = tempfile::tempdir().unwrap();
    let Some((r, leader, version)) = deployment(3, work.path()).await else {
        return;
    };
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let first = [window("w-1", version), window("w-2", version)];
    let body = post_windows(r.server(others[0]), &r.admin, &first).await;
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(2), Some(0)),
        "{body}"
    );
    wait_release(r.server(leader), &r.admin, "the first windows", |v| {
        error_rate(v)["canary"]["n"] == 100 && error_rate(v)["control"]["n"] == 100
    })
    .await;
    for at in [others[1], leader] {
        let body = post_windows(r.server(at), &r.admin, &first).await;
        assert_eq!(
            (body["accepted"].as_u64(), body["duplicates"].as_u64()),
            (Some(0), Some(2)),
            "retry on replica {at}: {body}"
        );
    }
    // Windows and events share the journal and its order: once this later batch is
    // counted, anything the retries had journalled before it would have been too.
    post(r.server(others[1]), &r.admin, &batch(0, version, 0)).await;
    let after = wait_release(r.server(leader), &r.admin, "the events after", |v| {
        error_rate(v)["canary"]["n"] != 100
    })
    .await;
    assert_eq!(error_rate(&after)["canary"]["n"], 150, "{after}");
    assert_eq!(error_rate(&after)["control"]["n"], 150, "{after}");
    // The other replicas show what the leader stored.
    let expected = error_rate(&after).clone();
    for i in others {
        wait_release(r.server(i), &r.admin, "the leader's verdicts", |v| {
            same_verdict(error_rate(v), &expected)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_shows_the_verdicts_the_leader_stored() {
    let work = tempfile::tempdir().unwrap();
    let Some((r, leader, version)) = deployment(3, work.path()).await else {
        return;
    };
    for k in 0..6 {
        post(r.server(k % 3), &r.admin, &batch(k, version, 0)).await;
    }
    let on_leader = wait_release(
        r.server(leader),
        &r.admin,
        "every batch on the leader",
        |v| error_rate(v)["canary"]["n"] == 300,
    )
    .await;
    let expected = error_rate(&on_leader).clone();
    assert_eq!(expected["control"]["n"], 300, "{on_leader}");
    for i in (0..3).filter(|i| *i != leader) {
        let seen = wait_release(r.server(i), &r.admin, "the leader's verdicts", |v| {
            same_verdict(error_rate(v), &expected)
        })
        .await;
        assert_eq!(
            seen["release"]["phase"], on_leader["release"]["phase"],
            "{seen}"
        );
    }
}

/// The same verdict, up to the last bits of floats that went through the stored JSON.
fn same_verdict(a: &Value, b: &Value) -> bool {
    let close = |x: &Value, y: &Value| match (x.as_f64(), y.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => x == y,
    };
    a["status"] == b["status"]
        && a["canary"]["n"] == b["canary"]["n"]
        && a["control"]["n"] == b["control"]["n"]
        && close(&a["canary"]["value"], &b["canary"]["value"])
        && close(&a["control"]["value"], &b["control"]["value"])
        && close(&a["statistic"], &b["statistic"])
}

/// A counter from `server`'s `/metrics` (0 when absent).
async fn counter(server: &Server, token: &str, name: &str) -> f64 {
    let resp = server
        .http(token)
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    text.lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The leader is frozen (SIGSTOP) so it cannot apply what a replica that does not lead
/// journals, and is then SIGKILLed with every row of a regression still pending. The next
/// leader applies them before it acts, rolls the release back on them, and counts each once:
/// it applies exactly the rows sent, and the fail latches on the canary requests one replica
/// judging the same stream directly latches on (a row applied twice or lost would move that
/// by a whole batch of 50).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_rows_pending_when_the_leader_is_sigkilled_are_applied_once_by_the_next_leader() {
    let Some(one) = canary_n_at_rollback(1).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (mut r, leader, version) = deployment(3, work.path()).await.unwrap();
    let (_, epoch) = r.leader(AGREE_WITHIN).await;
    let via = (0..3).find(|i| *i != leader).unwrap();
    let pid = r.server(leader).pid().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    const BATCHES: usize = 12;
    for k in 0..BATCHES {
        let body = post(r.server(via), &r.admin, &batch(k, version, 4)).await;
        assert_eq!(body["accepted"], 100, "{body}");
    }
    // Every replica's readiness shows the batches waiting for a leader.
    let (_, ready) = r.server(via).http("").get("/readyz").await;
    assert_eq!(ready["replica"]["journal_behind"], BATCHES, "{ready}");
    r.kill9(leader);
    let (new, new_epoch) = r.leader(Duration::from_secs(5)).await;
    assert_eq!(new_epoch, epoch + 1, "one election");

    let rolled_back = wait_release(r.server(new), &r.admin, "rollback", |v| {
        v["release"]["phase"] == "rolled_back"
    })
    .await;
    let fail = error_rate(&rolled_back);
    assert_eq!(fail["status"], "fail", "{rolled_back}");
    let n = fail["canary"]["n"].as_u64().unwrap();
    assert!(
        n.abs_diff(one) < 50,
        "latched on {n} canary requests after the failover, {one} on one replica"
    );
    let consumed = counter(
        r.server(new),
        &r.admin,
        "serin_outcome_journal_consumed_total",
    )
    .await;
    assert_eq!(
        consumed, BATCHES as f64,
        "each journalled batch applied once"
    );
    // The replica that took the outcomes shows the leader's rollback too.
    wait_release(
        r.server(via),
        &r.admin,
        "the rollback on the ingesting replica",
        |v| v["release"]["phase"] == "rolled_back",
    )
    .await;
    let (_, snap) = r
        .server(via)
        .http(&r.admin)
        .get("/v1/envs/prod/snapshot")
        .await;
    assert!(snap["agents"]["support"]["release"].is_null(), "{snap}");
    let (_, ready) = r.server(via).http("").get("/readyz").await;
    assert_eq!(ready["replica"]["journal_behind"], 0, "{ready}");
}
