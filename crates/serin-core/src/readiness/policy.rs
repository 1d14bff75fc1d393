//! The readiness policy file: its model, parsing, validation and JSON Schema.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::facts::computed_item;
use super::template::{SHADOW_PERIOD_KEY, template_item};
use super::{MAX_KEY_CHARS, is_valid_key};
use crate::decision::Percent;

/// Longest title of a custom item.
pub const MAX_TITLE_CHARS: usize = 200;

/// A readiness policy for one agent in one env. Unknown fields are refused everywhere.
///
/// Every key in `require`, `warn` and `block_if` must name a known item: a computed item, an
/// item of the template catalog, [`SHADOW_PERIOD_KEY`], or a custom item under `items`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Items that must pass before a release may start.
    #[serde(default)]
    pub require: Vec<String>,
    /// Items reported when they do not pass; they never block.
    #[serde(default)]
    pub warn: Vec<String>,
    /// Conditions that refuse the release whatever else passes.
    #[serde(default)]
    pub block_if: Vec<BlockRule>,
    #[serde(default)]
    pub rollout_mode: RolloutMode,
    #[serde(default)]
    pub settings: PolicySettings,
    /// Custom attested items, by key.
    #[serde(default)]
    pub items: BTreeMap<String, ItemDef>,
}

/// How the first exposure of a release must look.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutMode {
    /// `canary` (default) or `shadow`. `shadow` implies `shadow_required`.
    #[serde(default)]
    pub initial: InitialMode,
    /// The largest share the plan's first step may send to the candidate. Default 5%.
    #[serde(default = "default_max_exposure")]
    pub max_exposure: Percent,
    /// A shadow period must be attested (item [`SHADOW_PERIOD_KEY`], then required).
    #[serde(default)]
    pub shadow_required: bool,
    /// Tenants the release plan must exclude from the canary.
    #[serde(default)]
    pub high_value_tenants: Vec<String>,
}

impl Default for RolloutMode {
    fn default() -> RolloutMode {
        RolloutMode {
            initial: InitialMode::default(),
            max_exposure: default_max_exposure(),
            shadow_required: false,
            high_value_tenants: Vec::new(),
        }
    }
}

impl RolloutMode {
    /// Whether the policy asks for a shadow period (explicitly or through `initial: shadow`).
    pub fn needs_shadow(&self) -> bool {
        self.shadow_required || self.initial == InitialMode::Shadow
    }
}

fn default_max_exposure() -> Percent {
    Percent::from_basis_points(500).unwrap_or(Percent::ZERO)
}

/// The first mode of exposure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialMode {
    #[default]
    Canary,
    Shadow,
}

/// Thresholds of computed items.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// `rollback_drill_recent` passes when the last successful drill is at most this old.
    #[serde(default = "default_drill_days")]
    pub drill_max_age_days: u32,
    /// `trace_coverage` passes at or above this fraction (0..=1) of outcomes with a trace.
    #[serde(default = "default_trace_min")]
    pub trace_coverage_min: f64,
    /// Where `trace_coverage` counts the candidate's outcomes: the env a bundle passes
    /// through before this one (default `staging`). Outcomes of the last
    /// [`TRACE_COVERAGE_WINDOW_DAYS`] days count.
    #[serde(default = "default_trace_env")]
    pub trace_coverage_env: String,
    /// `offline_eval_passed` is required even when `require` does not list it, and a missing
    /// eval is `missing` rather than `n/a`.
    #[serde(default)]
    pub eval_required: bool,
}

impl Default for PolicySettings {
    fn default() -> PolicySettings {
        PolicySettings {
            drill_max_age_days: default_drill_days(),
            trace_coverage_min: default_trace_min(),
            trace_coverage_env: default_trace_env(),
            eval_required: false,
        }
    }
}

fn default_drill_days() -> u32 {
    7
}

fn default_trace_min() -> f64 {
    0.95
}

fn default_trace_env() -> String {
    "staging".to_owned()
}

/// How far back `trace_coverage` looks for outcomes.
pub const TRACE_COVERAGE_WINDOW_DAYS: u32 = 7;

/// Longest drill age a policy may allow.
pub const MAX_DRILL_AGE_DAYS: u32 = 365;

/// A custom attested item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemDef {
    pub title: String,
    /// Free text; the template uses the keys of [`super::CATEGORIES`].
    pub category: String,
    /// Who usually owns it (shown in the next action while evidence is missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_hint: Option<String>,
}

/// A status a `block_if: {item, status}` rule matches. `pass` and `n/a` are not offered: a
/// rule that blocks on success is a mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockStatus {
    Fail,
    Partial,
    Missing,
    Expired,
}

impl BlockStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockStatus::Fail => "fail",
            BlockStatus::Partial => "partial",
            BlockStatus::Missing => "missing",
            BlockStatus::Expired => "expired",
        }
    }
}

/// A condition that refuses the release. YAML, one of:
///
/// - `{item: KEY, status: fail|partial|missing|expired}`: the item (any kind) has that status;
/// - `{computed: KEY}`: the computed item does not pass;
/// - `{evidence_missing: KEY}`: the attested item has no current evidence (none or expired).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawBlockRule", into = "RawBlockRule")]
pub enum BlockRule {
    ItemStatus { item: String, status: BlockStatus },
    Computed(String),
    EvidenceMissing(String),
}

impl BlockRule {
    /// The item the rule looks at.
    pub fn key(&self) -> &str {
        match self {
            BlockRule::ItemStatus { item, .. } => item,
            BlockRule::Computed(k) | BlockRule::EvidenceMissing(k) => k,
        }
    }

    /// The rule as written, e.g. `computed: rollback_target_warm`.
    pub fn describe(&self) -> String {
        match self {
            BlockRule::ItemStatus { item, status } => {
                format!("item: {item}, status: {}", status.as_str())
            }
            BlockRule::Computed(k) => format!("computed: {k}"),
            BlockRule::EvidenceMissing(k) => format!("evidence_missing: {k}"),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlockRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    item: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<BlockStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    computed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    evidence_missing: Option<String>,
}

impl TryFrom<RawBlockRule> for BlockRule {
    type Error = String;

    fn try_from(r: RawBlockRule) -> Result<BlockRule, String> {
        match (r.item, r.status, r.computed, r.evidence_missing) {
            (Some(item), Some(status), None, None) => Ok(BlockRule::ItemStatus { item, status }),
            (Some(_), None, None, None) => {
                Err("`item` needs a `status` (fail, partial, missing or expired)".to_owned())
            }
            (None, None, Some(k), None) => Ok(BlockRule::Computed(k)),
            (None, None, None, Some(k)) => Ok(BlockRule::EvidenceMissing(k)),
            _ => Err(
                "a block_if rule is exactly one of {item: KEY, status: S}, {computed: KEY} or {evidence_missing: KEY}"
                    .to_owned(),
            ),
        }
    }
}

impl From<BlockRule> for RawBlockRule {
    fn from(b: BlockRule) -> RawBlockRule {
        let mut raw = RawBlockRule {
            item: None,
            status: None,
            computed: None,
            evidence_missing: None,
        };
        match b {
            BlockRule::ItemStatus { item, status } => {
                raw.item = Some(item);
                raw.status = Some(status);
            }
            BlockRule::Computed(k) => raw.computed = Some(k),
            BlockRule::EvidenceMissing(k) => raw.evidence_missing = Some(k),
        }
        raw
    }
}

/// Why a policy is refused: where (a JSON pointer and, for YAML syntax errors, the line)
/// and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// JSON pointer of the offending value (`/require/3`); empty for the whole document.
    pub pointer: String,
    /// `line L, column C` when the YAML itself does not parse.
    pub location: Option<String>,
    /// Stable code: `invalid_yaml`, `unknown_field`, `missing_field`, `invalid_field`,
    /// `unknown_item`, `invalid_policy`.
    pub code: &'static str,
    pub message: String,
}

impl PolicyError {
    fn new(code: &'static str, pointer: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError {
            pointer: pointer.into(),
            location: None,
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.location, self.pointer.is_empty()) {
            (Some(loc), _) => write!(f, "readiness policy {loc}: {}", self.message),
            (None, false) => write!(f, "readiness policy {}: {}", self.pointer, self.message),
            (None, true) => write!(f, "readiness policy: {}", self.message),
        }
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// Parses a policy YAML. Syntax errors carry the line; shape errors (unknown or missing
    /// fields, bad values such as `max_exposure: 150%`) the JSON pointer. An empty document
    /// is the empty policy. Does not validate: call [`Policy::validate`] too (or
    /// [`Policy::parse_and_validate`]).
    pub fn parse_yaml(text: &str) -> Result<Policy, PolicyError> {
        let value: Value = serde_saphyr::from_str(text).map_err(|e| PolicyError {
            pointer: String::new(),
            location: yaml_location(&e),
            code: "invalid_yaml",
            message: yaml_message(&e),
        })?;
        Policy::from_value(value)
    }

    /// Parses and validates.
    pub fn parse_and_validate(text: &str) -> Result<Policy, PolicyError> {
        let policy = Policy::parse_yaml(text)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Reads a policy from its JSON form (what the API carries), errors located by pointer.
    pub fn from_value(value: Value) -> Result<Policy, PolicyError> {
        if value.is_null() {
            return Ok(Policy::default());
        }
        serde_path_to_error::deserialize::<_, Policy>(value).map_err(|e| {
            let message = e.inner().to_string();
            let code = if message.starts_with("unknown field") {
                "unknown_field"
            } else if message.starts_with("missing field") {
                "missing_field"
            } else {
                "invalid_field"
            };
            PolicyError::new(code, crate::pointer::from_path(e.path()), message)
        })
    }

    /// Whether `key` names an item this policy can evaluate.
    pub fn knows(&self, key: &str) -> bool {
        computed_item(key).is_some()
            || template_item(key).is_some()
            || key == SHADOW_PERIOD_KEY
            || self.items.contains_key(key)
    }

    /// Refuses a policy that cannot be evaluated as written:
    /// - every key in `require`, `warn` and `block_if` names a known item (code
    ///   `unknown_item`: a condition that can never be evaluated);
    /// - no key twice in `require` or `warn`, nor in both;
    /// - `block_if: {computed: K}` names a computed item, `{evidence_missing: K}` an attested
    ///   one;
    /// - custom items have valid keys that do not shadow a computed item, a non-empty title
    ///   (at most 200 characters) and category;
    /// - `max_exposure` above 0%; `drill_max_age_days` 1..=365; `trace_coverage_min` in 0..=1;
    /// - high-value tenant names non-empty without surrounding whitespace, no duplicates.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (key, def) in &self.items {
            let p = format!("/items/{}", crate::pointer::escape(key));
            if !is_valid_key(key) {
                return Err(PolicyError::new(
                    "invalid_policy",
                    p,
                    format!(
                        "item key {key:?} must be snake_case: a lowercase letter, then lowercase letters, digits or _ (at most {MAX_KEY_CHARS})"
                    ),
                ));
            }
            if computed_item(key).is_some() {
                return Err(PolicyError::new(
                    "invalid_policy",
                    p,
                    format!("{key:?} is a computed item; custom items cannot redefine it"),
                ));
            }
            if def.title.trim().is_empty() || def.title.chars().count() > MAX_TITLE_CHARS {
                return Err(PolicyError::new(
                    "invalid_policy",
                    format!("{p}/title"),
                    format!("a title is 1 to {MAX_TITLE_CHARS} characters"),
                ));
            }
            if def.category.trim().is_empty() {
                return Err(PolicyError::new(
                    "invalid_policy",
                    format!("{p}/category"),
                    "category must not be empty",
                ));
            }
            if def
                .owner_hint
                .as_deref()
                .is_some_and(|o| o.trim().is_empty())
            {
                return Err(PolicyError::new(
                    "invalid_policy",
                    format!("{p}/owner_hint"),
                    "owner_hint must not be empty when present",
                ));
            }
        }
        let mut seen: BTreeMap<&str, String> = BTreeMap::new();
        for (list, keys) in [("require", &self.require), ("warn", &self.warn)] {
            for (i, key) in keys.iter().enumerate() {
                let p = format!("/{list}/{i}");
                self.check_known(key, &p)?;
                if let Some(first) = seen.insert(key, p.clone()) {
                    return Err(PolicyError::new(
                        "invalid_policy",
                        p,
                        format!("{key:?} is already listed at {first}"),
                    ));
                }
            }
        }
        for (i, rule) in self.block_if.iter().enumerate() {
            let p = format!("/block_if/{i}");
            let (field, key) = match rule {
                BlockRule::ItemStatus { item, .. } => ("item", item),
                BlockRule::Computed(k) => ("computed", k),
                BlockRule::EvidenceMissing(k) => ("evidence_missing", k),
            };
            let p = format!("{p}/{field}");
            self.check_known(key, &p)?;
            let is_computed = computed_item(key).is_some();
            match rule {
                BlockRule::Computed(_) if !is_computed => {
                    return Err(PolicyError::new(
                        "invalid_policy",
                        p,
                        format!(
                            "{key:?} is an attested item, not a computed one; use evidence_missing or item/status"
                        ),
                    ));
                }
                BlockRule::EvidenceMissing(_) if is_computed => {
                    return Err(PolicyError::new(
                        "invalid_policy",
                        p,
                        format!(
                            "{key:?} is computed by Serin and takes no evidence; use computed: {key}"
                        ),
                    ));
                }
                BlockRule::ItemStatus {
                    status: BlockStatus::Expired,
                    ..
                } if is_computed => {
                    return Err(PolicyError::new(
                        "invalid_policy",
                        format!("/block_if/{i}/status"),
                        format!(
                            "{key:?} is computed and never expires; this condition could never fire"
                        ),
                    ));
                }
                _ => {}
            }
        }
        let m = &self.rollout_mode;
        if m.max_exposure == Percent::ZERO {
            return Err(PolicyError::new(
                "invalid_policy",
                "/rollout_mode/max_exposure",
                "max_exposure must be above 0%",
            ));
        }
        let mut tenants = BTreeSet::new();
        for (i, t) in m.high_value_tenants.iter().enumerate() {
            let p = format!("/rollout_mode/high_value_tenants/{i}");
            if t.trim().is_empty() || t.trim() != t {
                return Err(PolicyError::new(
                    "invalid_policy",
                    p,
                    format!("tenant {t:?} must be non-empty without surrounding whitespace"),
                ));
            }
            if !tenants.insert(t) {
                return Err(PolicyError::new(
                    "invalid_policy",
                    p,
                    format!("tenant {t:?} is listed twice"),
                ));
            }
        }
        let s = &self.settings;
        if !(1..=MAX_DRILL_AGE_DAYS).contains(&s.drill_max_age_days) {
            return Err(PolicyError::new(
                "invalid_policy",
                "/settings/drill_max_age_days",
                format!("drill_max_age_days must be between 1 and {MAX_DRILL_AGE_DAYS}"),
            ));
        }
        if !(0.0..=1.0).contains(&s.trace_coverage_min) {
            return Err(PolicyError::new(
                "invalid_policy",
                "/settings/trace_coverage_min",
                "trace_coverage_min is a fraction between 0 and 1 (0.95 is 95%)",
            ));
        }
        if let Err(e) = crate::slug::validate_env(&s.trace_coverage_env) {
            return Err(PolicyError::new(
                "invalid_policy",
                "/settings/trace_coverage_env",
                e.to_string(),
            ));
        }
        Ok(())
    }

    fn check_known(&self, key: &str, pointer: &str) -> Result<(), PolicyError> {
        if self.knows(key) {
            return Ok(());
        }
        Err(PolicyError::new(
            "unknown_item",
            pointer,
            format!(
                "unknown item {key:?}: not a computed item, not in the template catalog and not defined under `items`, so it could never be evaluated"
            ),
        ))
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

/// The JSON Schema (draft 2020-12) of the policy file, hand-built to match the serde model.
/// It checks shape only; [`Policy::validate`] also checks that keys name known items.
pub fn policy_json_schema() -> Value {
    let key = json!({"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"});
    let percent = json!({
        "description": "A share such as \"5%\" or \"12.5%\" (at most two decimals); a bare number is percent.",
        "oneOf": [
            {"type": "string", "pattern": "^\\s*[0-9]{1,3}(\\.[0-9]{1,2})?\\s*%?\\s*$"},
            {"type": "number", "minimum": 0, "maximum": 100}
        ]
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://serin.dev/schemas/readiness-policy.schema.json",
        "title": "Serin readiness policy",
        "description": "Per agent and env: items that must pass, items only reported, and conditions that block a release.",
        "type": ["object", "null"],
        "additionalProperties": false,
        "properties": {
            "require": {
                "description": "Item keys that must pass before a release starts.",
                "type": "array", "items": {"$ref": "#/$defs/key"}
            },
            "warn": {
                "description": "Item keys reported when they do not pass; never block.",
                "type": "array", "items": {"$ref": "#/$defs/key"}
            },
            "block_if": {
                "description": "Conditions that refuse the release outright.",
                "type": "array", "items": {"$ref": "#/$defs/block_rule"}
            },
            "rollout_mode": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "initial": {"enum": ["canary", "shadow"], "default": "canary"},
                    "max_exposure": {"$ref": "#/$defs/percent", "default": "5%"},
                    "shadow_required": {"type": "boolean", "default": false},
                    "high_value_tenants": {"type": "array", "items": {"type": "string", "minLength": 1}}
                }
            },
            "settings": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "drill_max_age_days": {"type": "integer", "minimum": 1, "maximum": MAX_DRILL_AGE_DAYS, "default": 7},
                    "trace_coverage_min": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.95},
                    "trace_coverage_env": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$", "default": "staging"},
                    "eval_required": {"type": "boolean", "default": false}
                }
            },
            "items": {
                "description": "Custom attested items, by key.",
                "type": "object",
                "propertyNames": {"$ref": "#/$defs/key"},
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["title", "category"],
                    "properties": {
                        "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS},
                        "category": {"type": "string", "minLength": 1},
                        "owner_hint": {"type": "string", "minLength": 1}
                    }
                }
            }
        },
        "$defs": {
            "key": key,
            "percent": percent,
            "block_rule": {
                "oneOf": [
                    {
                        "type": "object", "additionalProperties": false,
                        "required": ["item", "status"],
                        "properties": {
                            "item": {"$ref": "#/$defs/key"},
                            "status": {"enum": ["fail", "partial", "missing", "expired"]}
                        }
                    },
                    {
                        "type": "object", "additionalProperties": false,
                        "required": ["computed"],
                        "properties": {"computed": {"$ref": "#/$defs/key"}}
                    },
                    {
                        "type": "object", "additionalProperties": false,
                        "required": ["evidence_missing"],
                        "properties": {"evidence_missing": {"$ref": "#/$defs/key"}}
                    }
                ]
            }
        }
    })
}
