//! Starter policies (`serin readiness init --template NAME`).

use std::fmt::Write as _;

use serde::Serialize;

/// The attested item a policy requires when it asks for a shadow period.
pub const SHADOW_PERIOD_KEY: &str = "shadow_period_completed";

/// Categories of the seed checklist, `(key, title)`, in checklist order.
pub const CATEGORIES: [(&str, &str); 6] = [
    ("capability_gate", "Capability gate"),
    ("deploy_hygiene", "Deploy hygiene"),
    ("rollback", "Rollback design"),
    ("monitoring", "Monitoring"),
    ("canary", "Canary mechanics"),
    ("post_deploy", "Post-deploy hygiene"),
];

/// Names [`template`] knows.
pub const TEMPLATE_NAMES: [&str; 1] = ["seed-checklist"];

/// One check of the seed checklist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TemplateItem {
    /// Stable snake_case key; for a computed check it is the computed item's key.
    pub key: &'static str,
    pub title: &'static str,
    /// One of the keys of [`CATEGORIES`].
    pub category: &'static str,
    /// The computed item that answers this check, when Serin can answer it itself.
    pub computed: Option<&'static str>,
}

const fn att(key: &'static str, category: &'static str, title: &'static str) -> TemplateItem {
    TemplateItem {
        key,
        title,
        category,
        computed: None,
    }
}

const fn comp(key: &'static str, category: &'static str, title: &'static str) -> TemplateItem {
    TemplateItem {
        key,
        title,
        category,
        computed: Some(key),
    }
}

const ITEMS: [TemplateItem; 30] = [
    // Capability gate
    comp(
        "offline_eval_passed",
        "capability_gate",
        "Offline eval on the candidate meets its target score",
    ),
    att(
        "eval_covers_production_inputs",
        "capability_gate",
        "Eval set reflects real production inputs, not only demo cases",
    ),
    att(
        "red_team_report_attached",
        "capability_gate",
        "Adversarial prompts run against the candidate, report linked",
    ),
    att(
        "regression_vs_current_passed",
        "capability_gate",
        "No regression against the version serving today",
    ),
    att(
        "confidence_calibrated",
        "capability_gate",
        "Stated confidence tracks measured accuracy",
    ),
    // Deploy hygiene
    comp(
        "candidate_pinned",
        "deploy_hygiene",
        "Model, prompt and tools pinned to exact versions",
    ),
    att(
        "secrets_from_environment",
        "deploy_hygiene",
        "Configuration and secrets injected at runtime, none baked in",
    ),
    att(
        "staging_shadow_smoke_test",
        "deploy_hygiene",
        "Staging smoke test on mirrored traffic stayed green for an hour or more",
    ),
    att(
        "reproducible_from_tag",
        "deploy_hygiene",
        "Release rebuilt from a tagged commit with no manual steps",
    ),
    att(
        "deploy_announced",
        "deploy_hygiene",
        "Release announced: channel, ticket and on-call informed",
    ),
    // Rollback design
    comp(
        "rollback_drill_recent",
        "rollback",
        "Kill switch and rollback exercised within the drill window",
    ),
    att(
        "traffic_shift_documented",
        "rollback",
        "How traffic moves back is written down (flag, weights or routing)",
    ),
    comp(
        "rollback_target_warm",
        "rollback",
        "Previous version is warm and can take all traffic",
    ),
    comp(
        "guardrails_four_axes",
        "rollback",
        "Rollback triggers set for eval, latency, cost and errors",
    ),
    att(
        "rollback_runbook_commands",
        "rollback",
        "Rollback runbook spells out the exact commands",
    ),
    // Monitoring
    att(
        "eval_drift_streaming",
        "monitoring",
        "Sampled quality scoring runs on live traffic",
    ),
    att(
        "latency_alerts_per_stage",
        "monitoring",
        "Latency percentiles alert per stage, not only end to end",
    ),
    att(
        "cost_burn_alerts",
        "monitoring",
        "Cost alerts on a daily budget and an hourly burn rate",
    ),
    att(
        "error_alerts_by_class",
        "monitoring",
        "Error alerts split into transient, permanent and upstream",
    ),
    att(
        "dashboard_linked",
        "monitoring",
        "Release ticket links the dashboard operators use",
    ),
    // Canary mechanics
    comp(
        "initial_exposure_bounded",
        "canary",
        "Canary opens at a small first step, within the exposure cap",
    ),
    att(
        "tier_gates_documented",
        "canary",
        "Each step states what must hold, and for how long",
    ),
    comp(
        "auto_rollback_wired",
        "canary",
        "Gate violations roll back automatically",
    ),
    comp(
        "high_value_tenants_excluded",
        "canary",
        "Key tenants stay out of the canary until last",
    ),
    att(
        "promotion_deliberate",
        "canary",
        "Moving to the next step is an explicit command, not a timer",
    ),
    // Post-deploy hygiene
    att(
        "verification_runbook_scheduled",
        "post_deploy",
        "Three-day verification plan booked; on-call aware",
    ),
    att(
        "incident_drill_rehearsed",
        "post_deploy",
        "An incident drill rehearsed against this release",
    ),
    att(
        "changelog_drafted",
        "post_deploy",
        "User-facing change notes drafted (n/a when nothing visible changes)",
    ),
    att(
        "cost_forecast_updated",
        "post_deploy",
        "Spend forecast revised from canary numbers",
    ),
    att(
        "enablement_handoff_scheduled",
        "post_deploy",
        "Hand-off to the owning team booked within a week",
    ),
];

/// Items of the template catalog that the template lists under `warn` instead of `require`:
/// the forecast can only be revised from canary numbers, after the release starts.
const TEMPLATE_WARN: [&str; 2] = ["cost_forecast_updated", "trace_coverage"];

/// The 30 checks of the seed checklist, in checklist order.
pub fn template_items() -> &'static [TemplateItem] {
    &ITEMS
}

/// The template item named `key`.
pub fn template_item(key: &str) -> Option<&'static TemplateItem> {
    ITEMS.iter().find(|t| t.key == key)
}

/// The policy YAML of template `name` (see [`TEMPLATE_NAMES`]), with comments, or `None`.
/// `seed-checklist` requires every check of the seed checklist except the cost forecast
/// (a warning), warns on trace coverage, and blocks on a cold rollback target or a failed
/// red-team review.
pub fn template(name: &str) -> Option<String> {
    (name == "seed-checklist").then(seed_checklist)
}

fn seed_checklist() -> String {
    let mut out = String::new();
    out.push_str(
        "# Serin readiness policy: the 30-point seed checklist.\n\
         # Items marked (computed) are answered by Serin from its own state; the others need\n\
         # evidence from a named owner: serin evidence set AGENT --env E KEY --status pass --owner O\n\
         # Status n/a passes only for attested items (e.g. no user-visible change, no changelog).\n\
         require:\n",
    );
    for (cat, cat_title) in CATEGORIES {
        let _ = writeln!(out, "  # {cat_title}");
        for item in ITEMS
            .iter()
            .filter(|i| i.category == cat && !TEMPLATE_WARN.contains(&i.key))
        {
            let kind = if item.computed.is_some() {
                " (computed)"
            } else {
                ""
            };
            let _ = writeln!(out, "  - {:<32} # {}{kind}", item.key, item.title);
        }
    }
    out.push_str(
        "\n# Reported when not passing; never blocks.\nwarn:\n\
         \x20 - cost_forecast_updated            # only possible once the canary has run\n\
         \x20 - trace_coverage                   # (computed) share of outcomes with a trace\n\
         \n# Refuse the release outright, whatever else passes.\nblock_if:\n\
         \x20 - computed: rollback_target_warm\n\
         \x20 - item: red_team_report_attached\n\
         \x20   status: fail\n\
         \nrollout_mode:\n\
         \x20 initial: canary                   # canary | shadow\n\
         \x20 max_exposure: 5%                  # largest first step\n\
         \x20 shadow_required: false\n\
         \x20 high_value_tenants: []            # tenants the plan must exclude\n\
         \nsettings:\n\
         \x20 drill_max_age_days: 7\n\
         \x20 trace_coverage_min: 0.95\n\
         \x20 eval_required: true\n\
         \n# Custom attested items: key -> {title, category, owner_hint}\nitems: {}\n",
    );
    out
}
