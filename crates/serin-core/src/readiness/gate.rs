//! The readiness verdict a release started under, kept inside the release so its deploy
//! report shows what was checked, what was missing and who overrode the gate.

use serde::{Deserialize, Serialize};

use super::evaluate::{ItemResult, Report};

/// An admin's decision to start a release the gate refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GateOverride {
    pub by: String,
    pub reason: String,
}

/// The gate as evaluated when the release was started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GateRecord {
    pub evaluated_at_ms: i64,
    /// The policy version applied; `None` when the env has no policy for the agent (nothing
    /// is checked then).
    pub policy_version: Option<i64>,
    pub ready: bool,
    pub verdict: String,
    /// Keys of required items that did not pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmet: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<String>,
    /// Keys of warn items that did not pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub gate_override: Option<GateOverride>,
    /// Every row of the report, for the deploy report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub items: Vec<ItemResult>,
}

impl GateRecord {
    /// Freezes `report` for the release record.
    pub fn from_report(
        report: &Report,
        policy_version: Option<i64>,
        evaluated_at_ms: i64,
        gate_override: Option<GateOverride>,
    ) -> GateRecord {
        GateRecord {
            evaluated_at_ms,
            policy_version,
            ready: report.ready,
            verdict: report.verdict.clone(),
            unmet: report.unmet().map(|i| i.key.clone()).collect(),
            blocked_by: report.blocked_by.clone(),
            warnings: report.warnings().map(|i| i.key.clone()).collect(),
            gate_override,
            items: report.items.clone(),
        }
    }
}
