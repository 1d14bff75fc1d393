//! The release plan's `guardrails:` block (SPEC "Release plan").

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::release::DurationSpec;

/// A share written `"2%"` (or a bare number, read as percent). Stored as a fraction.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Share(f64);

impl Share {
    /// From a fraction (`0.02` is 2%).
    pub fn from_fraction(f: f64) -> Share {
        Share(f)
    }

    pub fn fraction(self) -> f64 {
        self.0
    }

    pub fn parse(s: &str) -> Result<Share, String> {
        let t = s.trim();
        let t = t.strip_suffix('%').unwrap_or(t).trim();
        t.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(|v| Share(v / 100.0))
            .ok_or_else(|| format!("{s:?} is not a percentage such as \"2%\""))
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", trim_float(self.0 * 100.0))
    }
}

/// An absolute change of a rate in percentage points, written `"1pp"` (or a bare number of
/// points). Stored as a fraction (`"1pp"` is 0.01).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Points(f64);

impl Points {
    pub fn from_fraction(f: f64) -> Points {
        Points(f)
    }

    pub fn fraction(self) -> f64 {
        self.0
    }

    pub fn parse(s: &str) -> Result<Points, String> {
        let t = s.trim();
        let t = t.strip_suffix("pp").unwrap_or(t).trim();
        t.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(|v| Points(v / 100.0))
            .ok_or_else(|| format!("{s:?} is not a change in percentage points such as \"1pp\""))
    }
}

impl fmt::Display for Points {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}pp", trim_float(self.0 * 100.0))
    }
}

/// Rounds away float noise (`2.0000000000000004` → `2`).
pub(crate) fn trim_float(v: f64) -> String {
    let r = (v * 1e6).round() / 1e6;
    format!("{r}")
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(f64),
    Str(String),
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match NumOrStr::deserialize(d)? {
                    NumOrStr::Num(n) => <$t>::parse(&n.to_string()),
                    NumOrStr::Str(s) => <$t>::parse(&s),
                }
                .map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(Share);
string_serde!(Points);

/// Bounds on a rate where lower is better (errors, refusals).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    /// Canary's rate must stay at or below this share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Share>,
    /// Canary's rate may exceed control's by at most this many points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<Points>,
    /// Canary's rate may be at most this multiple of control's (>= 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<f64>,
    /// Computed and reported but never gates a step (calibrate a bound before enforcing it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

/// Bounds on request latency's p95, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<f64>,
    /// Computed and reported but never gates a step (calibrate a bound before enforcing it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

/// Bounds on a rate where higher is better (tool-call success, eval pass).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Share>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_decrease: Option<Points>,
    /// Computed and reported but never gates a step (calibrate a bound before enforcing it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

/// Bounds on cost per request, in USD.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
    /// Computed and reported but never gates a step (calibrate a bound before enforcing it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

/// Bounds on the agent-side approval queue: how often each arm's requests ask a human before
/// a risky tool call, are denied (or expire), or wait longer than `wait`, each per request
/// and canary at most `*_ratio` x control.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// Approval requests per request: canary's at most this multiple of control's (>= 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<f64>,
    /// Denied or expired approval requests per request, as a multiple of control's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial_max_ratio: Option<f64>,
    /// Approval requests still undecided after `wait`, per request, as a multiple of
    /// control's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue_max_ratio: Option<f64>,
    /// How long a request may wait before it counts as overdue. Default 5m, 1s to 24h.
    #[serde(default = "default_approval_wait")]
    pub wait: DurationSpec,
    /// Computed and reported but never gates a step (calibrate a bound before enforcing it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

fn default_approval_wait() -> DurationSpec {
    DurationSpec::from_ms(5 * 60 * 1_000)
}

impl Default for ApprovalRule {
    fn default() -> ApprovalRule {
        ApprovalRule {
            max_ratio: None,
            denial_max_ratio: None,
            overdue_max_ratio: None,
            wait: default_approval_wait(),
            shadow: false,
        }
    }
}

fn default_alpha() -> Share {
    Share(0.01)
}
fn default_min_requests() -> u64 {
    200
}
fn default_min_eval_samples() -> u64 {
    30
}

/// How the guardrails judge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Family-wise false-`fail` budget across every configured bound, split evenly
    /// (Bonferroni) between them. Default 1%.
    #[serde(default = "default_alpha")]
    pub alpha: Share,
    /// Requests each arm needs before any verdict other than `pending`. Default 200.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Eval samples each arm needs before an eval verdict other than `pending`. Default 30.
    #[serde(default = "default_min_eval_samples")]
    pub min_eval_samples: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            alpha: default_alpha(),
            min_requests: default_min_requests(),
            min_eval_samples: default_min_eval_samples(),
        }
    }
}

/// The plan's `guardrails:` block. Every field is optional; unknown fields are refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<RateRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_ms: Option<LatencyRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_success: Option<SuccessRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal_rate: Option<RateRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_pass_rate: Option<SuccessRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_request: Option<CostRule>,
    /// Absent in plans (and stored monitors) from before approvals were judged: no
    /// approval bounds then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalRule>,
    #[serde(default)]
    pub settings: Settings,
}

/// Why a guardrails block is refused; `pointer` is a JSON pointer inside the block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {reason}")]
pub struct GuardrailConfigError {
    pub pointer: String,
    pub reason: String,
}

impl GuardrailConfigError {
    pub fn pointer(&self) -> &str {
        &self.pointer
    }
}

fn bad(pointer: &str, reason: impl Into<String>) -> GuardrailConfigError {
    GuardrailConfigError {
        pointer: pointer.to_owned(),
        reason: reason.into(),
    }
}

fn check_share(p: &str, v: Option<Share>) -> Result<(), GuardrailConfigError> {
    match v {
        Some(s) if !(0.0..=1.0).contains(&s.0) => Err(bad(p, "must be a share from 0% to 100%")),
        _ => Ok(()),
    }
}
fn check_points(p: &str, v: Option<Points>) -> Result<(), GuardrailConfigError> {
    match v {
        Some(s) if !(0.0..=1.0).contains(&s.0) => Err(bad(p, "must be from 0pp to 100pp")),
        _ => Ok(()),
    }
}
fn check_amount(p: &str, v: Option<f64>) -> Result<(), GuardrailConfigError> {
    match v {
        Some(x) if !(x.is_finite() && x >= 0.0) => Err(bad(p, "must be a finite number >= 0")),
        _ => Ok(()),
    }
}
/// The range of `approvals.wait`: shorter than a second is noise (a human cannot answer),
/// longer than a day never shows within a release.
const APPROVAL_WAIT_MIN_MS: u64 = 1_000;
const APPROVAL_WAIT_MAX_MS: u64 = 24 * 60 * 60 * 1_000;

fn check_ratio(p: &str, v: Option<f64>) -> Result<(), GuardrailConfigError> {
    match v {
        Some(x) if !(x.is_finite() && (1.0..=1000.0).contains(&x)) => {
            Err(bad(p, "must be a ratio from 1 to 1000"))
        }
        _ => Ok(()),
    }
}

impl GuardrailConfig {
    /// The example block in SPEC "Release plan".
    pub fn spec_default() -> GuardrailConfig {
        GuardrailConfig {
            error_rate: Some(RateRule {
                max: Some(Share(0.02)),
                max_increase: Some(Points(0.01)),
                max_ratio: None,
                shadow: false,
            }),
            latency_p95_ms: Some(LatencyRule {
                max: None,
                max_increase: Some(200.0),
                max_ratio: None,
                shadow: false,
            }),
            tool_call_success: Some(SuccessRule {
                min: Some(Share(0.98)),
                max_decrease: None,
                shadow: false,
            }),
            refusal_rate: Some(RateRule {
                max: None,
                max_increase: None,
                max_ratio: Some(1.5),
                shadow: false,
            }),
            eval_pass_rate: Some(SuccessRule {
                min: Some(Share(0.95)),
                max_decrease: None,
                shadow: false,
            }),
            cost_per_request: Some(CostRule {
                max: None,
                max_ratio: Some(1.3),
                max_increase: None,
                shadow: false,
            }),
            approvals: None,
            settings: Settings::default(),
        }
    }

    /// Zero tolerance: any degradation of canary against control on every axis is a
    /// violation (ratios 1, increases 0), at alpha 0.1%. The detection report judges with
    /// this one.
    ///
    /// Without a margin every bound sits exactly on its null when the arms are identical,
    /// so the false-`fail` rate is close to alpha itself (about 0.7% of releases at 1%,
    /// measured through the real server) rather than far below it as with margins. 0.1%
    /// keeps false rollbacks under 1 in 500 releases for the price of about a third more
    /// canary requests to detect (the bar goes from ln 600 to ln 6,000).
    pub fn no_regression() -> GuardrailConfig {
        GuardrailConfig {
            error_rate: Some(RateRule {
                max_ratio: Some(1.0),
                ..RateRule::default()
            }),
            latency_p95_ms: Some(LatencyRule {
                max_increase: Some(0.0),
                ..LatencyRule::default()
            }),
            tool_call_success: Some(SuccessRule {
                max_decrease: Some(Points(0.0)),
                ..SuccessRule::default()
            }),
            refusal_rate: Some(RateRule {
                max_ratio: Some(1.0),
                ..RateRule::default()
            }),
            eval_pass_rate: Some(SuccessRule {
                max_decrease: Some(Points(0.0)),
                ..SuccessRule::default()
            }),
            cost_per_request: Some(CostRule {
                max_ratio: Some(1.0),
                ..CostRule::default()
            }),
            approvals: None,
            settings: Settings {
                alpha: Share(0.001),
                ..Settings::default()
            },
        }
    }

    /// Refuses nonsense: negative amounts, ratios below 1, shares above 100%, empty rules.
    pub fn validate(&self) -> Result<(), GuardrailConfigError> {
        for (name, rule) in [
            ("error_rate", &self.error_rate),
            ("refusal_rate", &self.refusal_rate),
        ] {
            if let Some(r) = rule {
                let p = format!("/{name}");
                if r.max.is_none() && r.max_increase.is_none() && r.max_ratio.is_none() {
                    return Err(bad(
                        &p,
                        "needs at least one of max, max_increase, max_ratio",
                    ));
                }
                check_share(&format!("{p}/max"), r.max)?;
                check_points(&format!("{p}/max_increase"), r.max_increase)?;
                check_ratio(&format!("{p}/max_ratio"), r.max_ratio)?;
            }
        }
        for (name, rule) in [
            ("tool_call_success", &self.tool_call_success),
            ("eval_pass_rate", &self.eval_pass_rate),
        ] {
            if let Some(r) = rule {
                let p = format!("/{name}");
                if r.min.is_none() && r.max_decrease.is_none() {
                    return Err(bad(&p, "needs at least one of min, max_decrease"));
                }
                check_share(&format!("{p}/min"), r.min)?;
                check_points(&format!("{p}/max_decrease"), r.max_decrease)?;
            }
        }
        if let Some(r) = &self.latency_p95_ms {
            if r.max.is_none() && r.max_increase.is_none() && r.max_ratio.is_none() {
                return Err(bad(
                    "/latency_p95_ms",
                    "needs at least one of max, max_increase, max_ratio",
                ));
            }
            check_amount("/latency_p95_ms/max", r.max)?;
            check_amount("/latency_p95_ms/max_increase", r.max_increase)?;
            check_ratio("/latency_p95_ms/max_ratio", r.max_ratio)?;
        }
        if let Some(r) = &self.cost_per_request {
            if r.max.is_none() && r.max_increase.is_none() && r.max_ratio.is_none() {
                return Err(bad(
                    "/cost_per_request",
                    "needs at least one of max, max_increase, max_ratio",
                ));
            }
            check_amount("/cost_per_request/max", r.max)?;
            check_amount("/cost_per_request/max_increase", r.max_increase)?;
            check_ratio("/cost_per_request/max_ratio", r.max_ratio)?;
        }
        if let Some(r) = &self.approvals {
            if r.max_ratio.is_none()
                && r.denial_max_ratio.is_none()
                && r.overdue_max_ratio.is_none()
            {
                return Err(bad(
                    "/approvals",
                    "needs at least one of max_ratio, denial_max_ratio, overdue_max_ratio",
                ));
            }
            check_ratio("/approvals/max_ratio", r.max_ratio)?;
            check_ratio("/approvals/denial_max_ratio", r.denial_max_ratio)?;
            check_ratio("/approvals/overdue_max_ratio", r.overdue_max_ratio)?;
            if !(APPROVAL_WAIT_MIN_MS..=APPROVAL_WAIT_MAX_MS).contains(&r.wait.as_ms()) {
                return Err(bad("/approvals/wait", "must be from 1s to 24h"));
            }
        }
        let a = self.settings.alpha.0;
        if !(a > 0.0 && a <= 0.5) {
            return Err(bad("/settings/alpha", "must be above 0% and at most 50%"));
        }
        if self.settings.min_requests > 1_000_000_000 {
            return Err(bad("/settings/min_requests", "must be at most 1e9"));
        }
        if self.settings.min_eval_samples > 1_000_000_000 {
            return Err(bad("/settings/min_eval_samples", "must be at most 1e9"));
        }
        Ok(())
    }
}
