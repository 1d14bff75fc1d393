//! `Serin`: the stream task, the disk cache, and fail-static behaviour, over
//! real HTTP against the `fake` server.

use std::path::Path;
use std::time::{Duration, Instant};

use serin_core::decision::Snapshot;
use serin_sdk::{Arm, RequestContext, SdkError, Serin, SerinBuilder};

use crate::data::{AGENT, ENV, snapshot, with_flag};
use crate::fake::{Fake, TOKEN, free_addr};

/// Fast backoff so reconnects take milliseconds.
fn sdk(url: &str) -> SerinBuilder {
    Serin::builder(url, TOKEN, ENV)
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .start_timeout(Duration::from_secs(3))
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_version(serin: &Serin, v: u64) {
    eventually(&format!("version {v}"), || {
        serin.snapshot_version() == Some(v)
    })
    .await;
}

fn ctx() -> RequestContext {
    let mut c = RequestContext::new("r-1");
    c.user = Some("u-1".into());
    c
}

fn served_bundle(serin: &Serin) -> String {
    serin
        .decide(AGENT, &ctx())
        .unwrap()
        .bundle
        .map(|b| b.id)
        .unwrap_or_default()
}

fn write_cache(dir: &Path, s: &Snapshot) {
    std::fs::write(
        dir.join(format!("serin-snapshot-{ENV}.json")),
        serde_json::to_vec(s).unwrap(),
    )
    .unwrap();
}

fn cached_version(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join(format!("serin-snapshot-{ENV}.json"))).ok()?;
    serde_json::from_slice::<Snapshot>(&bytes)
        .ok()
        .map(|s| s.version)
}

#[tokio::test]
async fn first_snapshot_arrives_over_the_stream() {
    let fake = Fake::start(with_flag(snapshot(1, 1, None))).await;
    let serin = sdk(&fake.url()).start().await.unwrap();
    assert_eq!(serin.snapshot_version(), Some(1));
    let d = serin.decide(AGENT, &ctx()).unwrap();
    assert_eq!(d.arm, Arm::Stable);
    assert_eq!(d.bundle.as_ref().unwrap().id, "support@1");
    assert_eq!(
        d.bundle_contents().unwrap().prompt,
        "You are support, version 1."
    );
    assert!(!d.stale, "{}", d.reason_text);
    assert_eq!(d.flags.len(), 1);
    let h = serin.health();
    assert!(h.connected && !h.stale);
    assert_eq!(h.version, Some(1));
    assert!(h.last_update_ms.is_some());
    assert_eq!(
        fake.last_event_ids(),
        vec![None],
        "no Last-Event-ID without a snapshot"
    );
}

#[tokio::test]
async fn a_new_version_is_swapped_in_while_held_snapshots_stay_unchanged() {
    let fake = Fake::start(snapshot(1, 1, None)).await;
    let serin = sdk(&fake.url()).start().await.unwrap();
    let held = serin.snapshot().unwrap();
    fake.publish(snapshot(2, 2, Some(1)));
    wait_version(&serin, 2).await;
    assert_eq!(served_bundle(&serin), "support@2");
    // A reader holding the old snapshot keeps a consistent v1.
    assert_eq!(held.version(), 1);
    let old = held.decide(AGENT, &ctx().as_context()).unwrap();
    assert_eq!(old.bundle.unwrap().id, "support@1");
    assert_eq!(fake.full_fetches(), 0);
}

#[tokio::test]
async fn delta_events_merge_with_the_bundles_already_held_and_prune_the_rest() {
    let fake = Fake::start(snapshot(1, 1, None)).await;
    let serin = sdk(&fake.url()).start().await.unwrap();

    // v2 carries only the new bundle; support@1 (now previous) comes from v1.
    fake.publish_delta(snapshot(2, 2, Some(1)), &["support@2"]);
    wait_version(&serin, 2).await;
    let snap = serin.snapshot().unwrap();
    assert!(snap.bundle("support@1").is_some() && snap.bundle("support@2").is_some());

    // v3 drops support@1 from the routing: it is pruned.
    fake.publish_delta(snapshot(3, 3, Some(2)), &["support@3"]);
    wait_version(&serin, 3).await;
    let snap = serin.snapshot().unwrap();
    let ids: Vec<&String> = snap.snapshot().bundles.keys().collect();
    assert_eq!(ids, ["support@2", "support@3"]);
    assert_eq!(served_bundle(&serin), "support@3");
    assert_eq!(fake.full_fetches(), 0, "deltas needed no full fetch");
}

#[tokio::test]
async fn a_delta_missing_a_bundle_falls_back_to_the_full_snapshot() {
    let fake = Fake::start(snapshot(1, 1, None)).await;
    let serin = sdk(&fake.url()).start().await.unwrap();
    fake.publish_delta(snapshot(2, 2, Some(1)), &[]);
    wait_version(&serin, 2).await;
    assert_eq!(fake.full_fetches(), 1);
    let d = serin.decide(AGENT, &ctx()).unwrap();
    assert_eq!(
        d.bundle_contents().unwrap().prompt,
        "You are support, version 2."
    );
}

#[tokio::test]
async fn an_event_older_than_the_served_version_is_ignored() {
    let fake = Fake::start(snapshot(3, 3, None)).await;
    let serin = sdk(&fake.url()).start().await.unwrap();
    // v2 references a bundle that only it carries. Had it been applied, the
    // v4 delta below would find support@7 locally; ignored, it needs the
    // full snapshot.
    fake.send_raw(&snapshot(2, 7, None));
    fake.publish_delta(snapshot(4, 7, None), &[]);
    wait_version(&serin, 4).await;
    assert_eq!(fake.full_fetches(), 1, "v2's bundles were not taken");
    assert_eq!(served_bundle(&serin), "support@7");
}

#[tokio::test]
async fn applied_snapshots_are_written_to_the_cache_file() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start(snapshot(1, 1, None)).await;
    let serin = sdk(&fake.url())
        .cache_dir(dir.path())
        .start()
        .await
        .unwrap();
    eventually("cache v1", || cached_version(dir.path()) == Some(1)).await;
    fake.publish(snapshot(2, 2, Some(1)));
    eventually("cache v2", || cached_version(dir.path()) == Some(2)).await;
    serin.shutdown().await;
    // No temp files left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("serin-snapshot-{ENV}.json")]);
}

#[tokio::test]
async fn server_down_at_start_serves_the_cache_stale_then_converges() {
    let dir = tempfile::tempdir().unwrap();
    write_cache(dir.path(), &snapshot(5, 5, None));
    let addr = free_addr().await;
    let url = format!("http://{addr}");

    let t0 = Instant::now();
    let serin = sdk(&url).cache_dir(dir.path()).start().await.unwrap();
    let d = serin.decide(AGENT, &ctx()).unwrap();
    let first_decision = t0.elapsed();
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "first decision from the disk cache, server unreachable: {first_decision:?} (target 5 ms)"
        );
    }
    assert!(d.stale);
    assert!(d.reason_text.contains("stale"), "{}", d.reason_text);
    assert_eq!(d.bundle.unwrap().id, "support@5");
    let h = serin.health();
    assert!(!h.connected && h.stale);

    // The server comes up with something newer.
    let fake = Fake::new_stopped(addr, snapshot(6, 6, Some(5)), Duration::from_millis(50));
    fake.resume().await;
    wait_version(&serin, 6).await;
    eventually("connected", || serin.health().connected).await;
    let d = serin.decide(AGENT, &ctx()).unwrap();
    assert!(!d.stale, "{}", d.reason_text);
    assert_eq!(d.bundle.unwrap().id, "support@6");
    assert!(fake.last_event_ids().contains(&Some("5".into())));
    eventually("cache v6", || cached_version(dir.path()) == Some(6)).await;
}

#[tokio::test]
async fn a_cache_confirmed_by_the_server_stops_being_stale() {
    let dir = tempfile::tempdir().unwrap();
    write_cache(dir.path(), &snapshot(5, 5, None));
    let fake = Fake::start(snapshot(5, 5, None)).await;
    let serin = sdk(&fake.url())
        .cache_dir(dir.path())
        .start()
        .await
        .unwrap();
    eventually("connected", || serin.health().connected).await;
    // The server had nothing newer than Last-Event-ID 5 and sent nothing.
    assert_eq!(fake.last_event_ids(), vec![Some("5".into())]);
    assert!(!serin.decide(AGENT, &ctx()).unwrap().stale);
}

#[tokio::test]
async fn server_down_without_cache_fails_start_after_the_timeout() {
    let addr = free_addr().await;
    let t0 = Instant::now();
    let err = sdk(&format!("http://{addr}"))
        .start_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap_err();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    match err {
        SdkError::StartTimeout { last_error, .. } => {
            assert!(last_error.is_some_and(|e| e.contains(&addr.to_string())));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_restart_keeps_decisions_flowing_and_resumes_from_last_event_id() {
    let fake = Fake::start(snapshot(1, 1, None)).await;
    let serin = sdk(&fake.url()).start().await.unwrap();
    eventually("connected", || serin.health().connected).await;

    fake.stop().await;
    eventually("disconnected", || !serin.health().connected).await;
    let d = serin.decide(AGENT, &ctx()).unwrap();
    assert!(d.stale);
    assert!(d.reason_text.contains("stale"), "{}", d.reason_text);
    assert_eq!(d.bundle.unwrap().id, "support@1");
    assert!(serin.health().last_error.is_some());

    fake.resume().await;
    eventually("reconnected", || serin.health().connected).await;
    assert_eq!(fake.last_event_ids().last().unwrap().as_deref(), Some("1"));
    assert!(serin.health().reconnects >= 1);
    assert!(!serin.decide(AGENT, &ctx()).unwrap().stale);
    fake.publish(snapshot(2, 2, Some(1)));
    wait_version(&serin, 2).await;
}

#[tokio::test]
async fn unauthorized_is_retried_forever_and_reported_in_health() {
    let dir = tempfile::tempdir().unwrap();
    write_cache(dir.path(), &snapshot(1, 1, None));
    let fake = Fake::start(snapshot(2, 2, Some(1))).await;
    fake.deny(true);
    let serin = sdk(&fake.url())
        .cache_dir(dir.path())
        .start()
        .await
        .unwrap();
    eventually("several refused attempts", || fake.stream_connects() >= 3).await;
    let h = serin.health();
    assert!(!h.connected && h.stale);
    let err = h.last_error.unwrap();
    assert!(err.contains("401"), "{err}");
    assert!(h.reconnects >= 2);
    assert_eq!(serin.snapshot_version(), Some(1));

    // The token is accepted again: the SDK heals without a restart.
    fake.deny(false);
    wait_version(&serin, 2).await;
}

#[tokio::test]
async fn a_silent_stream_is_dropped_but_keep_alives_keep_it() {
    // Keep-alive every 50 ms, idle timeout 400 ms: one connection.
    let fake = Fake::start(snapshot(1, 1, None)).await;
    let serin = sdk(&fake.url())
        .idle_timeout(Duration::from_millis(400))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(fake.stream_connects(), 1);
    assert!(serin.health().connected);

    // No keep-alive: the stream is declared dead and reopened.
    let quiet = Fake::start_with(snapshot(1, 1, None), Duration::from_secs(3600)).await;
    let serin = sdk(&quiet.url())
        .idle_timeout(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    eventually("a reconnect", || quiet.stream_connects() >= 2).await;
    assert!(serin.health().last_error.unwrap().contains("silent"));
}

#[tokio::test]
async fn shutdown_stops_the_stream_task() {
    let fake = Fake::start(snapshot(1, 1, None)).await;
    let serin = sdk(&fake.url()).start().await.unwrap();
    let clone = serin.clone();
    serin.shutdown().await;
    assert!(!clone.health().connected);
    fake.publish(snapshot(2, 2, Some(1)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(clone.snapshot_version(), Some(1));
    assert_eq!(fake.stream_connects(), 1);
    // Decisions still work, marked stale.
    assert!(clone.decide(AGENT, &ctx()).unwrap().stale);
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_stream_task() {
    let fake = Fake::start(snapshot(1, 1, None)).await;
    let serin = sdk(&fake.url()).start().await.unwrap();
    let router = serin.router().clone();
    drop(serin);
    assert!(!router.health().connected);
    // A live task would reconnect after this restart.
    fake.stop().await;
    fake.resume().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.stream_connects(), 1);
    assert_eq!(router.snapshot_version(), Some(1));
}

#[tokio::test]
async fn applied_versions_are_reported_with_the_instance_id() {
    let fake = Fake::start(snapshot(1, 1, None)).await;
    let serin = sdk(&fake.url()).instance("pod-7:a").start().await.unwrap();
    assert_eq!(fake.stream_instances(), vec![Some("pod-7:a".to_owned())]);
    eventually("the v1 report", || fake.reported_versions() == [1]).await;
    let report = &fake.reports()[0];
    assert_eq!(report["env"], ENV);
    assert_eq!(report["instance"], "pod-7:a");
    let sdk_name = report["sdk"].as_str().unwrap();
    assert!(sdk_name.starts_with("serin-rust/"), "{sdk_name}");
    assert!(sdk_name.len() <= 64);
    assert_eq!(report.as_object().unwrap().len(), 4, "{report}");

    fake.publish(snapshot(2, 2, Some(1)));
    eventually("the v2 report", || fake.reported_versions() == [1, 2]).await;
    eventually("counted", || serin.health().reports_sent == 2).await;
    assert_eq!(serin.health().reports_failed, 0);
}

#[tokio::test]
async fn reports_coalesce_to_the_newest_version_while_one_is_in_flight() {
    let fake = Fake::start(snapshot(1, 1, None)).await;
    fake.answer_reports(204, Duration::from_millis(600));
    let serin = sdk(&fake.url()).start().await.unwrap();
    eventually("the v1 report in flight", || {
        fake.reported_versions() == [1]
    })
    .await;
    // Three swaps while v1's report is still waiting for its answer.
    for v in 2..=4 {
        fake.publish(snapshot(v, v, Some(v - 1)));
        wait_version(&serin, v).await;
    }
    eventually("the v4 report", || fake.reported_versions().contains(&4)).await;
    assert_eq!(fake.reported_versions(), [1, 4]);
    // Decisions never waited for a report.
    assert_eq!(served_bundle(&serin), "support@4");
}

#[tokio::test]
async fn an_old_server_is_tolerated_and_failed_reports_are_counted_and_retried() {
    let fake = Fake::start(snapshot(1, 1, None)).await;
    fake.answer_reports(404, Duration::ZERO);
    let serin = sdk(&fake.url()).start().await.unwrap();
    eventually("the v1 report", || fake.reported_versions() == [1]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let h = serin.health();
    assert_eq!((h.reports_sent, h.reports_failed), (0, 0));
    assert_eq!(fake.reported_versions(), [1], "a 404 is not retried");
    assert!(h.connected && !h.stale);

    fake.answer_reports(503, Duration::ZERO);
    fake.publish(snapshot(2, 2, Some(1)));
    eventually("retries", || {
        fake.reported_versions().iter().filter(|v| **v == 2).count() >= 3
    })
    .await;
    assert!(serin.health().reports_failed >= 2);
    fake.answer_reports(204, Duration::ZERO);
    eventually("a report taken", || serin.health().reports_sent == 1).await;
    assert_eq!(serin.snapshot_version(), Some(2));
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_report_in_flight() {
    let fake = Fake::start(snapshot(1, 1, None)).await;
    fake.answer_reports(204, Duration::from_secs(30));
    let serin = sdk(&fake.url()).start().await.unwrap();
    eventually("the v1 report in flight", || {
        fake.reported_versions() == [1]
    })
    .await;
    let started = Instant::now();
    serin.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    fake.answer_reports(204, Duration::ZERO);
    fake.publish(snapshot(2, 2, Some(1)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.reported_versions(), [1]);
}

#[tokio::test]
async fn the_instance_id_defaults_per_process_and_an_invalid_one_is_refused() {
    let config = serin_sdk::Config::new("http://127.0.0.1:1", TOKEN, ENV);
    let (pid, random) = config.instance.split_once('-').unwrap();
    assert_eq!(pid, std::process::id().to_string());
    assert_eq!(random.len(), 8);
    assert!(random.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(
        config.instance,
        serin_sdk::Config::new("http://127.0.0.1:1", TOKEN, ENV).instance
    );

    for bad in ["", "a b", "a/b", &"x".repeat(129)] {
        let err = sdk("http://127.0.0.1:1")
            .instance(bad)
            .start()
            .await
            .unwrap_err();
        match err {
            SdkError::InvalidConfig(msg) => assert!(msg.contains("instance"), "{msg}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}
