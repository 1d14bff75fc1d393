//! Cost burn rate: the current hour against the moving average, and the day against a budget.

use serde::{Deserialize, Serialize};

/// Hours in the moving average (before the current hour).
pub const BURN_WINDOW_HOURS: usize = 24;
/// `ratio` at or above this raises `alert`.
pub const BURN_ALERT_RATIO: f64 = 2.0;
/// `projected_daily` above `budget` times this raises `budget_warning`.
pub const BUDGET_WARNING_FACTOR: f64 = 1.2;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BurnRate {
    /// Cost of the current (last) hour.
    pub current_hour: f64,
    /// Mean hourly cost over up to 24 hours before it; `None` without history.
    pub moving_average: Option<f64>,
    /// current_hour / moving_average; `None` without history or with a zero average.
    pub ratio: Option<f64>,
    /// ratio >= 2.
    pub alert: bool,
    /// A day at the current hour's rate: 24 x current_hour.
    pub projected_daily: f64,
    pub budget: Option<f64>,
    /// projected_daily > 1.2 x budget.
    pub budget_warning: bool,
}

/// `hourly_costs_usd` is oldest first; its last entry is the current hour (or the last full
/// hour). Non-finite or negative entries count as 0.
pub fn burn_rate(hourly_costs_usd: &[f64], daily_budget_usd: Option<f64>) -> BurnRate {
    let clean = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
    let (current_hour, history) = match hourly_costs_usd.split_last() {
        Some((last, rest)) => (clean(*last), rest),
        None => (0.0, &[][..]),
    };
    let start = history.len().saturating_sub(BURN_WINDOW_HOURS);
    let window = history.get(start..).unwrap_or(&[]);
    let moving_average = (!window.is_empty())
        // At most 24 entries: the count is exact as f64.
        .then(|| window.iter().copied().map(clean).sum::<f64>() / window.len() as f64);
    let ratio = moving_average
        .filter(|m| *m > 0.0)
        .map(|m| current_hour / m);
    let projected_daily = current_hour * 24.0;
    let budget = daily_budget_usd.filter(|b| b.is_finite() && *b >= 0.0);
    BurnRate {
        current_hour,
        moving_average,
        ratio,
        alert: ratio.is_some_and(|r| r >= BURN_ALERT_RATIO),
        projected_daily,
        budget,
        budget_warning: budget.is_some_and(|b| projected_daily > BUDGET_WARNING_FACTOR * b),
    }
}
