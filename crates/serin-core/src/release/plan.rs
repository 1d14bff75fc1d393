//! The release plan (`plan.yaml`, SPEC "Release plan"): its model, parsing and validation.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::duration::DurationSpec;
use super::waves::Stage;
use crate::decision::{Percent, Stickiness};
use crate::guardrails::GuardrailConfig;

/// Longest webhook URL a plan may name.
pub const MAX_WEBHOOK_CHARS: usize = 2048;

/// A release plan. Unknown fields are refused everywhere.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    /// The canary steps; with `waves`, the steps of every wave that gives none of its own
    /// (and may then be empty).
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub promotion: Promotion,
    #[serde(default)]
    pub stickiness: Stickiness,
    /// Tenants that stay on the stable bundle until the final step.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub exclude_tenants: BTreeSet<String>,
    /// `None`: [`GuardrailConfig::spec_default`] (see [`Plan::guardrails`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub guardrails: Option<GuardrailConfig>,
    #[serde(default)]
    pub on_failure: OnFailure,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
    /// Share of traffic kept on the old stable during the final step (at most 10%, only
    /// with a final weight of 100%), so the final step is still judged against a control.
    /// The final step then routes `100% - holdback`; completing the release makes the
    /// candidate the stable for everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdback: Option<Percent>,
    /// Checkpoints after completion that compare the new stable with the old one
    /// ([`super::watch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<super::watch::Watch>,
    /// Roll out by region or pool, one wave at a time ([`super::waves`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<super::waves::Waves>,
}

/// The largest holdback a plan may keep on the old stable, in basis points (10%).
pub const MAX_HOLDBACK_BP: u16 = 1_000;

/// One step of a plan. YAML: `- canary: {weight: 1%, min_duration: 5m, min_requests: 500}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Step {
    Canary(CanaryStep),
}

/// Send `weight` of the (non-excluded) traffic to the candidate and wait for the gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CanaryStep {
    pub weight: Percent,
    /// Least time at this step before its gate can hold. `0s` when omitted.
    #[serde(default)]
    pub min_duration: DurationSpec,
    /// Least canary requests served during this step before its gate can hold.
    #[serde(default)]
    pub min_requests: u64,
    /// What the guardrail verdicts must show before the gate holds. When omitted: `pass` at
    /// the final step and at a weight of 50% or more, `no_fail` before (`Plan::requirement`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<Requirement>,
}

/// What a step's gate asks of the (non-shadow) guardrail verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Requirement {
    /// Every verdict is `pass`: each guardrail was shown not worse than its bound allows.
    Pass,
    /// No verdict is `fail`: nothing was shown harmful (inconclusive is fine).
    NoFail,
}

impl Requirement {
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::Pass => "pass",
            Requirement::NoFail => "no_fail",
        }
    }
}

impl Step {
    pub fn canary(&self) -> &CanaryStep {
        match self {
            Step::Canary(c) => c,
        }
    }
}

/// Who moves a release past a step whose gate holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Promotion {
    /// A person runs `serin release promote`.
    #[default]
    Manual,
    /// The server promotes as soon as the gate holds (and it always needs requests, never
    /// time alone: see [`Plan::validate`]).
    Auto,
}

/// What a confirmed guardrail failure does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OnFailure {
    /// Drain the candidate at once.
    #[default]
    Rollback,
    /// Freeze the weight and wait for a person.
    Halt,
}

/// A notification target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notify {
    pub webhook: String,
}

/// Why a plan is refused: where (a JSON pointer into the plan and, for YAML errors, the
/// line) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    /// JSON pointer of the offending value (`/steps/1/canary/weight`); empty for the whole
    /// document or when unknown.
    pub pointer: String,
    /// `line L, column C` when the YAML itself does not parse.
    pub location: Option<String>,
    /// Stable code: `invalid_yaml`, `unknown_field`, `missing_field`, `invalid_field`,
    /// `invalid_plan`.
    pub code: &'static str,
    pub message: String,
}

impl PlanError {
    pub(super) fn invalid(pointer: impl Into<String>, message: impl Into<String>) -> PlanError {
        PlanError {
            pointer: pointer.into(),
            location: None,
            code: "invalid_plan",
            message: message.into(),
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.location, self.pointer.is_empty()) {
            (Some(loc), _) => write!(f, "plan {loc}: {}", self.message),
            (None, false) => write!(f, "plan {}: {}", self.pointer, self.message),
            (None, true) => write!(f, "plan: {}", self.message),
        }
    }
}

impl std::error::Error for PlanError {}

impl Plan {
    /// Parses `plan.yaml`. YAML syntax errors carry the line; shape errors (unknown or
    /// missing fields, bad values) carry the JSON pointer of the field. Does not validate:
    /// call [`Plan::validate`] too.
    pub fn parse_yaml(text: &str) -> Result<Plan, PlanError> {
        let value: Value = serde_saphyr::from_str(text).map_err(|e| PlanError {
            pointer: String::new(),
            location: yaml_location(&e),
            code: "invalid_yaml",
            message: yaml_message(&e),
        })?;
        Plan::from_value(value)
    }

    /// Parses and validates.
    pub fn parse_and_validate(text: &str) -> Result<Plan, PlanError> {
        let plan = Plan::parse_yaml(text)?;
        plan.validate()?;
        Ok(plan)
    }

    /// Reads a plan from its JSON form (what the API carries), errors located by pointer.
    pub fn from_value(value: Value) -> Result<Plan, PlanError> {
        if value.is_null() {
            return Err(PlanError {
                pointer: String::new(),
                location: None,
                code: "missing_field",
                message: "the plan is empty; it needs at least `steps`".to_owned(),
            });
        }
        serde_path_to_error::deserialize::<_, Plan>(value).map_err(|e| {
            let pointer = crate::pointer::from_path(e.path());
            let message = e.inner().to_string();
            let code = if message.starts_with("unknown field") {
                "unknown_field"
            } else if message.starts_with("missing field") {
                "missing_field"
            } else {
                "invalid_field"
            };
            PlanError {
                pointer,
                location: None,
                code,
                message,
            }
        })
    }

    /// The guardrails in force: the plan's block, or the SPEC example block when absent.
    pub fn guardrails(&self) -> GuardrailConfig {
        self.guardrails
            .clone()
            .unwrap_or_else(GuardrailConfig::spec_default)
    }

    /// The plan's steps as the release runs them: `steps` itself, or with `waves` every
    /// wave's steps in wave order ([`super::waves::Waves::stages`]). A release's `step`
    /// indexes this list.
    pub fn stages(&self) -> Vec<Stage> {
        match &self.waves {
            Some(w) => w.stages(&self.steps),
            None => {
                let n = self.steps.len();
                self.steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Stage {
                        wave: None,
                        step: s.canary().clone(),
                        last_of_wave: i + 1 == n,
                    })
                    .collect()
            }
        }
    }

    /// Stage `i` of [`Plan::stages`].
    pub fn stage(&self, i: usize) -> Option<Stage> {
        match &self.waves {
            Some(_) => self.stages().into_iter().nth(i),
            None => self.steps.get(i).map(|s| Stage {
                wave: None,
                step: s.canary().clone(),
                last_of_wave: i + 1 == self.steps.len(),
            }),
        }
    }

    /// The waves as the release runs them (the one box first); empty without `waves`.
    pub fn wave_defs(&self) -> Vec<super::waves::WaveDef> {
        self.waves
            .as_ref()
            .map(|w| w.waves(&self.steps))
            .unwrap_or_default()
    }

    /// Index of the final stage (`None` for a plan without steps).
    pub fn last_step(&self) -> Option<usize> {
        match &self.waves {
            Some(_) => self.stages().len().checked_sub(1),
            None => self.steps.len().checked_sub(1),
        }
    }

    /// What stage `i`'s gate asks of the verdicts: its own `require`, else `pass` for the
    /// final step and any step routing half the traffic or more (half of a wave, for a
    /// waved plan: where most of its users would meet a harm that was merely not
    /// detected), `no_fail` for the small early steps.
    pub fn requirement(&self, i: usize) -> Requirement {
        let Some(stage) = self.stage(i) else {
            return Requirement::Pass;
        };
        let c = &stage.step;
        if let Some(r) = c.require {
            return r;
        }
        if stage.wave.is_some() && c.weight == Percent::FULL {
            // A wave at 100% has no control of its own to compare with (other waves run
            // elsewhere, so they are no control for it): its earlier steps were its evidence.
            return Requirement::NoFail;
        }
        if Some(i) == self.last_step() || c.weight.basis_points() >= 5_000 {
            Requirement::Pass
        } else {
            Requirement::NoFail
        }
    }

    /// The candidate's share of traffic at stage `i` (of its wave's traffic, for a waved
    /// plan): the step's weight, less the holdback at the final step.
    pub fn routed_weight(&self, i: usize) -> Option<Percent> {
        let weight = self.stage(i)?.step.weight;
        match self.holdback {
            Some(h) if Some(i) == self.last_step() => Some(
                Percent::from_basis_points(u32::from(
                    weight.basis_points().saturating_sub(h.basis_points()),
                ))
                .unwrap_or(weight),
            ),
            _ => Some(weight),
        }
    }

    /// Refuses plans that cannot run as meant:
    /// - at least one step; weights strictly increasing, each above 0% (and at most 100%,
    ///   which parsing already enforces);
    /// - every step waits for something: `min_duration` or `min_requests` above zero;
    /// - with `promotion: auto`, every step needs `min_requests >= 1`: time alone never
    ///   promotes (a canary that advances on a timer is only a slow rollout);
    /// - webhooks are `http://` or `https://` URLs with a host, at most 2048 characters,
    ///   without spaces or control characters;
    /// - the guardrails block passes [`GuardrailConfig::validate`];
    /// - excluded tenants are non-empty and carry no surrounding whitespace;
    /// - a holdback is above 0% and at most 10%, needs a final weight of 100%, and every
    ///   earlier step stays below `100% - holdback` (routing only ever grows).
    pub fn validate(&self) -> Result<(), PlanError> {
        if let Some(w) = &self.waves {
            self.validate_waved(w)?;
        } else {
            self.validate_steps()?;
        }
        self.check_holdback()?;
        for (i, n) in self.notify.iter().enumerate() {
            check_webhook(&n.webhook)
                .map_err(|m| PlanError::invalid(format!("/notify/{i}/webhook"), m))?;
        }
        if let Some(g) = &self.guardrails {
            g.validate().map_err(|e| {
                PlanError::invalid(format!("/guardrails{}", e.pointer), e.reason.clone())
            })?;
        }
        if let Some(w) = &self.watch {
            w.validate()
                .map_err(|(p, m)| PlanError::invalid(format!("/watch{p}"), m))?;
        }
        self.check_excluded()
    }

    /// A waved plan: the waves themselves, each wave's resolved steps, the plan's own steps
    /// where a wave inherits them, and the rules every stage keeps (it waits for something;
    /// with `promotion: auto` it needs requests).
    fn validate_waved(&self, w: &super::waves::Waves) -> Result<(), PlanError> {
        w.validate()?;
        let inherits = w.list.iter().any(|x| x.steps.is_none() && !x.open);
        if inherits && self.steps.is_empty() {
            return Err(PlanError::invalid(
                "/steps",
                "a wave without its own steps (and not open: true) runs the plan's steps, and the plan has none",
            ));
        }
        w.validate_steps(&self.steps)?;
        if self.holdback.is_some() {
            return Err(PlanError::invalid(
                "/holdback",
                "a waved plan keeps its control inside each wave until that wave's last step; holdback applies to plans without waves",
            ));
        }
        for def in w.waves(&self.steps) {
            for (j, c) in def.steps.iter().enumerate() {
                if c.min_duration.is_zero() && c.min_requests == 0 {
                    return Err(PlanError::invalid(
                        "/waves",
                        format!(
                            "wave {} step {} waits for nothing: give it min_duration or min_requests (a wave's last step takes the waves' bake and min_outcomes)",
                            def.name,
                            j + 1
                        ),
                    ));
                }
                if self.promotion == Promotion::Auto && c.min_requests == 0 {
                    return Err(PlanError::invalid(
                        "/waves",
                        format!(
                            "wave {} step {}: promotion: auto needs min_requests of at least 1 on every step (set min_outcomes, or min_requests on the step)",
                            def.name,
                            j + 1
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_steps(&self) -> Result<(), PlanError> {
        if self.steps.is_empty() {
            return Err(PlanError::invalid(
                "/steps",
                "a plan needs at least one step",
            ));
        }
        let mut previous: Option<Percent> = None;
        for (i, step) in self.steps.iter().enumerate() {
            let c = step.canary();
            let p = format!("/steps/{i}/canary");
            if c.weight == Percent::ZERO {
                return Err(PlanError::invalid(
                    format!("{p}/weight"),
                    "weight must be above 0%",
                ));
            }
            if let Some(prev) = previous
                && c.weight <= prev
            {
                return Err(PlanError::invalid(
                    format!("{p}/weight"),
                    format!(
                        "weights must increase from step to step: {} is not above the previous step's {prev}",
                        c.weight
                    ),
                ));
            }
            previous = Some(c.weight);
            if c.min_duration.is_zero() && c.min_requests == 0 {
                return Err(PlanError::invalid(
                    p,
                    "each step needs min_duration or min_requests above zero",
                ));
            }
            if self.promotion == Promotion::Auto && c.min_requests == 0 {
                return Err(PlanError::invalid(
                    format!("{p}/min_requests"),
                    "promotion: auto needs min_requests of at least 1 on every step (time alone never promotes)",
                ));
            }
        }
        Ok(())
    }

    fn check_excluded(&self) -> Result<(), PlanError> {
        let excluded = self.exclude_tenants.len();
        if excluded > crate::decision::MAX_LIST_VALUES {
            return Err(PlanError::invalid(
                "/exclude_tenants",
                format!(
                    "the plan excludes {excluded} tenants; at most {} are allowed",
                    crate::decision::MAX_LIST_VALUES
                ),
            ));
        }
        for (i, t) in self.exclude_tenants.iter().enumerate() {
            if t.len() > crate::decision::MAX_LIST_VALUE_BYTES {
                return Err(PlanError::invalid(
                    format!("/exclude_tenants/{i}"),
                    format!(
                        "tenant names are at most {} bytes",
                        crate::decision::MAX_LIST_VALUE_BYTES
                    ),
                ));
            }
            if t.trim().is_empty() {
                return Err(PlanError::invalid(
                    format!("/exclude_tenants/{i}"),
                    "tenant names must not be empty",
                ));
            }
            if t.trim() != t {
                return Err(PlanError::invalid(
                    format!("/exclude_tenants/{i}"),
                    format!("tenant {t:?} has surrounding whitespace"),
                ));
            }
        }
        Ok(())
    }
}

impl Plan {
    fn check_holdback(&self) -> Result<(), PlanError> {
        let Some(h) = self.holdback else {
            return Ok(());
        };
        if h == Percent::ZERO || h.basis_points() > MAX_HOLDBACK_BP {
            return Err(PlanError::invalid(
                "/holdback",
                format!("holdback must be above 0% and at most 10%, not {h}"),
            ));
        }
        let last = self.last_step().unwrap_or(0);
        let final_weight = self.steps.get(last).map(|s| s.canary().weight);
        if final_weight != Some(Percent::FULL) {
            return Err(PlanError::invalid(
                "/holdback",
                "a holdback needs a final step of weight 100% (it keeps a share of that step on the old stable)",
            ));
        }
        let routed = self.routed_weight(last).unwrap_or(Percent::FULL);
        for (i, step) in self.steps.iter().enumerate().take(last) {
            let w = step.canary().weight;
            if w >= routed {
                return Err(PlanError::invalid(
                    format!("/steps/{i}/canary/weight"),
                    format!(
                        "with holdback {h} the final step routes {routed}; earlier steps must stay below it, not {w}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `line L, column C` of a serde-saphyr error, if known.
fn yaml_location(e: &serde_saphyr::Error) -> Option<String> {
    let loc = e.location()?;
    if loc.line() == 0 {
        return None;
    }
    Some(format!("line {}, column {}", loc.line(), loc.column()))
}

/// The first line of a serde-saphyr error, without snippet or location suffix.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    let trimmed = match first.rfind(" at line ") {
        Some(idx) => first.get(..idx).unwrap_or(first),
        None => first,
    };
    trimmed.trim_end_matches(':').trim().to_owned()
}

fn check_webhook(url: &str) -> Result<(), String> {
    if url.chars().count() > MAX_WEBHOOK_CHARS {
        return Err(format!(
            "webhook URL is longer than {MAX_WEBHOOK_CHARS} characters"
        ));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("webhook {url:?} must be an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("webhook {url:?} has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "webhook {url:?} contains spaces or control characters"
        ));
    }
    Ok(())
}
