//! Every committed fuzz corpus input (`fuzz/corpus/<target>/*`), replayed through the same
//! property functions the fuzz targets run, so what fuzzing found stays fixed without nightly.

#[path = "../../../../fuzz/src/checks.rs"]
mod checks;

use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8]) -> Result<(), String>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    for path in inputs {
        let data = std::fs::read(&path).unwrap();
        if let Err(broken) = check(&data) {
            panic!("{}: {broken}", path.display());
        }
    }
}

#[test]
fn the_bundle_corpus_keeps_its_properties() {
    replay("bundle", checks::bundle);
}

#[test]
fn the_plan_corpus_keeps_its_properties() {
    replay("plan", checks::plan);
}

#[test]
fn the_policy_corpus_keeps_its_properties() {
    replay("policy", checks::policy);
}

#[test]
fn the_snapshot_corpus_keeps_its_properties() {
    replay("snapshot", checks::snapshot);
}

#[test]
fn the_outcome_batch_corpus_keeps_its_properties() {
    replay("outcome_batch", checks::outcome_batch);
}

#[test]
fn the_seed_readiness_template_keeps_the_policy_properties() {
    let text = serin_core::readiness::template("seed-checklist").unwrap();
    checks::policy(text.as_bytes()).unwrap();
}

#[test]
fn the_example_bundle_is_valid_through_the_fuzz_archive() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/bundles/support");
    let mut files = Vec::new();
    for rel in [
        "bundle.yaml",
        "prompt.md",
        "examples/locked-account.yaml",
        "examples/stuck-access-request.yaml",
        "tools/create_support_ticket.json",
        "tools/lookup_account.json",
    ] {
        files.push((rel, std::fs::read(root.join(rel)).unwrap()));
    }
    let archive = checks::to_bundle_archive(files.iter().map(|(p, c)| (*p, c.as_slice())));
    let parsed = checks::bundle_archive(&archive);
    assert_eq!(parsed.len(), 6);
    checks::bundle(&archive).unwrap();
}

/// One canary event of the committed `outcome_batch` regression inputs, edited.
fn event_with(edit: serde_json::Value) -> serde_json::Value {
    let mut e = serde_json::json!({
        "request_id": "r-1", "agent": "support", "env": "prod", "snapshot_version": 1,
        "bundle": "support@1", "arm": "canary", "latency_ms": 1
    });
    for (k, v) in edit.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

fn refusal(event: &serde_json::Value) -> (String, &'static str) {
    let e: serin_core::outcome::OutcomeEvent = serde_json::from_value(event.clone()).unwrap();
    let r = e
        .validate(checks::NOW_MS, &serin_core::outcome::EventLimits::DEFAULT)
        .unwrap_err();
    (r.field, r.code)
}

#[test]
fn tool_call_counts_that_would_overflow_the_monitor_are_refused() {
    let e = event_with(serde_json::json!({"tool_calls": {"ok": u64::MAX, "failed": 1}}));
    assert_eq!(
        refusal(&e),
        ("/tool_calls/ok".to_owned(), "invalid_tool_calls")
    );
    let batch = serde_json::json!({ "events": [e] }).to_string();
    checks::outcome_batch(batch.as_bytes()).unwrap();
}

#[test]
fn token_counts_that_would_overflow_a_rollup_are_refused() {
    let e = event_with(serde_json::json!({"tokens": {"input": u64::MAX}}));
    assert_eq!(refusal(&e), ("/tokens/input".to_owned(), "invalid_tokens"));
    let batch = serde_json::json!({ "events": [e.clone(), e] }).to_string();
    checks::outcome_batch(batch.as_bytes()).unwrap();
}

#[test]
fn eval_scores_whose_sum_would_be_infinite_are_refused_so_the_rollup_persists() {
    let e = event_with(serde_json::json!({"eval": {"score": 1e308, "passed": true}}));
    assert_eq!(refusal(&e), ("/eval/score".to_owned(), "invalid_eval"));
    let stable = event_with(
        serde_json::json!({"request_id": "r-2", "arm": "stable", "eval": {"score": 1e308, "passed": true}}),
    );
    let batch = serde_json::json!({ "events": [e.clone(), stable, e] }).to_string();
    checks::outcome_batch(batch.as_bytes()).unwrap();
    let edge = event_with(serde_json::json!({"eval": {"score": 1.0, "passed": true}}));
    let e: serin_core::outcome::OutcomeEvent = serde_json::from_value(edge).unwrap();
    e.validate(checks::NOW_MS, &serin_core::outcome::EventLimits::DEFAULT)
        .unwrap();
}
