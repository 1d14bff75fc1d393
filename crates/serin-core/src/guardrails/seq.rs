//! Anytime-valid e-processes (see the module docs of [`super`] for why each is valid).

use serde::{Deserialize, Serialize};

/// Mixture components: alternatives at these multiples of the null (odds ratios for the
/// one-sample test, rate ratios for the two-sample one), equal weights.
pub(crate) const GRID: [f64; 4] = [1.25, 1.6, 2.2, 3.5];
const LN_W: f64 = -1.386_294_361_119_890_6; // ln(1/4)
/// Largest log e-value kept (e ~ 1e300) so the value always serialises as a number.
const LN_CAP: f64 = 690.0;

fn logsumexp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

fn clamp_p(p: f64) -> f64 {
    p.clamp(1e-9, 1.0 - 1e-9)
}

/// H0: p <= p0 for Bernoulli trials, from counts (`s` successes of `n`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct OneSample {
    pub s: u64,
    pub n: u64,
}

impl OneSample {
    pub fn add(&mut self, hits: u64, trials: u64) {
        self.s += hits;
        self.n += trials;
    }

    /// Log-LRs of the grid's alternatives: above `p0` (against `H0: p <= p0`) or, with
    /// `below`, under it (against `H0: p >= p0`, the non-inferiority null).
    fn components(&self, p0: f64, below: bool) -> [f64; GRID.len()] {
        let p0 = clamp_p(p0);
        let odds0 = p0 / (1.0 - p0);
        // Counts → f64: exact below 2^53.
        let (s, f) = (self.s as f64, (self.n - self.s.min(self.n)) as f64);
        GRID.map(|r| {
            let o = if below { odds0 / r } else { odds0 * r };
            let p1 = o / (1.0 + o);
            s * (p1 / p0).ln() + f * ((1.0 - p1) / (1.0 - p0)).ln()
        })
    }

    pub fn ln_e(&self, p0: f64) -> f64 {
        let c = self.components(p0, false).map(|l| l + LN_W);
        logsumexp(&c).min(LN_CAP)
    }

    /// The e-value against `H0: p >= p0`: evidence that the rate is below `p0`. Each
    /// component's one-step expectation is `1 + (p - p0)(p1 - p0)/(p0(1 - p0))`, at most 1
    /// when `p >= p0 > p1`.
    pub fn ln_e_below(&self, p0: f64) -> f64 {
        let c = self.components(p0, true).map(|l| l + LN_W);
        logsumexp(&c).min(LN_CAP)
    }

    /// Best component's log-LR per trial so far (the drift at the observed effect).
    pub fn drift(&self, p0: f64) -> f64 {
        self.drift_dir(p0, false)
    }

    pub fn drift_below(&self, p0: f64) -> f64 {
        self.drift_dir(p0, true)
    }

    fn drift_dir(&self, p0: f64, below: bool) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let best = self
            .components(p0, below)
            .into_iter()
            .fold(f64::NEG_INFINITY, f64::max);
        best / self.n as f64 // count → f64
    }
}

/// Probability that an event falls in canary when canary gets share `rho` of the exposure and
/// its event rate is `lambda` times control's.
pub(crate) fn q_of(rho: f64, lambda: f64) -> f64 {
    let rho = rho.clamp(1e-6, 1.0 - 1e-6);
    lambda * rho / (lambda * rho + 1.0 - rho)
}

/// H0: canary's event rate <= lambda0 x control's, from events only: each event is a canary
/// event with probability q(rho, lambda), increasing in lambda.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Conditional {
    /// Log-likelihood ratio of each grid component against the null.
    ll: [f64; GRID.len()],
    pub canary_events: u64,
    pub control_events: u64,
    /// Alternatives below the null (`λ0 / r`): the non-inferiority test of `H0: λ >= λ0`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub below: bool,
    #[serde(skip)]
    cache: Option<Cache>,
}

#[derive(Clone, Debug)]
struct Cache {
    rho: f64,
    lambda0: f64,
    hit: [f64; GRID.len()],
    miss: [f64; GRID.len()],
}

impl Conditional {
    /// The non-inferiority twin: evidence that canary's rate is below `λ0` x control's.
    /// Under `λ >= λ0` an event is canary with probability `q >= q0 > q1`, so each factor's
    /// expectation `1 + (q - q0)(q1 - q0)/(q0(1 - q0))` is at most 1.
    pub fn below() -> Conditional {
        Conditional {
            below: true,
            ..Conditional::default()
        }
    }

    fn alt(&self, lambda0: f64, r: f64) -> f64 {
        if self.below { lambda0 / r } else { lambda0 * r }
    }

    /// One event (`canary` tells which arm), with the exposure share and null ratio in force
    /// before it was seen.
    pub fn event(&mut self, canary: bool, rho: f64, lambda0: f64) {
        self.events(canary, 1, rho, lambda0);
    }

    /// `n` events of one arm at the same share and null ratio: the product of their factors
    /// (each component's is fixed, so the order of the events does not matter).
    pub fn events(&mut self, canary: bool, n: u64, rho: f64, lambda0: f64) {
        if n == 0 {
            return;
        }
        let fresh = matches!(&self.cache, Some(c) if c.rho == rho && c.lambda0 == lambda0);
        if !fresh {
            let q0 = q_of(rho, lambda0);
            let q1 = GRID.map(|r| q_of(rho, self.alt(lambda0, r)));
            self.cache = Some(Cache {
                rho,
                lambda0,
                hit: q1.map(|q| (q / q0).ln()),
                miss: q1.map(|q| ((1.0 - q) / (1.0 - q0)).ln()),
            });
        }
        if let Some(c) = &self.cache {
            let d = if canary { &c.hit } else { &c.miss };
            // Count → f64: exact below 2^53.
            let k = n as f64;
            for (l, x) in self.ll.iter_mut().zip(d) {
                *l += k * x;
            }
        }
        if canary {
            self.canary_events += n;
        } else {
            self.control_events += n;
        }
    }

    /// Canary's own Bernoulli trials against a (predictable, possibly moving) null rate `p0`.
    pub fn trials(&mut self, hits: u64, misses: u64, p0: f64) {
        let fresh = matches!(&self.cache, Some(c) if c.rho.is_nan() && c.lambda0 == p0);
        if !fresh {
            let p0c = clamp_p(p0);
            let odds0 = p0c / (1.0 - p0c);
            let p1 = GRID.map(|r| {
                let o = if self.below { odds0 / r } else { odds0 * r };
                o / (1.0 + o)
            });
            self.cache = Some(Cache {
                rho: f64::NAN,
                lambda0: p0,
                hit: p1.map(|p| (p / p0c).ln()),
                miss: p1.map(|p| ((1.0 - p) / (1.0 - p0c)).ln()),
            });
        }
        if let Some(c) = &self.cache {
            // Counts → f64: exact below 2^53.
            let (h, m) = (hits as f64, misses as f64);
            for ((l, a), b) in self.ll.iter_mut().zip(&c.hit).zip(&c.miss) {
                *l += h * a + m * b;
            }
        }
        self.canary_events += hits;
    }

    pub fn ln_e(&self) -> f64 {
        logsumexp(&self.ll.map(|l| l + LN_W)).min(LN_CAP)
    }

    pub fn best(&self) -> f64 {
        self.ll.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Lower confidence bound of a Poisson-like count rate `s / n` at level `delta`, made
/// (approximately) time-uniform by the same log-log inflation as [`rate_upper_bound`]: the
/// upper tail `P(S >= mu + sqrt(2 mu L) + L/3) <= e^-L` inverted in mu.
pub(crate) fn rate_lower_bound(s: u64, n: u64, delta: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let nf = n as f64; // count → f64
    let l = (1.0 / delta).ln() + 1.5 * (1.0 + nf.max(1.0).ln().max(1.0)).ln();
    let s = s as f64; // count → f64
    let x = ((4.0 * s + 2.0 * l / 3.0).sqrt() - (2.0 * l).sqrt()) / 2.0;
    (x.max(0.0).powi(2) / nf).clamp(0.0, 1.0)
}

/// Simple-vs-simple log-LR accumulator (the oracle that knows the true effect).
pub(crate) fn bernoulli_llr(hit: bool, p0: f64, p1: f64) -> f64 {
    let (p0, p1) = (clamp_p(p0), clamp_p(p1));
    if hit {
        (p1 / p0).ln()
    } else {
        ((1.0 - p1) / (1.0 - p0)).ln()
    }
}

/// Upper confidence bound of a Poisson-like count rate `s / n` at level `delta`, made
/// (approximately) time-uniform by a log-log inflation: the lower tail
/// `P(S <= mu - sqrt(2 mu L)) <= e^-L` inverted in mu.
pub(crate) fn rate_upper_bound(s: u64, n: u64, delta: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let nf = n as f64; // count → f64
    let l = (1.0 / delta).ln() + 1.5 * (1.0 + nf.max(1.0).ln().max(1.0)).ln();
    let s = s as f64; // count → f64
    let mu = ((l / 2.0).sqrt() + (l / 2.0 + s).sqrt()).powi(2);
    (mu / nf).min(1.0)
}
