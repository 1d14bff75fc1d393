//! Seeded outcome simulator and the detection-quality report (`serin bench detect`).
//!
//! Each run draws one request stream over a ramp (canary share 1%, 5%, 25%, 50% by default)
//! and, on that same stream, runs every method side by side, looking every `look_every`
//! requests:
//!
//! - **serin**: [`Monitor`] with the configured guardrails (all of them together).
//! - **naive**: the configured thresholds applied to point estimates at every look (after
//!   `min_requests` per arm).
//! - **tuned fixed threshold**: per-metric margins on the canary-minus-control point estimates,
//!   each set to the `1 - alpha/6` quantile of its largest A/A value over the looks, so the
//!   family A/A rate is about alpha; two gates (checking from 200 and from 1,000 canary
//!   requests), the report shows each.
//! - **mann-whitney**: Kayenta-like: every interval of 1,000 requests, a one-sided
//!   Mann-Whitney test per metric (latency, cost, error, refusal, tool failures, eval failure)
//!   of canary against control, fail when p < alpha.
//! - **oracles**: simple-vs-simple SPRTs that know which metric regressed and by how much, at
//!   the same per-bound alpha as serin and without a minimum sample: the *two-sample* oracle
//!   knows the true rate ratio (the same event-conditional likelihood as serin, control's rate
//!   unknown), the *one-sample* oracle also knows control's rate exactly (a lower bound no
//!   comparison against a live control can reach).

use std::fmt;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::config::GuardrailConfig;
use super::monitor::Monitor;
use super::seq::{bernoulli_llr, q_of};
use crate::decision::Arm;
use crate::outcome::{ErrorClass, EvalSample, OutcomeError, OutcomeEvent, ToolCalls};

mod release;
mod stats;
mod traffic;

pub use release::{
    JudgeScenario, JudgeScenarioError, Oracle, ReleaseEnd, ReleaseRun, ReleaseSim, SimJudgeReport,
    alpha_each, judge_report, median_of, ratio, simulate_release,
};
pub use stats::{CountInterval, Interval, clopper_pearson, median_interval};
pub use traffic::{Pipe, Population, Traffic};

/// The simulator's random number generator. ChaCha8 seeded through `seed_from_u64` gives the
/// same stream on every platform and every release of `rand_chacha` 0.9 (its output is
/// specified), so a seed names one run everywhere; `SmallRng` promises neither.
pub type SimRng = rand_chacha::ChaCha8Rng;

/// The generator for `seed`.
pub fn sim_rng(seed: u64) -> SimRng {
    SimRng::seed_from_u64(seed)
}

/// A batch of seeded runs that did not come back whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// A worker thread panicked: its runs are missing, and a report without them would be
    /// biased towards whatever did not crash.
    #[error("simulation worker {worker} of {workers} panicked; {lost} of {runs} runs were lost")]
    LostRuns {
        worker: usize,
        workers: usize,
        lost: usize,
        runs: usize,
    },
}

const Z95: f64 = 1.644_853_626_951_472;
const COST_SIGMA: f64 = 0.6;

/// What one arm's requests look like.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArmModel {
    pub error_rate: f64,
    /// Log-normal latency given by its median and p95 (ms).
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    /// Log-normal cost per request (sigma 0.6) with this mean (USD).
    pub cost_mean: f64,
    pub eval_pass_rate: f64,
    /// Share of requests that carry an eval sample.
    pub eval_sample_rate: f64,
    pub tool_calls_per_request: u64,
    pub tool_call_failure_rate: f64,
    pub refusal_rate: f64,
}

impl ArmModel {
    /// Draws one request's outcome from this model into `e` (error, latency,
    /// cost, tool calls, refusal, eval sample); identity fields are left as
    /// they are. Used by the simulator and by `serin demo`'s fleet.
    pub fn fill<R: Rng + ?Sized>(&self, e: &mut OutcomeEvent, rng: &mut R) {
        let m = self;
        e.error = (rng.random::<f64>() < m.error_rate).then(|| {
            let u: f64 = rng.random();
            let class = if u < 0.5 {
                ErrorClass::Transient
            } else if u < 0.8 {
                ErrorClass::Permanent
            } else {
                ErrorClass::External
            };
            OutcomeError { class, code: None }
        });
        e.latency_ms = m.latency_p50_ms * (m.latency_sigma() * std_normal(rng)).exp();
        e.cost_usd = (m.cost_mu() + COST_SIGMA * std_normal(rng)).exp();
        let mut failed = 0;
        for _ in 0..m.tool_calls_per_request {
            if rng.random::<f64>() < m.tool_call_failure_rate {
                failed += 1;
            }
        }
        e.tool_calls = ToolCalls {
            ok: m.tool_calls_per_request - failed,
            failed,
        };
        e.refused = rng.random::<f64>() < m.refusal_rate;
        e.eval = (rng.random::<f64>() < m.eval_sample_rate).then(|| {
            let passed = rng.random::<f64>() < m.eval_pass_rate;
            EvalSample {
                score: if passed { 1.0 } else { 0.0 },
                passed,
            }
        });
    }

    /// The baseline: 1% errors, p50 800 ms / p95 2 s, $0.01 per request, 96% eval pass on 25%
    /// of requests, 2 tool calls at 1% failure, 2% refusals.
    pub fn baseline() -> ArmModel {
        ArmModel {
            error_rate: 0.01,
            latency_p50_ms: 800.0,
            latency_p95_ms: 2000.0,
            cost_mean: 0.01,
            eval_pass_rate: 0.96,
            eval_sample_rate: 0.25,
            tool_calls_per_request: 2,
            tool_call_failure_rate: 0.01,
            refusal_rate: 0.02,
        }
    }

    fn latency_sigma(&self) -> f64 {
        (self.latency_p95_ms / self.latency_p50_ms).ln().max(1e-9) / Z95
    }

    /// P(latency > x).
    fn latency_tail(&self, x: f64) -> f64 {
        normal_tail((x / self.latency_p50_ms).ln() / self.latency_sigma())
    }

    fn cost_mu(&self) -> f64 {
        self.cost_mean.max(1e-12).ln() - COST_SIGMA * COST_SIGMA / 2.0
    }

    /// P(cost > x).
    fn cost_tail(&self, x: f64) -> f64 {
        normal_tail((x.ln() - self.cost_mu()) / COST_SIGMA)
    }
}

/// Upper tail of the standard normal (Abramowitz-Stegun 7.1.26 via erfc; ~1e-7).
fn normal_tail(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    if z >= 0.0 {
        erfc / 2.0
    } else {
        1.0 - erfc / 2.0
    }
}

/// A release to simulate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scenario {
    pub name: String,
    pub control: ArmModel,
    pub canary: ArmModel,
    /// (canary share, requests of both arms at that step).
    pub ramp: Vec<(f64, u64)>,
    /// Every method looks after this many requests.
    pub look_every: u64,
}

impl Scenario {
    /// The full ramp used by the report: 1% x 10k, 5% x 10k, 25% x 10k, 50% x 40k requests
    /// (23,100 canary requests in expectation).
    pub fn full_ramp() -> Vec<(f64, u64)> {
        vec![
            (0.01, 10_000),
            (0.05, 10_000),
            (0.25, 10_000),
            (0.5, 40_000),
        ]
    }

    /// A shorter ramp for fast tests: 1% x 2k, 5% x 2k, 25% x 2k, 50% x 4k requests.
    pub fn short_ramp() -> Vec<(f64, u64)> {
        vec![(0.01, 2_000), (0.05, 2_000), (0.25, 2_000), (0.5, 4_000)]
    }

    pub fn aa(ramp: Vec<(f64, u64)>) -> Scenario {
        Scenario {
            name: "A/A".to_owned(),
            control: ArmModel::baseline(),
            canary: ArmModel::baseline(),
            ramp,
            look_every: 100,
        }
    }

    /// The four regressions of TARGETS "Judgement", each alone.
    pub fn power_scenarios(ramp: &[(f64, u64)]) -> Vec<Scenario> {
        let base = ArmModel::baseline();
        let mk = |name: &str, canary: ArmModel| Scenario {
            name: name.to_owned(),
            control: base.clone(),
            canary,
            ramp: ramp.to_vec(),
            look_every: 100,
        };
        vec![
            mk(
                "error 1% -> 2%",
                ArmModel {
                    error_rate: 0.02,
                    ..base.clone()
                },
            ),
            mk(
                "p95 +200 ms",
                ArmModel {
                    latency_p50_ms: base.latency_p50_ms * 1.1,
                    latency_p95_ms: base.latency_p95_ms + 200.0,
                    ..base.clone()
                },
            ),
            mk(
                "eval pass 96% -> 92%",
                ArmModel {
                    eval_pass_rate: 0.92,
                    ..base.clone()
                },
            ),
            mk(
                "cost x1.4",
                ArmModel {
                    cost_mean: base.cost_mean * 1.4,
                    ..base.clone()
                },
            ),
        ]
    }

    /// The oracle's one-sample SPRT for this scenario: which metric and its true
    /// (control, canary) probabilities of a "bad" request.
    fn oracle(&self) -> Option<(Metric, f64, f64)> {
        let (c, k) = (&self.control, &self.canary);
        if k.error_rate > c.error_rate {
            return Some((Metric::Error, c.error_rate, k.error_rate));
        }
        if k.latency_p95_ms > c.latency_p95_ms {
            return Some((Metric::Latency, 0.05, k.latency_tail(c.latency_p95_ms)));
        }
        if k.eval_pass_rate < c.eval_pass_rate {
            return Some((Metric::Eval, 1.0 - c.eval_pass_rate, 1.0 - k.eval_pass_rate));
        }
        if k.cost_mean > c.cost_mean {
            let median = c.cost_mu().exp();
            return Some((Metric::Cost, 0.5, k.cost_tail(median)));
        }
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    Error,
    Latency,
    Eval,
    Cost,
}

/// Normal and log-normal draws (Box-Muller).
fn std_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An outcome with these identity fields and nothing else set; empty strings make clones
/// allocation-free, which the release simulator relies on.
fn blank_event(request_id: &str, agent: &str, env: &str, bundle: &str) -> OutcomeEvent {
    OutcomeEvent {
        request_id: request_id.to_owned(),
        trace_id: None,
        agent: agent.to_owned(),
        env: env.to_owned(),
        snapshot_version: 1,
        bundle: bundle.to_owned(),
        arm: Arm::Stable,
        user: None,
        tenant: None,
        workload: None,
        instance: None,
        region: None,
        pool: None,
        at_ms: None,
        latency_ms: 0.0,
        stages: Default::default(),
        cost_usd: 0.0,
        tokens: Default::default(),
        error: None,
        tool_calls: ToolCalls::default(),
        refused: false,
        eval: None,
    }
}

struct Generator {
    rng: SimRng,
    event: OutcomeEvent,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator {
            rng: sim_rng(seed),
            event: blank_event("r", "sim", "sim", "sim@1"),
        }
    }

    fn next(&mut self, share: f64, control: &ArmModel, canary: &ArmModel) -> &OutcomeEvent {
        let rng = &mut self.rng;
        let is_canary = rng.random::<f64>() < share;
        let m = if is_canary { canary } else { control };
        let e = &mut self.event;
        e.arm = if is_canary { Arm::Canary } else { Arm::Stable };
        m.fill(e, rng);
        &self.event
    }
}

/// How one serin run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunOutcome {
    /// Canary requests seen when the first `fail` was looked at.
    pub failed_at: Option<u64>,
    /// The bound that failed first.
    pub guardrail: Option<String>,
    pub canary_requests: u64,
    pub requests: u64,
}

/// One seeded run of the [`Monitor`] alone over the scenario, looking every `look_every`
/// requests; stops at the first `fail`.
pub fn run_once(scenario: &Scenario, config: &GuardrailConfig, seed: u64) -> RunOutcome {
    let mut g = Generator::new(seed);
    let mut m = Monitor::new(config.clone());
    let look = scenario.look_every.max(1);
    let mut requests = 0u64;
    for &(share, n) in &scenario.ramp {
        m.set_canary_share(share);
        for _ in 0..n {
            m.observe(g.next(share, &scenario.control, &scenario.canary));
            requests += 1;
            if requests.is_multiple_of(look)
                && let Some(b) = m.first_fail()
            {
                return RunOutcome {
                    failed_at: Some(m.canary().requests),
                    guardrail: Some(b.name().to_owned()),
                    canary_requests: m.canary().requests,
                    requests,
                };
            }
        }
    }
    RunOutcome {
        failed_at: None,
        guardrail: None,
        canary_requests: m.canary().requests,
        requests,
    }
}

/// The seed of run `i` of a batch.
pub fn run_seed(seed: u64, i: u64) -> u64 {
    seed ^ i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

// ---------------------------------------------------------------------------------------------
// Side-by-side methods.

/// Degradation statistics (canary worse = larger) of the six metrics, from point estimates.
fn degradations(m: &Monitor) -> [f64; 6] {
    let (c, s) = (m.canary(), m.control());
    let rel = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => a / b - 1.0,
        _ => 0.0,
    };
    [
        c.error_rate() - s.error_rate(),
        rel(c.latency.quantile(0.95), s.latency.quantile(0.95)),
        s.tool_call_success().unwrap_or(1.0) - c.tool_call_success().unwrap_or(1.0),
        c.refusal_rate() - s.refusal_rate(),
        s.eval_pass_rate().unwrap_or(1.0) - c.eval_pass_rate().unwrap_or(1.0),
        rel(Some(c.cost_per_request()), Some(s.cost_per_request())),
    ]
}

const METRICS: [&str; 6] = [
    "error_rate (pp)",
    "latency_p95 (ratio - 1)",
    "tool_call_success (pp)",
    "refusal_rate (pp)",
    "eval_pass_rate (pp)",
    "cost_per_request (ratio - 1)",
];

/// Gates of the tuned fixed-threshold rule: canary requests before it checks.
const TUNED_GATES: [u64; 2] = [200, 1_000];

/// One-sided Mann-Whitney p-value that `a` (canary) is stochastically larger than `b`,
/// normal approximation with tie correction.
fn mann_whitney_p(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len(), b.len());
    if n1 < 5 || n2 < 5 {
        return 1.0;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|v| (*v, true))
        .chain(b.iter().map(|v| (*v, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all.get(j + 1).map(|x| x.0) == all.get(i).map(|x| x.0) {
            j += 1;
        }
        // Ranks are 1-based; a tie group gets its mean rank. Counts → f64 (small).
        let avg = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        for k in i..=j {
            if all.get(k).is_some_and(|x| x.1) {
                rank_sum_a += avg;
            }
        }
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64); // small counts → f64
    let u = rank_sum_a - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    if var <= 0.0 {
        return 1.0;
    }
    normal_tail((u - mean) / var.sqrt())
}

/// What every method did on one stream.
#[derive(Clone, Debug, Default)]
struct Record {
    serin: Option<u64>,
    serin_spec: Option<u64>,
    naive: Option<u64>,
    tuned: [Option<u64>; TUNED_GATES.len()],
    /// Per gate, per metric: the largest degradation over the looks (A/A tuning).
    max_deg: [[f64; 6]; TUNED_GATES.len()],
    mw: Option<u64>,
    oracle: Option<u64>,
    oracle2: Option<u64>,
}

struct Judges<'a> {
    config: &'a GuardrailConfig,
    /// Per gate, per metric margins of the tuned rule (None while tuning on A/A).
    tuned: Option<&'a [[f64; 6]; TUNED_GATES.len()]>,
    alpha: f64,
    /// Stop as soon as every method has failed (power runs).
    stop_early: bool,
}

fn simulate(scenario: &Scenario, j: &Judges<'_>, seed: u64) -> Record {
    let mut g = Generator::new(seed);
    let mut serin = Monitor::new(j.config.clone());
    let mut spec = Monitor::new(GuardrailConfig::spec_default());
    let min = j.config.settings.min_requests;
    let alpha_each = j.alpha / 6.0;
    let oracle = scenario.oracle();
    let mut oracle_llr = 0.0;
    let mut oracle2_llr = 0.0;
    let oracle_bar = (1.0 / alpha_each).ln();
    let mut r = Record {
        max_deg: [[f64::NEG_INFINITY; 6]; TUNED_GATES.len()],
        ..Record::default()
    };
    // Mann-Whitney interval buffers: [canary, control] per metric.
    let mut mw: Vec<[Vec<f64>; 2]> = (0..6).map(|_| [Vec::new(), Vec::new()]).collect();
    let mw_interval = 1_000u64;
    let look = scenario.look_every.max(1);
    let mut requests = 0u64;
    for &(share, n) in &scenario.ramp {
        serin.set_canary_share(share);
        spec.set_canary_share(share);
        for _ in 0..n {
            let e = g.next(share, &scenario.control, &scenario.canary);
            let canary = e.arm == Arm::Canary;
            serin.observe(e);
            if r.serin_spec.is_none() {
                spec.observe(e);
            }
            if r.mw.is_none() {
                let tools = (e.tool_calls.ok + e.tool_calls.failed).max(1);
                let vals = [
                    Some(e.latency_ms),
                    Some(e.cost_usd),
                    Some(f64::from(u8::from(e.error.is_some()))),
                    Some(f64::from(u8::from(e.refused))),
                    // Small counts → f64.
                    Some(e.tool_calls.failed as f64 / tools as f64),
                    e.eval.map(|v| f64::from(u8::from(!v.passed))),
                ];
                for (buf, v) in mw.iter_mut().zip(vals) {
                    if let Some(v) = v {
                        let [a, b] = buf;
                        if canary { a.push(v) } else { b.push(v) }
                    }
                }
            }
            if let Some((metric, p0, p1)) = oracle {
                let hit = match metric {
                    Metric::Error => Some(e.error.is_some()),
                    Metric::Latency => Some(e.latency_ms > scenario.control.latency_p95_ms),
                    Metric::Eval => e.eval.map(|v| !v.passed),
                    Metric::Cost => Some(e.cost_usd > scenario.control.cost_mu().exp()),
                };
                if canary
                    && r.oracle.is_none()
                    && let Some(h) = hit
                {
                    oracle_llr += bernoulli_llr(h, p0, p1);
                }
                // Two-sample oracle: the same events, conditional on happening, with the true
                // ratio known but control's rate not.
                if r.oracle2.is_none() && hit == Some(true) {
                    let (q0, q1) = (q_of(share, 1.0), q_of(share, p1 / p0));
                    oracle2_llr += if canary {
                        (q1 / q0).ln()
                    } else {
                        ((1.0 - q1) / (1.0 - q0)).ln()
                    };
                }
            }
            requests += 1;
            if requests.is_multiple_of(mw_interval) && r.mw.is_none() {
                let fail = mw.iter().any(|[a, b]| mann_whitney_p(a, b) < j.alpha);
                if fail {
                    r.mw = Some(serin.canary().requests);
                }
                for [a, b] in &mut mw {
                    a.clear();
                    b.clear();
                }
            }
            if !requests.is_multiple_of(look) {
                continue;
            }
            let cn = serin.canary().requests;
            if r.serin.is_none() && serin.any_fail() {
                r.serin = Some(cn);
            }
            if r.serin_spec.is_none() && spec.any_fail() {
                r.serin_spec = Some(cn);
            }
            if r.oracle.is_none() && oracle_llr >= oracle_bar {
                r.oracle = Some(cn);
            }
            if r.oracle2.is_none() && oracle2_llr >= oracle_bar {
                r.oracle2 = Some(cn);
            }
            let both_min = cn >= min && serin.control().requests >= min;
            if both_min {
                let d = degradations(&serin);
                if r.naive.is_none() && naive_fail(&serin) {
                    r.naive = Some(cn);
                }
                for (gi, gate) in TUNED_GATES.iter().enumerate() {
                    if cn < *gate {
                        continue;
                    }
                    if let (Some(row), Some(maxes)) = (r.tuned.get_mut(gi), r.max_deg.get_mut(gi)) {
                        for (mx, v) in maxes.iter_mut().zip(d) {
                            *mx = mx.max(v);
                        }
                        if row.is_none()
                            && let Some(margins) = j.tuned.and_then(|t| t.get(gi))
                            && d.iter().zip(margins).any(|(v, k)| v > k)
                        {
                            *row = Some(cn);
                        }
                    }
                }
            }
            if j.stop_early
                && r.serin.is_some()
                && r.naive.is_some()
                && r.mw.is_some()
                && r.oracle.is_some()
                && r.oracle2.is_some()
                && r.tuned.iter().all(Option::is_some)
            {
                return r;
            }
        }
    }
    r
}

/// The configured (no-regression) thresholds on point estimates.
fn naive_fail(m: &Monitor) -> bool {
    degradations(m).iter().any(|d| *d > 0.0)
}

// ---------------------------------------------------------------------------------------------
// The report.

#[derive(Clone, Debug, Serialize)]
pub struct MethodRate {
    pub method: String,
    /// Share of A/A runs with a `fail`.
    pub false_fail_rate: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PowerRow {
    pub scenario: String,
    pub method: String,
    pub detection_rate: f64,
    /// Canary requests until `fail` (`None`: not reached in at least that share of runs).
    pub median: Option<u64>,
    pub p90: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DetectReport {
    pub runs: usize,
    pub seed: u64,
    pub alpha: f64,
    pub ramp: Vec<(f64, u64)>,
    pub look_every: u64,
    pub aa: Vec<MethodRate>,
    /// Per tuned gate: (gate in canary requests, per-metric margins).
    pub tuned_margins: Vec<(u64, Vec<(String, f64)>)>,
    pub power: Vec<PowerRow>,
}

fn quantile_u(v: &mut [Option<u64>], q: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by_key(|x| x.unwrap_or(u64::MAX));
    // Index of the q quantile; run counts are small.
    let idx = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v.get(idx).copied().flatten()
}

/// Runs `f(0) .. f(runs - 1)` on up to `threads` threads and returns the results in run
/// order. A run that panics takes its worker's other runs with it; that is an error, never a
/// shorter report.
pub fn parallel_runs<T, F>(runs: usize, threads: usize, f: F) -> Result<Vec<T>, SimError>
where
    T: Send,
    F: Fn(u64) -> T + Sync,
{
    let workers = threads.clamp(1, runs.max(1));
    let joined: Vec<(usize, std::thread::Result<Vec<T>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let f = &f;
                // Run counts fit u64.
                s.spawn(move || (w..runs).step_by(workers).map(|i| f(i as u64)).collect())
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(w, h)| (w, h.join()))
            .collect()
    });
    let mut per_worker: Vec<std::vec::IntoIter<T>> = Vec::with_capacity(workers);
    for (worker, result) in joined {
        match result {
            Ok(v) => per_worker.push(v.into_iter()),
            Err(_) => {
                return Err(SimError::LostRuns {
                    worker,
                    workers,
                    lost: (worker..runs).step_by(workers).count(),
                    runs,
                });
            }
        }
    }
    // Run i was worker i % workers's (i / workers)-th: interleave back into run order.
    let mut out = Vec::with_capacity(runs);
    for i in 0..runs {
        if let Some(v) = per_worker.get_mut(i % workers).and_then(Iterator::next) {
            out.push(v);
        }
    }
    Ok(out)
}

/// Worker threads for seeded batches: the machine's parallelism, at most 8.
pub fn sim_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}

/// The detection report: `runs` seeded A/A runs and `runs` runs of each power scenario over
/// the full ramp, judged with [`GuardrailConfig::no_regression`] (any degradation is a
/// violation), at its alpha (0.1%).
pub fn detect_report(runs: usize, seed: u64) -> Result<DetectReport, SimError> {
    detect_report_with(runs, seed, Scenario::full_ramp())
}

/// [`detect_report`] over a chosen ramp.
pub fn detect_report_with(
    runs: usize,
    seed: u64,
    ramp: Vec<(f64, u64)>,
) -> Result<DetectReport, SimError> {
    let config = GuardrailConfig::no_regression();
    let alpha = config.settings.alpha.fraction();
    let aa = Scenario::aa(ramp.clone());
    let judges = Judges {
        config: &config,
        tuned: None,
        alpha,
        stop_early: false,
    };
    let aa_runs = parallel_runs(runs, sim_threads(), |i| {
        simulate(&aa, &judges, run_seed(seed, i))
    })?;
    // Tune: per gate and metric, the 1 - alpha/6 quantile of the per-run maxima.
    let mut margins = [[0.0; 6]; TUNED_GATES.len()];
    for (gi, row) in margins.iter_mut().enumerate() {
        for (mi, k) in row.iter_mut().enumerate() {
            let mut v: Vec<f64> = aa_runs
                .iter()
                .filter_map(|r| r.max_deg.get(gi).and_then(|m| m.get(mi)).copied())
                .collect();
            v.sort_by(f64::total_cmp);
            // Quantile index; run counts are small.
            let idx = ((v.len() as f64 * (1.0 - alpha / 6.0)).ceil() as usize)
                .clamp(1, v.len().max(1))
                - 1;
            *k = v.get(idx).copied().unwrap_or(0.0);
        }
    }
    let rate = |f: &dyn Fn(&Record) -> bool| {
        // Run counts → f64.
        aa_runs.iter().filter(|r| f(r)).count() as f64 / aa_runs.len().max(1) as f64
    };
    let mut aa_rates = vec![
        MethodRate {
            method: "serin (no_regression config)".to_owned(),
            false_fail_rate: rate(&|r| r.serin.is_some()),
        },
        MethodRate {
            method: "serin (SPEC default config)".to_owned(),
            false_fail_rate: rate(&|r| r.serin_spec.is_some()),
        },
        MethodRate {
            method: "naive threshold, every look".to_owned(),
            false_fail_rate: rate(&|r| r.naive.is_some()),
        },
    ];
    for (gi, gate) in TUNED_GATES.iter().enumerate() {
        let m = margins.get(gi).copied().unwrap_or_default();
        aa_rates.push(MethodRate {
            method: format!("fixed threshold tuned, from {gate} canary req (in-sample)"),
            false_fail_rate: rate(&|r| {
                r.max_deg
                    .get(gi)
                    .is_some_and(|d| d.iter().zip(&m).any(|(v, k)| v > k))
            }),
        });
    }
    aa_rates.push(MethodRate {
        method: "mann-whitney per 1,000-request interval".to_owned(),
        false_fail_rate: rate(&|r| r.mw.is_some()),
    });

    let judges = Judges {
        config: &config,
        tuned: Some(&margins),
        alpha,
        stop_early: true,
    };
    let mut power = Vec::new();
    for (si, sc) in Scenario::power_scenarios(&ramp).iter().enumerate() {
        let recs = parallel_runs(runs, sim_threads(), |i| {
            simulate(sc, &judges, run_seed(seed ^ ((si as u64 + 1) << 40), i))
        })?;
        let mut row = |method: String, f: &dyn Fn(&Record) -> Option<u64>| {
            let mut v: Vec<Option<u64>> = recs.iter().map(f).collect();
            let detected = v.iter().filter(|x| x.is_some()).count();
            power.push(PowerRow {
                scenario: sc.name.clone(),
                method,
                // Run counts → f64.
                detection_rate: detected as f64 / v.len().max(1) as f64,
                median: quantile_u(&mut v, 0.5),
                p90: quantile_u(&mut v, 0.9),
            });
        };
        row("serin".to_owned(), &|r| r.serin);
        row("naive threshold, every look".to_owned(), &|r| r.naive);
        for (gi, gate) in TUNED_GATES.iter().enumerate() {
            row(format!("fixed threshold tuned, from {gate}"), &|r| {
                r.tuned.get(gi).copied().flatten()
            });
        }
        row("mann-whitney per interval".to_owned(), &|r| r.mw);
        row("SPRT oracle, two-sample (knows ratio)".to_owned(), &|r| {
            r.oracle2
        });
        row("SPRT oracle, one-sample (knows rates)".to_owned(), &|r| {
            r.oracle
        });
    }
    Ok(DetectReport {
        runs,
        seed,
        alpha,
        ramp,
        look_every: aa.look_every,
        aa: aa_rates,
        tuned_margins: TUNED_GATES
            .iter()
            .zip(margins)
            .map(|(g, m)| {
                (
                    *g,
                    METRICS
                        .iter()
                        .zip(m)
                        .map(|(n, k)| ((*n).to_owned(), k))
                        .collect(),
                )
            })
            .collect(),
        power,
    })
}

impl fmt::Display for DetectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ramp: Vec<String> = self
            .ramp
            .iter()
            .map(|(s, n)| format!("{}% x {n}", s * 100.0))
            .collect();
        writeln!(
            f,
            "Detection report: {} seeded runs per scenario (seed {}), alpha {}%, look every {} requests, ramp {}",
            self.runs,
            self.seed,
            self.alpha * 100.0,
            self.look_every,
            ramp.join(", ")
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "A/A (identical arms, all guardrails together): false fail rate"
        )?;
        for m in &self.aa {
            writeln!(f, "  {:<58} {:>7.2}%", m.method, m.false_fail_rate * 100.0)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Tuned fixed-threshold margins (1 - alpha/6 quantile of A/A maxima):"
        )?;
        for (gate, ms) in &self.tuned_margins {
            let parts: Vec<String> = ms.iter().map(|(n, k)| format!("{n} {k:.4}")).collect();
            writeln!(f, "  from {gate}: {}", parts.join(", "))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Power: canary requests until fail ('-' = not reached by that quantile)"
        )?;
        writeln!(
            f,
            "  {:<22} {:<40} {:>9} {:>8} {:>8}",
            "scenario", "method", "detected", "median", "p90"
        )?;
        let show = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |x| x.to_string());
        for p in &self.power {
            writeln!(
                f,
                "  {:<22} {:<40} {:>8.1}% {:>8} {:>8}",
                p.scenario,
                p.method,
                p.detection_rate * 100.0,
                show(p.median),
                show(p.p90)
            )?;
        }
        Ok(())
    }
}

/// `n` simulated events at a fixed canary share (benchmarks, examples).
pub fn sample_events(scenario: &Scenario, seed: u64, n: usize, share: f64) -> Vec<OutcomeEvent> {
    let mut g = Generator::new(seed);
    (0..n)
        .map(|_| g.next(share, &scenario.control, &scenario.canary).clone())
        .collect()
}
