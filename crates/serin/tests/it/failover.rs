//! Three real server processes on one PostgreSQL schema: one leads the release controller
//! (advisory lock + fencing epoch), and when it dies or loses its database session another
//! takes over within 5 s and carries every release on exactly once. Skipped, like every
//! PostgreSQL test, with `SERIN_TEST_SKIP_POSTGRES=1`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Replicas, Server, copy_dir, sample_bundle};

/// Controller ticks this often in these tests, so steps move as soon as their gate holds.
const TICK_MS: &str = "100";
/// The failover bound of the issue.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

static REQUEST: AtomicUsize = AtomicUsize::new(0);

fn event(arm: &str, bundle: &str, version: u64) -> Value {
    let i = REQUEST.fetch_add(1, Ordering::Relaxed);
    json!({
        "request_id": format!("fo-{arm}-{i}"), "agent": "support", "env": "prod",
        "snapshot_version": version, "bundle": bundle, "arm": arm, "user": format!("u{i}"),
        "latency_ms": 500.0 + (i % 40) as f64, "cost_usd": 0.01,
        "tool_calls": {"ok": 1, "failed": 0}, "error": Value::Null,
    })
}

/// Healthy traffic to `server`: `canary` canary outcomes and nine stable ones for each,
/// under the snapshot version that server serves.
async fn traffic(server: &Server, token: &str, canary: usize) {
    let (_, snap) = server.http(token).get("/v1/envs/prod/snapshot").await;
    let version = snap["version"].as_u64().unwrap();
    let mut events = Vec::new();
    for _ in 0..canary {
        events.push(event("canary", "support@2", version));
        for _ in 0..9 {
            events.push(event("stable", "support@1", version));
        }
    }
    let (status, body) = server
        .http(token)
        .post("/v1/outcomes", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rejected"], 0, "{body}");
}

async fn release(server: &Server, token: &str) -> Value {
    let (status, body) = server
        .http(token)
        .get("/v1/envs/prod/agents/support/release")
        .await;
    assert_eq!(status, 200, "{body}");
    body["release"].clone()
}

/// Three steps, each needing a second and 40 canary requests, promoted automatically.
fn plan(dir: &std::path::Path) -> String {
    let path = dir.join("plan.yaml");
    let step = |w: &str| {
        format!(
            "  - canary: {{weight: {w}, min_duration: 1s, min_requests: 40, require: no_fail}}\n"
        )
    };
    std::fs::write(
        &path,
        format!(
            "steps:\n{}{}{}promotion: auto\nstickiness: user\n\
             guardrails:\n  error_rate: {{max: 5%, max_increase: 2pp}}\n  settings: {{min_requests: 100}}\n\
             on_failure: rollback\n",
            step("5%"),
            step("25%"),
            step("50%")
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// Deploys support@1 in prod and starts a release of support@2 through the leader.
fn start_release(r: &Replicas, leader: usize, work: &std::path::Path) {
    let s = r.server(leader);
    s.create_env(&r.admin, "prod", true);
    let cli = s.cli(&r.admin);
    cli.run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    let dir = work.join("support");
    copy_dir(&sample_bundle(), &dir);
    std::fs::write(
        dir.join("prompt.md"),
        "You help with access requests via `create_support_ticket(`.\n",
    )
    .unwrap();
    cli.run(&["bundle", "push", dir.to_str().unwrap()]).ok();
    cli.run(&[
        "deploy", "support", "--env", "prod", "--bundle", "1", "--force", "--reason", "initial",
    ])
    .ok();
    cli.run(&[
        "release",
        "start",
        "support",
        "--env",
        "prod",
        "--bundle",
        "2",
        "--plan",
        &plan(work),
    ])
    .ok();
}

/// Feeds the leader traffic until the release is at `step` (or finished, with `None`).
async fn drive(r: &Replicas, until_step: Option<u64>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (leader, _) = r.leader(FAILOVER_BOUND).await;
        let s = r.server(leader);
        let rel = release(s, &r.admin).await;
        let done = match until_step {
            Some(step) => rel["phase"] == "canary" && rel["step"].as_u64() == Some(step),
            None => rel["phase"].as_str().is_some_and(|p| p != "canary"),
        };
        if done {
            return rel;
        }
        assert!(Instant::now() < deadline, "stuck: {rel}");
        traffic(s, &r.admin, 15).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// A release command sent to `server` (any replica), retried while it loses a race with
/// another writer of the release (409 naming the change; nothing was written then).
async fn command(server: &Server, token: &str, verb: &str) -> Value {
    for _ in 0..50 {
        let (status, body) = server
            .http(token)
            .post(
                &format!("/v1/envs/prod/agents/support/release/{verb}"),
                &json!({"reason": "failover test"}),
            )
            .await;
        if status == 200 {
            return body["release"].clone();
        }
        assert_eq!(status, 409, "{verb}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("changed while"), "{verb}: {body}");
    }
    panic!("{verb} lost every race");
}

/// The release went start, step 1, step 2, complete: each once, in order (the operator's
/// pause and resume aside, once each), and the audit log agrees and verifies.
async fn assert_completed_exactly_once(r: &Replicas, at: usize, rel: &Value, paused: bool) {
    assert_eq!(rel["phase"], "completed", "{rel}");
    let history = rel["history"].as_array().unwrap();
    let by = |event: &str| history.iter().filter(|t| t["event"] == event).count();
    assert_eq!(
        (by("pause"), by("resume")),
        if paused { (1, 1) } else { (0, 0) },
        "{rel}"
    );
    let steps: Vec<(String, String, u64)> = history
        .iter()
        .filter(|t| t["event"] != "pause" && t["event"] != "resume")
        .map(|t| {
            (
                t["event"].as_str().unwrap().to_owned(),
                t["to"].as_str().unwrap().to_owned(),
                t["step"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64)> = [
        ("start", "canary", 0),
        ("tick", "canary", 1),
        ("tick", "canary", 2),
        ("tick", "completed", 2),
    ]
    .iter()
    .map(|(e, p, s)| ((*e).to_owned(), (*p).to_owned(), *s))
    .collect();
    assert_eq!(steps, expected, "no step skipped or repeated");
    let s = r.server(at);
    let (_, audit) = s.http(&r.admin).get("/v1/audit?limit=1000").await;
    let count = |action: &str| {
        audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .count()
    };
    let once = usize::from(paused);
    assert_eq!(
        (
            count("release.start"),
            count("release.promote"),
            count("release.complete"),
            count("release.pause"),
            count("release.resume"),
        ),
        (1, 2, 1, once, once),
        "{audit}"
    );
    let (_, releases) = s
        .http(&r.admin)
        .get("/v1/envs/prod/agents/support/releases")
        .await;
    assert_eq!(releases.as_array().unwrap().len(), 1, "{releases}");
    let (_, snap) = s.http(&r.admin).get("/v1/envs/prod/snapshot").await;
    assert_eq!(
        snap["agents"]["support"]["stable"]["id"], "support@2",
        "{snap}"
    );
    assert!(snap["agents"]["support"]["release"].is_null(), "{snap}");
    let out = s.cli(&r.admin).run(&["audit", "verify"]).ok();
    assert!(out.stdout.contains("intact"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_mid_release_hands_over_within_5s_and_completes_once() {
    let Some(mut r) = Replicas::start(3, &["--tick-ms", TICK_MS]).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (first, epoch) = r.leader(Duration::from_secs(10)).await;
    assert!(epoch >= 1);
    start_release(&r, first, work.path());
    drive(&r, Some(1)).await;

    // The leader dies mid-release, at step 1.
    let (old, old_epoch) = r.leader(FAILOVER_BOUND).await;
    let killed = Instant::now();
    r.kill9(old);
    let (new, new_epoch) = r.leader(FAILOVER_BOUND).await;
    let took = killed.elapsed();
    assert!(took < FAILOVER_BOUND, "failover took {took:?}");
    assert_ne!(new, old);
    assert_eq!(new_epoch, old_epoch + 1, "one election, one epoch");
    let rel = release(r.server(new), &r.admin).await;
    assert!(
        rel["phase"] == "canary" && rel["step"].as_u64().unwrap() >= 1,
        "carried on where it was: {rel}"
    );

    // An operator's pause on the replica that does not lead holds while the leader ticks
    // and traffic flows; its resume lets the release go on.
    let other = (0..3)
        .find(|i| *i != new && r.servers[*i].is_some())
        .unwrap();
    let paused = command(r.server(other), &r.admin, "pause").await;
    assert_eq!(paused["phase"], "paused", "{paused}");
    for _ in 0..5 {
        traffic(r.server(new), &r.admin, 15).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let rel = release(r.server(new), &r.admin).await;
    assert_eq!(
        (rel["phase"].as_str(), rel["step"].as_u64()),
        (Some("paused"), paused["step"].as_u64()),
        "the leader's ticks kept the pause: {rel}"
    );
    command(r.server(other), &r.admin, "resume").await;

    let rel = drive(&r, None).await;
    assert_completed_exactly_once(&r, new, &rel, true).await;
    // The row's last controller write was the new leader's.
    let store = r.store().await;
    let row = store
        .get_release(rel["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.leader_epoch, Some(new_epoch));
    store.close().await;
}

/// `serin_release_transitions_total` as this replica's `/metrics` shows it (0 when absent).
async fn transitions(server: &Server, token: &str) -> f64 {
    let resp = server
        .http(token)
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("serin_release_transitions_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_leader_session_moves_leadership_and_the_old_leader_stops_ticking() {
    let Some(r) = Replicas::start(3, &["--tick-ms", TICK_MS]).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (old, old_epoch) = r.leader(Duration::from_secs(10)).await;
    start_release(&r, old, work.path());
    drive(&r, Some(1)).await;

    // Cut the leader's lock session from the database side; the process lives on.
    let store = r.store().await;
    let name = format!("serin-leader/{}", r.server(old).pid());
    // OFFSET 0 keeps the name filter apart from the termination.
    let terminated = store
        .query_text_for_tests(&format!(
            "SELECT CAST(COUNT(pg_terminate_backend(pid)) AS TEXT) FROM \
             (SELECT pid FROM pg_stat_activity WHERE application_name = '{name}' OFFSET 0) s"
        ))
        .await
        .unwrap();
    assert_eq!(
        terminated.as_deref(),
        Some("1"),
        "one leader session named {name}"
    );
    let cut = Instant::now();
    // The old leader notices its lost session within a heartbeat and stays out.
    let deadline = Instant::now() + FAILOVER_BOUND;
    loop {
        let (_, body) = r.server(old).http("").get("/readyz").await;
        if body["leader"]["is_leader"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "still believes it leads: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (new, new_epoch) = r.leader(FAILOVER_BOUND).await;
    let took = cut.elapsed();
    assert_ne!(new, old, "leadership moved");
    assert!(took < FAILOVER_BOUND, "failover took {took:?}");
    assert_eq!(new_epoch, old_epoch + 1);
    let stopped_at = transitions(r.server(old), &r.admin).await;

    let rel = drive(&r, None).await;
    assert_completed_exactly_once(&r, new, &rel, false).await;
    assert_eq!(
        transitions(r.server(old), &r.admin).await,
        stopped_at,
        "the old leader made no transition after losing its session"
    );
    let all = r.leadership().await;
    assert_eq!(
        all.iter().filter(|(_, l, _)| *l).count(),
        1,
        "still one leader: {all:?}"
    );
    let row = store
        .get_release(rel["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.leader_epoch, Some(new_epoch));
    store.close().await;
}

/// Failover time over many leader kills: SIGKILL the leader, time until another replica's
/// `/readyz` says it leads (its releases resumed), restart the dead one, repeat. Prints the
/// figures. `cargo test -p serin --test it failover_time -- --ignored --nocapture`
/// (`SERIN_FAILOVER_KILLS`, default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, about a minute; run on purpose"]
async fn failover_time_over_many_leader_kills() {
    let Some(mut r) = Replicas::start(3, &["--tick-ms", TICK_MS]).await else {
        return;
    };
    let kills: usize = std::env::var("SERIN_FAILOVER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let work = tempfile::tempdir().unwrap();
    let (first, _) = r.leader(Duration::from_secs(10)).await;
    // An active release, so every new leader has one to resume.
    start_release(&r, first, work.path());
    let mut times = Vec::with_capacity(kills);
    for _ in 0..kills {
        let (old, epoch) = r.leader(FAILOVER_BOUND).await;
        let killed = Instant::now();
        r.kill9(old);
        let (_, new_epoch) = r.leader(FAILOVER_BOUND).await;
        times.push(killed.elapsed());
        assert_eq!(new_epoch, epoch + 1);
        r.restart(old);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "failover over {} leader kills (SIGKILL to a survivor's /readyz leading; 20 ms polling): \
         min {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        times.len(),
        ms(times[0]),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(times[times.len() - 1]),
    );
    assert!(times.iter().all(|t| *t < FAILOVER_BOUND), "{times:?}");
    let rel = release(r.server(r.leader(FAILOVER_BOUND).await.0), &r.admin).await;
    assert_eq!(rel["phase"], "canary", "{rel}");
}
