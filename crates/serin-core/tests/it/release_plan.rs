//! `plan.yaml`: the SPEC example, defaults, durations, and every refusal naming its field.

use serin_core::decision::{Percent, Stickiness};
use serin_core::guardrails::GuardrailConfig;
use serin_core::release::{DurationSpec, OnFailure, Plan, Promotion, human_ms};

const SPEC_EXAMPLE: &str = r#"
steps:
  - canary: {weight: 1%,  min_duration: 5m,  min_requests: 500}
  - canary: {weight: 5%,  min_duration: 30m, min_requests: 5000}
  - canary: {weight: 25%, min_duration: 2h}
  - canary: {weight: 50%, min_duration: 4h}
promotion: manual          # manual | auto (auto still needs every gate to hold)
stickiness: user           # user | tenant | request
exclude_tenants: [bigcorp] # always stable until the final step
guardrails:
  error_rate:        {max: 2%, max_increase: 1pp}
  latency_p95_ms:    {max_increase: 200}
  tool_call_success: {min: 98%}
  refusal_rate:      {max_ratio: 1.5}
  eval_pass_rate:    {min: 95%}
  cost_per_request:  {max_ratio: 1.3}
on_failure: rollback       # rollback | halt
notify: [{webhook: "http://127.0.0.1:9000/hooks"}]
"#;

fn pct(s: &str) -> Percent {
    Percent::parse(s).unwrap()
}

#[test]
fn spec_example_parses_to_its_values() {
    let plan = Plan::parse_yaml(SPEC_EXAMPLE).unwrap();
    plan.validate().unwrap();
    let steps: Vec<(Percent, u64, u64)> = plan
        .steps
        .iter()
        .map(|s| {
            let c = s.canary();
            (c.weight, c.min_duration.as_ms(), c.min_requests)
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            (pct("1%"), 300_000, 500),
            (pct("5%"), 1_800_000, 5000),
            (pct("25%"), 7_200_000, 0),
            (pct("50%"), 14_400_000, 0),
        ]
    );
    assert_eq!(plan.promotion, Promotion::Manual);
    assert_eq!(plan.stickiness, Stickiness::User);
    assert_eq!(
        plan.exclude_tenants.iter().collect::<Vec<_>>(),
        vec!["bigcorp"]
    );
    assert_eq!(plan.on_failure, OnFailure::Rollback);
    assert_eq!(plan.notify.len(), 1);
    assert_eq!(plan.notify[0].webhook, "http://127.0.0.1:9000/hooks");
    // The SPEC block is exactly the default guardrails.
    assert_eq!(plan.guardrails, Some(GuardrailConfig::spec_default()));
    assert_eq!(plan.last_step(), Some(3));
}

#[test]
fn omitted_fields_take_their_defaults() {
    let plan = Plan::parse_yaml("steps:\n  - canary: {weight: 10%, min_requests: 100}\n").unwrap();
    plan.validate().unwrap();
    assert_eq!(plan.promotion, Promotion::Manual);
    assert_eq!(plan.stickiness, Stickiness::User);
    assert_eq!(plan.on_failure, OnFailure::Rollback);
    assert!(plan.exclude_tenants.is_empty() && plan.notify.is_empty());
    assert_eq!(plan.guardrails, None);
    assert_eq!(plan.guardrails(), GuardrailConfig::spec_default());
    assert_eq!(plan.steps[0].canary().min_duration, DurationSpec::ZERO);
}

#[test]
fn plan_json_round_trips() {
    for text in [
        SPEC_EXAMPLE,
        "steps:\n  - canary: {weight: 100%, min_duration: 1h30m}\n",
    ] {
        let plan = Plan::parse_yaml(text).unwrap();
        let json = serde_json::to_value(&plan).unwrap();
        let back = Plan::from_value(json.clone()).unwrap();
        assert_eq!(back, plan, "{json}");
    }
    let json = serde_json::to_value(Plan::parse_yaml(SPEC_EXAMPLE).unwrap()).unwrap();
    assert_eq!(json["steps"][1]["canary"]["min_duration"], "30m");
    assert_eq!(json["steps"][1]["canary"]["weight"], "5%");
}

/// Replaces the steps block of a small valid plan.
fn with_steps(steps: &str) -> String {
    format!("steps:\n{steps}")
}

const ONE_STEP: &str = "  - canary: {weight: 1%, min_duration: 5m, min_requests: 500}\n";

#[test]
fn bad_plans_are_refused_naming_the_field() {
    let long_url = format!("https://example.com/{}", "a".repeat(2048));
    let cases: Vec<(String, &str, &str, &str)> = vec![
        // (plan, code, pointer, message fragment)
        (
            format!("{}promotoin: auto\n", with_steps(ONE_STEP)),
            "unknown_field",
            "/promotoin",
            "unknown field `promotoin`",
        ),
        (
            with_steps("  - canary: {weight: 1%, min_duration: 5m, wieght: 2}\n"),
            "unknown_field",
            "/steps/0/canary/wieght",
            "unknown field `wieght`",
        ),
        (
            with_steps("  - linear: {weight: 1%}\n"),
            "invalid_field",
            "/steps/0",
            "unknown variant `linear`",
        ),
        (
            "promotion: manual\n".to_owned(),
            "invalid_plan",
            "/steps",
            "a plan needs at least one step",
        ),
        (
            with_steps("  - canary: {min_duration: 5m}\n"),
            "missing_field",
            "/steps/0/canary",
            "missing field `weight`",
        ),
        (
            "steps: []\n".to_owned(),
            "invalid_plan",
            "/steps",
            "at least one step",
        ),
        (String::new(), "missing_field", "", "needs at least `steps`"),
        (
            with_steps(
                "  - canary: {weight: 5%, min_duration: 5m}\n  - canary: {weight: 1%, min_duration: 5m}\n",
            ),
            "invalid_plan",
            "/steps/1/canary/weight",
            "1% is not above the previous step's 5%",
        ),
        (
            with_steps(
                "  - canary: {weight: 5%, min_duration: 5m}\n  - canary: {weight: 5%, min_duration: 5m}\n",
            ),
            "invalid_plan",
            "/steps/1/canary/weight",
            "weights must increase",
        ),
        (
            with_steps("  - canary: {weight: 150%, min_duration: 5m}\n"),
            "invalid_field",
            "/steps/0/canary/weight",
            "\"150%\" is not a percentage",
        ),
        (
            with_steps("  - canary: {weight: 0%, min_duration: 5m}\n"),
            "invalid_plan",
            "/steps/0/canary/weight",
            "above 0%",
        ),
        (
            with_steps("  - canary: {weight: -1%, min_duration: 5m}\n"),
            "invalid_field",
            "/steps/0/canary/weight",
            "is not a percentage",
        ),
        (
            with_steps("  - canary: {weight: 1%, min_duration: 5 minutes}\n"),
            "invalid_field",
            "/steps/0/canary/min_duration",
            "\"5 minutes\" is not a duration",
        ),
        (
            with_steps("  - canary: {weight: 1%, min_duration: -5m}\n"),
            "invalid_field",
            "/steps/0/canary/min_duration",
            "must not be negative",
        ),
        (
            with_steps("  - canary: {weight: 1%, min_duration: 300}\n"),
            "invalid_field",
            "/steps/0/canary/min_duration",
            "invalid type: integer `300`",
        ),
        (
            with_steps("  - canary: {weight: 1%, min_requests: -5}\n"),
            "invalid_field",
            "/steps/0/canary/min_requests",
            "-5",
        ),
        (
            with_steps("  - canary: {weight: 1%}\n"),
            "invalid_plan",
            "/steps/0/canary",
            "min_duration or min_requests above zero",
        ),
        (
            with_steps("  - canary: {weight: 1%, min_duration: 0s, min_requests: 0}\n"),
            "invalid_plan",
            "/steps/0/canary",
            "min_duration or min_requests above zero",
        ),
        (
            format!(
                "{}promotion: auto\n",
                with_steps(
                    "  - canary: {weight: 1%, min_duration: 5m, min_requests: 5}\n  - canary: {weight: 5%, min_duration: 2h}\n"
                )
            ),
            "invalid_plan",
            "/steps/1/canary/min_requests",
            "time alone never promotes",
        ),
        (
            format!("{}promotion: sometimes\n", with_steps(ONE_STEP)),
            "invalid_field",
            "/promotion",
            "unknown variant `sometimes`",
        ),
        (
            format!("{}on_failure: explode\n", with_steps(ONE_STEP)),
            "invalid_field",
            "/on_failure",
            "unknown variant `explode`",
        ),
        (
            format!(
                "{}notify: [{{webhook: \"ftp://x/hook\"}}]\n",
                with_steps(ONE_STEP)
            ),
            "invalid_plan",
            "/notify/0/webhook",
            "must be an http:// or https:// URL",
        ),
        (
            format!(
                "{}notify: [{{webhook: \"https://ok/\"}}, {{webhook: \"hooks.example.com\"}}]\n",
                with_steps(ONE_STEP)
            ),
            "invalid_plan",
            "/notify/1/webhook",
            "http://",
        ),
        (
            format!(
                "{}notify: [{{webhook: \"https:///path\"}}]\n",
                with_steps(ONE_STEP)
            ),
            "invalid_plan",
            "/notify/0/webhook",
            "has no host",
        ),
        (
            format!(
                "{}notify: [{{webhook: \"{long_url}\"}}]\n",
                with_steps(ONE_STEP)
            ),
            "invalid_plan",
            "/notify/0/webhook",
            "longer than 2048 characters",
        ),
        (
            format!(
                "{}notify: [{{url: \"https://x/\"}}]\n",
                with_steps(ONE_STEP)
            ),
            "unknown_field",
            "/notify/0/url",
            "unknown field `url`",
        ),
        (
            format!(
                "{}guardrails:\n  refusal_rate: {{max_ratio: 0.5}}\n",
                with_steps(ONE_STEP)
            ),
            "invalid_plan",
            "/guardrails/refusal_rate/max_ratio",
            "ratio from 1 to 1000",
        ),
        (
            format!(
                "{}guardrails:\n  error_rat: {{max: 2%}}\n",
                with_steps(ONE_STEP)
            ),
            "unknown_field",
            "/guardrails/error_rat",
            "unknown field `error_rat`",
        ),
        (
            format!("{}exclude_tenants: [\"\"]\n", with_steps(ONE_STEP)),
            "invalid_plan",
            "/exclude_tenants/0",
            "must not be empty",
        ),
        (
            format!("{}exclude_tenants: [\" acme\"]\n", with_steps(ONE_STEP)),
            "invalid_plan",
            "/exclude_tenants/0",
            "whitespace",
        ),
        (
            "steps:\n  - canary: {weight: 1%\n".to_owned(),
            "invalid_yaml",
            "",
            "",
        ),
    ];
    let mut failures = Vec::new();
    for (text, code, pointer, fragment) in &cases {
        let err = match Plan::parse_and_validate(text) {
            Ok(_) => {
                failures.push(format!("accepted:\n{text}"));
                continue;
            }
            Err(e) => e,
        };
        if err.code != *code || err.pointer != *pointer || !err.message.contains(fragment) {
            failures.push(format!(
                "plan:\n{text}\nwant {code} {pointer:?} ..{fragment}..\ngot  {} {:?} {}",
                err.code, err.pointer, err.message
            ));
        }
        // Display names where the problem is.
        let shown = err.to_string();
        if !pointer.is_empty() {
            assert!(shown.contains(pointer), "{shown}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn yaml_syntax_errors_carry_the_line() {
    let err = Plan::parse_yaml("steps:\n  - canary: {weight: 1%\nfoo: [\n").unwrap_err();
    assert_eq!(err.code, "invalid_yaml");
    let loc = err.location.clone().unwrap();
    assert!(loc.starts_with("line "), "{loc}");
    assert!(err.to_string().contains(&loc), "{err}");
}

#[test]
fn durations_parse_and_print() {
    let ok = [
        ("30s", 30_000, "30s"),
        ("5m", 300_000, "5m"),
        ("2h", 7_200_000, "2h"),
        ("1d", 86_400_000, "1d"),
        ("1h30m", 5_400_000, "1h30m"),
        ("1d2h3m4s", 93_784_000, "1d2h3m4s"),
        ("1s500ms", 1_500, "1s500ms"),
        ("90m", 5_400_000, "1h30m"),
        (" 5m ", 300_000, "5m"),
        ("0s", 0, "0s"),
        ("365d", 31_536_000_000, "365d"),
    ];
    for (text, ms, shown) in ok {
        let d = DurationSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(d.as_ms(), ms, "{text}");
        assert_eq!(d.to_string(), shown, "{text}");
        assert_eq!(DurationSpec::parse(shown).unwrap(), d);
    }
    let bad = [
        ("5 minutes", "unit"),
        ("5", "needs a unit"),
        ("-5m", "negative"),
        ("", "empty"),
        ("m", "start with a number"),
        ("5x", "unknown unit"),
        ("5min", "unknown unit"),
        ("30m1h", "largest to smallest"),
        ("5m5m", "largest to smallest"),
        ("366d", "longer than 365 days"),
        ("99999999999999999999s", "too large"),
        ("1.5h", "unit"),
    ];
    for (text, fragment) in bad {
        let err = DurationSpec::parse(text).unwrap_err().to_string();
        assert!(err.contains(fragment), "{text}: {err}");
    }
}

#[test]
fn remaining_waits_read_naturally() {
    for (ms, want) in [
        (0, "0s"),
        (1, "1s"),
        (200_000, "3m 20s"),
        (199_001, "3m 20s"),
        (3_605_000, "1h 5s"),
        (90_000_000, "1d 1h"),
    ] {
        assert_eq!(human_ms(ms), want, "{ms}");
    }
}
