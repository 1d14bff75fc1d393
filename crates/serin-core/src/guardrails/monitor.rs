//! The sequential canary-vs-control monitor.

use serde::{Deserialize, Serialize};

use super::aggregate::{ArmAggregate, ArmSummary};
use super::config::{GuardrailConfig, Points, Share, trim_float};
use std::collections::BTreeMap;

use super::seq::{Conditional, OneSample, rate_lower_bound, rate_upper_bound};
use crate::decision::Arm;
use crate::outcome::{ArmWindow, OutcomeEvent, OutcomeWindow};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum VerdictStatus {
    Pass,
    Fail,
    Pending,
}

/// One arm's value of a guardrail's metric and the sample it rests on.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricValue {
    pub value: f64,
    pub n: u64,
}

/// The judgement of one configured bound, with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Verdict {
    /// `error_rate.max_increase` style: metric and bound.
    pub guardrail: String,
    pub status: VerdictStatus,
    pub canary: MetricValue,
    pub control: MetricValue,
    /// The bound in words: `<= control + 1pp`.
    pub threshold: String,
    /// The e-value against "the bound holds" (fail when it reaches `statistic_threshold`).
    pub statistic: f64,
    /// 1 / this bound's share of alpha.
    pub statistic_threshold: f64,
    /// While pending: estimated further canary requests until the bound can be decided.
    pub needs_more_requests: Option<u64>,
    pub explanation: String,
    /// When this bound first crossed its bar (Unix ms). Once set the verdict is `fail` for
    /// good, and `canary`, `control` and `statistic` are the evidence at that crossing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latched_at_ms: Option<i64>,
    /// A shadow bound is computed and reported like any other but never gates a step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// The non-inferiority test behind `pass`: the e-value against "canary is worse than
    /// the bound allows"; `pass` once it reaches `pass_threshold`. Both absent for a
    /// zero-tolerance bound (an increase of 0, a ratio of 1, ...), which has no margin to
    /// show: it passes on the absence of a `fail` once the minimum sample is reached
    /// (held `pending` while the canary looks worse with its harm e-value above 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_statistic: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_threshold: Option<f64>,
    /// When the non-inferiority test first reached its bar (Unix ms). A later `fail`
    /// still wins: safety over progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed_at_ms: Option<i64>,
}

/// The evidence at a bound's first crossing of its bar. An anytime-valid test rejects at
/// its first crossing; what the e-value does afterwards cannot undo that rejection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Latch {
    at_ms: i64,
    canary: MetricValue,
    control: MetricValue,
    /// Clamped to a finite value so the stored state always reads back.
    statistic: f64,
    statistic_threshold: f64,
}

/// One event of the agent-side approval queue, as the server sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalSignal {
    /// An agent asked a human before a risky tool call.
    Requested,
    /// A request was denied, or expired (an expired request is denied).
    Denied,
    /// A request was still undecided `approvals.wait` after it was made.
    Overdue,
}

impl ApprovalSignal {
    fn bound(self) -> Bound {
        match self {
            ApprovalSignal::Requested => Bound::ApprovalRatio,
            ApprovalSignal::Denied => Bound::DenialRatio,
            ApprovalSignal::Overdue => Bound::OverdueRatio,
        }
    }
}

/// One arm's approval-queue events (those routed under a version the release routed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalCounts {
    pub requested: u64,
    pub denied: u64,
    pub overdue: u64,
}

impl ApprovalCounts {
    fn add(&mut self, signal: ApprovalSignal) {
        match signal {
            ApprovalSignal::Requested => self.requested += 1,
            ApprovalSignal::Denied => self.denied += 1,
            ApprovalSignal::Overdue => self.overdue += 1,
        }
    }

    pub fn get(&self, signal: ApprovalSignal) -> u64 {
        match signal {
            ApprovalSignal::Requested => self.requested,
            ApprovalSignal::Denied => self.denied,
            ApprovalSignal::Overdue => self.overdue,
        }
    }

    fn is_zero(&self) -> bool {
        *self == ApprovalCounts::default()
    }
}

fn no_approvals(a: &[ApprovalCounts; 2]) -> bool {
    a.iter().all(ApprovalCounts::is_zero)
}

/// Which configured bound a test judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    ErrorMax,
    ErrorIncrease,
    ErrorRatio,
    LatencyMax,
    LatencyIncrease,
    LatencyRatio,
    ToolMin,
    ToolDecrease,
    RefusalMax,
    RefusalIncrease,
    RefusalRatio,
    EvalMin,
    EvalDecrease,
    CostMax,
    CostIncrease,
    CostRatio,
    ApprovalRatio,
    DenialRatio,
    OverdueRatio,
}

impl Bound {
    pub fn name(self) -> &'static str {
        match self {
            Bound::ErrorMax => "error_rate.max",
            Bound::ErrorIncrease => "error_rate.max_increase",
            Bound::ErrorRatio => "error_rate.max_ratio",
            Bound::LatencyMax => "latency_p95_ms.max",
            Bound::LatencyIncrease => "latency_p95_ms.max_increase",
            Bound::LatencyRatio => "latency_p95_ms.max_ratio",
            Bound::ToolMin => "tool_call_success.min",
            Bound::ToolDecrease => "tool_call_success.max_decrease",
            Bound::RefusalMax => "refusal_rate.max",
            Bound::RefusalIncrease => "refusal_rate.max_increase",
            Bound::RefusalRatio => "refusal_rate.max_ratio",
            Bound::EvalMin => "eval_pass_rate.min",
            Bound::EvalDecrease => "eval_pass_rate.max_decrease",
            Bound::CostMax => "cost_per_request.max",
            Bound::CostIncrease => "cost_per_request.max_increase",
            Bound::CostRatio => "cost_per_request.max_ratio",
            Bound::ApprovalRatio => "approvals.max_ratio",
            Bound::DenialRatio => "approvals.denial_max_ratio",
            Bound::OverdueRatio => "approvals.overdue_max_ratio",
        }
    }

    /// One-sample test of canary alone against an absolute bound.
    fn absolute(self) -> bool {
        matches!(
            self,
            Bound::ErrorMax
                | Bound::LatencyMax
                | Bound::ToolMin
                | Bound::RefusalMax
                | Bound::EvalMin
                | Bound::CostMax
        )
    }
}

/// Quantile of control the latency bounds compare against (the guardrail is on p95).
const LATENCY_Q: f64 = 0.95;
/// Cost bounds compare medians (see module docs).
const COST_Q: f64 = 0.5;
/// Control requests before the reference quantiles are first taken.
const REF_MIN: u64 = 100;
/// Pseudo-exposure pulling the tool-call / eval exposure share towards the request share
/// (only where no routing epoch is known).
const SHARE_PRIOR: f64 = 100.0;
/// Draws of each arm a routing epoch must have seen before its events are judged: until
/// then canary's share of the epoch is too uncertain to bet against.
const SHARE_BURN_IN: f64 = 50.0;

/// One bound's running test.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Test {
    bound: Bound,
    /// The configured number, as a fraction (shares, points), ms, USD or ratio.
    limit: f64,
    /// Whether half of this bound's alpha pays for an upper confidence bound of control's rate.
    uses_lcb: bool,
    one: OneSample,
    cond: Conditional,
    /// [canary, control] hits and exposure seen by this test (point estimates, LCB).
    hits: [u64; 2],
    trials: [u64; 2],
    /// Cached null rate of an additive bound and control's trials when it was taken.
    p0: Option<f64>,
    p0_at: u64,
    /// Set at the first crossing of the bar ([`Monitor::latch`]); monitors stored before
    /// latching existed read as not latched.
    #[serde(default)]
    latched: Option<Latch>,
    /// Reported, never gating (the rule's `shadow: true`).
    #[serde(default)]
    shadow: bool,
    /// The non-inferiority test (alternatives below the bound): `pass` when it crosses.
    #[serde(default = "Conditional::below")]
    ni: Conditional,
    /// Cached null rate of an additive bound's non-inferiority test and control's trials
    /// when it was taken.
    #[serde(default)]
    p0_pass: Option<f64>,
    #[serde(default)]
    p0_pass_at: u64,
    /// When the non-inferiority test first crossed its bar.
    #[serde(default)]
    passed: Option<i64>,
}

impl Test {
    fn new(bound: Bound, limit: f64) -> Test {
        let uses_lcb = matches!(
            bound,
            Bound::ErrorIncrease
                | Bound::RefusalIncrease
                | Bound::ToolDecrease
                | Bound::EvalDecrease
        ) && limit > 0.0;
        Test {
            bound,
            limit,
            uses_lcb,
            one: OneSample::default(),
            cond: Conditional::default(),
            hits: [0; 2],
            trials: [0; 2],
            p0: None,
            p0_at: 0,
            latched: None,
            shadow: false,
            ni: Conditional::below(),
            p0_pass: None,
            p0_pass_at: 0,
            passed: None,
        }
    }

    fn tally(&mut self, arm: usize, hits: u64, trials: u64) {
        if let (Some(h), Some(t)) = (self.hits.get_mut(arm), self.trials.get_mut(arm)) {
            *h += hits;
            *t += trials;
        }
    }

    fn canary_rate(&self) -> f64 {
        if self.trials[0] == 0 {
            0.0
        } else {
            self.hits[0] as f64 / self.trials[0] as f64 // counts → f64
        }
    }

    /// Null rate ratio of a relative rate bound.
    fn lambda0(&self) -> f64 {
        match self.bound {
            Bound::ErrorRatio
            | Bound::RefusalRatio
            | Bound::ApprovalRatio
            | Bound::DenialRatio
            | Bound::OverdueRatio => self.limit,
            _ => 1.0,
        }
    }

    /// `max_increase` / `max_decrease` with d > 0: the null canary rate
    /// `U + d`, `U` an upper confidence bound of control's rate, refreshed as control grows.
    fn null_rate(&mut self, delta: f64) -> Option<f64> {
        let n = self.trials[1];
        if n == 0 {
            return None;
        }
        if self.p0_at == 0 || n - self.p0_at >= (n / 50).max(20) {
            self.p0_at = n;
            // A control without a single hit still bounds its rate (by about
            // ln(1/delta)/n): a canary erring on a quarter of its requests against a
            // clean control is the plainest harm there is.
            let ucb = rate_upper_bound(self.hits[1], n, delta);
            self.p0 = Some((ucb + self.limit).min(1.0));
        }
        self.p0
    }

    /// The non-inferiority null of an additive bound: `L + d`, `L` a lower confidence
    /// bound of control's rate. Under "canary is worse than control by more than d",
    /// canary's rate is at least `L + d` whenever `L` holds.
    fn null_rate_pass(&mut self, delta: f64) -> Option<f64> {
        let n = self.trials[1];
        if n == 0 {
            return None;
        }
        if self.p0_pass_at == 0 || n - self.p0_pass_at >= (n / 50).max(20) {
            self.p0_pass_at = n;
            let lcb = rate_lower_bound(self.hits[1], n, delta);
            self.p0_pass = Some((lcb + self.limit).min(1.0));
        }
        self.p0_pass
    }

    /// Whether the bound has a margin to show: a zero-tolerance bound (an increase of 0, a
    /// ratio of 1, a maximum of 0%) can never be shown harmless, only not failing.
    fn can_pass(&self) -> bool {
        match self.bound {
            Bound::ErrorMax | Bound::RefusalMax => self.limit > 0.0,
            Bound::ToolMin | Bound::EvalMin => self.limit < 1.0,
            Bound::LatencyMax | Bound::CostMax => true,
            Bound::ErrorRatio
            | Bound::RefusalRatio
            | Bound::LatencyRatio
            | Bound::CostRatio
            | Bound::ApprovalRatio
            | Bound::DenialRatio
            | Bound::OverdueRatio => self.limit > 1.0,
            Bound::ErrorIncrease
            | Bound::RefusalIncrease
            | Bound::ToolDecrease
            | Bound::EvalDecrease
            | Bound::LatencyIncrease
            | Bound::CostIncrease => self.limit > 0.0,
        }
    }

    /// The null rate of an absolute bound's one-sample tests.
    fn absolute_p0(&self) -> f64 {
        match self.bound {
            Bound::ToolMin | Bound::EvalMin => 1.0 - self.limit,
            Bound::LatencyMax => 1.0 - LATENCY_Q,
            Bound::CostMax => 1.0 - COST_Q,
            _ => self.limit,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Exposure {
    canary: u64,
    control: u64,
}

impl Exposure {
    fn add(&mut self, canary: bool, n: u64) {
        if canary {
            self.canary += n;
        } else {
            self.control += n;
        }
    }
    fn share(&self, prior: f64, weight: f64) -> f64 {
        // Counts → f64: exact below 2^53.
        (self.canary as f64 + prior * weight) / ((self.canary + self.control) as f64 + weight)
    }

    /// Canary's share of this exposure, moved one standard error towards the conservative
    /// side of each test, when the units come in arm-homogeneous clusters of `cluster` on
    /// average (the tool calls of one request): the counts are scaled down to the number of
    /// independent draws they stand for. Skipped while either arm has fewer than
    /// [`SHARE_BURN_IN`] draws.
    fn band(&self, cluster: f64) -> Band {
        let k = cluster.max(1.0);
        // Counts → f64: exact below 2^53.
        let c = self.canary as f64 / k;
        let n = (self.canary + self.control) as f64 / k;
        if c < SHARE_BURN_IN || n - c < SHARE_BURN_IN {
            return Band {
                lo: 0.0,
                hi: 1.0,
                skip: true,
            };
        }
        let p = c / n;
        let se = (p * (1.0 - p) / n).sqrt();
        Band {
            lo: (p - se).max(0.0),
            hi: (p + se).min(1.0),
            skip: false,
        }
    }
}

/// A routing epoch: its first snapshot version and canary's share in it.
type Epoch = (u64, f64);

/// Canary's exposure share for the two directions of an event-conditional test: the `fail`
/// test bets against the high end (under "no harm" canary's events are then at most about
/// as frequent as it assumes), the `pass` test against the low end; `skip` leaves the event
/// out of both (a choice made before the event is seen, so the tests stay valid).
#[derive(Clone, Copy, Debug)]
struct Band {
    lo: f64,
    hi: f64,
    skip: bool,
}

impl Band {
    fn point(s: f64) -> Band {
        Band {
            lo: s,
            hi: s,
            skip: false,
        }
    }
}

/// Sequential comparison of canary against control for one release.
///
/// Feed it every outcome of both arms ([`Monitor::observe`]) and tell it the canary's traffic
/// share whenever the routing weight changes ([`Monitor::set_canary_share`]); ask for
/// [`Monitor::verdicts`] at any time, as often as you like: the false-`fail` rate stays within
/// `settings.alpha` however often you look.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Monitor {
    config: GuardrailConfig,
    alpha_each: f64,
    canary: ArmAggregate,
    control: ArmAggregate,
    share: Option<f64>,
    /// Exposure since the last share change: requests, tool calls, eval samples.
    seg_requests: Exposure,
    seg_tools: Exposure,
    seg_evals: Exposure,
    latency_ref: Option<f64>,
    cost_ref: Option<f64>,
    refs_at: u64,
    /// Arms of the last requests, for the share estimate when none was set.
    recent: RecentArms,
    tests: Vec<Test>,
    /// Canary's routing share from each snapshot version on ([`Monitor::set_canary_share_from`]).
    /// When set, every outcome is judged at the share of the version it was routed under,
    /// so late or batched outcomes cannot bias a test.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    shares: BTreeMap<u64, f64>,
    /// Exposure of requests, tool calls and eval samples per entry of `shares`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    epochs: BTreeMap<u64, [Exposure; 3]>,
    /// Requests with at least one tool call per entry of `shares`: how many independent
    /// draws the tool-call exposure stands for. Monitors stored before it read as empty
    /// (one draw per call).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    epoch_tool_requests: BTreeMap<u64, Exposure>,
    /// Outcomes routed under a version older than the first of `shares` (before the release
    /// routed anything): counted, never judged.
    #[serde(default)]
    unattributed: u64,
    /// [canary, control] approval-queue events ([`Monitor::observe_approval`]); monitors
    /// stored before approvals were judged read as none.
    #[serde(default, skip_serializing_if = "no_approvals")]
    approvals: [ApprovalCounts; 2],
}

/// Bits of the last [`RECENT`] requests' arms (1 = canary).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RecentArms {
    bits: [u64; RECENT / 64],
    pos: usize,
    len: usize,
    canary: usize,
}

const RECENT: usize = 512;

impl RecentArms {
    fn push(&mut self, canary: bool) {
        let (word, bit) = (self.pos / 64, self.pos % 64);
        if let Some(w) = self.bits.get_mut(word) {
            let old = (*w >> bit) & 1 == 1;
            if self.len == RECENT && old {
                self.canary -= 1;
            }
            if canary {
                *w |= 1 << bit;
                self.canary += 1;
            } else {
                *w &= !(1 << bit);
            }
        }
        self.len = (self.len + 1).min(RECENT);
        self.pos = (self.pos + 1) % RECENT;
    }

    /// An upper confidence bound (L = 3) of canary's share of recent requests. Erring high is
    /// the safe side for the event-conditional tests (the null's q grows with the share).
    fn upper_share(&self) -> f64 {
        if self.len == 0 {
            return 0.5;
        }
        let l = 3.0_f64;
        // Window counts → f64 (at most 512).
        let mu = ((l / 2.0).sqrt() + (l / 2.0 + self.canary as f64).sqrt()).powi(2);
        (mu / self.len as f64).min(1.0)
    }
}

impl Monitor {
    pub fn new(config: GuardrailConfig) -> Monitor {
        let mut tests = Vec::new();
        let c = &config;
        let mut push = |b: Bound, v: Option<f64>, shadow: bool| {
            if let Some(v) = v {
                let mut t = Test::new(b, v);
                t.shadow = shadow;
                tests.push(t);
            }
        };
        let sh = |s: Option<Share>| s.map(Share::fraction);
        let pp = |p: Option<Points>| p.map(Points::fraction);
        if let Some(r) = &c.error_rate {
            push(Bound::ErrorMax, sh(r.max), r.shadow);
            push(Bound::ErrorIncrease, pp(r.max_increase), r.shadow);
            push(Bound::ErrorRatio, r.max_ratio, r.shadow);
        }
        if let Some(r) = &c.latency_p95_ms {
            push(Bound::LatencyMax, r.max, r.shadow);
            push(Bound::LatencyIncrease, r.max_increase, r.shadow);
            push(Bound::LatencyRatio, r.max_ratio, r.shadow);
        }
        if let Some(r) = &c.tool_call_success {
            push(Bound::ToolMin, sh(r.min), r.shadow);
            push(Bound::ToolDecrease, pp(r.max_decrease), r.shadow);
        }
        if let Some(r) = &c.refusal_rate {
            push(Bound::RefusalMax, sh(r.max), r.shadow);
            push(Bound::RefusalIncrease, pp(r.max_increase), r.shadow);
            push(Bound::RefusalRatio, r.max_ratio, r.shadow);
        }
        if let Some(r) = &c.eval_pass_rate {
            push(Bound::EvalMin, sh(r.min), r.shadow);
            push(Bound::EvalDecrease, pp(r.max_decrease), r.shadow);
        }
        if let Some(r) = &c.cost_per_request {
            push(Bound::CostMax, r.max, r.shadow);
            push(Bound::CostIncrease, r.max_increase, r.shadow);
            push(Bound::CostRatio, r.max_ratio, r.shadow);
        }
        if let Some(r) = &c.approvals {
            push(Bound::ApprovalRatio, r.max_ratio, r.shadow);
            push(Bound::DenialRatio, r.denial_max_ratio, r.shadow);
            push(Bound::OverdueRatio, r.overdue_max_ratio, r.shadow);
        }
        // Bonferroni: every gating bound gets an equal share of the family-wise alpha; a
        // shadow bound is judged at the share it would get if it were enforced.
        let gating = tests.iter().filter(|t| !t.shadow).count();
        let alpha_each = config.settings.alpha.fraction() / gating.max(1) as f64; // small count → f64
        Monitor {
            config,
            alpha_each,
            canary: ArmAggregate::default(),
            control: ArmAggregate::default(),
            share: None,
            seg_requests: Exposure::default(),
            seg_tools: Exposure::default(),
            seg_evals: Exposure::default(),
            latency_ref: None,
            cost_ref: None,
            refs_at: 0,
            recent: RecentArms::default(),
            tests,
            shares: BTreeMap::new(),
            epochs: BTreeMap::new(),
            epoch_tool_requests: BTreeMap::new(),
            unattributed: 0,
            approvals: [ApprovalCounts::default(); 2],
        }
    }

    /// The alpha a test is judged at: its Bonferroni share, or for a shadow bound the share
    /// it would get if it were enforced.
    fn alpha_of(&self, t: &Test) -> f64 {
        if t.shadow {
            let gating = self.tests.iter().filter(|t| !t.shadow).count();
            self.config.settings.alpha.fraction() / (gating + 1) as f64 // small count → f64
        } else {
            self.alpha_each
        }
    }

    /// Canary's share of routing epoch `version`'s requests, tool calls and eval samples.
    fn bands(&self, version: u64) -> [Band; 3] {
        let seg = self.epochs.get(&version).copied().unwrap_or_default();
        let tool_requests = self
            .epoch_tool_requests
            .get(&version)
            .map_or(0, |e| e.canary + e.control);
        let calls = seg[1].canary + seg[1].control;
        let cluster = if tool_requests == 0 {
            1.0
        } else {
            calls as f64 / tool_requests as f64 // counts → f64
        };
        [seg[0].band(1.0), seg[1].band(cluster), seg[2].band(1.0)]
    }

    /// Outcomes routed before the release routed anything (never judged).
    pub fn unattributed(&self) -> u64 {
        self.unattributed
    }

    pub fn config(&self) -> &GuardrailConfig {
        &self.config
    }
    pub fn canary(&self) -> &ArmAggregate {
        &self.canary
    }
    pub fn control(&self) -> &ArmAggregate {
        &self.control
    }

    /// The canary's traffic share (0..1) from now on: call it at every routing-weight change.
    /// Without it the share is an upper confidence bound of canary's share of the last 512
    /// requests: conservative (fewer, later fails) but approximate right after a step up.
    pub fn set_canary_share(&mut self, share: f64) {
        let s = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if self.share != Some(s) {
            self.share = Some(s);
            self.seg_requests = Exposure::default();
            self.seg_tools = Exposure::default();
            self.seg_evals = Exposure::default();
        }
    }

    /// The canary's traffic share from snapshot `version` on (until a later version's share):
    /// outcomes are attributed to the share of the version they were routed under.
    pub fn set_canary_share_from(&mut self, version: u64, share: f64) {
        let s = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if self.shares.range(..=version).next_back().map(|(_, v)| *v) == Some(s) {
            return;
        }
        self.shares.insert(version, s);
        self.share = Some(s);
    }

    /// The first version of the routing epoch `version` belongs to (the version from which
    /// its share has been in force), if the share is known per version.
    pub fn share_since(&self, version: u64) -> Option<u64> {
        self.shares.range(..=version).next_back().map(|(v, _)| *v)
    }

    pub fn canary_share(&self) -> Option<f64> {
        self.share
    }

    fn request_share(&self) -> f64 {
        if let Some((_, s)) = self.shares.last_key_value() {
            return *s;
        }
        match self.share {
            Some(s) => s,
            None => self.recent.upper_share(),
        }
    }

    /// The error budget (alpha) of one gating test, and of one shadow test: alpha split as if
    /// the shadow test were one more gating test.
    fn test_alphas(&self) -> (f64, f64) {
        let gating = self.tests.iter().filter(|t| !t.shadow).count();
        let alpha = self.config.settings.alpha.fraction();
        (self.alpha_each, alpha / (gating + 1) as f64) // small count → f64
    }

    /// The routing epoch of snapshot `version` (its first version and share, when shares are
    /// known per version) and canary's exposure bands for requests, tool calls and eval
    /// samples; `None` (and `n` outcomes counted unattributed) for a version from before the
    /// release routed anything.
    fn exposure(&mut self, version: u64, n: u64) -> Option<(Option<Epoch>, [Band; 3])> {
        let exposure = self.exposure_of(version);
        if exposure.is_none() {
            self.unattributed += n;
        }
        exposure
    }

    /// [`Monitor::exposure`] without counting anything: the bands from the exposure seen so
    /// far, `None` for a version from before the release routed anything.
    fn exposure_of(&self, version: u64) -> Option<(Option<Epoch>, [Band; 3])> {
        let epoch = if self.shares.is_empty() {
            None
        } else {
            Some(
                self.shares
                    .range(..=version)
                    .next_back()
                    .map(|(v, s)| (*v, *s))?,
            )
        };
        // Within a routing epoch, canary's share of the requests (tool calls, eval samples)
        // the epoch routed, from those seen so far. The share, not the weight: with sticky
        // users of uneven volume the requests a weight routes are not that weight (one heavy
        // user can be most of the traffic), and under "identical arms" the events follow the
        // requests. Nothing pulls it towards the weight, and nothing is judged before it
        // settles: a test that bets against a share below the true one gains evidence from
        // no difference at all (an early estimate pulled towards a 25% weight while one user
        // sent 85% of the epoch's requests to canary rolled back 30% of identical releases).
        let bands = match epoch {
            Some((v, _)) => self.bands(v),
            None => {
                // Without a known share per version: the weight in force (or an upper bound
                // of the recent mix), with tool-call and eval exposure pulled towards it.
                let rho = self.request_share();
                let (tools, evals) = if self.share.is_some() {
                    (
                        self.seg_tools.share(rho, SHARE_PRIOR),
                        self.seg_evals.share(rho, SHARE_PRIOR),
                    )
                } else {
                    (rho, rho)
                };
                [Band::point(rho), Band::point(tools), Band::point(evals)]
            }
        };
        Some((epoch, bands))
    }

    /// Feeds one outcome. `Arm::Killed` outcomes are ignored.
    pub fn observe(&mut self, e: &OutcomeEvent) {
        let canary = match e.arm {
            Arm::Canary => true,
            Arm::Stable => false,
            Arm::Killed => return,
        };
        let arm = usize::from(!canary);
        // Every share and reference below is fixed before this event is looked at.
        let Some((epoch, [rho, rho_tools, rho_evals])) = self.exposure(e.snapshot_version, 1)
        else {
            return;
        };
        let lat_ref = self.latency_ref;
        let cost_ref = self.cost_ref;
        let (alpha_main, alpha_shadow) = self.test_alphas();
        let alpha = self.config.settings.alpha.fraction();
        let error = e.error.is_some();
        let tools = e.tool_calls.ok + e.tool_calls.failed;
        let failed = e.tool_calls.failed;
        let eval_fail = e.eval.map(|v| !v.passed);
        for t in &mut self.tests {
            let delta = if t.shadow { alpha_shadow } else { alpha_main } / 2.0;
            // The non-inferiority test is not split (every bound must pass: an
            // intersection-union test), half of it pays for control's lower bound.
            let delta_pass = alpha / 2.0;
            let can_pass = t.can_pass();
            match t.bound {
                Bound::ErrorMax | Bound::RefusalMax => {
                    let hit = if t.bound == Bound::ErrorMax {
                        error
                    } else {
                        e.refused
                    };
                    if canary {
                        t.one.add(u64::from(hit), 1);
                    }
                    t.tally(arm, u64::from(hit), 1);
                }
                Bound::ToolMin => {
                    if canary {
                        t.one.add(failed, tools);
                    }
                    t.tally(arm, failed, tools);
                }
                Bound::EvalMin => {
                    if let Some(f) = eval_fail {
                        if canary {
                            t.one.add(u64::from(f), 1);
                        }
                        t.tally(arm, u64::from(f), 1);
                    }
                }
                Bound::LatencyMax | Bound::CostMax => {
                    let v = if t.bound == Bound::LatencyMax {
                        e.latency_ms
                    } else {
                        e.cost_usd
                    };
                    let hit = v > t.limit;
                    if canary {
                        t.one.add(u64::from(hit), 1);
                    }
                    t.tally(arm, u64::from(hit), 1);
                }
                Bound::ErrorRatio | Bound::RefusalRatio => {
                    let hit = if t.bound == Bound::ErrorRatio {
                        error
                    } else {
                        e.refused
                    };
                    if hit {
                        if !rho.skip {
                            t.cond.event(canary, rho.hi, t.lambda0());
                        }
                        if can_pass && !rho.skip {
                            t.ni.event(canary, rho.lo, t.lambda0());
                        }
                    }
                    t.tally(arm, u64::from(hit), 1);
                }
                Bound::ErrorIncrease
                | Bound::RefusalIncrease
                | Bound::ToolDecrease
                | Bound::EvalDecrease => {
                    let (hits, trials, share) = match t.bound {
                        Bound::ErrorIncrease => (u64::from(error), 1, rho),
                        Bound::RefusalIncrease => (u64::from(e.refused), 1, rho),
                        Bound::ToolDecrease => (failed, tools, rho_tools),
                        _ => eval_fail.map_or((0, 0, rho_evals), |f| (u64::from(f), 1, rho_evals)),
                    };
                    if trials == 0 {
                        continue;
                    }
                    if t.limit <= 0.0 {
                        // No tolerance: the exact event-conditional test with λ0 = 1.
                        for _ in 0..hits.min(1000) {
                            if !share.skip {
                                t.cond.event(canary, share.hi, 1.0);
                            }
                        }
                    } else if canary {
                        let past = t.canary_rate();
                        if let Some(p0) = t.null_rate(delta)
                            && past > p0
                        {
                            // Bet only while canary's past rate is above the null: a
                            // predictable choice (still valid) that keeps an early, wide null
                            // from eroding the evidence.
                            t.cond.trials(hits, trials - hits.min(trials), p0);
                        }
                        // The mirror image for non-inferiority: bet on "below L + d" only
                        // while canary's past rate is below it (or nothing is known yet).
                        if let Some(p0) = t.null_rate_pass(delta_pass)
                            && (t.trials[0] == 0 || past < p0)
                        {
                            t.ni.trials(hits, trials - hits.min(trials), p0);
                        }
                    }
                    t.tally(arm, hits, trials);
                }
                Bound::LatencyIncrease
                | Bound::LatencyRatio
                | Bound::CostIncrease
                | Bound::CostRatio => {
                    let latency = matches!(t.bound, Bound::LatencyIncrease | Bound::LatencyRatio);
                    let (v, reference) = if latency {
                        (e.latency_ms, lat_ref)
                    } else {
                        (e.cost_usd, cost_ref)
                    };
                    if let Some(r) = reference {
                        let cut = if !canary {
                            r
                        } else if matches!(t.bound, Bound::LatencyIncrease | Bound::CostIncrease) {
                            r + t.limit
                        } else {
                            r * t.limit
                        };
                        let hit = v > cut;
                        if hit {
                            if !rho.skip {
                                t.cond.event(canary, rho.hi, 1.0);
                            }
                            if can_pass && !rho.skip {
                                t.ni.event(canary, rho.lo, 1.0);
                            }
                        }
                        t.tally(arm, u64::from(hit), 1);
                    }
                }
                // The events come from `observe_approval`; a request is their exposure.
                Bound::ApprovalRatio | Bound::DenialRatio | Bound::OverdueRatio => {
                    t.tally(arm, 0, 1);
                }
            }
        }
        self.seg_requests.add(canary, 1);
        self.recent.push(canary);
        self.seg_tools.add(canary, tools);
        if e.eval.is_some() {
            self.seg_evals.add(canary, 1);
        }
        if let Some((v, _)) = epoch {
            let seg = self.epochs.entry(v).or_default();
            seg[0].add(canary, 1);
            seg[1].add(canary, tools);
            if tools > 0 {
                self.epoch_tool_requests
                    .entry(v)
                    .or_default()
                    .add(canary, 1);
            }
            if e.eval.is_some() {
                seg[2].add(canary, 1);
            }
        }
        if canary {
            self.canary.record(e);
        } else {
            self.control.record(e);
            self.refresh_refs();
        }
    }

    /// Feeds one outcome window (see [`OutcomeWindow`]): its canary part when its bundle is
    /// `candidate`, its stable part when its bundle is not. Every share, reference, null rate
    /// and bet is fixed before the window is looked at and applies to all of its requests, so
    /// each test multiplies in the factors of the window's requests as a block, the same
    /// whatever order they happened in; a test is then judged only between windows (fewer
    /// looks, which can only lower the false-`fail` rate). Under "no harm" each block's
    /// factors still have expectation at most 1 given the past, so the tests stay valid, at
    /// the cost of bets that learn once per window rather than once per request.
    pub fn observe_window(&mut self, w: &OutcomeWindow, candidate: &str) {
        let canary_part = w
            .arms
            .iter()
            .find(|a| a.arm == Arm::Canary && a.bundle == candidate);
        let control_part = w
            .arms
            .iter()
            .find(|a| a.arm == Arm::Stable && a.bundle != candidate);
        let parts: Vec<(bool, &ArmWindow)> = [(true, canary_part), (false, control_part)]
            .into_iter()
            .filter_map(|(c, p)| p.map(|p| (c, p)))
            .collect();
        if parts.is_empty() {
            return;
        }
        let requests = parts.iter().map(|(_, p)| p.requests()).sum::<u64>();
        let Some((epoch, [rho, rho_tools, rho_evals])) =
            self.exposure(w.snapshot_version, requests)
        else {
            return;
        };
        let lat_ref = self.latency_ref;
        let cost_ref = self.cost_ref;
        let (alpha_main, alpha_shadow) = self.test_alphas();
        let alpha = self.config.settings.alpha.fraction();
        // Requests above `cut` in a part.
        let above = |p: &ArmWindow, cost: bool, cut: f64| -> u64 {
            if cost {
                if p.cost_usd.is_empty() {
                    u64::from(0.0 > cut) * p.requests()
                } else {
                    p.cost_usd.iter().filter(|v| **v > cut).count() as u64
                }
            } else {
                p.latency_ms.iter().filter(|v| **v > cut).count() as u64
            }
        };
        for t in &mut self.tests {
            let delta = if t.shadow { alpha_shadow } else { alpha_main } / 2.0;
            let delta_pass = alpha / 2.0;
            let can_pass = t.can_pass();
            // The null rates of the additive tests, from the past only.
            let mut tallies: Vec<(usize, u64, u64)> = Vec::with_capacity(2);
            for (canary, p) in &parts {
                let canary = *canary;
                let arm = usize::from(!canary);
                let n = p.requests();
                let evals_failed = p.evals.samples - p.evals.passed.min(p.evals.samples);
                let calls = p.tool_calls.ok + p.tool_calls.failed;
                match t.bound {
                    Bound::ErrorMax | Bound::RefusalMax => {
                        let hits = if t.bound == Bound::ErrorMax {
                            p.errors.total()
                        } else {
                            p.refusals
                        };
                        if canary {
                            t.one.add(hits, n);
                        }
                        tallies.push((arm, hits, n));
                    }
                    Bound::ToolMin => {
                        if canary {
                            t.one.add(p.tool_calls.failed, calls);
                        }
                        tallies.push((arm, p.tool_calls.failed, calls));
                    }
                    Bound::EvalMin => {
                        if p.evals.samples > 0 {
                            if canary {
                                t.one.add(evals_failed, p.evals.samples);
                            }
                            tallies.push((arm, evals_failed, p.evals.samples));
                        }
                    }
                    Bound::LatencyMax | Bound::CostMax => {
                        let hits = above(p, t.bound == Bound::CostMax, t.limit);
                        if canary {
                            t.one.add(hits, n);
                        }
                        tallies.push((arm, hits, n));
                    }
                    Bound::ErrorRatio | Bound::RefusalRatio => {
                        let hits = if t.bound == Bound::ErrorRatio {
                            p.errors.total()
                        } else {
                            p.refusals
                        };
                        if !rho.skip {
                            t.cond.events(canary, hits, rho.hi, t.lambda0());
                            if can_pass {
                                t.ni.events(canary, hits, rho.lo, t.lambda0());
                            }
                        }
                        tallies.push((arm, hits, n));
                    }
                    Bound::ErrorIncrease
                    | Bound::RefusalIncrease
                    | Bound::ToolDecrease
                    | Bound::EvalDecrease => {
                        let (hits, trials, share) = match t.bound {
                            Bound::ErrorIncrease => (p.errors.total(), n, rho),
                            Bound::RefusalIncrease => (p.refusals, n, rho),
                            Bound::ToolDecrease => (p.tool_calls.failed, calls, rho_tools),
                            _ => (evals_failed, p.evals.samples, rho_evals),
                        };
                        if trials == 0 {
                            continue;
                        }
                        if t.limit <= 0.0 {
                            // As per request, at most 1000 hits each.
                            let hits = hits.min(n.saturating_mul(1000));
                            if !share.skip {
                                t.cond.events(canary, hits, share.hi, 1.0);
                            }
                        } else if canary {
                            // Null rates from the tallies before the window (they are added
                            // only after every bet of it).
                            let misses = trials - hits.min(trials);
                            let past = t.canary_rate();
                            if let Some(p0) = t.null_rate(delta)
                                && past > p0
                            {
                                t.cond.trials(hits, misses, p0);
                            }
                            if let Some(p0) = t.null_rate_pass(delta_pass)
                                && (t.trials[0] == 0 || past < p0)
                            {
                                t.ni.trials(hits, misses, p0);
                            }
                        }
                        tallies.push((arm, hits, trials));
                    }
                    Bound::LatencyIncrease
                    | Bound::LatencyRatio
                    | Bound::CostIncrease
                    | Bound::CostRatio => {
                        let latency =
                            matches!(t.bound, Bound::LatencyIncrease | Bound::LatencyRatio);
                        let reference = if latency { lat_ref } else { cost_ref };
                        if let Some(r) = reference {
                            let cut = if !canary {
                                r
                            } else if matches!(
                                t.bound,
                                Bound::LatencyIncrease | Bound::CostIncrease
                            ) {
                                r + t.limit
                            } else {
                                r * t.limit
                            };
                            let hits = above(p, !latency, cut);
                            if !rho.skip {
                                t.cond.events(canary, hits, rho.hi, 1.0);
                                if can_pass {
                                    t.ni.events(canary, hits, rho.lo, 1.0);
                                }
                            }
                            tallies.push((arm, hits, n));
                        }
                    }
                    Bound::ApprovalRatio | Bound::DenialRatio | Bound::OverdueRatio => {
                        tallies.push((arm, 0, n));
                    }
                }
            }
            // After every bet of the window: the additive tests' null rates read the tallies.
            for (arm, hits, trials) in tallies {
                t.tally(arm, hits, trials);
            }
        }
        for (canary, p) in &parts {
            let canary = *canary;
            let n = p.requests();
            let calls = p.tool_calls.ok + p.tool_calls.failed;
            self.seg_requests.add(canary, n);
            for _ in 0..n.min(RECENT as u64) {
                self.recent.push(canary);
            }
            self.seg_tools.add(canary, calls);
            self.seg_evals.add(canary, p.evals.samples);
            if let Some((v, _)) = epoch {
                let seg = self.epochs.entry(v).or_default();
                seg[0].add(canary, n);
                seg[1].add(canary, calls);
                seg[2].add(canary, p.evals.samples);
                if p.tool_requests > 0 {
                    self.epoch_tool_requests
                        .entry(v)
                        .or_default()
                        .add(canary, p.tool_requests);
                }
            }
            if canary {
                self.canary.record_window(p);
            } else {
                self.control.record_window(p);
            }
        }
        if control_part.is_some() {
            self.refresh_refs();
        }
    }

    /// One approval-queue event of an arm, routed under `snapshot_version`.
    ///
    /// Judged like an error against `max_ratio`: given that an event happened, under "canary's
    /// rate per request is at most λ0 x control's" it is canary's with probability
    /// `q(ρ, λ0)`, `ρ` canary's share of the requests of the version's routing epoch. An
    /// event is not a request, so it reads that share without adding to it: the bands are
    /// those of the requests seen before the event, a choice that does not depend on which
    /// arm the event belongs to. Events from versions before the release routed anything are
    /// ignored. Counted per arm whether or not the plan judges approvals.
    pub fn observe_approval(
        &mut self,
        canary: bool,
        signal: ApprovalSignal,
        snapshot_version: u64,
    ) {
        let Some((_, [rho, _, _])) = self.exposure_of(snapshot_version) else {
            return;
        };
        let arm = usize::from(!canary);
        if let Some(c) = self.approvals.get_mut(arm) {
            c.add(signal);
        }
        let bound = signal.bound();
        for t in self.tests.iter_mut().filter(|t| t.bound == bound) {
            if !rho.skip {
                t.cond.event(canary, rho.hi, t.lambda0());
                if t.can_pass() {
                    t.ni.event(canary, rho.lo, t.lambda0());
                }
            }
            t.tally(arm, 1, 0);
        }
    }

    /// The `wait` after which a pending request counts as overdue, if approvals are judged.
    pub fn approval_wait_ms(&self) -> Option<u64> {
        self.config.approvals.as_ref().map(|a| a.wait.as_ms())
    }

    /// One arm's approval-queue events so far.
    pub fn approvals(&self, canary: bool) -> ApprovalCounts {
        self.approvals
            .get(usize::from(!canary))
            .copied()
            .unwrap_or_default()
    }

    /// One arm's summary, with its approval-queue events when the plan judges approvals or
    /// some were seen.
    pub fn arm_summary(&self, canary: bool) -> ArmSummary {
        let mut s = if canary {
            self.canary.summary()
        } else {
            self.control.summary()
        };
        let a = self.approvals(canary);
        if self.config.approvals.is_some() || !a.is_zero() {
            s.approvals = Some(a);
        }
        s
    }

    /// Re-reads control's reference quantiles, more rarely as control grows.
    fn refresh_refs(&mut self) {
        let n = self.control.requests;
        if n < REF_MIN || n - self.refs_at < (n / 20).max(50) {
            return;
        }
        self.refs_at = n;
        self.latency_ref = self.control.latency.quantile(LATENCY_Q);
        self.cost_ref = self.control.cost.quantile(COST_Q);
    }

    fn min_gap(&self, t: &Test) -> u64 {
        let s = &self.config.settings;
        let rho = self.request_share().clamp(1e-3, 1.0 - 1e-3);
        let canary_gap = s.min_requests.saturating_sub(self.canary.requests);
        let control_gap = s.min_requests.saturating_sub(self.control.requests);
        // Control's gap in canary requests at the current share; f64 → u64 saturates.
        let mut gap = canary_gap.max((control_gap as f64 * rho / (1.0 - rho)).ceil() as u64);
        if matches!(t.bound, Bound::EvalMin | Bound::EvalDecrease) {
            let per_req = if self.canary.requests > 0 {
                (self.canary.eval_samples as f64 / self.canary.requests as f64).max(1e-3)
            } else {
                1.0
            };
            let eval_gap = s.min_eval_samples.saturating_sub(self.canary.eval_samples);
            let ctl_eval_gap = if t.bound == Bound::EvalDecrease {
                s.min_eval_samples.saturating_sub(self.control.eval_samples)
            } else {
                0
            };
            let need = eval_gap.max((ctl_eval_gap as f64 * rho / (1.0 - rho)).ceil() as u64);
            gap = gap.max((need as f64 / per_req).ceil() as u64);
        }
        gap
    }

    /// The non-inferiority e-value and bar of a test that has a margin to show.
    fn pass_evidence(&self, t: &Test) -> Option<(f64, f64)> {
        if !t.can_pass() {
            return None;
        }
        let alpha = self.config.settings.alpha.fraction();
        let additive = matches!(
            t.bound,
            Bound::ErrorIncrease
                | Bound::RefusalIncrease
                | Bound::ToolDecrease
                | Bound::EvalDecrease
        );
        let ln_bar = if additive {
            (2.0 / alpha).ln()
        } else {
            (1.0 / alpha).ln()
        };
        let ln_e = if t.bound.absolute() {
            t.one.ln_e_below(t.absolute_p0())
        } else {
            t.ni.ln_e()
        };
        Some((ln_e, ln_bar))
    }

    /// Further canary requests the non-inferiority test needs at its drift so far.
    fn pass_needs(&self, t: &Test, ln_e: f64, ln_bar: f64) -> Option<u64> {
        let best = if t.bound.absolute() {
            t.one.drift_below(t.absolute_p0()) * t.one.n as f64 // count → f64
        } else {
            t.ni.best()
        };
        let n = self.canary.requests.max(1) as f64; // count → f64
        let per_req = best / n;
        // f64 → u64 saturates.
        (per_req > 0.0 && ln_e < ln_bar).then(|| ((ln_bar - ln_e) / per_req).ceil() as u64)
    }

    /// (status, ln e, ln bar, needs more) of one test, before any latch.
    fn judge(&self, t: &Test) -> (VerdictStatus, f64, f64, Option<u64>) {
        let alpha = self.alpha_of(t);
        let ln_bar = if t.uses_lcb {
            (2.0 / alpha).ln()
        } else {
            (1.0 / alpha).ln()
        };
        let p0 = t.absolute_p0();
        let (ln_e, best) = if t.bound.absolute() {
            (t.one.ln_e(p0), t.one.drift(p0) * t.one.n as f64) // count → f64
        } else {
            (t.cond.ln_e(), t.cond.best())
        };
        let gap = self.min_gap(t);
        // Point estimate beyond the bound?
        let rate = |i: usize| {
            match (t.hits.get(i), t.trials.get(i)) {
                (Some(&h), Some(&n)) if n > 0 => h as f64 / n as f64, // counts → f64
                _ => 0.0,
            }
        };
        let additive = matches!(
            t.bound,
            Bound::ErrorIncrease
                | Bound::RefusalIncrease
                | Bound::ToolDecrease
                | Bound::EvalDecrease
        );
        let suspicious = if t.bound.absolute() {
            t.trials[0] > 0 && rate(0) > p0
        } else if additive {
            t.trials[0] > 0 && t.trials[1] > 0 && rate(0) > rate(1) + t.limit
        } else {
            t.trials[0] > 0 && t.trials[1] > 0 && rate(0) > t.lambda0() * rate(1)
        };
        let drift_needs = || {
            let n = self.canary.requests.max(1) as f64; // count → f64
            let per_req = best / n;
            (per_req > 0.0 && ln_e < ln_bar).then(|| ((ln_bar - ln_e) / per_req).ceil() as u64)
        };
        let pass = self.pass_evidence(t);
        if gap > 0 {
            let extra = if suspicious {
                drift_needs().unwrap_or(0)
            } else if let Some((pe, pb)) = pass {
                self.pass_needs(t, pe, pb).unwrap_or(0)
            } else {
                0
            };
            return (VerdictStatus::Pending, ln_e, ln_bar, Some(gap.max(extra)));
        }
        if ln_e >= ln_bar {
            return (VerdictStatus::Fail, ln_e, ln_bar, None);
        }
        match pass {
            // Evidence of no harm: `pass` only once the non-inferiority test has crossed.
            Some((pe, pb)) => {
                if t.passed.is_some() || pe >= pb {
                    (VerdictStatus::Pass, ln_e, ln_bar, None)
                } else if suspicious {
                    (VerdictStatus::Pending, ln_e, ln_bar, drift_needs())
                } else {
                    (
                        VerdictStatus::Pending,
                        ln_e,
                        ln_bar,
                        self.pass_needs(t, pe, pb),
                    )
                }
            }
            // Zero tolerance: no margin to show, so `pass` is the absence of a fail, unless
            // the canary looks worse *and* the evidence of harm is halfway to the bar on the
            // log scale (e >= sqrt(bar)): then the gate waits for the test to fail or fall
            // back. By Ville's inequality identical arms reach that point with probability at
            // most 1/sqrt(bar) (4% per bound at the SPEC alpha), while a real regression
            // passes through it on its way to the bar. Holding on the point estimate alone,
            // or on any e > 1, held identical arms for as long as a random walk keeps its
            // sign (arcsine law: often the whole release).
            // Without control traffic (a final step routing everything to canary, no
            // holdback) the evidence can no longer move, so a hold would never end: the
            // bound then passes on the absence of a fail.
            None if suspicious && ln_e >= ln_bar / 2.0 && self.share.is_none_or(|s| s < 1.0) => {
                (VerdictStatus::Pending, ln_e, ln_bar, drift_needs())
            }
            None => (VerdictStatus::Pass, ln_e, ln_bar, None),
        }
    }

    /// A bound's status: `fail` for good once latched, else what the test says now.
    fn status(&self, t: &Test) -> VerdictStatus {
        if t.latched.is_some() {
            VerdictStatus::Fail
        } else {
            self.judge(t).0
        }
    }

    /// Records the first crossing of each bound's bar with its evidence, at `now_ms`.
    /// Call it after every batch of outcomes, before the state is stored: from then on
    /// the bound's verdict is that `fail`, whatever later outcomes do to the e-value.
    /// A bound whose non-inferiority test crossed its bar is latched `pass` the same way
    /// (a later `fail` still wins). Returns whether a bound latched `fail` now.
    pub fn latch(&mut self, now_ms: i64) -> bool {
        let mut latched = Vec::new();
        let mut passed = Vec::new();
        for (i, t) in self.tests.iter().enumerate() {
            if t.latched.is_none()
                && t.passed.is_none()
                && self.judge(t).0 == VerdictStatus::Pass
                && self.pass_evidence(t).is_some()
            {
                passed.push(i);
            }
            if t.latched.is_none() && self.judge(t).0 == VerdictStatus::Fail {
                let v = self.verdict(t);
                latched.push((
                    i,
                    Latch {
                        at_ms: now_ms,
                        canary: v.canary,
                        control: v.control,
                        statistic: if v.statistic.is_finite() {
                            v.statistic
                        } else {
                            f64::MAX
                        },
                        statistic_threshold: v.statistic_threshold,
                    },
                ));
            }
        }
        let any = !latched.is_empty();
        for i in passed {
            if let Some(t) = self.tests.get_mut(i) {
                t.passed = Some(now_ms);
            }
        }
        for (i, l) in latched {
            if let Some(t) = self.tests.get_mut(i) {
                t.latched = Some(l);
            }
        }
        any
    }

    /// True when some gating (non-shadow) bound fails (cheap: no strings).
    pub fn any_fail(&self) -> bool {
        self.tests
            .iter()
            .any(|t| !t.shadow && self.status(t) == VerdictStatus::Fail)
    }

    /// The first failing gating bound, if any (cheap).
    pub fn first_fail(&self) -> Option<Bound> {
        self.tests
            .iter()
            .find(|t| !t.shadow && self.status(t) == VerdictStatus::Fail)
            .map(|t| t.bound)
    }

    /// The gating bounds' combined status: `fail` if any fails, `pass` if all pass.
    pub fn overall(&self) -> VerdictStatus {
        let mut any_pending = false;
        for t in self.tests.iter().filter(|t| !t.shadow) {
            match self.status(t) {
                VerdictStatus::Fail => return VerdictStatus::Fail,
                VerdictStatus::Pending => any_pending = true,
                VerdictStatus::Pass => {}
            }
        }
        if any_pending {
            VerdictStatus::Pending
        } else {
            VerdictStatus::Pass
        }
    }

    /// One verdict per configured bound, in config order.
    pub fn verdicts(&self) -> Vec<Verdict> {
        self.tests.iter().map(|t| self.verdict(t)).collect()
    }

    fn verdict(&self, t: &Test) -> Verdict {
        let (status, ln_e, ln_bar, needs) = self.judge(t);
        let (c, s) = (&self.canary, &self.control);
        let mv = |value: f64, n: u64| MetricValue { value, n };
        let (canary, control) = match t.bound {
            Bound::ErrorMax | Bound::ErrorIncrease | Bound::ErrorRatio => (
                mv(c.error_rate(), c.requests),
                mv(s.error_rate(), s.requests),
            ),
            Bound::RefusalMax | Bound::RefusalIncrease | Bound::RefusalRatio => (
                mv(c.refusal_rate(), c.requests),
                mv(s.refusal_rate(), s.requests),
            ),
            Bound::ToolMin | Bound::ToolDecrease => (
                mv(c.tool_call_success().unwrap_or(1.0), c.tool_calls()),
                mv(s.tool_call_success().unwrap_or(1.0), s.tool_calls()),
            ),
            Bound::EvalMin | Bound::EvalDecrease => (
                mv(c.eval_pass_rate().unwrap_or(1.0), c.eval_samples),
                mv(s.eval_pass_rate().unwrap_or(1.0), s.eval_samples),
            ),
            Bound::LatencyMax | Bound::LatencyIncrease | Bound::LatencyRatio => (
                mv(c.latency.quantile(LATENCY_Q).unwrap_or(0.0), c.requests),
                mv(s.latency.quantile(LATENCY_Q).unwrap_or(0.0), s.requests),
            ),
            Bound::CostMax | Bound::CostIncrease | Bound::CostRatio => (
                mv(c.cost_per_request(), c.requests),
                mv(s.cost_per_request(), s.requests),
            ),
            Bound::ApprovalRatio | Bound::DenialRatio | Bound::OverdueRatio => {
                let signal = match t.bound {
                    Bound::ApprovalRatio => ApprovalSignal::Requested,
                    Bound::DenialRatio => ApprovalSignal::Denied,
                    _ => ApprovalSignal::Overdue,
                };
                let per_1000 = |canary: bool, n: u64| {
                    let k = self.approvals(canary).get(signal);
                    // Counts → f64: exact below 2^53.
                    mv(
                        if n == 0 {
                            0.0
                        } else {
                            k as f64 * 1000.0 / n as f64
                        },
                        n,
                    )
                };
                (per_1000(true, c.requests), per_1000(false, s.requests))
            }
        };
        let l = trim_float(t.limit);
        let pct = trim_float(t.limit * 100.0);
        let threshold = match t.bound {
            Bound::ErrorMax | Bound::RefusalMax => format!("<= {pct}%"),
            Bound::ErrorIncrease | Bound::RefusalIncrease => format!("<= control + {pct}pp"),
            Bound::ErrorRatio
            | Bound::RefusalRatio
            | Bound::LatencyRatio
            | Bound::CostRatio
            | Bound::ApprovalRatio
            | Bound::DenialRatio
            | Bound::OverdueRatio => format!("<= control x {l}"),
            Bound::ToolMin | Bound::EvalMin => format!(">= {pct}%"),
            Bound::ToolDecrease | Bound::EvalDecrease => format!(">= control - {pct}pp"),
            Bound::LatencyMax => format!("<= {l} ms"),
            Bound::LatencyIncrease => format!("<= control + {l} ms"),
            Bound::CostMax => format!("<= {l} USD"),
            Bound::CostIncrease => format!("<= control + {l} USD"),
        };
        let wait = self
            .approval_wait_ms()
            .map(|ms| crate::release::DurationSpec::from_ms(ms).to_string())
            .unwrap_or_default();
        let how = match t.bound {
            Bound::LatencyIncrease | Bound::LatencyRatio => {
                " (tested as: canary requests beyond control's p95 moved by the bound are no more frequent than control requests beyond its p95)".to_owned()
            }
            Bound::CostIncrease | Bound::CostRatio | Bound::CostMax => {
                " (tested on the median cost per request)".to_owned()
            }
            Bound::ApprovalRatio => " (agent-side approval requests per 1,000 requests)".to_owned(),
            Bound::DenialRatio => {
                " (denied or expired approval requests per 1,000 requests)".to_owned()
            }
            Bound::OverdueRatio => {
                format!(" (approval requests undecided after {wait}, per 1,000 requests)")
            }
            _ => String::new(),
        };
        let e = ln_e.exp();
        let bar = ln_bar.exp();
        let name = t.bound.name();
        let pass = self.pass_evidence(t).map(|(pe, pb)| (pe.exp(), pb.exp()));
        let no_harm = |pe: f64, pb: f64| format!("no-harm e = {} of {}", sig(pe), sig(pb));
        let explanation = match (status, pass) {
            (VerdictStatus::Fail, _) => format!(
                "{name} {threshold} is violated: evidence e = {} reached 1/alpha = {}{how}",
                sig(e),
                sig(bar)
            ),
            (VerdictStatus::Pending, None) => match needs {
                Some(n) => format!(
                    "{name} {threshold}: not decided yet (e = {} of {}); about {n} more canary requests needed{how}",
                    sig(e),
                    sig(bar)
                ),
                None => format!(
                    "{name} {threshold}: canary looks worse but the evidence (e = {}) is not growing towards {}{how}",
                    sig(e),
                    sig(bar)
                ),
            },
            (VerdictStatus::Pending, Some((pe, pb))) => match needs {
                Some(n) => format!(
                    "{name} {threshold}: neither harm nor no harm shown yet (harm e = {} of {}, {}); about {n} more canary requests needed{how}",
                    sig(e),
                    sig(bar),
                    no_harm(pe, pb)
                ),
                None => format!(
                    "{name} {threshold}: canary is too close to the bound to show no harm, and the evidence is not growing (harm e = {} of {}, {}){how}",
                    sig(e),
                    sig(bar),
                    no_harm(pe, pb)
                ),
            },
            (VerdictStatus::Pass, Some((pe, pb))) => format!(
                "{name} {threshold} is shown to hold: no-harm evidence e = {} reached 1/alpha = {} (harm e = {} < {}){how}",
                sig(pe.max(if t.passed.is_some() { pb } else { 0.0 })),
                sig(pb),
                sig(e),
                sig(bar)
            ),
            (VerdictStatus::Pass, None) => format!(
                "{name} {threshold} holds so far: no significant violation (e = {} < {}); a zero-tolerance bound has no margin to show, so it passes on the absence of a fail{how}",
                sig(e),
                sig(bar)
            ),
        };
        let explanation = if t.shadow {
            format!("(shadow, never gates) {explanation}")
        } else {
            explanation
        };
        if let Some(l) = &t.latched {
            return Verdict {
                guardrail: t.bound.name().to_owned(),
                status: VerdictStatus::Fail,
                canary: l.canary,
                control: l.control,
                explanation: format!(
                    "{}{} {threshold} was violated: evidence e = {} reached 1/alpha = {} with canary {} (n={}) vs control {} (n={}); latched at that crossing, so later outcomes do not undo it (e is {} now){how}",
                    if t.shadow {
                        "(shadow, never gates) "
                    } else {
                        ""
                    },
                    t.bound.name(),
                    sig(l.statistic),
                    sig(l.statistic_threshold),
                    sig(l.canary.value),
                    l.canary.n,
                    sig(l.control.value),
                    l.control.n,
                    sig(e),
                ),
                threshold,
                statistic: l.statistic,
                statistic_threshold: l.statistic_threshold,
                needs_more_requests: None,
                latched_at_ms: Some(l.at_ms),
                shadow: t.shadow,
                pass_statistic: pass.map(|(pe, _)| finite(pe)),
                pass_threshold: pass.map(|(_, pb)| pb),
                passed_at_ms: t.passed,
            };
        }
        Verdict {
            guardrail: t.bound.name().to_owned(),
            status,
            canary,
            control,
            threshold,
            statistic: e,
            statistic_threshold: bar,
            needs_more_requests: needs,
            explanation,
            latched_at_ms: None,
            shadow: t.shadow,
            pass_statistic: pass.map(|(pe, _)| finite(pe)),
            pass_threshold: pass.map(|(_, pb)| pb),
            passed_at_ms: t.passed,
        }
    }
}

/// A statistic that always serializes as a JSON number.
fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { f64::MAX }
}

/// Three significant digits for explanations.
fn sig(v: f64) -> String {
    if v >= 1e6 {
        format!("{v:.2e}")
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}
