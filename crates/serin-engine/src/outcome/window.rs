//! An outcome window: what one SDK instance saw of one agent under one snapshot version over
//! a short window, both arms together, instead of one event per request.
//!
//! Counts stand in for the per-request flags (errors, refusals, tool calls, evals), whose
//! guardrail tests only ever add them up. Latency and cost stay one value per request,
//! because their tests compare each request with a moving reference (control's quantile)
//! that the SDK cannot know; a value is 8 bytes against the ~300 of an event, and the
//! window needs no request ids, so it is deduplicated once by its own id.
//!
//! Both arms travel in one window so the server applies them at one step with one routing
//! share: a window of one arm alone would let the order in which arms arrive, not the
//! traffic, move the event-conditional tests (see the server's guardrail docs).

use serde::{Deserialize, Serialize};

use super::{EventLimits, EventRejection, OutcomeEvent, Tokens, ToolCalls};
use crate::decision::Arm;
use crate::slug;

/// Requests one arm of a window may hold.
pub const MAX_WINDOW_REQUESTS: usize = 10_000;

/// Errors of one arm of a window, by class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorCounts {
    #[serde(default)]
    pub transient: u64,
    #[serde(default)]
    pub permanent: u64,
    #[serde(default)]
    pub external: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.transient
            .saturating_add(self.permanent)
            .saturating_add(self.external)
    }
}

/// Online evaluations of one arm of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvalCounts {
    #[serde(default)]
    pub samples: u64,
    #[serde(default)]
    pub passed: u64,
    #[serde(default)]
    pub score_sum: f64,
}

/// One arm's part of a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ArmWindow {
    pub arm: Arm,
    /// `agent@N` that served these requests.
    pub bundle: String,
    /// Each request's latency, in ms; its length is the arm's request count.
    pub latency_ms: Vec<f64>,
    /// Each request's cost in USD, in the order of `latency_ms`; empty when all were free.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cost_usd: Vec<f64>,
    #[serde(default)]
    pub errors: ErrorCounts,
    #[serde(default)]
    pub refusals: u64,
    /// Tool calls summed over the requests.
    #[serde(default)]
    pub tool_calls: ToolCalls,
    /// Requests that made at least one tool call.
    #[serde(default)]
    pub tool_requests: u64,
    #[serde(default)]
    pub evals: EvalCounts,
    /// Tokens summed over the requests.
    #[serde(default)]
    pub tokens: Tokens,
    /// Requests that carried a trace id.
    #[serde(default)]
    pub traced: u64,
}

impl ArmWindow {
    /// An empty part for `arm` served by `bundle`.
    pub fn new(arm: Arm, bundle: impl Into<String>) -> ArmWindow {
        ArmWindow {
            arm,
            bundle: bundle.into(),
            latency_ms: Vec::new(),
            cost_usd: Vec::new(),
            errors: ErrorCounts::default(),
            refusals: 0,
            tool_calls: ToolCalls::default(),
            tool_requests: 0,
            evals: EvalCounts::default(),
            tokens: Tokens::default(),
            traced: 0,
        }
    }

    pub fn requests(&self) -> u64 {
        self.latency_ms.len() as u64
    }

    /// Adds one request's outcome (its arm and bundle are the caller's to match).
    pub fn add(&mut self, e: &OutcomeEvent) {
        if e.cost_usd != 0.0 && self.cost_usd.len() < self.latency_ms.len() {
            // The first priced request: the free ones before it cost 0.
            self.cost_usd.resize(self.latency_ms.len(), 0.0);
        }
        self.latency_ms.push(e.latency_ms);
        if !self.cost_usd.is_empty() || e.cost_usd != 0.0 {
            self.cost_usd.push(e.cost_usd);
        }
        if let Some(err) = &e.error {
            let slot = match err.class {
                super::ErrorClass::Transient => &mut self.errors.transient,
                super::ErrorClass::Permanent => &mut self.errors.permanent,
                super::ErrorClass::External => &mut self.errors.external,
            };
            *slot += 1;
        }
        self.refusals += u64::from(e.refused);
        self.tool_calls.ok += e.tool_calls.ok;
        self.tool_calls.failed += e.tool_calls.failed;
        self.tool_requests += u64::from(e.tool_calls.ok + e.tool_calls.failed > 0);
        if let Some(eval) = e.eval {
            self.evals.samples += 1;
            self.evals.passed += u64::from(eval.passed);
            self.evals.score_sum += eval.score;
        }
        self.tokens.input += e.tokens.input;
        self.tokens.output += e.tokens.output;
        self.traced += u64::from(e.trace_id.is_some());
    }

    /// Request `i`'s cost.
    pub fn cost(&self, i: usize) -> f64 {
        self.cost_usd.get(i).copied().unwrap_or(0.0)
    }
}

/// One SDK instance's window of one agent under one snapshot version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutcomeWindow {
    /// Unique per env for as long as the server deduplicates (10 minutes): a window sent
    /// twice (a retry) counts once. The SDK uses `instance/process-nonce/sequence`.
    pub window_id: String,
    pub agent: String,
    pub env: String,
    /// The snapshot every request of the window was decided under.
    pub snapshot_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The instance's region and pool: a waved release judges each wave on its own
    /// members' windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// When the window closed, Unix ms; the server's receive time if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
    /// At most one part per arm (`stable`, `canary`).
    pub arms: Vec<ArmWindow>,
}

fn reject(field: String, code: &'static str, reason: impl Into<String>) -> EventRejection {
    EventRejection {
        field,
        code,
        reason: reason.into(),
    }
}

fn finite_in(v: f64, max: f64) -> bool {
    v.is_finite() && (0.0..=max).contains(&v)
}

impl OutcomeWindow {
    /// Requests over both arms.
    pub fn requests(&self) -> u64 {
        self.arms.iter().map(ArmWindow::requests).sum()
    }

    /// Checks the window on its own, as [`OutcomeEvent::validate`] does an event; fields are
    /// JSON pointers inside the window.
    pub fn validate(&self, now_ms: i64, limits: &EventLimits) -> Result<(), EventRejection> {
        if self.window_id.is_empty() || self.window_id.len() > limits.max_id_bytes {
            return Err(reject(
                "/window_id".into(),
                "invalid_window_id",
                format!("must be 1 to {} bytes", limits.max_id_bytes),
            ));
        }
        slug::validate_agent(&self.agent)
            .map_err(|e| reject("/agent".into(), "invalid_agent", e.to_string()))?;
        slug::validate_env(&self.env)
            .map_err(|e| reject("/env".into(), "invalid_env", e.to_string()))?;
        for (field, v) in [
            ("/instance", &self.instance),
            ("/region", &self.region),
            ("/pool", &self.pool),
        ] {
            if let Some(v) = v
                && (v.is_empty() || v.len() > limits.max_id_bytes)
            {
                return Err(reject(
                    field.into(),
                    "invalid_attribute",
                    format!("must be 1 to {} bytes", limits.max_id_bytes),
                ));
            }
        }
        if let Some(at) = self.at_ms {
            if at > now_ms.saturating_add(limits.max_skew_ms) {
                return Err(reject(
                    "/at_ms".into(),
                    "future_timestamp",
                    "is in the future beyond the allowed clock skew",
                ));
            }
            if at < now_ms.saturating_sub(limits.max_age_ms) {
                return Err(reject(
                    "/at_ms".into(),
                    "stale_timestamp",
                    "is older than the accepted age",
                ));
            }
        }
        if self.arms.is_empty() || self.arms.len() > 2 {
            return Err(reject(
                "/arms".into(),
                "invalid_arms",
                "must hold one or two parts, at most one per arm",
            ));
        }
        if let [a, b] = self.arms.as_slice()
            && a.arm == b.arm
        {
            return Err(reject(
                "/arms/1/arm".into(),
                "invalid_arms",
                "names the same arm as /arms/0",
            ));
        }
        let prefix = format!("{}@", self.agent);
        for (i, a) in self.arms.iter().enumerate() {
            let at = |f: &str| format!("/arms/{i}{f}");
            if a.arm == Arm::Killed {
                return Err(reject(
                    at("/arm"),
                    "invalid_arm",
                    "a killed request served no bundle",
                ));
            }
            let number_ok = a
                .bundle
                .strip_prefix(&prefix)
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= 1);
            if !number_ok {
                return Err(reject(
                    at("/bundle"),
                    "invalid_bundle",
                    format!("must be {}@N for this window's agent", self.agent),
                ));
            }
            let n = a.latency_ms.len();
            if n == 0 || n > MAX_WINDOW_REQUESTS {
                return Err(reject(
                    at("/latency_ms"),
                    "invalid_window_size",
                    format!("must hold 1 to {MAX_WINDOW_REQUESTS} requests"),
                ));
            }
            if let Some(j) = a
                .latency_ms
                .iter()
                .position(|v| !finite_in(*v, limits.max_latency_ms))
            {
                return Err(reject(
                    at(&format!("/latency_ms/{j}")),
                    "invalid_latency",
                    format!(
                        "must be a finite number from 0 to {}",
                        limits.max_latency_ms
                    ),
                ));
            }
            if !a.cost_usd.is_empty() && a.cost_usd.len() != n {
                return Err(reject(
                    at("/cost_usd"),
                    "invalid_cost",
                    format!("must be empty or hold one cost per request ({n})"),
                ));
            }
            if let Some(j) = a
                .cost_usd
                .iter()
                .position(|v| !finite_in(*v, limits.max_cost_usd))
            {
                return Err(reject(
                    at(&format!("/cost_usd/{j}")),
                    "invalid_cost",
                    format!("must be a finite number from 0 to {}", limits.max_cost_usd),
                ));
            }
            let n = n as u64;
            for (field, v) in [
                ("/errors", a.errors.total()),
                ("/refusals", a.refusals),
                ("/tool_requests", a.tool_requests),
                ("/evals/samples", a.evals.samples),
                ("/traced", a.traced),
            ] {
                if v > n {
                    return Err(reject(
                        at(field),
                        "invalid_count",
                        format!("counts {v}, more than the part's {n} requests"),
                    ));
                }
            }
            if a.evals.passed > a.evals.samples {
                return Err(reject(
                    at("/evals/passed"),
                    "invalid_count",
                    "counts more than /evals/samples",
                ));
            }
            if !finite_in(a.evals.score_sum, a.evals.samples as f64) {
                return Err(reject(
                    at("/evals/score_sum"),
                    "invalid_eval",
                    "must be a finite number from 0 to the sample count (scores are 0 to 1)",
                ));
            }
            let calls = a.tool_calls.ok.saturating_add(a.tool_calls.failed);
            if calls > limits.max_tool_calls.saturating_mul(n)
                || (calls > 0) != (a.tool_requests > 0)
                || calls < a.tool_requests
            {
                return Err(reject(
                    at("/tool_calls"),
                    "invalid_tool_calls",
                    format!(
                        "must be at least /tool_requests, zero exactly when it is, and at most {} per request",
                        limits.max_tool_calls
                    ),
                ));
            }
            for (field, v) in [
                ("/tokens/input", a.tokens.input),
                ("/tokens/output", a.tokens.output),
            ] {
                if v > limits.max_tokens.saturating_mul(n) {
                    return Err(reject(
                        at(field),
                        "invalid_tokens",
                        format!("must be at most {} per request", limits.max_tokens),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> OutcomeWindow {
        serde_json::from_str(
            r#"{"window_id":"i-7/1000/1","agent":"support","env":"prod","snapshot_version":42,
            "instance":"i-7","at_ms":1000000,
            "arms":[{"arm":"stable","bundle":"support@4","latency_ms":[800,900,1000],
                     "cost_usd":[0.01,0.01,0.02],"errors":{"transient":1},"refusals":0,
                     "tool_calls":{"ok":4,"failed":1},"tool_requests":2,
                     "evals":{"samples":1,"passed":1,"score_sum":0.9},
                     "tokens":{"input":300,"output":90},"traced":3},
                    {"arm":"canary","bundle":"support@5","latency_ms":[850]}]}"#,
        )
        .unwrap()
    }

    fn check(edit: impl FnOnce(&mut OutcomeWindow), field: &str, code: &str) {
        let mut w = window();
        edit(&mut w);
        let err = w.validate(1_000_000, &EventLimits::DEFAULT).unwrap_err();
        assert_eq!((err.field.as_str(), err.code), (field, code), "{err}");
    }

    #[test]
    fn a_window_reads_validates_and_round_trips() {
        let w = window();
        w.validate(1_000_000, &EventLimits::DEFAULT).unwrap();
        assert_eq!(w.requests(), 4);
        let back: OutcomeWindow =
            serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn implausible_windows_are_refused_naming_the_field() {
        check(|w| w.window_id.clear(), "/window_id", "invalid_window_id");
        check(|w| w.arms.clear(), "/arms", "invalid_arms");
        check(
            |w| w.arms[1].arm = Arm::Stable,
            "/arms/1/arm",
            "invalid_arms",
        );
        check(
            |w| w.arms[1].arm = Arm::Killed,
            "/arms/1/arm",
            "invalid_arm",
        );
        check(
            |w| w.arms[0].bundle = "billing@4".into(),
            "/arms/0/bundle",
            "invalid_bundle",
        );
        check(
            |w| w.arms[1].latency_ms.clear(),
            "/arms/1/latency_ms",
            "invalid_window_size",
        );
        check(
            |w| w.arms[0].latency_ms[2] = f64::NAN,
            "/arms/0/latency_ms/2",
            "invalid_latency",
        );
        check(
            |w| w.arms[0].cost_usd.pop().map(|_| ()).unwrap_or(()),
            "/arms/0/cost_usd",
            "invalid_cost",
        );
        check(
            |w| w.arms[0].errors.permanent = 3,
            "/arms/0/errors",
            "invalid_count",
        );
        check(
            |w| w.arms[0].evals.passed = 2,
            "/arms/0/evals/passed",
            "invalid_count",
        );
        check(
            |w| w.arms[0].evals.score_sum = 1.5,
            "/arms/0/evals/score_sum",
            "invalid_eval",
        );
        check(
            |w| w.arms[0].tool_requests = 0,
            "/arms/0/tool_calls",
            "invalid_tool_calls",
        );
        check(
            |w| w.at_ms = Some(10_000_000_000),
            "/at_ms",
            "future_timestamp",
        );
        let too_many = vec![1.0; MAX_WINDOW_REQUESTS + 1];
        check(
            move |w| w.arms[1].latency_ms = too_many,
            "/arms/1/latency_ms",
            "invalid_window_size",
        );
    }

    #[test]
    fn adding_events_counts_them_as_the_window_says() {
        let mut a = ArmWindow::new(Arm::Canary, "support@5");
        let mut e: OutcomeEvent = serde_json::from_str(
            r#"{"request_id":"r","agent":"support","env":"prod","snapshot_version":1,
            "bundle":"support@5","arm":"canary","latency_ms":100}"#,
        )
        .unwrap();
        a.add(&e);
        e.cost_usd = 0.5;
        e.tool_calls.failed = 2;
        e.refused = true;
        a.add(&e);
        assert_eq!(a.cost_usd, vec![0.0, 0.5]);
        assert_eq!((a.requests(), a.refusals, a.tool_requests), (2, 1, 1));
        assert_eq!(a.tool_calls.failed, 2);
    }
}
