//! What an agent reports per request (SPEC "Outcome event"), and its
//! validation. Validation is pure: the caller passes the clock reading.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decision::Arm;
use crate::slug;

/// Error classes, because a transient provider timeout and a permanent bug
/// call for different responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorClass {
    Transient,
    Permanent,
    External,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutcomeError {
    pub class: ErrorClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tokens {
    #[serde(default)]
    pub input: u64,
    #[serde(default)]
    pub output: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolCalls {
    #[serde(default)]
    pub ok: u64,
    #[serde(default)]
    pub failed: u64,
}

/// A sampled online evaluation of this request.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvalSample {
    pub score: f64,
    pub passed: bool,
}

/// One request's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutcomeEvent {
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub agent: String,
    pub env: String,
    /// The snapshot the decision was made under.
    pub snapshot_version: u64,
    /// `agent@N` that served the request.
    pub bundle: String,
    pub arm: Arm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The serving pool; with `region` and `instance`, what places the outcome in a wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// When the request finished, Unix ms; the server's receive time if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
    pub latency_ms: f64,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique_stages"
    )]
    pub stages: BTreeMap<String, f64>,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default)]
    pub tokens: Tokens,
    #[serde(default)]
    pub error: Option<OutcomeError>,
    #[serde(default)]
    pub tool_calls: ToolCalls,
    #[serde(default)]
    pub refused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalSample>,
}

/// Stage timings, refusing a stage named twice. A map would keep the last one silently; the
/// server reads events straight from the request bytes, and two readers of one body must never
/// see different events (the server refuses any repeated key in a body).
fn unique_stages<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, f64>, D::Error> {
    struct Stages;
    impl<'de> serde::de::Visitor<'de> for Stages {
        type Value = BTreeMap<String, f64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            // As the standard map visitor says, so a rejection reads as it always has.
            f.write_str("a map")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((name, ms)) = map.next_entry::<String, f64>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!("duplicate key {name:?}")));
                }
                out.insert(name, ms);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Stages)
}

/// Why an event was refused; `field` is a JSON pointer inside the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventRejection {
    pub field: String,
    /// Stable snake_case code for counting (`invalid_latency`, `stale_timestamp`...).
    pub code: &'static str,
    pub reason: String,
}

impl std::fmt::Display for EventRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for EventRejection {}

/// Bounds on what an event may claim; anything outside is refused, so one
/// bad client cannot poison a window.
#[derive(Clone, Debug, PartialEq)]
pub struct EventLimits {
    /// Largest plausible latency (one hour).
    pub max_latency_ms: f64,
    /// Largest plausible cost of one request.
    pub max_cost_usd: f64,
    pub max_stages: usize,
    /// How far in the past `at_ms` may be (late SDK flushes are fine).
    pub max_age_ms: i64,
    /// How far in the future `at_ms` may be (clock skew).
    pub max_skew_ms: i64,
    pub max_id_bytes: usize,
    /// Largest plausible input or output token count of one request.
    pub max_tokens: u64,
    /// Largest plausible number of successful or failed tool calls in one request.
    pub max_tool_calls: u64,
}

impl EventLimits {
    pub const DEFAULT: EventLimits = EventLimits {
        max_latency_ms: 3_600_000.0,
        max_cost_usd: 1_000.0,
        max_stages: 32,
        max_age_ms: 24 * 3_600_000,
        max_skew_ms: 5 * 60_000,
        max_id_bytes: 256,
        // Per-event bounds keep every counter summed over a window far from u64 overflow.
        max_tokens: 100_000_000,
        max_tool_calls: 100_000,
    };
}

fn reject(field: &str, code: &'static str, reason: impl Into<String>) -> EventRejection {
    EventRejection {
        field: field.to_owned(),
        code,
        reason: reason.into(),
    }
}

fn finite_in(v: f64, max: f64) -> bool {
    v.is_finite() && (0.0..=max).contains(&v)
}

impl OutcomeEvent {
    /// Checks the event on its own (not whether its agent, bundle or arm is
    /// known: that needs the server's state). `now_ms` is the receive time.
    pub fn validate(&self, now_ms: i64, limits: &EventLimits) -> Result<(), EventRejection> {
        if self.request_id.is_empty() || self.request_id.len() > limits.max_id_bytes {
            return Err(reject(
                "/request_id",
                "invalid_request_id",
                format!("must be 1 to {} bytes", limits.max_id_bytes),
            ));
        }
        slug::validate_agent(&self.agent)
            .map_err(|e| reject("/agent", "invalid_agent", e.to_string()))?;
        slug::validate_env(&self.env).map_err(|e| reject("/env", "invalid_env", e.to_string()))?;
        let expected_prefix = format!("{}@", self.agent);
        let number_ok = self
            .bundle
            .strip_prefix(&expected_prefix)
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 1);
        if !number_ok {
            return Err(reject(
                "/bundle",
                "invalid_bundle",
                format!("must be {}@N for this event's agent", self.agent),
            ));
        }
        if self.arm == Arm::Killed {
            return Err(reject(
                "/arm",
                "invalid_arm",
                "a killed request served no bundle; report it as an error of the serving arm or not at all",
            ));
        }
        for (field, v) in [
            ("/trace_id", &self.trace_id),
            ("/user", &self.user),
            ("/tenant", &self.tenant),
            ("/workload", &self.workload),
            ("/instance", &self.instance),
            ("/region", &self.region),
            ("/pool", &self.pool),
        ] {
            if let Some(v) = v
                && (v.is_empty() || v.len() > limits.max_id_bytes)
            {
                return Err(reject(
                    field,
                    "invalid_attribute",
                    format!("must be 1 to {} bytes", limits.max_id_bytes),
                ));
            }
        }
        if let Some(at) = self.at_ms {
            if at > now_ms.saturating_add(limits.max_skew_ms) {
                return Err(reject(
                    "/at_ms",
                    "future_timestamp",
                    "is in the future beyond the allowed clock skew",
                ));
            }
            if at < now_ms.saturating_sub(limits.max_age_ms) {
                return Err(reject(
                    "/at_ms",
                    "stale_timestamp",
                    "is older than the accepted age",
                ));
            }
        }
        if !finite_in(self.latency_ms, limits.max_latency_ms) {
            return Err(reject(
                "/latency_ms",
                "invalid_latency",
                format!(
                    "must be a finite number from 0 to {}",
                    limits.max_latency_ms
                ),
            ));
        }
        if self.stages.len() > limits.max_stages {
            return Err(reject(
                "/stages",
                "too_many_stages",
                format!("at most {} stages", limits.max_stages),
            ));
        }
        for (name, v) in &self.stages {
            if name.is_empty() || name.len() > 64 {
                return Err(reject(
                    "/stages",
                    "invalid_stage",
                    "stage names are 1 to 64 bytes",
                ));
            }
            if !finite_in(*v, limits.max_latency_ms) {
                return Err(reject(
                    &format!("/stages/{name}"),
                    "invalid_latency",
                    format!(
                        "must be a finite number from 0 to {}",
                        limits.max_latency_ms
                    ),
                ));
            }
        }
        if !finite_in(self.cost_usd, limits.max_cost_usd) {
            return Err(reject(
                "/cost_usd",
                "invalid_cost",
                format!("must be a finite number from 0 to {}", limits.max_cost_usd),
            ));
        }
        for (field, v) in [
            ("/tokens/input", self.tokens.input),
            ("/tokens/output", self.tokens.output),
        ] {
            if v > limits.max_tokens {
                return Err(reject(
                    field,
                    "invalid_tokens",
                    format!("must be at most {}", limits.max_tokens),
                ));
            }
        }
        for (field, v) in [
            ("/tool_calls/ok", self.tool_calls.ok),
            ("/tool_calls/failed", self.tool_calls.failed),
        ] {
            if v > limits.max_tool_calls {
                return Err(reject(
                    field,
                    "invalid_tool_calls",
                    format!("must be at most {}", limits.max_tool_calls),
                ));
            }
        }
        // A score is summed into the window's mean: an unbounded one overflows the sum to
        // infinity, which the persisted rollup cannot hold.
        if let Some(e) = &self.eval
            && !finite_in(e.score, 1.0)
        {
            return Err(reject(
                "/eval/score",
                "invalid_eval",
                "must be a finite number from 0 to 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> OutcomeEvent {
        serde_json::from_str(
            r#"{"request_id":"r-1","trace_id":"t-1","agent":"support","env":"prod",
            "snapshot_version":42,"bundle":"support@5","arm":"canary",
            "user":"u1","tenant":"acme","workload":"create_ticket","instance":"i-7","region":"us-east",
            "latency_ms":1234.5,"stages":{"retrieve":120.0,"llm":900.0,"tools":200.0},
            "cost_usd":0.0123,"tokens":{"input":1200,"output":300},
            "error":null,"tool_calls":{"ok":3,"failed":0},"refused":false,
            "eval":{"score":0.92,"passed":true}}"#,
        )
        .unwrap()
    }

    fn check(edit: impl FnOnce(&mut OutcomeEvent), field: &str, code: &str) {
        let mut e = event();
        edit(&mut e);
        let err = e
            .validate(1_000_000_000, &EventLimits::DEFAULT)
            .unwrap_err();
        assert_eq!((err.field.as_str(), err.code), (field, code), "{err}");
    }

    #[test]
    fn the_spec_example_is_valid() {
        event()
            .validate(1_000_000_000, &EventLimits::DEFAULT)
            .unwrap();
    }

    #[test]
    fn implausible_values_are_refused_naming_the_field() {
        check(
            |e| e.latency_ms = f64::NAN,
            "/latency_ms",
            "invalid_latency",
        );
        check(|e| e.latency_ms = -1.0, "/latency_ms", "invalid_latency");
        check(
            |e| e.latency_ms = f64::INFINITY,
            "/latency_ms",
            "invalid_latency",
        );
        check(|e| e.cost_usd = -0.01, "/cost_usd", "invalid_cost");
        check(
            |e| {
                e.stages
                    .insert("llm".into(), f64::NAN)
                    .map(|_| ())
                    .unwrap_or(())
            },
            "/stages/llm",
            "invalid_latency",
        );
        check(
            |e| e.bundle = "billing@5".into(),
            "/bundle",
            "invalid_bundle",
        );
        check(
            |e| e.bundle = "support@0".into(),
            "/bundle",
            "invalid_bundle",
        );
        check(|e| e.agent = "../x".into(), "/agent", "invalid_agent");
        check(|e| e.arm = Arm::Killed, "/arm", "invalid_arm");
        check(
            |e| e.request_id = String::new(),
            "/request_id",
            "invalid_request_id",
        );
        check(
            |e| e.at_ms = Some(1_000_000_000 + 3_600_000),
            "/at_ms",
            "future_timestamp",
        );
        check(|e| e.at_ms = Some(1), "/at_ms", "stale_timestamp");
        check(
            |e| e.tenant = Some("x".repeat(300)),
            "/tenant",
            "invalid_attribute",
        );
        check(
            |e| {
                e.eval = Some(EvalSample {
                    score: f64::NAN,
                    passed: true,
                })
            },
            "/eval/score",
            "invalid_eval",
        );
        check(
            |e| {
                e.eval = Some(EvalSample {
                    score: 1e308,
                    passed: true,
                })
            },
            "/eval/score",
            "invalid_eval",
        );
        check(
            |e| e.tool_calls.ok = u64::MAX,
            "/tool_calls/ok",
            "invalid_tool_calls",
        );
        check(
            |e| e.tokens.output = u64::MAX,
            "/tokens/output",
            "invalid_tokens",
        );
    }

    #[test]
    fn unknown_fields_and_error_classes_are_refused_by_the_parser() {
        assert!(serde_json::from_str::<OutcomeError>(r#"{"class":"cosmic"}"#).is_err());
        let mut v: serde_json::Value = serde_json::to_value(event()).unwrap();
        v["colour"] = "red".into();
        assert!(serde_json::from_value::<OutcomeEvent>(v).is_err());
    }
}
