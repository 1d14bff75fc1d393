//! The capability catalog: what each tool of a bundle can do to the world, and what changes
//! in that between two bundles (`serin bundle diff`, `serin capabilities`, the release report,
//! and the approval policy, which asks for an approver when a change
//! [needs approval](CapabilityChange::needs_approval)).
//!
//! A tool without a declared capability is treated as [`EffectClass::Write`]: an unknown risk
//! is never taken for read-only.
//!
//! # Schema widening
//! A tool's `input_schema` is compared structurally, keyword by keyword, recursing into
//! `properties`, `items` and object-valued `additionalProperties`. It is *widened* (accepts
//! arguments it refused before) when:
//! - a property is added to `properties`, or one is removed while `additionalProperties` is
//!   not `false` (its constraints are dropped);
//! - an entry of `required` is removed;
//! - `enum` gains a value or is removed; `const`, `pattern`, `format` are removed;
//! - `maximum`, `exclusiveMaximum`, `maxLength`, `maxItems`, `maxProperties` are raised or
//!   removed; `minimum`, `exclusiveMinimum`, `minLength`, `minItems`, `minProperties` are
//!   lowered or removed;
//! - `additionalProperties` goes from `false` (or a schema) to `true` or absent;
//! - `type` gains a member;
//! - any other validation keyword is removed, or changes in a way these rules do not classify
//!   (`pattern` edited, `anyOf` rewritten).
//!
//! The mirror images narrow. Annotations (`description`, `title`, `default`, `examples`,
//! `$comment`, `deprecated`, `readOnly`, `writeOnly`) never count. A change that both widens
//! and narrows counts as widened: the approval question is whether anything new is allowed.
//!
//! # Limits
//! Limits are upper bounds: a higher number, or a limit removed, allows more (`LimitRaised`);
//! a lower number, or a limit added, allows less (`LimitLowered`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::json;
use super::model::{Bundle, Tool};
pub use serin_engine::bundle::{Capability, EffectClass};

/// The class a tool is treated as: its declared effect, or [`EffectClass::Write`] when it
/// declares none.
pub fn effective_class(tool: &Tool) -> EffectClass {
    tool.capability
        .as_ref()
        .map_or(EffectClass::Write, |c| c.effect)
}

/// One difference in what a tool can do, between two bundles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapabilityChange {
    /// The tool's name.
    pub tool: String,
    /// What changed.
    pub kind: ChangeKind,
    /// The tool's (effective) class in the newer bundle; for `removed`, in the older one.
    pub class: EffectClass,
    /// One line for humans: `added irreversible tool refund (owner payments-team, max_amount 500)`.
    pub detail: String,
}

/// What kind of capability change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A tool only in the newer bundle.
    Added,
    /// A tool only in the older bundle.
    Removed,
    /// The effect class went up (`read` → `write`, undeclared → `irreversible`).
    ClassRaised,
    /// The effect class went down.
    ClassLowered,
    /// The input schema accepts arguments it refused before.
    SchemaWidened,
    /// The input schema only refuses more.
    SchemaNarrowed,
    /// A limit went up or was removed.
    LimitRaised,
    /// A limit went down or was added.
    LimitLowered,
    /// The owner changed (or was declared or dropped).
    OwnerChanged,
}

impl ChangeKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::ClassRaised => "class_raised",
            ChangeKind::ClassLowered => "class_lowered",
            ChangeKind::SchemaWidened => "schema_widened",
            ChangeKind::SchemaNarrowed => "schema_narrowed",
            ChangeKind::LimitRaised => "limit_raised",
            ChangeKind::LimitLowered => "limit_lowered",
            ChangeKind::OwnerChanged => "owner_changed",
        }
    }

    /// Whether this kind adds to or widens what a tool may do.
    fn widens(self) -> bool {
        matches!(
            self,
            ChangeKind::Added
                | ChangeKind::ClassRaised
                | ChangeKind::SchemaWidened
                | ChangeKind::LimitRaised
        )
    }

    fn rank(self) -> u8 {
        match self {
            ChangeKind::Added => 0,
            ChangeKind::ClassRaised => 1,
            ChangeKind::SchemaWidened => 2,
            ChangeKind::LimitRaised => 3,
            ChangeKind::OwnerChanged => 4,
            ChangeKind::ClassLowered => 5,
            ChangeKind::SchemaNarrowed => 6,
            ChangeKind::LimitLowered => 7,
            ChangeKind::Removed => 8,
        }
    }
}

impl CapabilityChange {
    /// True when the change adds or widens a `write` or `irreversible` capability: a tool
    /// added, its class raised, its schema widened or a limit raised, with the class (after
    /// the change) at least `write`.
    pub fn needs_approval(&self) -> bool {
        self.kind.widens() && self.class >= EffectClass::Write
    }
}

/// `irreversible tool refund (owner payments-team, max_amount 500)`: a tool's capability on
/// one line; an undeclared one reads `write (undeclared)`.
pub fn describe(tool: &Tool) -> String {
    let class = effective_class(tool);
    let mut s = match &tool.capability {
        Some(_) => format!("{class} tool {}", tool.name),
        None => format!("{class} (undeclared) tool {}", tool.name),
    };
    let mut extras = Vec::new();
    if let Some(cap) = &tool.capability {
        if let Some(owner) = &cap.owner {
            extras.push(format!("owner {owner}"));
        }
        extras.extend(cap.limits.iter().map(|(k, v)| format!("{k} {v}")));
    }
    if !extras.is_empty() {
        let _ = write!(s, " ({})", extras.join(", "));
    }
    s
}

/// Every capability change from `from` to `to`: those needing approval first, then by class
/// (highest first), tool name and kind.
pub fn changes(from: &Bundle, to: &Bundle) -> Vec<CapabilityChange> {
    let old: BTreeMap<&str, &Tool> = from.tools.iter().map(|t| (t.name.as_str(), t)).collect();
    let new: BTreeMap<&str, &Tool> = to.tools.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut out = Vec::new();
    for (name, t) in &new {
        if !old.contains_key(name) {
            out.push(CapabilityChange {
                tool: (*name).to_owned(),
                kind: ChangeKind::Added,
                class: effective_class(t),
                detail: format!("added {}", describe(t)),
            });
        }
    }
    for (name, t) in &old {
        match new.get(name) {
            None => out.push(CapabilityChange {
                tool: (*name).to_owned(),
                kind: ChangeKind::Removed,
                class: effective_class(t),
                detail: format!("removed {}", describe(t)),
            }),
            Some(n) => tool_changes(t, n, &mut out),
        }
    }
    out.sort_by(|a, b| {
        b.needs_approval()
            .cmp(&a.needs_approval())
            .then(b.class.cmp(&a.class))
            .then_with(|| a.tool.cmp(&b.tool))
            .then(a.kind.rank().cmp(&b.kind.rank()))
            .then_with(|| a.detail.cmp(&b.detail))
    });
    out
}

fn tool_changes(old: &Tool, new: &Tool, out: &mut Vec<CapabilityChange>) {
    let name = &new.name;
    let (was, is) = (effective_class(old), effective_class(new));
    let mut push = |kind, detail: String| {
        out.push(CapabilityChange {
            tool: name.clone(),
            kind,
            class: is,
            detail,
        });
    };
    let label = |t: &Tool| match &t.capability {
        Some(c) => c.effect.as_str().to_owned(),
        None => "write (undeclared)".to_owned(),
    };
    if is > was {
        push(
            ChangeKind::ClassRaised,
            format!("tool {name}: class {} → {}", label(old), label(new)),
        );
    } else if is < was {
        push(
            ChangeKind::ClassLowered,
            format!("tool {name}: class {} → {}", label(old), label(new)),
        );
    }

    let shift = schema_shift(&old.input_schema, &new.input_schema);
    if !shift.widened.is_empty() {
        push(
            ChangeKind::SchemaWidened,
            format!(
                "{is} tool {name}: schema widened: {}",
                shorten(&shift.widened)
            ),
        );
    } else if !shift.narrowed.is_empty() {
        push(
            ChangeKind::SchemaNarrowed,
            format!(
                "{is} tool {name}: schema narrowed: {}",
                shorten(&shift.narrowed)
            ),
        );
    }

    let empty = BTreeMap::new();
    let old_limits = old.capability.as_ref().map_or(&empty, |c| &c.limits);
    let new_limits = new.capability.as_ref().map_or(&empty, |c| &c.limits);
    let keys: BTreeSet<&String> = old_limits.keys().chain(new_limits.keys()).collect();
    for key in keys {
        let (a, b) = (old_limits.get(key), new_limits.get(key));
        let text = |v: Option<&serde_json::Number>| v.map_or("none".to_owned(), |n| n.to_string());
        let kind = match (a.and_then(|n| n.as_f64()), b.and_then(|n| n.as_f64())) {
            (Some(x), Some(y)) if y > x => Some(ChangeKind::LimitRaised),
            (Some(x), Some(y)) if y < x => Some(ChangeKind::LimitLowered),
            (Some(_), None) => Some(ChangeKind::LimitRaised),
            (None, Some(_)) => Some(ChangeKind::LimitLowered),
            _ => None,
        };
        if let Some(kind) = kind {
            push(
                kind,
                format!("{is} tool {name}: {key} {} → {}", text(a), text(b)),
            );
        }
    }

    let owner = |t: &Tool| t.capability.as_ref().and_then(|c| c.owner.clone());
    let (a, b) = (owner(old), owner(new));
    if a != b {
        push(
            ChangeKind::OwnerChanged,
            format!(
                "{is} tool {name}: owner {} → {}",
                a.as_deref().unwrap_or("none"),
                b.as_deref().unwrap_or("none")
            ),
        );
    }
}

/// At most three reasons, then how many more.
fn shorten(reasons: &[String]) -> String {
    let mut shown: Vec<&str> = reasons.iter().take(3).map(String::as_str).collect();
    let more = reasons.len().saturating_sub(3);
    let tail = format!("and {more} more");
    if more > 0 {
        shown.push(&tail);
    }
    shown.join("; ")
}

/// What comparing two schemas found, each reason naming its location (a JSON pointer into
/// `input_schema`).
#[derive(Debug, Default, PartialEq)]
pub struct SchemaShift {
    /// Reasons the newer schema accepts more.
    pub widened: Vec<String>,
    /// Reasons the newer schema accepts less.
    pub narrowed: Vec<String>,
}

/// Compares two JSON Schemas by the rules in the [module docs](self).
pub fn schema_shift(old: &Value, new: &Value) -> SchemaShift {
    let mut shift = SchemaShift::default();
    compare(&mut shift, "", old, new, 0);
    shift
}

/// Nesting past this is compared as a whole, which keeps hostile schemas cheap.
const MAX_DEPTH: usize = 64;

const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
];
const UPPER: &[&str] = &[
    "maximum",
    "exclusiveMaximum",
    "maxLength",
    "maxItems",
    "maxProperties",
];
const LOWER: &[&str] = &[
    "minimum",
    "exclusiveMinimum",
    "minLength",
    "minItems",
    "minProperties",
];

fn at(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

fn compare(s: &mut SchemaShift, path: &str, old: &Value, new: &Value, depth: usize) {
    if old == new {
        return;
    }
    let (Value::Object(a), Value::Object(b)) = (old, new) else {
        // Boolean schemas, or a schema replaced by something else: `true` accepts everything,
        // `false` nothing; anything else is unclassified.
        match (old, new) {
            (_, Value::Bool(true)) => s.widened.push(format!("{} accepts anything", at(path))),
            (_, Value::Bool(false)) => s.narrowed.push(format!("{} accepts nothing", at(path))),
            (Value::Bool(true), _) => s.narrowed.push(format!("{} constrained", at(path))),
            _ => both(s, format!("{} replaced", at(path))),
        }
        return;
    };
    if depth >= MAX_DEPTH {
        both(
            s,
            format!("{} changed (nested too deep to compare)", at(path)),
        );
        return;
    }
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        let (x, y) = (a.get(key), b.get(key));
        if x == y || ANNOTATIONS.contains(&key.as_str()) {
            continue;
        }
        let here = json::join(path, key);
        match key.as_str() {
            "properties" => properties(s, path, a, b, depth),
            "required" => {
                let (was, is) = (strings(x), strings(y));
                for r in was.difference(&is) {
                    s.widened.push(format!("{here}: {r:?} no longer required"));
                }
                for r in is.difference(&was) {
                    s.narrowed.push(format!("{here}: {r:?} now required"));
                }
            }
            "enum" => match (x.and_then(Value::as_array), y.and_then(Value::as_array)) {
                (Some(was), Some(is)) => {
                    let added = is.iter().filter(|v| !was.contains(v)).count();
                    let removed = was.iter().filter(|v| !is.contains(v)).count();
                    if added > 0 {
                        s.widened.push(format!("{here}: {added} value(s) added"));
                    }
                    if removed > 0 {
                        s.narrowed
                            .push(format!("{here}: {removed} value(s) removed"));
                    }
                }
                _ => presence(s, &here, x, y),
            },
            "type" => {
                let (was, is) = (types(x), types(y));
                match (x, y) {
                    (Some(_), None) => s.widened.push(format!("{here} removed")),
                    (None, Some(_)) => s.narrowed.push(format!("{here} added")),
                    _ => {
                        for t in is.difference(&was) {
                            s.widened.push(format!("{here}: {t} allowed"));
                        }
                        for t in was.difference(&is) {
                            s.narrowed.push(format!("{here}: {t} no longer allowed"));
                        }
                    }
                }
            }
            "additionalProperties" => {
                let open = |v: Option<&Value>| matches!(v, None | Some(Value::Bool(true)));
                match (x, y) {
                    (Some(x @ Value::Object(_)), Some(y @ Value::Object(_))) => {
                        compare(s, &here, x, y, depth + 1);
                    }
                    _ if open(x) && open(y) => {}
                    _ if open(y) => s.widened.push(format!("{here}: other properties allowed")),
                    (Some(Value::Bool(false)), Some(_)) => {
                        s.widened.push(format!("{here}: other properties allowed"));
                    }
                    _ => s
                        .narrowed
                        .push(format!("{here}: other properties constrained")),
                }
            }
            "items" => match (x, y) {
                (Some(x @ (Value::Object(_) | Value::Bool(_))), Some(y))
                    if y.is_object() || y.is_boolean() =>
                {
                    compare(s, &here, x, y, depth + 1);
                }
                _ => presence(s, &here, x, y),
            },
            k if UPPER.contains(&k) => bound(s, &here, x, y, true),
            k if LOWER.contains(&k) => bound(s, &here, x, y, false),
            "patternProperties" => both(s, format!("{here} changed")),
            _ => presence(s, &here, x, y),
        }
    }
}

/// A property map: added properties widen; removed ones widen unless other properties are
/// refused (then the removed name is refused too); common ones recurse.
fn properties(
    s: &mut SchemaShift,
    path: &str,
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    depth: usize,
) {
    let base = json::join(path, "properties");
    let empty = Map::new();
    let was = a
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let is = b
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let closed = matches!(b.get("additionalProperties"), Some(Value::Bool(false)));
    let names: BTreeSet<&String> = was.keys().chain(is.keys()).collect();
    for name in names {
        let here = json::join(&base, name);
        match (was.get(name), is.get(name)) {
            (None, Some(_)) => s.widened.push(format!("{here} added")),
            (Some(_), None) if closed => s.narrowed.push(format!("{here} removed")),
            (Some(_), None) => s.widened.push(format!("{here} removed (unconstrained)")),
            (Some(x), Some(y)) => compare(s, &here, x, y, depth + 1),
            (None, None) => {}
        }
    }
}

/// A numeric bound; `upper` says whether a higher number allows more.
fn bound(s: &mut SchemaShift, here: &str, x: Option<&Value>, y: Option<&Value>, upper: bool) {
    let (wider, narrower) = match (x.and_then(Value::as_f64), y.and_then(Value::as_f64)) {
        (Some(a), Some(b)) if b > a => (upper, !upper),
        (Some(a), Some(b)) if b < a => (!upper, upper),
        (Some(_), None) if y.is_none() => (true, false),
        (None, Some(_)) if x.is_none() => (false, true),
        // Draft-4 boolean exclusives and other shapes: unclassified.
        _ => (true, true),
    };
    let text = |v: Option<&Value>| v.map_or("none".to_owned(), json::to_canonical_string);
    let reason = format!("{here} {} → {}", text(x), text(y));
    if wider {
        s.widened.push(reason.clone());
    }
    if narrower {
        s.narrowed.push(reason);
    }
}

/// Any other keyword: removing a constraint widens, adding one narrows, editing one is
/// unclassified.
fn presence(s: &mut SchemaShift, here: &str, x: Option<&Value>, y: Option<&Value>) {
    match (x, y) {
        (Some(_), None) => s.widened.push(format!("{here} removed")),
        (None, Some(_)) => s.narrowed.push(format!("{here} added")),
        _ => both(s, format!("{here} changed")),
    }
}

fn both(s: &mut SchemaShift, reason: String) {
    s.widened.push(reason.clone());
    s.narrowed.push(reason);
}

fn strings(v: Option<&Value>) -> BTreeSet<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn types(v: Option<&Value>) -> BTreeSet<&str> {
    match v {
        Some(Value::String(t)) => BTreeSet::from([t.as_str()]),
        other => strings(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str, cap: Option<Value>, schema: Value) -> Tool {
        Tool {
            name: name.into(),
            description: "d".into(),
            input_schema: schema,
            capability: cap.map(|c| serde_json::from_value(c).unwrap()),
        }
    }

    fn bundle(tools: Vec<Tool>) -> Bundle {
        Bundle {
            agent: "support".into(),
            model: serin_engine::bundle::ModelSpec {
                provider: "anthropic".into(),
                snapshot: "claude-opus-4-7-20260108".into(),
                params: BTreeMap::new(),
            },
            prompt: "p".into(),
            examples: Vec::new(),
            tools,
            eval_set: None,
            metadata: Default::default(),
        }
    }

    fn obj() -> Value {
        json!({"type": "object"})
    }

    #[test]
    fn an_added_irreversible_tool_needs_approval_and_comes_first() {
        let a = bundle(vec![tool("lookup", Some(json!({"effect": "read"})), obj())]);
        let b = bundle(vec![
            tool("lookup", Some(json!({"effect": "read"})), obj()),
            tool("note", Some(json!({"effect": "read"})), obj()),
            tool(
                "refund",
                Some(
                    json!({"effect": "irreversible", "owner": "payments-team", "limits": {"max_amount": 500}}),
                ),
                obj(),
            ),
        ]);
        let c = changes(&a, &b);
        assert_eq!(c.len(), 2, "{c:#?}");
        assert_eq!(c[0].tool, "refund");
        assert_eq!(c[0].kind, ChangeKind::Added);
        assert_eq!(c[0].class, EffectClass::Irreversible);
        assert!(c[0].needs_approval());
        assert_eq!(
            c[0].detail,
            "added irreversible tool refund (owner payments-team, max_amount 500)"
        );
        assert_eq!(c[1].tool, "note");
        assert!(!c[1].needs_approval());
        let back = changes(&b, &a);
        assert!(
            back.iter()
                .all(|c| c.kind == ChangeKind::Removed && !c.needs_approval())
        );
        assert_eq!(serde_json::to_value(&c[0]).unwrap()["kind"], json!("added"));
    }

    #[test]
    fn undeclared_is_write() {
        let t = tool("x", None, obj());
        assert_eq!(effective_class(&t), EffectClass::Write);
        let a = bundle(vec![t]);
        let b = bundle(vec![tool("x", Some(json!({"effect": "read"})), obj())]);
        let c = changes(&a, &b);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, ChangeKind::ClassLowered);
        let c = changes(&b, &a);
        assert_eq!(c[0].kind, ChangeKind::ClassRaised);
        assert!(c[0].needs_approval());
        assert_eq!(c[0].detail, "tool x: class read → write (undeclared)");
    }

    #[test]
    fn limits_owner_and_class_changes() {
        let a = bundle(vec![tool(
            "pay",
            Some(
                json!({"effect": "write", "owner": "a", "limits": {"max_amount": 500, "max_calls": 3}}),
            ),
            obj(),
        )]);
        let b = bundle(vec![tool(
            "pay",
            Some(
                json!({"effect": "irreversible", "owner": "b", "limits": {"max_amount": 1000, "max_items": 2}}),
            ),
            obj(),
        )]);
        let got: Vec<(ChangeKind, bool)> = changes(&a, &b)
            .iter()
            .map(|c| (c.kind, c.needs_approval()))
            .collect();
        assert_eq!(
            got,
            [
                (ChangeKind::ClassRaised, true),
                (ChangeKind::LimitRaised, true),
                (ChangeKind::LimitRaised, true),
                (ChangeKind::OwnerChanged, false),
                (ChangeKind::LimitLowered, false),
            ]
        );
        let details: Vec<String> = changes(&a, &b).into_iter().map(|c| c.detail).collect();
        assert!(details.contains(&"irreversible tool pay: max_calls 3 → none".to_owned()));
        assert!(details.contains(&"irreversible tool pay: max_amount 500 → 1000".to_owned()));
    }

    #[track_caller]
    fn widened(old: Value, new: Value) -> bool {
        let s = schema_shift(&old, &new);
        assert!(
            !s.widened.is_empty() || !s.narrowed.is_empty(),
            "no change found"
        );
        !s.widened.is_empty()
    }

    #[test]
    fn schema_rules() {
        let base = json!({
            "type": "object",
            "properties": {
                "amount": {"type": "integer", "minimum": 1, "maximum": 500},
                "reason": {"type": "string", "enum": ["a", "b"], "maxLength": 10},
                "items": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 3}
            },
            "required": ["amount", "reason"],
            "additionalProperties": false
        });
        let edit = |f: &dyn Fn(&mut Value)| {
            let mut v = base.clone();
            f(&mut v);
            v
        };
        let cases: Vec<(&str, Value, bool)> = vec![
            (
                "property added",
                edit(&|v| {
                    v["properties"]["note"] = json!({"type": "string"});
                }),
                true,
            ),
            (
                "required removed",
                edit(&|v| {
                    v["required"] = json!(["amount"]);
                }),
                true,
            ),
            (
                "required added",
                edit(&|v| {
                    v["required"] = json!(["amount", "reason", "items"]);
                }),
                false,
            ),
            (
                "enum grows",
                edit(&|v| {
                    v["properties"]["reason"]["enum"] = json!(["a", "b", "c"]);
                }),
                true,
            ),
            (
                "enum shrinks",
                edit(&|v| {
                    v["properties"]["reason"]["enum"] = json!(["a"]);
                }),
                false,
            ),
            (
                "enum dropped",
                edit(&|v| {
                    v["properties"]["reason"]
                        .as_object_mut()
                        .unwrap()
                        .remove("enum");
                }),
                true,
            ),
            (
                "maximum raised",
                edit(&|v| {
                    v["properties"]["amount"]["maximum"] = json!(1000);
                }),
                true,
            ),
            (
                "maximum lowered",
                edit(&|v| {
                    v["properties"]["amount"]["maximum"] = json!(100);
                }),
                false,
            ),
            (
                "maximum removed",
                edit(&|v| {
                    v["properties"]["amount"]
                        .as_object_mut()
                        .unwrap()
                        .remove("maximum");
                }),
                true,
            ),
            (
                "minimum lowered",
                edit(&|v| {
                    v["properties"]["amount"]["minimum"] = json!(0);
                }),
                true,
            ),
            (
                "minimum raised",
                edit(&|v| {
                    v["properties"]["amount"]["minimum"] = json!(5);
                }),
                false,
            ),
            (
                "maxLength raised",
                edit(&|v| {
                    v["properties"]["reason"]["maxLength"] = json!(20);
                }),
                true,
            ),
            (
                "nested items minLength removed",
                edit(&|v| {
                    v["properties"]["items"]["items"]
                        .as_object_mut()
                        .unwrap()
                        .remove("minLength");
                }),
                true,
            ),
            (
                "maxItems lowered",
                edit(&|v| {
                    v["properties"]["items"]["maxItems"] = json!(2);
                }),
                false,
            ),
            (
                "additionalProperties opened",
                edit(&|v| {
                    v.as_object_mut().unwrap().remove("additionalProperties");
                }),
                true,
            ),
            (
                "additionalProperties true",
                edit(&|v| {
                    v["additionalProperties"] = json!(true);
                }),
                true,
            ),
            (
                "type gains",
                edit(&|v| {
                    v["properties"]["amount"]["type"] = json!(["integer", "string"]);
                }),
                true,
            ),
            (
                "type changes",
                edit(&|v| {
                    v["properties"]["amount"]["type"] = json!("string");
                }),
                true,
            ),
            (
                "pattern added",
                edit(&|v| {
                    v["properties"]["reason"]["pattern"] = json!("^a");
                }),
                false,
            ),
            (
                "property removed while closed",
                edit(&|v| {
                    v["properties"].as_object_mut().unwrap().remove("items");
                }),
                false,
            ),
            (
                "widen and narrow",
                edit(&|v| {
                    v["properties"]["amount"]["maximum"] = json!(1000);
                    v["properties"]["amount"]["minimum"] = json!(5);
                }),
                true,
            ),
        ];
        for (name, new, want) in cases {
            assert_eq!(widened(base.clone(), new.clone()), want, "{name}");
            // The reverse of a pure narrowing is a widening.
            if !want {
                assert!(widened(new, base.clone()), "reverse of {name}");
            }
        }
        let described = edit(&|v| {
            v["properties"]["amount"]["description"] = json!("the amount in cents");
        });
        assert_eq!(schema_shift(&base, &described), SchemaShift::default());
    }

    #[test]
    fn a_widened_schema_of_a_read_tool_needs_no_approval() {
        let closed = json!({"type": "object", "properties": {}, "additionalProperties": false});
        let a = bundle(vec![tool(
            "r",
            Some(json!({"effect": "read"})),
            closed.clone(),
        )]);
        let b = bundle(vec![tool("r", Some(json!({"effect": "read"})), obj())]);
        let c = changes(&a, &b);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, ChangeKind::SchemaWidened);
        assert!(!c[0].needs_approval());
        let w = bundle(vec![tool(
            "r",
            Some(json!({"effect": "write", "owner": "o"})),
            obj(),
        )]);
        let v = bundle(vec![tool(
            "r",
            Some(json!({"effect": "write", "owner": "o"})),
            closed,
        )]);
        let c = changes(&v, &w);
        assert_eq!(c[0].kind, ChangeKind::SchemaWidened);
        assert!(c[0].needs_approval());
        assert!(
            c[0].detail
                .starts_with("write tool r: schema widened: /additionalProperties"),
            "{}",
            c[0].detail
        );
    }
}
