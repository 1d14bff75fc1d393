//! What changed between two bundles (`serin bundle diff`).

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::capabilities::{self, CapabilityChange};
use super::json;
use super::model::{Bundle, Digest, Example, Tool, example_value, normalize_newlines, tool_value};

/// Everything that differs between two bundles. [`fmt::Display`] renders a report for humans;
/// `Serialize` gives the same content to `--output json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BundleDiff {
    /// Label of the old bundle (`support@3`, or agent and short digest).
    pub old_label: String,
    /// Label of the new bundle.
    pub new_label: String,
    /// Digest of the old bundle.
    pub old_digest: Digest,
    /// Digest of the new bundle.
    pub new_digest: Digest,
    /// What the tools can do that changed (`bundle::capabilities::changes`), those needing
    /// approval first. Shown before everything else; in JSON each carries `needs_approval`.
    #[serde(serialize_with = "with_approval")]
    pub capabilities: Vec<CapabilityChange>,
    /// The agent name, if it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<FieldChange>,
    /// Model changes.
    pub model: ModelDiff,
    /// Unified diff of the prompt (3 lines of context), if it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Tools added, removed or changed, by name.
    pub tools: Vec<ToolDiff>,
    /// Examples added, removed or changed, by file name.
    pub examples: Vec<ExampleDiff>,
    /// The eval set, if it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_set: Option<FieldChange>,
    /// Metadata fields that differ.
    pub metadata: Vec<FieldChange>,
}

fn with_approval<S: serde::Serializer>(
    changes: &[CapabilityChange],
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Row<'a> {
        #[serde(flatten)]
        change: &'a CapabilityChange,
        needs_approval: bool,
    }
    s.collect_seq(changes.iter().map(|c| Row {
        change: c,
        needs_approval: c.needs_approval(),
    }))
}

/// A scalar field before and after (`None` = absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The field (`snapshot`, `reviewer`, ...).
    pub field: String,
    /// Before.
    pub old: Option<String>,
    /// After.
    pub new: Option<String>,
}

/// Changes of the model spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ModelDiff {
    /// The provider, if it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<FieldChange>,
    /// The snapshot, if it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<FieldChange>,
    /// Parameter changes; paths are JSON pointers into `params` (`/temperature`).
    pub params: Vec<JsonChange>,
}

impl ModelDiff {
    /// Whether nothing about the model changed.
    pub fn is_empty(&self) -> bool {
        self.provider.is_none() && self.snapshot.is_none() && self.params.is_empty()
    }
}

/// Whether something was added, removed or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the new bundle.
    Added,
    /// Only in the old bundle.
    Removed,
    /// In both, different.
    Changed,
}

impl ChangeKind {
    fn sigil(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Changed => '~',
        }
    }
}

/// One changed location inside a JSON value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsonChange {
    /// JSON pointer of the location (`/input_schema/properties/amount/type`).
    pub path: String,
    /// Added, removed or changed.
    pub kind: ChangeKind,
    /// The old value, unless added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// The new value, unless removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// A tool that differs, by name.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolDiff {
    /// The tool's name.
    pub name: String,
    /// Added, removed or changed.
    pub kind: ChangeKind,
    /// For a changed tool: what changed, as pointers into the tool
    /// (`/description`, `/input_schema/required/1`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<JsonChange>,
}

/// An example that differs, by file name.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExampleDiff {
    /// The example's file name.
    pub name: String,
    /// Added, removed or changed.
    pub kind: ChangeKind,
    /// For a changed example: what changed, as pointers into it (`/messages/1/content`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<JsonChange>,
}

impl BundleDiff {
    /// Whether the two bundles have the same content.
    pub fn is_empty(&self) -> bool {
        self.agent.is_none()
            && self.capabilities.is_empty()
            && self.model.is_empty()
            && self.prompt.is_none()
            && self.tools.is_empty()
            && self.examples.is_empty()
            && self.eval_set.is_none()
            && self.metadata.is_empty()
    }
}

/// Compares two bundles, labelling them by agent and short digest.
pub fn diff(old: &Bundle, new: &Bundle) -> BundleDiff {
    let old_label = format!("{}@{}", old.agent, old.digest().short());
    let new_label = format!("{}@{}", new.agent, new.digest().short());
    diff_labeled(old, &old_label, new, &new_label)
}

/// Compares two bundles; the labels (`support@3`) name them in the prompt diff headers and
/// the report.
pub fn diff_labeled(old: &Bundle, old_label: &str, new: &Bundle, new_label: &str) -> BundleDiff {
    let old_prompt = normalize_newlines(&old.prompt);
    let new_prompt = normalize_newlines(&new.prompt);
    let prompt = (old_prompt != new_prompt).then(|| {
        similar::TextDiff::configure()
            .timeout(Duration::from_secs(2))
            .diff_lines(old_prompt.as_str(), new_prompt.as_str())
            .unified_diff()
            .context_radius(3)
            .header(
                &format!("{old_label}/prompt"),
                &format!("{new_label}/prompt"),
            )
            .to_string()
    });

    let params_old = Value::Object(
        old.model
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let params_new = Value::Object(
        new.model
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let model = ModelDiff {
        provider: field(
            "provider",
            Some(&old.model.provider),
            Some(&new.model.provider),
        ),
        snapshot: field(
            "snapshot",
            Some(&old.model.snapshot),
            Some(&new.model.snapshot),
        ),
        params: json_changes(&params_old, &params_new),
    };

    let tools = keyed_diff(
        &old.tools,
        &new.tools,
        |t: &Tool| t.name.as_str(),
        tool_value,
    )
    .into_iter()
    .map(|(name, kind, changes)| ToolDiff {
        name,
        kind,
        changes,
    })
    .collect();
    let examples = keyed_diff(
        &old.examples,
        &new.examples,
        |e: &Example| e.name.as_str(),
        example_value,
    )
    .into_iter()
    .map(|(name, kind, changes)| ExampleDiff {
        name,
        kind,
        changes,
    })
    .collect();

    let (om, nm) = (&old.metadata, &new.metadata);
    let metadata = [
        field("author", om.author.as_deref(), nm.author.as_deref()),
        field("reviewer", om.reviewer.as_deref(), nm.reviewer.as_deref()),
        field("commit", om.commit.as_deref(), nm.commit.as_deref()),
        field(
            "description",
            om.description.as_deref(),
            nm.description.as_deref(),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();

    BundleDiff {
        old_label: old_label.to_owned(),
        new_label: new_label.to_owned(),
        old_digest: old.digest(),
        new_digest: new.digest(),
        capabilities: capabilities::changes(old, new),
        agent: field("agent", Some(&old.agent), Some(&new.agent)),
        model,
        prompt,
        tools,
        examples,
        eval_set: field("eval_set", old.eval_set.as_deref(), new.eval_set.as_deref()),
        metadata,
    }
}

fn field(name: &str, old: Option<&str>, new: Option<&str>) -> Option<FieldChange> {
    (old != new).then(|| FieldChange {
        field: name.to_owned(),
        old: old.map(str::to_owned),
        new: new.map(str::to_owned),
    })
}

/// Matches items by key; returns `(key, kind, pointer-level changes)` in key order.
fn keyed_diff<T>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> &str,
    to_value: impl Fn(&T) -> Value,
) -> Vec<(String, ChangeKind, Vec<JsonChange>)> {
    use std::collections::BTreeMap;
    let old: BTreeMap<&str, &T> = old.iter().map(|t| (key(t), t)).collect();
    let new: BTreeMap<&str, &T> = new.iter().map(|t| (key(t), t)).collect();
    let mut keys: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        match (old.get(k), new.get(k)) {
            (Some(_), None) => out.push((k.to_owned(), ChangeKind::Removed, Vec::new())),
            (None, Some(_)) => out.push((k.to_owned(), ChangeKind::Added, Vec::new())),
            (Some(a), Some(b)) => {
                let changes = json_changes(&to_value(a), &to_value(b));
                if !changes.is_empty() {
                    out.push((k.to_owned(), ChangeKind::Changed, changes));
                }
            }
            (None, None) => {}
        }
    }
    out
}

/// Pointer-level differences between two JSON values: objects key by key, arrays index by
/// index, anything else as a whole.
pub(crate) fn json_changes(old: &Value, new: &Value) -> Vec<JsonChange> {
    let mut out = Vec::new();
    walk(String::new(), old, new, &mut out);
    out
}

fn walk(path: String, old: &Value, new: &Value, out: &mut Vec<JsonChange>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort_unstable();
            keys.dedup();
            for k in keys {
                let child = json::join(&path, k);
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => walk(child, x, y, out),
                    (Some(x), None) => out.push(JsonChange {
                        path: child,
                        kind: ChangeKind::Removed,
                        old: Some(x.clone()),
                        new: None,
                    }),
                    (None, Some(y)) => out.push(JsonChange {
                        path: child,
                        kind: ChangeKind::Added,
                        old: None,
                        new: Some(y.clone()),
                    }),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let child = format!("{path}/{i}");
                match (a.get(i), b.get(i)) {
                    (Some(x), Some(y)) => walk(child, x, y, out),
                    (Some(x), None) => out.push(JsonChange {
                        path: child,
                        kind: ChangeKind::Removed,
                        old: Some(x.clone()),
                        new: None,
                    }),
                    (None, Some(y)) => out.push(JsonChange {
                        path: child,
                        kind: ChangeKind::Added,
                        old: None,
                        new: Some(y.clone()),
                    }),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(JsonChange {
            path,
            kind: ChangeKind::Changed,
            old: Some(a.clone()),
            new: Some(b.clone()),
        }),
        _ => {}
    }
}

/// A JSON value on one line, shortened if long.
fn short(v: &Value) -> String {
    const MAX: usize = 120;
    let text = json::to_canonical_string(v);
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn opt(v: Option<&str>) -> &str {
    v.unwrap_or("(none)")
}

fn write_json_change(f: &mut fmt::Formatter<'_>, indent: &str, c: &JsonChange) -> fmt::Result {
    let path = if c.path.is_empty() { "/" } else { &c.path };
    match (&c.old, &c.new) {
        (Some(old), Some(new)) => {
            writeln!(f, "{indent}~ {path}: {} → {}", short(old), short(new))
        }
        (None, Some(new)) => writeln!(f, "{indent}+ {path}: {}", short(new)),
        (Some(old), None) => writeln!(f, "{indent}- {path}: {}", short(old)),
        (None, None) => writeln!(f, "{indent}{} {path}", c.kind.sigil()),
    }
}

impl fmt::Display for BundleDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}) → {} ({})",
            self.old_label, self.old_digest, self.new_label, self.new_digest
        )?;
        if self.is_empty() {
            return writeln!(f, "no changes");
        }
        if !self.capabilities.is_empty() {
            writeln!(f, "capabilities (! needs approval):")?;
            for c in &self.capabilities {
                let mark = if c.needs_approval() { '!' } else { ' ' };
                writeln!(f, "  {mark} {}", c.detail)?;
            }
        }
        if let Some(c) = &self.agent {
            writeln!(
                f,
                "agent: {} → {}",
                opt(c.old.as_deref()),
                opt(c.new.as_deref())
            )?;
        }
        if !self.model.is_empty() {
            writeln!(f, "model:")?;
            for c in [&self.model.provider, &self.model.snapshot]
                .into_iter()
                .flatten()
            {
                writeln!(
                    f,
                    "  {}: {} → {}",
                    c.field,
                    opt(c.old.as_deref()),
                    opt(c.new.as_deref())
                )?;
            }
            for c in &self.model.params {
                let c = JsonChange {
                    path: format!("params{}", c.path),
                    ..c.clone()
                };
                write_json_change(f, "  ", &c)?;
            }
        }
        if let Some(prompt) = &self.prompt {
            writeln!(f, "prompt:")?;
            for line in prompt.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        if !self.tools.is_empty() {
            writeln!(f, "tools:")?;
            for t in &self.tools {
                writeln!(f, "  {} {}", t.kind.sigil(), t.name)?;
                for c in &t.changes {
                    write_json_change(f, "      ", c)?;
                }
            }
        }
        if !self.examples.is_empty() {
            writeln!(f, "examples:")?;
            for e in &self.examples {
                writeln!(f, "  {} {}", e.kind.sigil(), e.name)?;
                for c in &e.changes {
                    write_json_change(f, "      ", c)?;
                }
            }
        }
        if let Some(c) = &self.eval_set {
            writeln!(
                f,
                "eval_set: {} → {}",
                opt(c.old.as_deref()),
                opt(c.new.as_deref())
            )?;
        }
        if !self.metadata.is_empty() {
            writeln!(f, "metadata:")?;
            for c in &self.metadata {
                writeln!(
                    f,
                    "  {}: {} → {}",
                    c.field,
                    opt(c.old.as_deref()),
                    opt(c.new.as_deref())
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_changes_lists_added_removed_and_changed_pointers() {
        let old = json!({"type": "object", "properties": {"a": {"type": "string"}, "b~/": 1}, "required": ["a"]});
        let new = json!({"type": "object", "properties": {"a": {"type": "integer"}, "c": 2}, "required": ["a", "c"]});
        let got: Vec<String> = json_changes(&old, &new)
            .iter()
            .map(|c| format!("{:?} {}", c.kind, c.path))
            .collect();
        assert_eq!(
            got,
            [
                "Changed /properties/a/type",
                "Removed /properties/b~0~1",
                "Added /properties/c",
                "Added /required/1",
            ]
        );
        assert!(json_changes(&old, &old).is_empty());
    }
}
