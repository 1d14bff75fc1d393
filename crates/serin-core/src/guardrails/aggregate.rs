//! Mergeable per-arm aggregates (minute rollups, SDK-side pre-aggregation).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sketches_ddsketch::DDSketch;

use super::monitor::ApprovalCounts;
use crate::outcome::{ArmWindow, ErrorClass, OutcomeEvent};

/// A DDSketch (1% relative accuracy) that is `Debug`; serialises as the sketch's own fields,
/// except that its `min`, `max` and `sum` are written as a number when finite and as the
/// string `"inf"`, `"-inf"` or `"nan"` otherwise.
///
/// JSON has no infinities: an empty sketch keeps `min = +inf` and `max = -inf`, which the
/// derived encoding wrote as `null` and then could not read back, so one persisted empty
/// sketch made a monitor unreadable. Reading still accepts that `null` (stores written before
/// this encoding): `null` was only ever written for an empty sketch's bounds, so it reads as
/// the empty sketch's value of that field.
#[derive(Clone, Default)]
pub struct Sketch(pub DDSketch);

/// The fields of `DDSketch` that may hold a non-finite float, with the value an empty sketch
/// holds there (what an old `null` stood for).
const SKETCH_FLOATS: [(&str, f64); 3] = [
    ("min", f64::INFINITY),
    ("max", f64::NEG_INFINITY),
    ("sum", 0.0),
];

fn encode_float(v: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => serde_json::Value::Number(n),
        None if v.is_nan() => serde_json::Value::String("nan".into()),
        None if v > 0.0 => serde_json::Value::String("inf".into()),
        None => serde_json::Value::String("-inf".into()),
    }
}

fn decode_float(field: &str, v: &serde_json::Value, empty: f64) -> Result<f64, String> {
    match v {
        serde_json::Value::Null => Ok(empty),
        serde_json::Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("sketch {field}: {n} is not a float")),
        serde_json::Value::String(s) => match s.as_str() {
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            "nan" => Ok(f64::NAN),
            other => Err(format!(
                "sketch {field}: expected a number, \"inf\", \"-inf\" or \"nan\", got {other:?}"
            )),
        },
        other => Err(format!("sketch {field}: expected a number, got {other}")),
    }
}

impl Serialize for Sketch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut v = serde_json::to_value(&self.0).map_err(S::Error::custom)?;
        // `DDSketch`'s getters answer `None` exactly when the sketch is empty, and an empty
        // sketch holds the values in `SKETCH_FLOATS`.
        let raw = [self.0.min(), self.0.max(), self.0.sum()];
        if let serde_json::Value::Object(map) = &mut v {
            for ((field, empty), value) in SKETCH_FLOATS.iter().zip(raw) {
                map.insert((*field).to_owned(), encode_float(value.unwrap_or(*empty)));
            }
        }
        v.serialize(serializer)
    }
}

/// A field of the sketch handed to `DDSketch`'s own `Deserialize`: JSON as stored, or a float
/// JSON cannot hold.
enum SketchField {
    Json(serde_json::Value),
    Float(f64),
}

impl<'de> serde::de::IntoDeserializer<'de, serde_json::Error> for SketchField {
    type Deserializer = SketchField;
    fn into_deserializer(self) -> SketchField {
        self
    }
}

impl<'de> serde::Deserializer<'de> for SketchField {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        match self {
            SketchField::Json(v) => serde::Deserializer::deserialize_any(v, visitor),
            SketchField::Float(f) => visitor.visit_f64(f),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> Deserialize<'de> for Sketch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Sketch, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(deserializer)?;
        let serde_json::Value::Object(map) = v else {
            return Err(D::Error::custom("a sketch must be a JSON object"));
        };
        let mut fields = Vec::with_capacity(map.len());
        for (k, v) in map {
            match SKETCH_FLOATS.iter().find(|(f, _)| *f == k) {
                Some((field, empty)) => {
                    let f = decode_float(field, &v, *empty).map_err(D::Error::custom)?;
                    fields.push((k, SketchField::Float(f)));
                }
                None => fields.push((k, SketchField::Json(v))),
            }
        }
        let de = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(fields.into_iter());
        DDSketch::deserialize(de)
            .map(Sketch)
            .map_err(D::Error::custom)
    }
}

impl fmt::Debug for Sketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sketch")
            .field("count", &self.0.count())
            .field("p50", &self.quantile(0.5))
            .field("p95", &self.quantile(0.95))
            .finish()
    }
}

impl Sketch {
    pub fn add(&mut self, v: f64) {
        self.0.add(v);
    }

    pub fn count(&self) -> u64 {
        self.0.count() as u64
    }

    /// The `q` quantile, `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q).ok().flatten()
    }

    /// Merges; sketches built here all share the default configuration.
    pub fn merge(&mut self, other: &Sketch) {
        // Both sides use `Config::defaults()`, so the merge cannot fail.
        let _ = self.0.merge(&other.0);
    }
}

/// One arm over some window. `record` one event at a time or `merge` rollups; both give the
/// same counts and the same sketches.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ArmAggregate {
    pub requests: u64,
    /// Requests whose outcome carried a trace id (readiness item `trace_coverage`). Rollups
    /// written before this field existed read as 0.
    #[serde(default)]
    pub traced: u64,
    pub errors: u64,
    pub errors_transient: u64,
    pub errors_permanent: u64,
    pub errors_external: u64,
    pub tool_calls_ok: u64,
    pub tool_calls_failed: u64,
    pub refusals: u64,
    pub eval_samples: u64,
    pub eval_passed: u64,
    pub eval_score_sum: f64,
    pub cost_usd_sum: f64,
    pub latency_ms_sum: f64,
    pub tokens_input: u64,
    pub tokens_output: u64,
    pub latency: Sketch,
    pub stages: BTreeMap<String, Sketch>,
    pub cost: Sketch,
}

/// What an arm looks like, for verdict tables and dashboards.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArmSummary {
    pub requests: u64,
    pub error_rate: f64,
    pub errors_transient: u64,
    pub errors_permanent: u64,
    pub errors_external: u64,
    /// ok / (ok + failed) tool calls; `None` without tool calls.
    pub tool_call_success: Option<f64>,
    pub tool_calls: u64,
    pub refusal_rate: f64,
    pub eval_pass_rate: Option<f64>,
    pub eval_mean_score: Option<f64>,
    pub eval_samples: u64,
    pub cost_per_request: f64,
    pub cost_usd_sum: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Tail heaviness: p99 / p50.
    pub latency_p99_over_p50: Option<f64>,
    pub stages: BTreeMap<String, StageSummary>,
    /// The arm's agent-side approval-queue events: only from
    /// [`Monitor::arm_summary`](super::Monitor::arm_summary) of a release that judges
    /// approvals (or saw some), never from an aggregate alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalCounts>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageSummary {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        // Counts far below 2^53: exact enough as f64.
        a as f64 / b as f64
    }
}

impl ArmAggregate {
    pub fn record(&mut self, e: &OutcomeEvent) {
        self.requests += 1;
        if e.trace_id.is_some() {
            self.traced += 1;
        }
        if let Some(err) = &e.error {
            self.errors += 1;
            match err.class {
                ErrorClass::Transient => self.errors_transient += 1,
                ErrorClass::Permanent => self.errors_permanent += 1,
                ErrorClass::External => self.errors_external += 1,
            }
        }
        self.tool_calls_ok += e.tool_calls.ok;
        self.tool_calls_failed += e.tool_calls.failed;
        if e.refused {
            self.refusals += 1;
        }
        if let Some(ev) = &e.eval {
            self.eval_samples += 1;
            if ev.passed {
                self.eval_passed += 1;
            }
            self.eval_score_sum += ev.score;
        }
        self.cost_usd_sum += e.cost_usd;
        self.latency_ms_sum += e.latency_ms;
        self.tokens_input += e.tokens.input;
        self.tokens_output += e.tokens.output;
        self.latency.add(e.latency_ms);
        self.cost.add(e.cost_usd);
        for (name, v) in &e.stages {
            match self.stages.get_mut(name) {
                Some(s) => s.add(*v),
                None => {
                    let mut s = Sketch::default();
                    s.add(*v);
                    self.stages.insert(name.clone(), s);
                }
            }
        }
    }

    /// Adds one arm's part of an outcome window: the same counts and sketches as recording
    /// its requests one by one (a window carries no stage timings).
    pub fn record_window(&mut self, w: &ArmWindow) {
        self.requests += w.requests();
        self.traced += w.traced;
        self.errors += w.errors.total();
        self.errors_transient += w.errors.transient;
        self.errors_permanent += w.errors.permanent;
        self.errors_external += w.errors.external;
        self.tool_calls_ok += w.tool_calls.ok;
        self.tool_calls_failed += w.tool_calls.failed;
        self.refusals += w.refusals;
        self.eval_samples += w.evals.samples;
        self.eval_passed += w.evals.passed;
        self.eval_score_sum += w.evals.score_sum;
        self.tokens_input += w.tokens.input;
        self.tokens_output += w.tokens.output;
        for (i, v) in w.latency_ms.iter().enumerate() {
            self.latency_ms_sum += v;
            self.latency.add(*v);
            let c = w.cost(i);
            self.cost_usd_sum += c;
            self.cost.add(c);
        }
    }

    pub fn merge(&mut self, o: &ArmAggregate) {
        self.requests += o.requests;
        self.traced += o.traced;
        self.errors += o.errors;
        self.errors_transient += o.errors_transient;
        self.errors_permanent += o.errors_permanent;
        self.errors_external += o.errors_external;
        self.tool_calls_ok += o.tool_calls_ok;
        self.tool_calls_failed += o.tool_calls_failed;
        self.refusals += o.refusals;
        self.eval_samples += o.eval_samples;
        self.eval_passed += o.eval_passed;
        self.eval_score_sum += o.eval_score_sum;
        self.cost_usd_sum += o.cost_usd_sum;
        self.latency_ms_sum += o.latency_ms_sum;
        self.tokens_input += o.tokens_input;
        self.tokens_output += o.tokens_output;
        self.latency.merge(&o.latency);
        self.cost.merge(&o.cost);
        for (name, s) in &o.stages {
            self.stages.entry(name.clone()).or_default().merge(s);
        }
    }

    pub fn error_rate(&self) -> f64 {
        ratio(self.errors, self.requests)
    }
    pub fn refusal_rate(&self) -> f64 {
        ratio(self.refusals, self.requests)
    }
    pub fn tool_calls(&self) -> u64 {
        self.tool_calls_ok + self.tool_calls_failed
    }
    pub fn tool_call_success(&self) -> Option<f64> {
        (self.tool_calls() > 0).then(|| ratio(self.tool_calls_ok, self.tool_calls()))
    }
    pub fn eval_pass_rate(&self) -> Option<f64> {
        (self.eval_samples > 0).then(|| ratio(self.eval_passed, self.eval_samples))
    }
    pub fn cost_per_request(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.cost_usd_sum / self.requests as f64 // count → f64, exact below 2^53
        }
    }

    pub fn summary(&self) -> ArmSummary {
        let p50 = self.latency.quantile(0.5);
        let p99 = self.latency.quantile(0.99);
        ArmSummary {
            requests: self.requests,
            error_rate: self.error_rate(),
            errors_transient: self.errors_transient,
            errors_permanent: self.errors_permanent,
            errors_external: self.errors_external,
            tool_call_success: self.tool_call_success(),
            tool_calls: self.tool_calls(),
            refusal_rate: self.refusal_rate(),
            eval_pass_rate: self.eval_pass_rate(),
            eval_mean_score: (self.eval_samples > 0)
                .then(|| self.eval_score_sum / self.eval_samples as f64), // count → f64
            eval_samples: self.eval_samples,
            cost_per_request: self.cost_per_request(),
            cost_usd_sum: self.cost_usd_sum,
            latency_p50_ms: p50,
            latency_p95_ms: self.latency.quantile(0.95),
            latency_p99_ms: p99,
            latency_p99_over_p50: match (p99, p50) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            },
            stages: self
                .stages
                .iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        StageSummary {
                            count: s.count(),
                            p50_ms: s.quantile(0.5),
                            p95_ms: s.quantile(0.95),
                        },
                    )
                })
                .collect(),
            approvals: None,
        }
    }
}
