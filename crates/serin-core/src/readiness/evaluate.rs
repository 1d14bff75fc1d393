//! Evaluation of a policy against evidence and facts.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::evidence::{Evidence, EvidenceStatus};
use super::facts::{Facts, computed_item, computed_items, evaluate_computed};
use super::policy::{BlockRule, Policy};
use super::template::{SHADOW_PERIOD_KEY, template_item};

/// How much an item matters under the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Must pass for the release to be ready.
    Required,
    /// Reported when it does not pass; never blocks.
    Warn,
    /// Shown for context (not listed, or only named by a `block_if` rule).
    Info,
}

/// The state of one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemStatus {
    #[serde(rename = "pass")]
    Pass,
    #[serde(rename = "fail")]
    Fail,
    #[serde(rename = "partial")]
    Partial,
    #[serde(rename = "n/a")]
    NotApplicable,
    /// No evidence (attested) or the needed facts are unknown (computed).
    #[serde(rename = "missing")]
    Missing,
    /// The evidence expired; it counts as missing.
    #[serde(rename = "expired")]
    Expired,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pass => "pass",
            ItemStatus::Fail => "fail",
            ItemStatus::Partial => "partial",
            ItemStatus::NotApplicable => "n/a",
            ItemStatus::Missing => "missing",
            ItemStatus::Expired => "expired",
        }
    }
}

/// Where an item's status comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Computed,
    Attested,
}

/// One row of the readiness report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemResult {
    pub key: String,
    pub title: String,
    pub category: String,
    pub level: Level,
    pub status: ItemStatus,
    pub source: Source,
    /// The owner named by the evidence (attested items).
    pub owner: Option<String>,
    pub evidence: Option<String>,
    pub next_action: Option<String>,
    /// How a computed item was computed.
    pub how: Option<String>,
}

impl ItemResult {
    /// Whether the item satisfies `require`: `pass`, or `n/a` attested by an owner.
    pub fn passes(&self) -> bool {
        match self.status {
            ItemStatus::Pass => true,
            ItemStatus::NotApplicable => self.source == Source::Attested,
            _ => false,
        }
    }
}

/// The verdict of a readiness gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every required item passes and no `block_if` rule fires.
    pub ready: bool,
    /// One line for humans.
    pub verdict: String,
    /// Required items (policy order), then warnings, then items shown for context.
    pub items: Vec<ItemResult>,
    /// One line per `block_if` rule that fired: `block_if/N (rule): why`.
    pub blocked_by: Vec<String>,
}

impl Report {
    /// Required items that do not pass.
    pub fn unmet(&self) -> impl Iterator<Item = &ItemResult> {
        self.items
            .iter()
            .filter(|i| i.level == Level::Required && !i.passes())
    }

    /// Warning items that do not pass.
    pub fn warnings(&self) -> impl Iterator<Item = &ItemResult> {
        self.items
            .iter()
            .filter(|i| i.level == Level::Warn && !i.passes())
    }
}

/// Evaluates `policy` for one candidate. Pure: `facts.now_ms` is the evaluation instant.
///
/// - Computed items come from `facts`; evidence recorded under a computed key is ignored.
/// - Attested items use the newest evidence for their key (by `recorded_at_ms`, later in
///   the slice on a tie); evidence expired at `now_ms` is `expired` and counts as missing.
/// - Level: `require` (plus `offline_eval_passed` when `settings.eval_required`, and
///   [`SHADOW_PERIOD_KEY`] when the rollout mode needs a shadow period) is required, `warn`
///   is warn; items named only by `block_if`, the other computed items and unlisted custom
///   items are shown as info.
/// - Ready iff every required item passes (`n/a` only for attested items) and no
///   `block_if` rule fires. The policy is assumed valid ([`Policy::validate`]); a rule
///   naming an unknown item still fires, so an unvalidated policy fails closed.
pub fn evaluate(policy: &Policy, evidence: &[Evidence], facts: &Facts) -> Report {
    let eval_key = "offline_eval_passed";
    let mut required: Vec<&str> = policy.require.iter().map(String::as_str).collect();
    if policy.settings.eval_required && !required.contains(&eval_key) {
        required.push(eval_key);
    }
    if policy.rollout_mode.needs_shadow() && !required.contains(&SHADOW_PERIOD_KEY) {
        required.push(SHADOW_PERIOD_KEY);
    }
    let eval_needed = required.contains(&eval_key);

    let mut order: Vec<(&str, Level)> = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for k in &required {
        if seen.insert(k) {
            order.push((k, Level::Required));
        }
    }
    for k in &policy.warn {
        if seen.insert(k) {
            order.push((k, Level::Warn));
        }
    }
    for r in &policy.block_if {
        if seen.insert(r.key()) {
            order.push((r.key(), Level::Info));
        }
    }
    for c in computed_items() {
        if seen.insert(c.key) {
            order.push((c.key, Level::Info));
        }
    }
    for k in policy.items.keys() {
        if seen.insert(k) {
            order.push((k, Level::Info));
        }
    }

    let items: Vec<ItemResult> = order
        .iter()
        .map(|(key, level)| item_result(policy, evidence, facts, key, *level, eval_needed))
        .collect();

    let mut blocked_by = Vec::new();
    for (i, rule) in policy.block_if.iter().enumerate() {
        let item = items.iter().find(|it| it.key == rule.key());
        let status = item.map_or(ItemStatus::Missing, |it| it.status);
        let fired = match rule {
            BlockRule::ItemStatus { status: want, .. } => status.as_str() == want.as_str(),
            BlockRule::Computed(_) => item.is_none_or(|it| !it.passes()),
            BlockRule::EvidenceMissing(_) => {
                matches!(status, ItemStatus::Missing | ItemStatus::Expired)
            }
        };
        if fired {
            let why = match item {
                Some(it) => match &it.how {
                    Some(how) => format!("{} is {}: {how}", it.key, status.as_str()),
                    None => format!("{} is {}", it.key, status.as_str()),
                },
                None => format!("{} is not a known item", rule.key()),
            };
            blocked_by.push(format!("block_if/{i} ({}): {why}", rule.describe()));
        }
    }

    let unmet: Vec<&str> = items
        .iter()
        .filter(|i| i.level == Level::Required && !i.passes())
        .map(|i| i.key.as_str())
        .collect();
    let required_count = items.iter().filter(|i| i.level == Level::Required).count();
    let warn_count = items
        .iter()
        .filter(|i| i.level == Level::Warn && !i.passes())
        .count();
    let ready = unmet.is_empty() && blocked_by.is_empty();
    let verdict = verdict_line(ready, &unmet, required_count, warn_count, blocked_by.len());
    Report {
        ready,
        verdict,
        items,
        blocked_by,
    }
}

fn verdict_line(
    ready: bool,
    unmet: &[&str],
    required: usize,
    warnings: usize,
    blocks: usize,
) -> String {
    let warn_text = match warnings {
        0 => String::new(),
        1 => "; 1 warning".to_owned(),
        n => format!("; {n} warnings"),
    };
    if ready {
        return format!("ready: all {required} required items pass{warn_text}");
    }
    let mut parts = Vec::new();
    if !unmet.is_empty() {
        const SHOWN: usize = 5;
        let mut names = unmet
            .iter()
            .take(SHOWN)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if unmet.len() > SHOWN {
            names.push_str(&format!(", +{} more", unmet.len() - SHOWN));
        }
        parts.push(format!(
            "{} of {required} required items do not pass ({names})",
            unmet.len()
        ));
    }
    if blocks > 0 {
        parts.push(format!(
            "blocked by {blocks} rule{}",
            if blocks == 1 { "" } else { "s" }
        ));
    }
    format!("not ready: {}{warn_text}", parts.join("; "))
}

fn item_result(
    policy: &Policy,
    evidence: &[Evidence],
    facts: &Facts,
    key: &str,
    level: Level,
    eval_needed: bool,
) -> ItemResult {
    if let (Some(c), Some(out)) = (
        computed_item(key),
        evaluate_computed(key, policy, facts, eval_needed),
    ) {
        return ItemResult {
            key: key.to_owned(),
            title: c.title.to_owned(),
            category: c.category.to_owned(),
            level,
            status: out.status,
            source: Source::Computed,
            owner: None,
            evidence: None,
            next_action: out.next_action,
            how: Some(out.how),
        };
    }
    let (title, category, owner_hint) = describe_attested(policy, key);
    let newest = evidence
        .iter()
        .filter(|e| e.key == key)
        .fold(None::<&Evidence>, |best, e| match best {
            Some(b) if b.recorded_at_ms > e.recorded_at_ms => Some(b),
            _ => Some(e),
        });
    let record = format!(
        "record evidence: serin evidence set AGENT --env ENV {key} --status pass --owner OWNER"
    );
    let hint = owner_hint
        .map(|o| format!(" (usually owned by {o})"))
        .unwrap_or_default();
    let mut result = ItemResult {
        key: key.to_owned(),
        title,
        category,
        level,
        status: ItemStatus::Missing,
        source: Source::Attested,
        owner: None,
        evidence: None,
        next_action: Some(format!("{record}{hint}")),
        how: None,
    };
    if let Some(e) = newest {
        result.owner = Some(e.owner.clone());
        result.evidence = e.evidence.clone();
        if e.is_expired(facts.now_ms) {
            result.status = ItemStatus::Expired;
            result.next_action = Some(format!(
                "evidence from {} expired; {} should confirm it again and re-record it",
                e.recorded_by, e.owner
            ));
        } else {
            result.status = match e.status {
                EvidenceStatus::Pass => ItemStatus::Pass,
                EvidenceStatus::Fail => ItemStatus::Fail,
                EvidenceStatus::Partial => ItemStatus::Partial,
                EvidenceStatus::NotApplicable => ItemStatus::NotApplicable,
            };
            result.next_action = match (&e.next_action, e.status) {
                (Some(n), _) => Some(n.clone()),
                (None, EvidenceStatus::Fail | EvidenceStatus::Partial) => Some(format!(
                    "{} owns this item and has recorded no next action",
                    e.owner
                )),
                (None, _) => None,
            };
        }
    }
    result
}

fn describe_attested(policy: &Policy, key: &str) -> (String, String, Option<String>) {
    if let Some(def) = policy.items.get(key) {
        return (
            def.title.clone(),
            def.category.clone(),
            def.owner_hint.clone(),
        );
    }
    if let Some(t) = template_item(key) {
        return (t.title.to_owned(), t.category.to_owned(), None);
    }
    if key == SHADOW_PERIOD_KEY {
        return (
            "Shadow period completed before any user sees the candidate".to_owned(),
            "canary".to_owned(),
            None,
        );
    }
    (key.to_owned(), "unknown".to_owned(), None)
}
