//! The judgement, simulated: A/A false fails stay within alpha, regressions are caught.
//!
//! Run sizes are chosen to keep `cargo test` fast; `cargo run --release -p serin-core
//! --example detect` prints the full side-by-side report.

use std::time::Instant;

use serin_core::guardrails::GuardrailConfig;
use serin_core::guardrails::sim::{Scenario, detect_report_with, run_once, run_seed};

/// A/A over the short ramp (1% x 2k, 5% x 2k, 25% x 2k, 50% x 4k requests; looks every 100),
/// 1,000 seeded runs, every guardrail of the no-regression config (the strictest: identical
/// arms sit exactly on every null boundary) and of the SPEC default.
#[test]
fn aa_false_fail_rate_is_within_alpha() {
    let started = Instant::now();
    let sc = Scenario::aa(Scenario::short_ramp());
    for config in [
        GuardrailConfig::no_regression(),
        GuardrailConfig::spec_default(),
    ] {
        let runs = 1_000u64;
        let fails: Vec<_> = (0..runs)
            .map(|i| run_once(&sc, &config, run_seed(0xA11CE, i)))
            .filter(|r| r.failed_at.is_some())
            .collect();
        let rate = fails.len() as f64 / runs as f64;
        assert!(
            rate <= config.settings.alpha.fraction(),
            "false fail rate {rate}: {fails:?}"
        );
    }
    eprintln!("A/A 2 x 1,000 runs: {:?}", started.elapsed());
}

/// Error rate 1% -> 2% over the full ramp, no-regression config: caught in most runs.
#[test]
fn serin_detects_doubled_error_rate() {
    let sc = Scenario::power_scenarios(&Scenario::full_ramp())
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(sc.name, "error 1% -> 2%");
    let runs = 40u64;
    let mut at: Vec<u64> = (0..runs)
        .filter_map(|i| run_once(&sc, &GuardrailConfig::no_regression(), run_seed(7, i)).failed_at)
        .collect();
    assert!(
        at.len() as f64 >= 0.8 * runs as f64,
        "detected {} of {runs}",
        at.len()
    );
    at.sort_unstable();
    let median = at[at.len() / 2];
    assert!(median < 8_000, "median canary requests to fail {median}");
}

/// Every regression of the power table is caught by serin in most runs of the report.
#[test]
fn detect_report_smoke() {
    let r = detect_report_with(20, 3, Scenario::short_ramp());
    let text = r.to_string();
    assert!(text.contains("A/A"), "{text}");
    assert!(text.contains("mann-whitney"), "{text}");
    assert_eq!(r.power.len(), 4 * 7);
    serde_json::to_string(&r).unwrap();
}

/// Feeds a scenario step by step without ever calling `set_canary_share` (a server that does
/// not know the routing weight); returns canary requests at the first `fail` look.
fn run_without_share_hint(sc: &Scenario, seed: u64) -> Option<u64> {
    use serin_core::guardrails::Monitor;
    use serin_core::guardrails::sim::sample_events;
    let mut m = Monitor::new(GuardrailConfig::no_regression());
    for (k, &(share, n)) in sc.ramp.iter().enumerate() {
        let events = sample_events(sc, run_seed(seed, k as u64), n as usize, share);
        for (i, e) in events.iter().enumerate() {
            m.observe(e);
            if (i + 1) % 100 == 0 && m.any_fail() {
                return Some(m.canary().requests);
            }
        }
    }
    None
}

/// Without the share hint the monitor falls back to an upper confidence bound of the recent
/// arrival mix: still within alpha over the ramp (500 runs, short ramp), and still detects.
#[test]
fn aa_without_share_hint_stays_within_alpha() {
    let sc = Scenario::aa(Scenario::short_ramp());
    let runs = 500u64;
    let fails = (0..runs)
        .filter(|i| run_without_share_hint(&sc, run_seed(99, *i)).is_some())
        .count();
    assert!(fails as f64 <= 0.01 * runs as f64, "{fails} of {runs}");
    let power = Scenario::power_scenarios(&Scenario::full_ramp())
        .into_iter()
        .next()
        .unwrap();
    let detected = (0..20u64)
        .filter(|i| run_without_share_hint(&power, run_seed(5, *i)).is_some())
        .count();
    assert!(detected >= 15, "detected {detected} of 20");
}
