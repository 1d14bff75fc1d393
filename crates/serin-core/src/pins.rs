//! How far a pinned model is behind the newest snapshot of its family (`serin pins`).

use jiff::civil::Date;
use serde::Serialize;

use crate::catalog::{AliasReason, ModelCatalog, ModelStatus};

/// Where a pin stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PinStatus {
    /// The newest snapshot of its family.
    Current,
    /// A newer snapshot of the same family exists.
    Behind,
    /// Not pinned: a moving alias.
    Alias,
    /// Looks pinned but the catalog does not know it, so there is nothing to compare with.
    Unknown,
}

impl PinStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            PinStatus::Current => "current",
            PinStatus::Behind => "behind",
            PinStatus::Alias => "alias",
            PinStatus::Unknown => "unknown",
        }
    }
}

/// One pinned model compared with the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PinReport {
    /// The provider as written in the bundle.
    pub provider: String,
    /// The model id as written in the bundle.
    pub snapshot: String,
    /// Where it stands.
    pub status: PinStatus,
    /// For an alias the catalog knows: the snapshot it currently means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_means: Option<String>,
    /// For an alias: why it counts as one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_reason: Option<AliasReason>,
    /// The family (of the alias target, for a known alias).
    pub family: Option<String>,
    /// Release date of the pinned snapshot (of the alias target, for a known alias).
    pub released: Option<Date>,
    /// The newest snapshot of the same family.
    pub newest: Option<String>,
    /// Its release date.
    pub newest_released: Option<Date>,
    /// Days from the pinned snapshot's release to the newest one's (0 when current); `None`
    /// when either date is unknown or the id is an alias.
    pub lag_days: Option<i64>,
}

/// Compares `snapshot` of `provider` with the newest snapshot of its family in `catalog`.
pub fn pin_report(catalog: &ModelCatalog, provider: &str, snapshot: &str) -> PinReport {
    let mut report = PinReport {
        provider: provider.to_owned(),
        snapshot: snapshot.to_owned(),
        status: PinStatus::Unknown,
        alias_means: None,
        alias_reason: None,
        family: None,
        released: None,
        newest: None,
        newest_released: None,
        lag_days: None,
    };
    match catalog.classify(provider, snapshot) {
        ModelStatus::Unknown => {}
        ModelStatus::Alias { means, reason } => {
            report.status = PinStatus::Alias;
            report.alias_reason = Some(reason);
            if let Some(target) = means.as_deref().and_then(|m| catalog.snapshot(provider, m)) {
                report.family = Some(target.family.clone());
                report.released = target.released;
                if let Some(newest) = catalog.newest_in_family(provider, &target.family) {
                    report.newest = Some(newest.id.clone());
                    report.newest_released = newest.released;
                }
            }
            report.alias_means = means;
        }
        ModelStatus::Snapshot { family, released } => {
            report.released = released;
            let newest = family
                .as_deref()
                .and_then(|f| catalog.newest_in_family(provider, f));
            report.family = family;
            if let Some(newest) = newest {
                report.newest = Some(newest.id.clone());
                report.newest_released = newest.released;
                let is_newest = newest.id == snapshot;
                report.lag_days = match (released, newest.released) {
                    (Some(pinned), Some(latest)) => Some(days_between(pinned, latest).max(0)),
                    _ => None,
                };
                let behind = !is_newest && report.lag_days.is_none_or(|d| d > 0);
                report.status = if behind {
                    PinStatus::Behind
                } else {
                    PinStatus::Current
                };
            } else {
                report.status = PinStatus::Current;
            }
        }
    }
    report
}

/// Whole days from `from` to `to` (negative if `to` is earlier).
fn days_between(from: Date, to: Date) -> i64 {
    // Date - Date yields a span in days; fall back to counting via the ordinal if it ever fails.
    match from.until(to) {
        Ok(span) => i64::from(span.get_days()),
        Err(_) => {
            let ord = |d: Date| i64::from(d.year()) * 366 + i64::from(d.day_of_year());
            ord(to) - ord(from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn lag_is_days_from_pinned_release_to_newest_release_in_the_family() {
        let c = ModelCatalog::builtin();
        let r = pin_report(&c, "anthropic", "claude-opus-4-20250514");
        assert_eq!(r.status, PinStatus::Behind);
        assert_eq!(r.family.as_deref(), Some("claude-opus"));
        assert_eq!(r.released, Some(date(2025, 5, 14)));
        assert_eq!(r.newest.as_deref(), Some("claude-opus-4-7-20260108"));
        assert_eq!(r.newest_released, Some(date(2026, 1, 8)));
        // 2025-05-14 → 2026-01-08: 17 (rest of May) + 214 (Jun..Dec) + 8 = 239 days.
        assert_eq!(r.lag_days, Some(239));

        let r = pin_report(&c, "Anthropic", "claude-opus-4-7-20260108");
        assert_eq!(r.status, PinStatus::Current);
        assert_eq!(r.lag_days, Some(0));
    }

    #[test]
    fn aliases_and_unknown_snapshots_have_no_lag() {
        let c = ModelCatalog::builtin();
        let r = pin_report(&c, "anthropic", "claude-sonnet-4-5");
        assert_eq!(r.status, PinStatus::Alias);
        assert_eq!(r.alias_means.as_deref(), Some("claude-sonnet-4-5-20250929"));
        assert_eq!(r.family.as_deref(), Some("claude-sonnet"));
        assert_eq!(r.lag_days, None);

        let r = pin_report(&c, "acme", "acme-large-2025-01-01");
        assert_eq!(r.status, PinStatus::Unknown);
        assert_eq!(r.newest, None);
        assert_eq!(r.lag_days, None);

        let json = serde_json::to_value(pin_report(&c, "x", "latest")).unwrap();
        assert_eq!(json["status"], "alias");
        assert_eq!(json["alias_reason"], "latest");
    }

    #[test]
    fn days_between_counts_calendar_days() {
        assert_eq!(days_between(date(2024, 2, 28), date(2024, 3, 1)), 2);
        assert_eq!(days_between(date(2024, 12, 31), date(2025, 1, 1)), 1);
        assert_eq!(days_between(date(2025, 1, 2), date(2025, 1, 1)), -1);
    }
}
