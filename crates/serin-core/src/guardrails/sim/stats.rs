//! Intervals for benchmark figures: a rate from a handful of releases is only worth its
//! interval.

use serde::Serialize;

/// Bounds of an interval of request counts; `None` is "never" (beyond every count).
pub type CountInterval = (Option<u64>, Option<u64>);

/// A two-sided interval at some confidence.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// P(X <= k) for X ~ Binomial(n, p), summed in log space so large `n` does not underflow
/// the first terms.
fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    if k >= n || p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    // Counts → f64: exact below 2^53.
    let mut ln_term = n as f64 * lq;
    let mut sum = ln_term.exp();
    for i in 1..=k {
        ln_term += ((n - i + 1) as f64 / i as f64).ln() + lp - lq;
        sum += ln_term.exp();
    }
    sum.min(1.0)
}

/// The `p` in [0, 1] where the decreasing function `f` crosses `target`, by bisection.
fn solve_decreasing(f: impl Fn(f64) -> f64, target: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 1.0);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if f(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// The exact (Clopper-Pearson) interval for `k` successes in `n` trials at `confidence`
/// (0.95 for 95%): it covers the true rate at least that often for every rate, which the
/// normal approximation does not near 0, where false-rollback rates live.
pub fn clopper_pearson(k: u64, n: u64, confidence: f64) -> Interval {
    if n == 0 {
        return Interval {
            low: 0.0,
            high: 1.0,
        };
    }
    let k = k.min(n);
    let tail = (1.0 - confidence.clamp(0.0, 1.0)) / 2.0;
    let low = if k == 0 {
        0.0
    } else {
        // P(X >= k | p) = 1 - P(X <= k - 1 | p) rises with p; solve it = tail.
        solve_decreasing(|p| binomial_cdf(k - 1, n, p), 1.0 - tail)
    };
    let high = if k == n {
        1.0
    } else {
        solve_decreasing(|p| binomial_cdf(k, n, p), tail)
    };
    Interval { low, high }
}

/// A distribution-free 95% interval for the median of `sorted` (ascending; `None` sorts last
/// and stands for "never"): the order statistics around the middle whose ranks the binomial
/// (normal approximation) puts the median between. `None` bounds mean "never".
pub fn median_interval(sorted: &[Option<u64>]) -> Option<CountInterval> {
    let m = sorted.len();
    if m == 0 {
        return None;
    }
    // Sample sizes → f64; ranks back to usize (small, non-negative after the clamp).
    let half = m as f64 / 2.0;
    let spread = 1.96 * (m as f64).sqrt() / 2.0;
    let lo = ((half - spread).floor().max(1.0) as usize).min(m);
    let hi = ((half + spread).ceil() as usize + 1).clamp(1, m);
    Some((
        sorted.get(lo - 1).copied().flatten(),
        sorted.get(hi - 1).copied().flatten(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clopper_pearson_matches_published_values() {
        // No events in 300 trials: the 95% upper bound is 1 - 0.025^(1/300).
        let i = clopper_pearson(0, 300, 0.95);
        assert_eq!(i.low, 0.0);
        assert!((i.high - (1.0 - 0.025f64.powf(1.0 / 300.0))).abs() < 1e-9);
        // 5 of 100: 0.01643 to 0.11284 (the standard table values).
        let i = clopper_pearson(5, 100, 0.95);
        assert!((i.low - 0.016_431).abs() < 1e-5, "{i:?}");
        assert!((i.high - 0.112_835).abs() < 1e-5, "{i:?}");
        let all = clopper_pearson(10, 10, 0.95);
        assert_eq!(all.high, 1.0);
        assert!((all.low - 0.025f64.powf(0.1)).abs() < 1e-9);
    }

    #[test]
    fn the_median_interval_brackets_the_median_and_treats_never_as_largest() {
        let v: Vec<Option<u64>> = (1..=100).map(Some).collect();
        let (lo, hi) = median_interval(&v).unwrap_or((None, None));
        assert!(lo.is_some_and(|x| (38..50).contains(&x)), "{lo:?}");
        assert!(hi.is_some_and(|x| (51..64).contains(&x)), "{hi:?}");
        let mut w: Vec<Option<u64>> = vec![Some(1), Some(2), None, None, None];
        w.sort_by_key(|x| x.unwrap_or(u64::MAX));
        assert_eq!(median_interval(&w).map(|x| x.1), Some(None));
    }
}
