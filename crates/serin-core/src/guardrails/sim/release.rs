//! Whole releases, simulated the way the server runs them: a plan's steps, sticky bucketing
//! under the release id, excluded tenants, late and batched outcomes, a latch per delivered
//! batch and a controller that looks every so many requests. `serin bench judge` drives the
//! same plan through a real server and prints these figures beside its own.

use serde::Serialize;

use super::stats::{CountInterval, Interval, clopper_pearson, median_interval};
use super::traffic::{Pipe, Population, Traffic};
use super::{ArmModel, Metric, Scenario, SimError, blank_event, run_seed, sim_rng, sim_threads};
use crate::decision::{Arm, Percent, bucket, in_share};
use crate::guardrails::config::GuardrailConfig;
use crate::guardrails::monitor::Monitor;
use crate::guardrails::seq::{bernoulli_llr, q_of};
use crate::outcome::{ArmWindow, OutcomeEvent, OutcomeWindow};
use std::collections::BTreeMap;

/// What the candidate does, relative to the baseline, in a judged release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JudgeScenario {
    /// Identical arms: every rollback is a false one.
    Aa,
    /// Error rate 1% -> 2%.
    Errors2x,
    /// p95 latency +200 ms.
    Latency200,
    /// Error rate up by half the guardrails' `error_rate.max_increase`: must complete.
    BelowMargin,
    /// Error rate up by twice that margin: must never complete.
    AboveMargin,
}

/// A scenario that cannot be judged under the chosen guardrails.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{scenario} needs a margin: the guardrails have no error_rate.max_increase above 0 (the zero-tolerance set has none; use the SPEC guardrails)"
)]
pub struct JudgeScenarioError {
    pub scenario: &'static str,
}

impl JudgeScenario {
    pub const ALL: [JudgeScenario; 5] = [
        JudgeScenario::Aa,
        JudgeScenario::Errors2x,
        JudgeScenario::Latency200,
        JudgeScenario::BelowMargin,
        JudgeScenario::AboveMargin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JudgeScenario::Aa => "aa",
            JudgeScenario::Errors2x => "errors2x",
            JudgeScenario::Latency200 => "latency200",
            JudgeScenario::BelowMargin => "below-margin",
            JudgeScenario::AboveMargin => "above-margin",
        }
    }

    /// The candidate's model against [`ArmModel::baseline`], under `config`'s margins.
    pub fn canary(self, config: &GuardrailConfig) -> Result<ArmModel, JudgeScenarioError> {
        let base = ArmModel::baseline();
        let margin = || {
            config
                .error_rate
                .as_ref()
                .and_then(|r| r.max_increase)
                .map(|p| p.fraction())
                .filter(|m| *m > 0.0)
                .ok_or(JudgeScenarioError {
                    scenario: self.name(),
                })
        };
        Ok(match self {
            JudgeScenario::Aa => base,
            JudgeScenario::Errors2x => ArmModel {
                error_rate: base.error_rate * 2.0,
                ..base
            },
            JudgeScenario::Latency200 => ArmModel {
                latency_p50_ms: base.latency_p50_ms * 1.1,
                latency_p95_ms: base.latency_p95_ms + 200.0,
                ..base
            },
            JudgeScenario::BelowMargin => ArmModel {
                error_rate: base.error_rate + margin()? / 2.0,
                ..base
            },
            JudgeScenario::AboveMargin => ArmModel {
                error_rate: base.error_rate + margin()? * 2.0,
                ..base
            },
        })
    }
}

/// The SPRT oracles of [`super::detect_report`], fed event by event: they know which metric
/// regressed and by how much. The two-sample one knows the rate ratio but not control's rate
/// (the information serin's tests have, plus the truth); the one-sample one also knows
/// control's rate.
#[derive(Clone, Debug)]
pub struct Oracle {
    metric: Metric,
    p0: f64,
    p1: f64,
    /// Latency and cost cut points (control's p95, control's median cost).
    latency_cut: f64,
    cost_cut: f64,
    bar: f64,
    llr_one: f64,
    llr_two: f64,
    canary: u64,
    one_at: Option<u64>,
    two_at: Option<u64>,
}

impl Oracle {
    /// `None` when the canary is not worse than control on any axis (nothing to detect).
    /// `alpha_each` is one bound's share of alpha, as serin's tests get.
    pub fn new(control: &ArmModel, canary: &ArmModel, alpha_each: f64) -> Option<Oracle> {
        let sc = Scenario {
            name: String::new(),
            control: control.clone(),
            canary: canary.clone(),
            ramp: Vec::new(),
            look_every: 1,
        };
        let (metric, p0, p1) = sc.oracle()?;
        Some(Oracle {
            metric,
            p0,
            p1,
            latency_cut: control.latency_p95_ms,
            cost_cut: control.cost_mu().exp(),
            bar: (1.0 / alpha_each.clamp(1e-12, 1.0)).ln(),
            llr_one: 0.0,
            llr_two: 0.0,
            canary: 0,
            one_at: None,
            two_at: None,
        })
    }

    /// One delivered outcome, routed when canary's share was `share`.
    pub fn observe(&mut self, e: &OutcomeEvent, share: f64) {
        let canary = match e.arm {
            Arm::Canary => true,
            Arm::Stable => false,
            Arm::Killed => return,
        };
        if canary {
            self.canary += 1;
        }
        let hit = match self.metric {
            Metric::Error => Some(e.error.is_some()),
            Metric::Latency => Some(e.latency_ms > self.latency_cut),
            Metric::Eval => e.eval.map(|v| !v.passed),
            Metric::Cost => Some(e.cost_usd > self.cost_cut),
        };
        if canary
            && self.one_at.is_none()
            && let Some(h) = hit
        {
            self.llr_one += bernoulli_llr(h, self.p0, self.p1);
        }
        if self.two_at.is_none() && hit == Some(true) {
            let (q0, q1) = (q_of(share, 1.0), q_of(share, self.p1 / self.p0));
            self.llr_two += if canary {
                (q1 / q0).ln()
            } else {
                ((1.0 - q1) / (1.0 - q0)).ln()
            };
        }
    }

    /// A look, where serin looks (after each delivered batch): records the canary count at
    /// each oracle's first crossing.
    pub fn look(&mut self) {
        if self.one_at.is_none() && self.llr_one >= self.bar {
            self.one_at = Some(self.canary);
        }
        if self.two_at.is_none() && self.llr_two >= self.bar {
            self.two_at = Some(self.canary);
        }
    }

    /// Canary outcomes when the one-sample oracle (knows both rates) crossed.
    pub fn one_sample_at(&self) -> Option<u64> {
        self.one_at
    }

    /// Canary outcomes when the two-sample oracle (knows the ratio) crossed.
    pub fn two_sample_at(&self) -> Option<u64> {
        self.two_at
    }
}

/// One bound's share of the family alpha under `config` (serin splits it evenly).
pub fn alpha_each(config: &GuardrailConfig) -> f64 {
    let bounds = Monitor::new(config.clone()).verdicts().len().max(1);
    // A handful of bounds → f64.
    config.settings.alpha.fraction() / bounds as f64
}

/// A release to simulate, shaped like the plan `serin bench judge` starts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReleaseSim {
    pub control: ArmModel,
    pub canary: ArmModel,
    /// The plan's steps: (canary weight as a share, least canary outcomes counted during the
    /// step before it promotes). Excluded tenants join at the last step, as on the server.
    pub steps: Vec<(f64, u64)>,
    pub traffic: Traffic,
    /// Requests between two looks of the release controller.
    pub tick_every: u64,
    /// A release still running after this many requests is counted as stuck.
    pub max_requests: u64,
}

/// How a simulated release ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseEnd {
    Completed,
    RolledBack,
    Stuck,
}

/// One simulated release.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReleaseRun {
    pub end: ReleaseEnd,
    /// The bound that latched first.
    pub guardrail: Option<String>,
    /// Canary outcomes delivered to the monitor when the first bound latched.
    pub canary_at_fail: Option<u64>,
    pub oracle_two_sample_at: Option<u64>,
    pub oracle_one_sample_at: Option<u64>,
    pub requests: u64,
    /// Index of the step the release ended at.
    pub step: usize,
}

/// Weight of a share, as a plan would round it.
fn percent(share: f64) -> Percent {
    // A share in [0, 1] → basis points, rounded; out-of-range inputs clamp.
    Percent::from_basis_points((share.clamp(0.0, 1.0) * 10_000.0).round() as u32)
        .unwrap_or(Percent::FULL)
}

/// One release of `sim` over `population` (shared by every run of a batch, as one fleet's
/// users are), judged with `config`.
pub fn simulate_release(
    sim: &ReleaseSim,
    population: &Population,
    config: &GuardrailConfig,
    seed: u64,
) -> ReleaseRun {
    let mut rng = sim_rng(seed);
    let salt = format!("sim-{seed:016x}");
    let buckets: Vec<u16> = (0..population.users())
        .map(|u| bucket(&salt, &Population::user_key(u)))
        .collect();
    let mut monitor = Monitor::new(config.clone());
    let mut oracle = Oracle::new(&sim.control, &sim.canary, alpha_each(config));
    let last = sim.steps.len().saturating_sub(1);
    let share_of = |step: usize| sim.steps.get(step).map_or(0.0, |s| s.0);
    let mut step = 0usize;
    let mut weight = percent(share_of(0));
    monitor.set_canary_share_from(1, share_of(0));
    let mut step_start = 0u64;
    let mut pipe: Pipe<(bool, OutcomeEvent)> = Pipe::new(sim.traffic.mean_delay, sim.traffic.batch);
    let mut e = blank_event("", "", "", "");
    let mut run = ReleaseRun {
        end: ReleaseEnd::Stuck,
        guardrail: None,
        canary_at_fail: None,
        oracle_two_sample_at: None,
        oracle_one_sample_at: None,
        requests: 0,
        step: 0,
    };
    let tick = sim.tick_every.max(1);
    for i in 1..=sim.max_requests {
        let user = population.draw(&mut rng);
        let excluded = step < last && population.is_excluded(population.tenant(user));
        let canary = !excluded
            && buckets
                .get(user as usize)
                .is_some_and(|b| in_share(*b, weight));
        e.arm = if canary { Arm::Canary } else { Arm::Stable };
        // Version k + 1 routes step k.
        e.snapshot_version = step as u64 + 1;
        let model = if canary { &sim.canary } else { &sim.control };
        model.fill(&mut e, &mut rng);
        pipe.send(i, (excluded, e.clone()), &mut rng);
        while let Some(batch) = pipe.batch(i) {
            if sim.traffic.windows {
                for w in windows_of(&batch) {
                    monitor.observe_window(&w, WINDOW_CANDIDATE);
                }
            }
            for (excluded, ev) in &batch {
                // Outcomes of excluded tenants never reach the monitor while excluded.
                if *excluded {
                    continue;
                }
                if !sim.traffic.windows {
                    monitor.observe(ev);
                }
                if let Some(o) = oracle.as_mut() {
                    let version_step = usize::try_from(ev.snapshot_version.saturating_sub(1))
                        .unwrap_or(usize::MAX);
                    o.observe(ev, share_of(version_step));
                }
            }
            if let Some(o) = oracle.as_mut() {
                o.look();
            }
            // Time is counted in requests here; the latch only needs it to order crossings.
            if monitor.latch(i64::try_from(i).unwrap_or(i64::MAX)) && run.canary_at_fail.is_none() {
                run.canary_at_fail = Some(monitor.canary().requests);
                run.guardrail = monitor.first_fail().map(|b| b.name().to_owned());
            }
        }
        if !i.is_multiple_of(tick) {
            continue;
        }
        if monitor.any_fail() {
            run.end = ReleaseEnd::RolledBack;
            run.requests = i;
            run.step = step;
            break;
        }
        let need = sim.steps.get(step).map_or(0, |s| s.1);
        if monitor.canary().requests.saturating_sub(step_start) >= need {
            if step >= last {
                run.end = ReleaseEnd::Completed;
                run.requests = i;
                run.step = step;
                break;
            }
            step += 1;
            weight = percent(share_of(step));
            monitor.set_canary_share_from(step as u64 + 1, share_of(step));
            step_start = monitor.canary().requests;
        }
    }
    if run.end == ReleaseEnd::Stuck {
        run.requests = sim.max_requests;
        run.step = step;
    }
    if let Some(o) = &oracle {
        run.oracle_two_sample_at = o.two_sample_at();
        run.oracle_one_sample_at = o.one_sample_at();
    }
    run
}

/// The simulator's figures for one judged configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimJudgeReport {
    pub runs: usize,
    pub seed: u64,
    pub completed: usize,
    pub rolled_back: usize,
    pub stuck: usize,
    /// Rolled-back share of runs, with its exact 95% interval.
    pub rollback_rate: f64,
    pub rollback_interval: Interval,
    /// Canary outcomes delivered when the first bound latched (`None`: never, in at least
    /// half of the runs), with a 95% interval.
    pub detect_median: Option<u64>,
    pub detect_interval: Option<CountInterval>,
    pub oracle_two_sample_median: Option<u64>,
    pub oracle_one_sample_median: Option<u64>,
    /// `detect_median / oracle_two_sample_median`.
    pub ratio_to_oracle: Option<f64>,
    /// The heaviest user's share of all requests in this population.
    pub heaviest_user_share: f64,
}

/// Median (and its interval) of `v`, `None` sorting last.
pub fn median_of(mut v: Vec<Option<u64>>) -> (Option<u64>, Option<CountInterval>) {
    v.sort_by_key(|x| x.unwrap_or(u64::MAX));
    let mid = v.len().div_ceil(2).saturating_sub(1);
    (v.get(mid).copied().flatten(), median_interval(&v))
}

/// `runs` seeded releases of `sim` under `config`; one population per `seed`.
pub fn judge_report(
    sim: &ReleaseSim,
    config: &GuardrailConfig,
    runs: usize,
    seed: u64,
) -> Result<SimJudgeReport, SimError> {
    let population = Population::new(&sim.traffic, seed);
    let all = super::parallel_runs(runs, sim_threads(), |i| {
        simulate_release(sim, &population, config, run_seed(seed, i))
    })?;
    let count = |end: ReleaseEnd| all.iter().filter(|r| r.end == end).count();
    let rolled_back = count(ReleaseEnd::RolledBack);
    let (detect_median, detect_interval) =
        median_of(all.iter().map(|r| r.canary_at_fail).collect());
    let (oracle_two, _) = median_of(all.iter().map(|r| r.oracle_two_sample_at).collect());
    let (oracle_one, _) = median_of(all.iter().map(|r| r.oracle_one_sample_at).collect());
    Ok(SimJudgeReport {
        runs,
        seed,
        completed: count(ReleaseEnd::Completed),
        rolled_back,
        stuck: count(ReleaseEnd::Stuck),
        // Run counts → f64.
        rollback_rate: rolled_back as f64 / runs.max(1) as f64,
        rollback_interval: clopper_pearson(rolled_back as u64, runs as u64, 0.95),
        detect_median,
        detect_interval,
        oracle_two_sample_median: oracle_two,
        oracle_one_sample_median: oracle_one,
        ratio_to_oracle: ratio(detect_median, oracle_two),
        heaviest_user_share: population.heaviest_share(),
    })
}

/// `a / b` when both happened.
pub fn ratio(a: Option<u64>, b: Option<u64>) -> Option<f64> {
    match (a, b) {
        // Request counts → f64.
        (Some(a), Some(b)) if b > 0 => Some(a as f64 / b as f64),
        _ => None,
    }
}

/// The candidate's bundle in the windows [`windows_of`] builds.
const WINDOW_CANDIDATE: &str = "sim@2";

/// A delivered batch as an aggregating SDK would send it: one window per snapshot version,
/// both arms together, excluded tenants' outcomes left out (the SDK sends those as events).
fn windows_of(batch: &[(bool, OutcomeEvent)]) -> Vec<OutcomeWindow> {
    let mut by_version: BTreeMap<u64, (ArmWindow, ArmWindow)> = BTreeMap::new();
    for (excluded, ev) in batch {
        if *excluded {
            continue;
        }
        let (stable, canary) = by_version.entry(ev.snapshot_version).or_insert_with(|| {
            (
                ArmWindow::new(Arm::Stable, "sim@1"),
                ArmWindow::new(Arm::Canary, WINDOW_CANDIDATE),
            )
        });
        match ev.arm {
            Arm::Canary => canary.add(ev),
            _ => stable.add(ev),
        }
    }
    by_version
        .into_iter()
        .map(|(version, (stable, canary))| OutcomeWindow {
            window_id: format!("sim-{version}"),
            agent: "sim".into(),
            env: "sim".into(),
            snapshot_version: version,
            instance: None,
            region: None,
            pool: None,
            at_ms: None,
            arms: [stable, canary]
                .into_iter()
                .filter(|a| a.requests() > 0)
                .collect(),
        })
        .collect()
}
