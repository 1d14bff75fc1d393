//! The conformance suite's case format and the one definition of what a decision looks like
//! in it, shared by every runner (the engine's own test, the server's `/v1/decide` test, the
//! SDKs). The vectors live in `testdata/conformance/` (format in its `README.md`); a runner
//! in another language reimplements [`observe`] over its own decision type, which is the
//! point: it then checks its binding, not this function.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::decision::{CompiledSnapshot, Context, DecideError, Reason, Stickiness};

/// One vector file: a snapshot and the cases decided on it.
#[derive(Clone, Debug, Deserialize)]
pub struct VectorFile {
    pub description: String,
    /// The snapshot JSON exactly as `GET /v1/envs/{env}/snapshot` serves it.
    pub snapshot: Value,
    /// Agents in rising release weight (one salt): a unit in canary in one is in canary in
    /// every later one.
    #[serde(default)]
    pub monotonic: Vec<String>,
    pub cases: Vec<Case>,
}

/// One request and what deciding it must give.
#[derive(Clone, Debug, Deserialize)]
pub struct Case {
    pub name: String,
    pub agent: String,
    pub context: CaseContext,
    /// `None` only before `examples/conformance_fill.rs` filled it in.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// The request attributes, all strings.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaseContext {
    pub request_id: String,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

impl CaseContext {
    pub fn as_context(&self) -> Context<'_> {
        Context {
            request_id: &self.request_id,
            user: self.user.as_deref(),
            tenant: self.tenant.as_deref(),
            workload: self.workload.as_deref(),
            instance: self.instance.as_deref(),
            region: self.region.as_deref(),
            pool: self.pool.as_deref(),
        }
    }
}

/// What a decision must be. Either `error` is set (and nothing else), or the rest is.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `unknown_agent` or `no_stable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// The bundle id (`agent@N`); `null` when killed.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub bundle: Option<Option<String>>,
    /// The reason's stable code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The release's stickiness when the request was bucketed, else `null`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub sticky_by: Option<Option<String>>,
    /// The stickiness attribute was missing and the request id was bucketed instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fell_back_to_request: Option<bool>,
    /// The agent's flags (`<agent>.*`) by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<BTreeMap<String, Value>>,
    /// Each flag's reason code (`disabled`, `denied`, `allowed`, `rule`, `rollout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_reasons: Option<BTreeMap<String, String>>,
    /// The wave of a waved release the request was routed by; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
}

/// A field that is present, even as `null`, is `Some`: `"bundle": null` (killed) differs
/// from no `bundle` at all (an error case).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The stable code of a decide error.
pub fn error_code(e: &DecideError) -> &'static str {
    match e {
        DecideError::UnknownAgent { .. } => "unknown_agent",
        DecideError::NoStable { .. } => "no_stable",
    }
}

fn stickiness_code(s: Stickiness) -> &'static str {
    match s {
        Stickiness::User => "user",
        Stickiness::Tenant => "tenant",
        Stickiness::Request => "request",
    }
}

/// What the engine decides for one case, in the vectors' form.
pub fn observe(snapshot: &CompiledSnapshot, agent: &str, ctx: &Context<'_>) -> Expect {
    let d = match snapshot.decide(agent, ctx) {
        Ok(d) => d,
        Err(e) => {
            return Expect {
                error: Some(error_code(&e).to_owned()),
                ..Expect::default()
            };
        }
    };
    let unit = match d.reason {
        Reason::Canary { unit, .. } | Reason::Stable { unit, .. } => Some(unit),
        _ => None,
    };
    let mut flags = BTreeMap::new();
    let mut flag_reasons = BTreeMap::new();
    for f in snapshot.agent_flags(agent, ctx) {
        flags.insert(f.key.to_owned(), f.value.clone());
        flag_reasons.insert(f.key.to_owned(), f.reason.code().to_owned());
    }
    Expect {
        error: None,
        arm: Some(
            match d.arm {
                crate::decision::Arm::Stable => "stable",
                crate::decision::Arm::Canary => "canary",
                crate::decision::Arm::Killed => "killed",
            }
            .to_owned(),
        ),
        bundle: Some(d.bundle.map(|b| b.id.clone())),
        reason: Some(d.reason.code().to_owned()),
        sticky_by: Some(unit.map(|u| stickiness_code(u.by).to_owned())),
        fell_back_to_request: Some(unit.is_some_and(|u| u.fell_back_to_request)),
        flags: Some(flags),
        flag_reasons: Some(flag_reasons),
        wave: d.wave.map(str::to_owned),
    }
}
