//! Readiness gates (SPEC "Words": evidence; CLI `serin readiness`, `serin evidence set`).
//!
//! A release may start only when a per-agent, per-env [`Policy`] is satisfied. The policy
//! names items that must pass (`require`), items that are only reported (`warn`) and
//! conditions that refuse the release outright (`block_if`). Items come in two kinds:
//!
//! - **computed** ([`computed_items`]): Serin derives them from its own state, which the
//!   server gathers into [`Facts`] (pins, the rollback target, drills, the release plan,
//!   recorded evals, trace coverage). Each result says how it was computed.
//! - **attested**: a named owner records [`Evidence`] (status, evidence text or link, next
//!   action, optional expiry). Expired evidence counts as missing.
//!
//! [`evaluate`] is pure: the caller passes the current time inside [`Facts`].
//! [`template`] renders a starter policy covering the 30 checks of the seed checklist.

mod evaluate;
mod evidence;
mod facts;
mod gate;
mod policy;
mod template;

pub use evaluate::{ItemResult, ItemStatus, Level, Report, Source, evaluate};
pub use evidence::{
    Evidence, EvidenceError, EvidenceStatus, ExpiryError, MAX_EXPIRY_MS, MAX_TEXT_CHARS,
    parse_expiry,
};
pub use facts::{Axis, ComputedItem, EvalResult, Facts, computed_item, computed_items};
pub use gate::{GateOverride, GateRecord};
pub use policy::{
    BlockRule, BlockStatus, InitialMode, ItemDef, MAX_DRILL_AGE_DAYS, MAX_TITLE_CHARS, Policy,
    PolicyError, PolicySettings, RolloutMode, TRACE_COVERAGE_WINDOW_DAYS, policy_json_schema,
};
pub use template::{
    CATEGORIES, SHADOW_PERIOD_KEY, TEMPLATE_NAMES, TemplateItem, template, template_item,
    template_items,
};

/// Longest item key.
pub const MAX_KEY_CHARS: usize = 64;

/// Whether `key` is a valid item key: snake_case, `[a-z][a-z0-9_]{0,63}`.
pub fn is_valid_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && key.len() <= MAX_KEY_CHARS
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}
