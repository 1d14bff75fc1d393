//! The model catalog and pin reports through the public API.

use serin_core::catalog::{ModelCatalog, ModelStatus};
use serin_core::pins::{PinStatus, pin_report};

#[test]
fn builtin_catalog_resolves_aliases() {
    let c = ModelCatalog::builtin();
    assert_eq!(
        c.classify("anthropic", "claude-sonnet-4-5"),
        ModelStatus::Alias {
            means: Some("claude-sonnet-4-5-20250929".into()),
            reason: serin_core::catalog::AliasReason::Catalog,
        }
    );
    assert!(matches!(
        c.classify("openai", "gpt-4.1-2025-04-14"),
        ModelStatus::Snapshot { .. }
    ));
}

#[test]
fn pin_report_for_an_old_sonnet_counts_the_days_to_the_newest() {
    let r = pin_report(
        &ModelCatalog::builtin(),
        "anthropic",
        "claude-3-7-sonnet-20250219",
    );
    assert_eq!(r.status, PinStatus::Behind);
    assert_eq!(r.newest.as_deref(), Some("claude-sonnet-4-5-20250929"));
    // 2025-02-19 → 2025-09-29 = 9 (Feb) + 31+30+31+30+31+31 (Mar..Aug) + 29 = 222 days.
    assert_eq!(r.lag_days, Some(222));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["status"], "behind");
    assert_eq!(json["released"], "2025-02-19");
    assert_eq!(json["newest_released"], "2025-09-29");
}
