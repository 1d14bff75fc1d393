//! Guardrails: canary-vs-control verdicts that stay valid under continuous monitoring.
//!
//! A release's `guardrails:` block ([`GuardrailConfig`]) lists bounds on six metrics and,
//! optionally, on the agent-side approval queue. A
//! [`Monitor`] is fed every outcome of both arms and answers, at any moment, one [`Verdict`]
//! per bound: `pass`, `fail` or `pending`, with both arms' values and sample sizes, the
//! threshold, the evidence and, while pending, an estimate of how many more canary requests
//! it needs. Looking after every request does not inflate false alarms: every `fail` rests on
//! an **e-process** (a nonnegative supermartingale under "the bound holds"), and by Ville's
//! inequality the chance it *ever* reaches `1/a` is at most `a`.
//!
//! # Statistical choices
//!
//! **Alpha.** `settings.alpha` (default 1%) is the family-wise false-`fail` budget of the
//! release. It is split evenly over the configured bounds (Bonferroni): each bound fails when
//! its e-value reaches `m / alpha` for `m` bounds. Bounds that first bound control's rate
//! (`max_increase` / `max_decrease` by `d > 0`, below) spend half their share on that bound.
//!
//! **Absolute rate bounds** (`error_rate.max`, `refusal_rate.max`, `tool_call_success.min`
//! as a failure rate over tool calls, `eval_pass_rate.min` as a failure rate over eval
//! samples): canary's Bernoulli trials against `H0: p <= p0`. The e-value is a mixture of
//! likelihood ratios `p1 vs p0` over alternatives at odds ratios 1.25, 1.6, 2.2, 3.5
//! (equal weights). Each component is a supermartingale for every `p <= p0` (its one-step
//! expectation is `1 + (p - p0)(p1 - p0)/(p0(1 - p0)) <= 1`), so the mixture is too, and it
//! only needs the counts.
//!
//! **Rates against control** (`max_ratio`, `max_increase`, `max_decrease`): condition on the
//! events (errors, refusals, failed tool calls, failed evals). An event is a canary event
//! with probability `q = λρ / (λρ + 1 - ρ)`, where `ρ` is canary's share of the exposure when
//! it happened and `λ` the rate ratio; control's unknown rate cancels. `q` increases in `λ`,
//! so the per-event likelihood ratio of `λ0·r` against `λ0` (`r` on the same grid) has
//! expectation <= 1 whenever `λ <= λ0`: a mixture of their products is an e-process for
//! `H0: λ <= λ0` however `ρ` changes over the ramp. `ρ` is the routing weight of the
//! snapshot version the outcome was routed under (see "Exact exposure" below; a monitor told
//! only [`Monitor::set_canary_share`] uses the weight in force on arrival, and without either
//! the arrival mix estimates it and validity is approximate). Tool calls and eval samples use
//! their own exposure share within their routing epoch.
//!
//! `max_increase` / `max_decrease` by `d > 0` points: canary's own trials against the moving
//! null rate `p0 = U + d`, `U` an upper confidence bound of control's rate (Bernstein-type,
//! inflated by a log-log term to hold over time, at half the bound's alpha; the other half
//! goes to the test, whose bar is therefore `2m / alpha`). Under `H0: p_canary <= p_control +
//! d`, when `U` holds `p_canary <= p0`, so each trial's mixture factor has expectation <= 1.
//! We bet only while canary's past rate is above `p0` (a predictable choice, still valid), so
//! the wide early `U` does not erode the evidence. This replaces the "convert to a ratio with a
//! lower bound of control's rate" idea: equally conservative, and much more powerful at the
//! low base rates of errors and refusals. `d = 0` uses the exact event-conditional test.
//!
//! **Latency p95** (`max_increase` Δ, `max_ratio` r): two-sample exceedances. With `T` the
//! control p95 read from control's sketch *before* the event (refreshed as control grows), a
//! control request is an event when its latency exceeds `T` and a canary request when it
//! exceeds `T + Δ` (or `r·T`); the same conditional test with `λ0 = 1`. When canary is control
//! shifted by at most Δ (or scaled by r) the two event probabilities are equal whatever `T`
//! is, so the estimate of `T` does not bias the test (for other shapes near `T ≈ p95` it tests
//! "canary's share beyond control p95 + Δ is at most 5%"). `latency_p95_ms.max` is one-sample:
//! `H0: P(latency > max) <= 5%`.
//!
//! **Cost per request**: the same exceedance test around control's **median** cost (`r·T`,
//! `T + Δ`): it tests the median ratio, robust to the heavy tail of per-request cost, not the
//! mean. `cost_per_request.max` tests `H0: P(cost > max) <= 50%` (the median).
//!
//! **Minimum samples.** Until both arms have `min_requests` requests (and eval bounds
//! `min_eval_samples` eval samples), verdicts are `pending`. Afterwards a bound is `fail` when
//! its e-value reaches its bar, `pass` when its non-inferiority test (below) has reached its
//! own bar, and `pending` otherwise (`needs_more_requests` extrapolates the log-evidence per
//! canary request so far of whichever test the point estimate favours).
//!
//! **Evidence of no harm (`pass`).** Silence is not safety: each bound with a margin also
//! runs the mirror-image test, whose null is "canary violates the bound", with the same grid
//! of alternatives taken *below* the null (odds or rate ratios `1/r`). The same argument
//! makes it an e-process: for `p >= p0 > p1` each factor's expectation is
//! `1 + (p - p0)(p1 - p0)/(p0(1 - p0)) <= 1`, and likewise for `q` in the event-conditional
//! test. Absolute bounds test `H0: p >= p0`; ratio and exceedance bounds `H0: λ >= λ0`;
//! `max_increase` / `max_decrease` by `d > 0` test canary's trials against `L + d`, `L` a
//! time-uniform *lower* confidence bound of control's rate (half the alpha, as for `fail`).
//! The gate needs every bound to pass, an intersection-union test, so each runs at the whole
//! `alpha`, not a Bonferroni share. A bound without a margin (`max_increase: 0`, a ratio of
//! 1, `max: 0%`, `min: 100%`) can never be shown harmless; it passes on the absence of a
//! `fail` once the minimum sample is reached, and says so, except while the canary looks
//! worse and its e-value is at least `sqrt(bar)`: then it is `pending` until the test fails or
//! the evidence falls back. Under identical arms Ville's inequality puts the chance of ever
//! reaching `sqrt(bar)` at `1/sqrt(bar)`, so such holds are rare and short, while a real
//! regression crosses that point before it crosses the bar.
//!
//! **Latching.** [`Monitor::latch`] records each bound's first crossing of either bar with
//! the evidence at that moment. An anytime-valid test rejects at its first crossing, so what
//! the e-value does afterwards cannot undo it; a latched `pass` still yields to a later
//! `fail` (safety over progress).
//!
//! **Exact exposure.** [`Monitor::set_canary_share_from`] records the canary's routing share
//! from each snapshot version on, and every outcome is judged within the routing epoch of the
//! version it carries (`snapshot_version`), at canary's share of that epoch's requests so far,
//! with tool-call and eval exposure counted the same way. The realized share, not the weight:
//! with sticky users of uneven volume one heavy user in canary can double its share of
//! requests (or, in a lumpy fleet, carry most of them), and under "identical arms" the events
//! follow the requests, not the weight. The weight does not even serve as a prior: an estimate
//! pulled towards a 25% weight while one user sent 85% of the epoch to canary made identical
//! arms look different for hundreds of requests. Instead an epoch's events are not judged
//! until each arm has 50 draws in it (requests; eval samples; tool calls counted as the
//! requests they came in, since one request's calls share its arm), and afterwards each test
//! bets against the share moved one standard error towards its own conservative side: up for
//! `fail` (canary's events then look no more frequent than they are), down for `pass`. The
//! share is estimated, so this validity is approximate; `serin bench judge` checks it end to
//! end, including a population where one user sends 84% of the traffic.
//! Outcomes that arrive late or in large batches after a step change therefore cannot shift
//! the observed canary share. Outcomes from versions before the release routed anything are
//! counted ([`Monitor::unattributed`]) and never judged.
//!
//! **Approval queue** (`approvals.max_ratio`, `denial_max_ratio`, `overdue_max_ratio`):
//! events per request of each arm, fed by the server one at a time
//! ([`Monitor::observe_approval`]): an agent asked a human before a risky tool call, a
//! request was denied or expired, a request was still undecided `approvals.wait` after it
//! was made. Each bound is the event-conditional test of `max_ratio` above, with its
//! non-inferiority twin: given that an event happened, under "canary's events per request
//! are at most `λ0` x control's" it is canary's with probability at most `q(ρ, λ0)`, `ρ`
//! canary's share of the requests of the routing epoch of the snapshot version the agent
//! decided under. No denominator is needed, only the event, its arm and its version. An
//! approval event is not a request: it reads the epoch's share band without adding to it, so
//! the band is fixed by the requests seen before the event and does not depend on its arm,
//! which keeps every factor's conditional expectation at most 1 under the null, however late
//! a denial or an overdue signal arrives after the ramp moved on. As for errors, the events
//! of different requests are taken as independent given their arms: an agent that asks
//! several times within one request makes a cluster that moves the test as if the requests
//! were several, so the server feeds at most one event of each kind per agent request
//! (simulated at ratio 1 and alpha 1%: feeding all three events of each asking request took
//! identical arms to 7% false fails, all ten to 36%). Events from versions before the release routed anything are ignored. Verdicts
//! show each arm's events per 1,000 requests; [`Monitor::arm_summary`] the counts.
//!
//! **Shadow bounds** (`shadow: true` on a rule) are judged and reported like the others,
//! at the alpha share they would get if enforced, but never count towards `fail` or `pass`
//! of the release ([`Monitor::any_fail`], [`Monitor::overall`]).
//!
//! **Burn rate** ([`burn_rate`]): the current hour's cost against the mean of up to 24
//! previous hours (2x alerts) and 24 x the current hour against the daily budget (+20% warns).
//!
//! The [`sim`] module simulates releases and compares serin with naive and tuned fixed
//! thresholds, per-interval Mann-Whitney tests and an oracle SPRT; its release simulator
//! (`sim::simulate_release`) adds production-shaped traffic (sticky users with heavy-tailed
//! volumes, excluded tenants, late and batched outcomes) and is what `serin bench judge`
//! compares a real server with.

mod aggregate;
mod burn;
mod config;
mod monitor;
mod seq;
pub mod sim;

pub use aggregate::{ArmAggregate, ArmSummary, Sketch, StageSummary};
pub use burn::{BUDGET_WARNING_FACTOR, BURN_ALERT_RATIO, BURN_WINDOW_HOURS, BurnRate, burn_rate};
pub use config::{
    ApprovalRule, CostRule, GuardrailConfig, GuardrailConfigError, LatencyRule, Points, RateRule,
    Settings, Share, SuccessRule,
};
pub use monitor::{
    ApprovalCounts, ApprovalSignal, Bound, MetricValue, Monitor, Verdict, VerdictStatus,
};
pub(crate) use seq::{rate_lower_bound, rate_upper_bound};

/// A fraction as a trimmed percentage number (`0.015` → `1.5`).
pub(crate) fn trim_pct(f: f64) -> String {
    config::trim_float(f * 100.0)
}
