//! Flags: validation of a flag definition, and its compiled, allocation-free evaluation.
//!
//! Evaluation order (first that applies wins): disabled → `off`; a deny list naming the
//! request's user, tenant or workload → `off`; an allow list naming one → `on`; the first rule
//! whose condition holds decides (`on` for its `rollout` share of units, `off` for the rest);
//! otherwise the flag-wide `rollout` share is `on`. Shares bucket the unit chosen by the flag's
//! stickiness under the flag key as salt (Bucketing v1).
//!
//! A rule's condition needs the attribute: a request without it matches neither `in` nor
//! `not_in` (as LaunchDarkly does), so `tenant not_in [acme]` never targets tenant-less traffic.

use std::collections::BTreeSet;
use std::fmt;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::bucket::{bucket, in_share};
use super::engine::unit_key;
use super::model::{Attribute, Context, Flag, FlagRule, Operator, Percent, Stickiness, Targets};
use super::strset::StrSet;
use crate::slug;

/// Longest accepted flag description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// Deepest accepted `on`/`off` value (a scalar is depth 1, `[1]` depth 2). A snapshot nests a
/// flag value four levels down and every SDK's JSON parser has a recursion limit (serde_json's
/// is 128), so a value must stay far below it to be readable inside the snapshot.
pub const MAX_VALUE_DEPTH: usize = 32;

/// Largest accepted `on`/`off` value, in bytes of compact JSON.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Most rules one flag may have.
pub const MAX_RULES: usize = 100;

/// Most values one allow or deny list, or one rule, may name.
pub const MAX_LIST_VALUES: usize = 10_000;

/// Longest value an allow or deny list, or a rule, may name, in bytes.
pub const MAX_LIST_VALUE_BYTES: usize = 256;

/// Most flags one env may hold.
pub const MAX_FLAGS: usize = 1_000;

/// Why a flag definition was refused: the offending field as a JSON pointer into the flag
/// object, and a sentence naming the flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagError {
    pointer: String,
    message: String,
}

impl std::fmt::Display for FlagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FlagError {}

impl FlagError {
    fn new(pointer: impl Into<String>, message: impl Into<String>) -> FlagError {
        FlagError {
            pointer: pointer.into(),
            message: message.into(),
        }
    }

    /// JSON pointer of the offending field within the flag (`/rules/1/values`).
    pub fn pointer(&self) -> &str {
        &self.pointer
    }

    /// The complete sentence shown to the operator.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The attributes that allow and deny lists can name, with their `Targets` field.
const TARGET_FIELDS: [(Attribute, &str); 3] = [
    (Attribute::User, "users"),
    (Attribute::Tenant, "tenants"),
    (Attribute::Workload, "workloads"),
];

fn target_set(t: &Targets, a: Attribute) -> &BTreeSet<String> {
    match a {
        Attribute::Tenant => &t.tenants,
        Attribute::Workload => &t.workloads,
        // Only user, tenant and workload are listed in TARGET_FIELDS.
        Attribute::User | Attribute::Region | Attribute::Instance | Attribute::Pool => &t.users,
    }
}

/// The lowercase wire name of an attribute (`user`).
pub(crate) fn attribute_name(a: Attribute) -> &'static str {
    match a {
        Attribute::User => "user",
        Attribute::Tenant => "tenant",
        Attribute::Workload => "workload",
        Attribute::Region => "region",
        Attribute::Instance => "instance",
        Attribute::Pool => "pool",
    }
}

fn operator_name(op: Operator) -> &'static str {
    match op {
        Operator::In => "in",
        Operator::NotIn => "not_in",
    }
}

/// The nesting depth of a JSON value (a scalar is 1), computed without recursion so a value
/// nested deeper than any parser accepts cannot overflow the stack here.
pub fn value_depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, d + 1))),
            Value::Object(m) => stack.extend(m.values().map(|c| (c, d + 1))),
            _ => {}
        }
    }
    deepest
}

fn check_value(key: &str, field: &str, v: &Value) -> Result<(), FlagError> {
    let depth = value_depth(v);
    if depth > MAX_VALUE_DEPTH {
        return Err(FlagError::new(
            format!("/{field}"),
            format!(
                "The {field} value of flag {key} is nested {depth} levels deep; at most {MAX_VALUE_DEPTH} are allowed."
            ),
        ));
    }
    let bytes = serde_json::to_vec(v).map(|b| b.len()).map_err(|e| {
        FlagError::new(
            format!("/{field}"),
            format!("The {field} value of flag {key} cannot be encoded as JSON: {e}."),
        )
    })?;
    if bytes > MAX_VALUE_BYTES {
        return Err(FlagError::new(
            format!("/{field}"),
            format!(
                "The {field} value of flag {key} is {bytes} bytes of JSON; at most {MAX_VALUE_BYTES} are allowed."
            ),
        ));
    }
    Ok(())
}

fn check_list(
    key: &str,
    pointer: String,
    what: &str,
    values: &BTreeSet<String>,
) -> Result<(), FlagError> {
    if values.len() > MAX_LIST_VALUES {
        return Err(FlagError::new(
            pointer,
            format!(
                "{what} of flag {key} names {} values; at most {MAX_LIST_VALUES} are allowed.",
                values.len()
            ),
        ));
    }
    if let Some(long) = values.iter().find(|v| v.len() > MAX_LIST_VALUE_BYTES) {
        return Err(FlagError::new(
            pointer,
            format!(
                "{what} of flag {key} names a value of {} bytes; at most {MAX_LIST_VALUE_BYTES} are allowed.",
                long.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a flag definition: a valid key, a description of at most 500 characters, values and
/// lists within the documented limits, no value both allowed and denied, no rule without
/// values, and no rule that an earlier one always pre-empts.
pub fn validate_flag(flag: &Flag) -> Result<(), FlagError> {
    let key = &flag.key;
    slug::validate_flag_key(key).map_err(|e| FlagError::new("/key", format!("{e}.")))?;
    check_value(key, "on", &flag.on)?;
    check_value(key, "off", &flag.off)?;
    for (list, targets) in [("allow", &flag.allow), ("deny", &flag.deny)] {
        for (attr, field) in TARGET_FIELDS {
            check_list(
                key,
                format!("/{list}/{field}"),
                &format!("The {list} list of {field}"),
                target_set(targets, attr),
            )?;
        }
    }
    if flag.rules.len() > MAX_RULES {
        return Err(FlagError::new(
            "/rules",
            format!(
                "Flag {key} has {} rules; at most {MAX_RULES} are allowed.",
                flag.rules.len()
            ),
        ));
    }
    for (i, rule) in flag.rules.iter().enumerate() {
        check_list(
            key,
            format!("/rules/{i}/values"),
            &format!("Rule {i}"),
            &rule.values,
        )?;
    }
    if let Some(d) = &flag.description {
        let n = d.chars().count();
        if n > MAX_DESCRIPTION_CHARS {
            return Err(FlagError::new(
                "/description",
                format!(
                    "The description of flag {key} has {n} characters; at most {MAX_DESCRIPTION_CHARS} are allowed."
                ),
            ));
        }
    }
    for (attr, field) in TARGET_FIELDS {
        let denied = target_set(&flag.deny, attr);
        if let Some(both) = target_set(&flag.allow, attr)
            .iter()
            .find(|v| denied.contains(*v))
        {
            return Err(FlagError::new(
                format!("/allow/{field}"),
                format!(
                    "Flag {key} both allows and denies {} {both:?}; deny would win, so remove it from one of the lists.",
                    attribute_name(attr)
                ),
            ));
        }
    }
    for (i, rule) in flag.rules.iter().enumerate() {
        if rule.values.is_empty() {
            let why = match rule.op {
                Operator::In => "so it can never match",
                Operator::NotIn => {
                    "so it matches every request that has the attribute; use the flag-wide rollout instead"
                }
            };
            return Err(FlagError::new(
                format!("/rules/{i}/values"),
                format!(
                    "Rule {i} of flag {key} ({} {}) has no values, {why}.",
                    attribute_name(rule.attribute),
                    operator_name(rule.op)
                ),
            ));
        }
        if let Some(j) = flag
            .rules
            .iter()
            .take(i)
            .position(|earlier| preempts(earlier, rule))
        {
            return Err(FlagError::new(
                format!("/rules/{i}"),
                format!(
                    "Rule {i} of flag {key} can never match: rule {j} matches every request it would, and the first matching rule decides."
                ),
            ));
        }
    }
    Ok(())
}

/// Whether every request matching `later` also matches `earlier`.
fn preempts(earlier: &FlagRule, later: &FlagRule) -> bool {
    if earlier.attribute != later.attribute || earlier.op != later.op {
        return false;
    }
    match earlier.op {
        // v ∈ later ⇒ v ∈ earlier
        Operator::In => later.values.is_subset(&earlier.values),
        // v ∉ later ⇒ v ∉ earlier
        Operator::NotIn => earlier.values.is_subset(&later.values),
    }
}

/// The value a flag takes for one request, and why.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlagEvaluation<'s> {
    pub key: &'s str,
    /// The flag's `on` value if `on`, else its `off` value.
    pub value: &'s Value,
    pub on: bool,
    pub reason: FlagReason,
}

/// Why a flag evaluated the way it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagReason {
    /// The flag is disabled: `off` for everyone.
    Disabled,
    /// The request's attribute is on the deny list: `off`.
    Denied(Attribute),
    /// The request's attribute is on the allow list: `on`.
    Allowed(Attribute),
    /// Rule `index` (0-based) matched; `on` iff `bucket < rollout`.
    Rule {
        index: usize,
        bucket: u16,
        rollout: Percent,
    },
    /// No rule matched; `on` iff `bucket < rollout` (the flag-wide share).
    Rollout { bucket: u16, rollout: Percent },
}

impl FlagReason {
    /// A stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            FlagReason::Disabled => "disabled",
            FlagReason::Denied(_) => "denied",
            FlagReason::Allowed(_) => "allowed",
            FlagReason::Rule { .. } => "rule",
            FlagReason::Rollout { .. } => "rollout",
        }
    }
}

fn write_share(f: &mut fmt::Formatter<'_>, bucket: u16, share: Percent) -> fmt::Result {
    let (cmp, outcome) = if in_share(bucket, share) {
        ("<", "on")
    } else {
        (">=", "off")
    };
    write!(
        f,
        "bucket {bucket} {cmp} {} ({share}): {outcome}",
        share.basis_points()
    )
}

impl fmt::Display for FlagReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FlagReason::Disabled => f.write_str("the flag is disabled: off"),
            FlagReason::Denied(a) => {
                write!(f, "the {} is on the deny list: off", attribute_name(a))
            }
            FlagReason::Allowed(a) => {
                write!(f, "the {} is on the allow list: on", attribute_name(a))
            }
            FlagReason::Rule {
                index,
                bucket,
                rollout,
            } => {
                write!(f, "rule {index} matched; ")?;
                write_share(f, bucket, rollout)
            }
            FlagReason::Rollout { bucket, rollout } => {
                f.write_str("no rule matched; ")?;
                write_share(f, bucket, rollout)
            }
        }
    }
}

/// `{"code": "rule", "index": 0, "bucket": 317, "rollout": "50%"}`; `denied` and `allowed`
/// carry `attribute`.
impl Serialize for FlagReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("code", self.code())?;
        match self {
            FlagReason::Disabled => {}
            FlagReason::Denied(a) | FlagReason::Allowed(a) => m.serialize_entry("attribute", a)?,
            FlagReason::Rule {
                index,
                bucket,
                rollout,
            } => {
                m.serialize_entry("index", index)?;
                m.serialize_entry("bucket", bucket)?;
                m.serialize_entry("rollout", rollout)?;
            }
            FlagReason::Rollout { bucket, rollout } => {
                m.serialize_entry("bucket", bucket)?;
                m.serialize_entry("rollout", rollout)?;
            }
        }
        m.end()
    }
}

/// One allow or deny list, as a hash set so its cost does not grow with its size.
#[derive(Debug, Default)]
struct TargetSets {
    /// Indexed like `TARGET_FIELDS`; only non-empty sets are kept.
    sets: Vec<(Attribute, StrSet)>,
}

impl TargetSets {
    fn new(t: &Targets) -> TargetSets {
        TargetSets {
            sets: TARGET_FIELDS
                .iter()
                .map(|(a, _)| (*a, target_set(t, *a)))
                .filter(|(_, s)| !s.is_empty())
                .map(|(a, s)| (a, StrSet::new(s)))
                .collect(),
        }
    }

    fn find(&self, ctx: &Context<'_>) -> Option<Attribute> {
        self.sets
            .iter()
            .find_map(|(a, set)| ctx.attribute(*a).filter(|v| set.contains(v)).map(|_| *a))
    }
}

#[derive(Debug)]
struct CompiledRule {
    attribute: Attribute,
    op: Operator,
    values: StrSet,
    rollout: Percent,
}

impl CompiledRule {
    fn matches(&self, ctx: &Context<'_>) -> bool {
        match ctx.attribute(self.attribute) {
            None => false,
            Some(v) => self.values.contains(v) == (self.op == Operator::In),
        }
    }
}

/// A validated flag, ready to evaluate without allocating.
#[derive(Debug)]
pub(crate) struct CompiledFlag {
    key: String,
    enabled: bool,
    on: Value,
    off: Value,
    stickiness: Stickiness,
    deny: TargetSets,
    allow: TargetSets,
    rules: Vec<CompiledRule>,
    rollout: Percent,
}

impl CompiledFlag {
    pub(crate) fn new(flag: &Flag) -> Result<CompiledFlag, FlagError> {
        validate_flag(flag)?;
        Ok(CompiledFlag {
            key: flag.key.clone(),
            enabled: flag.enabled,
            on: flag.on.clone(),
            off: flag.off.clone(),
            stickiness: flag.stickiness,
            deny: TargetSets::new(&flag.deny),
            allow: TargetSets::new(&flag.allow),
            rules: flag
                .rules
                .iter()
                .map(|r| CompiledRule {
                    attribute: r.attribute,
                    op: r.op,
                    values: StrSet::new(&r.values),
                    rollout: r.rollout,
                })
                .collect(),
            rollout: flag.rollout,
        })
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn evaluate(&self, ctx: &Context<'_>) -> FlagEvaluation<'_> {
        let (on, reason) = self.decide(ctx);
        FlagEvaluation {
            key: &self.key,
            value: if on { &self.on } else { &self.off },
            on,
            reason,
        }
    }

    fn decide(&self, ctx: &Context<'_>) -> (bool, FlagReason) {
        if !self.enabled {
            return (false, FlagReason::Disabled);
        }
        if let Some(a) = self.deny.find(ctx) {
            return (false, FlagReason::Denied(a));
        }
        if let Some(a) = self.allow.find(ctx) {
            return (true, FlagReason::Allowed(a));
        }
        let (unit, _fell_back) = unit_key(self.stickiness, ctx);
        let b = bucket(&self.key, unit);
        match self.rules.iter().enumerate().find(|(_, r)| r.matches(ctx)) {
            Some((index, rule)) => (
                in_share(b, rule.rollout),
                FlagReason::Rule {
                    index,
                    bucket: b,
                    rollout: rule.rollout,
                },
            ),
            None => (
                in_share(b, self.rollout),
                FlagReason::Rollout {
                    bucket: b,
                    rollout: self.rollout,
                },
            ),
        }
    }
}
