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
