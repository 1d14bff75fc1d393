//! The judgement, simulated: A/A false fails stay within alpha, regressions are caught.
//!
//! Run sizes are chosen to keep `cargo test` fast; `cargo run --release -p serin-core
//! --example detect` prints the full side-by-side report.

use std::time::Instant;

use serin_core::guardrails::GuardrailConfig;
use serin_core::guardrails::sim::{
    ArmModel, JudgeScenario, Pipe, ReleaseSim, Scenario, SimError, Traffic, detect_report_with,
    judge_report, parallel_runs, run_once, run_seed, sim_rng,
};

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
    let r = detect_report_with(20, 3, Scenario::short_ramp()).unwrap();
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
    // At alpha 1%, the budget the assertions below are written against.
    let mut config = GuardrailConfig::no_regression();
    config.settings.alpha = serin_core::guardrails::Share::from_fraction(0.01);
    let mut m = Monitor::new(config);
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

/// The simulator's generator is ChaCha8 from `seed_from_u64`: these are its first outputs for
/// seed 42. If they change (a platform, or a `rand_chacha` that changed its stream), every
/// seeded figure in the reports changes with them.
#[test]
fn the_simulator_rng_stream_is_pinned() {
    use rand::RngCore;
    let mut r = sim_rng(42);
    assert_eq!(
        [r.next_u64(), r.next_u64(), r.next_u64()],
        [
            0xae90_bfb5_395d_5ba1,
            0xf345_3fc6_2579_9188,
            0x6d71_b708_c5b6_538c
        ]
    );
}

#[test]
fn parallel_runs_come_back_in_run_order() {
    let v = parallel_runs(10, 3, |i| i * 2).unwrap();
    assert_eq!(v, (0..10).map(|i| i * 2).collect::<Vec<u64>>());
}

/// A run that panics loses its worker's runs: the caller gets an error, not a report over
/// the runs that happened to survive.
#[test]
fn a_panicked_run_is_an_error_not_a_shorter_report() {
    let r = parallel_runs(9, 2, |i| {
        if i == 3 {
            panic!("run {i} blew up");
        }
        i
    });
    assert_eq!(
        r,
        Err(SimError::LostRuns {
            worker: 1,
            workers: 2,
            lost: 4,
            runs: 9
        })
    );
}

/// Outcomes leave the pipe only in full batches, and only once their delay has passed.
#[test]
fn outcomes_arrive_late_and_in_full_batches() {
    let mut rng = sim_rng(1);
    let mut pipe: Pipe<u64> = Pipe::new(50.0, 10);
    let mut delivered = Vec::new();
    for now in 1..=1_000u64 {
        pipe.send(now, now, &mut rng);
        while let Some(b) = pipe.batch(now) {
            assert_eq!(b.len(), 10);
            delivered.extend(b.into_iter().map(|sent| (sent, now)));
        }
    }
    assert!(delivered.len() >= 900 && delivered.len() + pipe.len() == 1_000);
    let late = delivered
        .iter()
        .filter(|(sent, at)| at - sent >= 50)
        .count();
    assert!(
        late > 200,
        "{late} of {} delivered 50+ requests late",
        delivered.len()
    );
    // Outcomes overtake each other: arrival order is not send order.
    assert!(delivered.windows(2).any(|w| w[1].0 < w[0].0));
}

fn judged(scenario: JudgeScenario, config: &GuardrailConfig, traffic: Traffic) -> ReleaseSim {
    ReleaseSim {
        control: ArmModel::baseline(),
        canary: scenario.canary(config).unwrap(),
        steps: vec![
            (0.01, 50),
            (0.05, 250),
            (0.25, 1_000),
            (0.5, 4_000),
            (1.0, 500),
        ],
        traffic,
        tick_every: 500,
        max_requests: 400_000,
    }
}

/// Under the SPEC guardrails (error rate at most control + 1pp), a candidate 0.5pp worse
/// completes and one 2pp worse never does, with late, batched outcomes of equal-volume users.
#[test]
fn the_margin_separates_releases_that_complete_from_those_that_do_not() {
    let config = GuardrailConfig::spec_default();
    let traffic = Traffic {
        volume_shape: f64::INFINITY,
        ..Traffic::production(100)
    };
    let below = judge_report(
        &judged(JudgeScenario::BelowMargin, &config, traffic.clone()),
        &config,
        20,
        5,
    )
    .unwrap();
    assert!(below.completed >= 18, "{below:?}");
    let above = judge_report(
        &judged(JudgeScenario::AboveMargin, &config, traffic),
        &config,
        20,
        5,
    )
    .unwrap();
    assert_eq!(above.completed, 0, "{above:?}");
    assert!(above.detect_median.is_some(), "{above:?}");
}

#[test]
fn the_zero_tolerance_guardrails_have_no_margin_to_straddle() {
    let e = JudgeScenario::BelowMargin
        .canary(&GuardrailConfig::no_regression())
        .unwrap_err();
    assert!(e.to_string().contains("below-margin"), "{e}");
}

/// Sticky users with an 80/20 volume split (the heaviest sends several percent of all
/// requests) put far more or far fewer requests in canary than its weight; identical arms
/// must still not fail, because the tests condition on the exposure the arms really had.
#[test]
fn sticky_heavy_users_do_not_make_identical_arms_fail() {
    for (config, runs, allowed) in [
        (GuardrailConfig::no_regression(), 60, 2),
        (GuardrailConfig::spec_default(), 60, 2),
    ] {
        let sim = judged(JudgeScenario::Aa, &config, Traffic::production(10));
        let r = judge_report(&sim, &config, runs, 11).unwrap();
        eprintln!("{r:?}");
        assert!(r.rolled_back <= allowed, "{r:?}");
    }
}

/// A lumpy fleet: in this population (seed 72) one user sends 84% of all requests, so
/// whichever arm holds that user carries most of the traffic whatever the weight. Identical
/// arms must still not fail. Judging early in a step against a share pulled towards the
/// weight rolled back about 30% of these releases.
#[test]
fn one_user_carrying_most_traffic_does_not_make_identical_arms_fail() {
    let config = GuardrailConfig::no_regression();
    let sim = judged(JudgeScenario::Aa, &config, Traffic::production(10));
    let r = judge_report(&sim, &config, 40, 72).unwrap();
    eprintln!("{r:?}");
    assert!(r.heaviest_user_share > 0.5, "{r:?}");
    assert_eq!(r.rolled_back, 0, "{r:?}");
    assert_eq!(r.completed, 40, "{r:?}");
}

/// Outcome windows (an aggregating SDK's batches, both arms per window) keep identical arms
/// from failing, under both configs and with one user carrying most of the traffic.
#[test]
fn outcome_windows_keep_identical_arms_from_failing() {
    for (config, seed) in [
        (GuardrailConfig::no_regression(), 72),
        (GuardrailConfig::spec_default(), 71),
    ] {
        let traffic = Traffic {
            windows: true,
            ..Traffic::production(500)
        };
        let r = judge_report(
            &judged(JudgeScenario::Aa, &config, traffic),
            &config,
            40,
            seed,
        )
        .unwrap();
        eprintln!("{r:?}");
        assert_eq!(r.rolled_back, 0, "{r:?}");
        assert_eq!(r.completed, 40, "{r:?}");
    }
}

/// Windows cost little power: a doubled error rate is caught in every release, within 1.5x of
/// the requests the same releases need when judged event by event.
#[test]
fn outcome_windows_catch_a_doubled_error_rate_nearly_as_fast_as_events() {
    let config = GuardrailConfig::no_regression();
    let report = |windows: bool| {
        let sim = ReleaseSim {
            steps: vec![
                (0.01, 100),
                (0.05, 500),
                (0.25, 2_500),
                (0.5, 10_000),
                (1.0, 1_000),
            ],
            ..judged(
                JudgeScenario::Errors2x,
                &config,
                Traffic {
                    windows,
                    ..Traffic::production(500)
                },
            )
        };
        judge_report(&sim, &config, 30, 62).unwrap()
    };
    let (events, windows) = (report(false), report(true));
    eprintln!("events {events:?}\nwindows {windows:?}");
    assert_eq!(events.rolled_back, 30, "{events:?}");
    assert_eq!(windows.rolled_back, 30, "{windows:?}");
    let (e, w) = (
        events.detect_median.unwrap() as f64,
        windows.detect_median.unwrap() as f64,
    );
    assert!(w <= 1.5 * e, "windows {w} vs events {e}");
}
