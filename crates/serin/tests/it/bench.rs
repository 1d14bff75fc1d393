//! `serin bench judge`: real releases through the embedded server, judged beside the
//! simulator.

use crate::harness::run_cli;

/// A handful of identical-arm releases ramp to 100% through the real server and none is
/// rolled back; the JSON carries both sets of figures. Users have near-equal volumes here
/// (Pareto shape 4) to keep this about the pipeline; the simulator's
/// `sticky_heavy_users_do_not_make_identical_arms_fail` covers the default 80/20 volumes.
#[test]
fn identical_arms_ramp_to_completion_through_a_real_server() {
    let out = run_cli(
        &[
            "bench",
            "judge",
            "--releases",
            "3",
            "--concurrency",
            "3",
            "--min-requests",
            "10,20,50,200,20",
            "--volume-shape",
            "4",
            "--sim-runs",
            "20",
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["scenario"], "aa");
    assert_eq!(v["guardrails"], "spec");
    assert_eq!(v["batch"], 10);
    assert_eq!(v["steps"].as_array().unwrap().len(), 5);
    let server = &v["server"];
    assert_eq!(server["releases"], 3);
    assert_eq!(server["rolled_back"], 0, "{server}");
    assert_eq!(server["completed"], 3, "{server}");
    assert_eq!(server["promoted_after_fail"], 0);
    assert!(server["rollback_interval"]["high"].as_f64().unwrap() > 0.0);
    assert!(server["outcomes_posted"].as_u64().unwrap() > 3 * 300);
    for r in v["releases"].as_array().unwrap() {
        assert_eq!(r["phase"], "completed", "{r}");
        assert_eq!(r["latched"], false, "{r}");
        assert!(r["requests"].as_u64().unwrap() > 1_000, "{r}");
    }
    let sim = &v["simulator"];
    assert_eq!(sim["runs"], 20);
    assert_eq!(
        sim["completed"].as_u64().unwrap()
            + sim["rolled_back"].as_u64().unwrap()
            + sim["stuck"].as_u64().unwrap(),
        20
    );
}

#[test]
fn a_margin_scenario_needs_guardrails_with_a_margin() {
    let out = run_cli(
        &[
            "bench",
            "judge",
            "--scenario",
            "below-margin",
            "--guardrails",
            "zero",
        ],
        &[],
    );
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("needs a margin"), "{}", out.stderr);
}

/// `bench propagation` on real server processes: every subscriber gets every change, and each
/// server's memory is read from outside it. With PostgreSQL: spread over two replicas, then
/// the one-replica baseline, in one run.
#[test]
fn propagation_times_changes_across_replicas_then_on_one_and_reads_server_memory() {
    let sqlite = run_cli(
        &[
            "bench",
            "propagation",
            "--subscribers",
            "10",
            "--rollbacks",
            "4",
            "--agents",
            "2",
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(sqlite.code, 0, "{}{}", sqlite.stdout, sqlite.stderr);
    let v: serde_json::Value = serde_json::from_str(&sqlite.stdout).unwrap();
    assert_eq!(v["store"], "sqlite");
    assert_eq!(v["phases"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["rss_mb"]["idle"][0].as_f64().unwrap() > 1.0, "{v}");

    if serin_store::testing::postgres_skipped() {
        return;
    }
    // The bench makes (and drops) its own schema in the test database.
    let base = serin_store::testing::base_url();
    let pg = run_cli(
        &[
            "bench",
            "propagation",
            "--subscribers",
            "10",
            "--rollbacks",
            "4",
            "--agents",
            "2",
            "--replicas",
            "2",
            "--database-url",
            &base,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(pg.code, 0, "{}{}", pg.stdout, pg.stderr);
    let v: serde_json::Value = serde_json::from_str(&pg.stdout).unwrap();
    assert_eq!(v["store"], "postgres");
    let phases = v["phases"].as_array().unwrap();
    assert_eq!(
        phases[0]["subscribers_per_replica"],
        serde_json::json!([5, 5])
    );
    assert_eq!(
        phases[1]["subscribers_per_replica"],
        serde_json::json!([10])
    );
    for p in phases {
        assert!(
            p["last_subscriber_ms"]["max"].as_f64().unwrap() >= 0.0,
            "{p}"
        );
        assert!(p["rss_connected_mb"][0].as_f64().unwrap() > 1.0, "{p}");
    }
    assert_eq!(v["rss_mb"]["idle"].as_array().unwrap().len(), 2, "{v}");
}
