//! Recursive least squares with a forgetting factor, made numerically safe,
//! and a rolling R² of the predictions it was judged on.
//!
//! Update for features `x`, observation `y` (λ = forgetting factor):
//! ```text
//! k = P·x / (λ + xᵀ·P·x)        gain
//! e = y - θᵀ·x                   a-priori error
//! θ = θ + k·e
//! P = (P - k·(P·x)ᵀ) / λ
//! ```
//! which minimises `Σ λ^(age) (y - θᵀx)²` over the samples so far (plus a
//! vanishing prior `θᵀθ / δ`): old samples weigh λ^age, so with λ = 0.99
//! the fit follows the last ~100 samples.
//!
//! # Numerical safety
//! - `λ + xᵀPx >= λ > 0` while `P` is positive semi-definite, and `P` is
//!   re-symmetrised after each update so rounding cannot break that.
//! - A direction the features never excite (a constant-zero feature such as
//!   the request size, or two features moving together) is not learned, so
//!   dividing by λ would grow its `P` by 1/λ per sample (×e^50 after 5 000
//!   samples) until it overflows: "covariance wind-up". After each update
//!   any diagonal above [`P_MAX`] is scaled back with `P = D·P·D`, `D_kk =
//!   sqrt(P_MAX / P_kk)`: this keeps `P` positive semi-definite and every
//!   entry bounded (`|P_ij| <= sqrt(P_ii·P_jj)`), and acts only on
//!   unexcited directions (an excited one has a small `P`).
//! - Any non-finite value (`θ`, `P`, the error) resets the model to the
//!   prior; a non-finite or huge input is skipped.
//!
//! # Predicting only where it was fitted
//! The coefficient of a direction the data never excited is arbitrary
//! (it drifts freely in that direction), harmless inside the data's
//! range but not outside: a backend idle for 9 s, after being fitted only
//! on 1 ms gaps, was predicted at -9 000 ms. So [`Snapshot::predict`]
//! clamps every feature to the range the model has recently seen (a
//! decayed envelope, [`Rls::update`]), except that in-flight extrapolates
//! upwards at a non-negative slope: more load than ever seen is exactly
//! what the prediction is for, and it never makes a backend faster.

/// Features: intercept, in-flight, EWMA latency, EWMA variance, time since
/// the last answer, request size.
pub(super) const DIM: usize = 6;

/// Prior variance of each coefficient, the initial diagonal of `P`: large
/// against coefficients of order 1-100 ms per feature unit, so the prior
/// is forgotten after a few samples.
pub(super) const P_INIT: f64 = 1e4;

/// Cap on a diagonal of `P`: an unexcited direction is never less certain
/// than the prior, so it cannot wind up.
const P_MAX: f64 = P_INIT;

/// Inputs above this (ms, or feature units) are treated as corrupt and
/// skipped: 10^9 ms is 11 days.
const MAX_INPUT: f64 = 1e9;

/// The feature that extrapolates (upwards) beyond its seen range.
pub(super) const INFLIGHT: usize = 1;

/// Predictions kept for the rolling R².
pub(super) const R2_WINDOW: usize = 200;

/// Fewest predictions for an R²: below it one odd answer dominates.
const R2_MIN: usize = 10;

/// The regression of one backend.
#[derive(Debug, Clone)]
pub(super) struct Rls {
    lambda: f64,
    theta: [f64; DIM],
    p: [[f64; DIM]; DIM],
    /// Updates since the last reset.
    updates: u64,
    /// Decayed envelope of the features seen (`lo > hi`: none yet).
    lo: [f64; DIM],
    hi: [f64; DIM],
}

/// What a prediction needs, published for lock-free readers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Snapshot {
    pub(super) theta: [f64; DIM],
    pub(super) lo: [f64; DIM],
    pub(super) hi: [f64; DIM],
}

impl Snapshot {
    /// `θᵀx` with `x` clamped to the seen range (see the module doc).
    pub(super) fn predict(&self, x: &[f64; DIM]) -> f64 {
        let mut sum = 0.0;
        for (k, &x) in x.iter().enumerate() {
            let (t, lo, hi) = (self.theta[k], self.lo[k], self.hi[k]);
            let v = if lo <= hi { x.clamp(lo, hi) } else { x };
            sum += t * v;
            if k == INFLIGHT && lo <= hi && x > hi {
                sum += t.max(0.0) * (x - hi);
            }
        }
        sum
    }
}

impl Rls {
    /// An empty model with forgetting factor `lambda` (clamped to (0, 1]).
    pub(super) fn new(lambda: f64) -> Self {
        let lambda = if lambda > 0.0 && lambda <= 1.0 {
            lambda
        } else {
            1.0
        };
        let mut m = Rls {
            lambda,
            theta: [0.0; DIM],
            p: [[0.0; DIM]; DIM],
            updates: 0,
            lo: [f64::INFINITY; DIM],
            hi: [f64::NEG_INFINITY; DIM],
        };
        m.reset();
        m
    }

    /// The coefficients and the seen range.
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            theta: self.theta,
            lo: self.lo,
            hi: self.hi,
        }
    }

    fn reset(&mut self) {
        self.theta = [0.0; DIM];
        self.p = [[0.0; DIM]; DIM];
        for (k, row) in self.p.iter_mut().enumerate() {
            row[k] = P_INIT;
        }
        self.updates = 0;
    }

    #[cfg(test)]
    pub(super) fn theta(&self) -> &[f64; DIM] {
        &self.theta
    }

    pub(super) fn updates(&self) -> u64 {
        self.updates
    }

    /// `θᵀx`, unclamped.
    pub(super) fn predict(&self, x: &[f64; DIM]) -> f64 {
        dot(&self.theta, x)
    }

    /// Folds in one observation; `false` if it was skipped (bad input) or
    /// the model had to be reset. Also widens the seen range to `x`, and
    /// lets it shrink back towards the recent features by 1 - λ of the
    /// gap per sample (the same memory as the fit).
    pub(super) fn update(&mut self, x: &[f64; DIM], y: f64) -> bool {
        let sane = |v: f64| v.is_finite() && v.abs() <= MAX_INPUT;
        if !(sane(y) && x.iter().all(|&v| sane(v))) {
            return false;
        }
        let shrink = 1.0 - self.lambda;
        for (k, &v) in x.iter().enumerate() {
            let (lo, hi) = (self.lo[k], self.hi[k]);
            if lo > hi {
                (self.lo[k], self.hi[k]) = (v, v);
            } else {
                self.lo[k] = v.min(lo + shrink * (v - lo));
                self.hi[k] = v.max(hi - shrink * (hi - v));
            }
        }
        let px: [f64; DIM] = std::array::from_fn(|i| dot(&self.p[i], x));
        let denom = self.lambda + dot(x, &px);
        let err = y - self.predict(x);
        if !(denom.is_finite() && denom >= self.lambda * 0.5 && err.is_finite()) {
            self.reset();
            return false;
        }
        for (t, &pk) in self.theta.iter_mut().zip(&px) {
            *t += pk / denom * err;
        }
        for i in 0..DIM {
            for j in 0..DIM {
                self.p[i][j] = (self.p[i][j] - px[i] * px[j] / denom) / self.lambda;
            }
        }
        self.condition();
        let finite = self.theta.iter().all(|t| t.is_finite())
            && self.p.iter().flatten().all(|v| v.is_finite())
            && (0..DIM).all(|k| self.p[k][k] >= 0.0);
        if !finite {
            self.reset();
            return false;
        }
        self.updates += 1;
        true
    }

    /// Symmetrises `P` and scales back wound-up directions (module doc).
    fn condition(&mut self) {
        let mut d = [1.0; DIM];
        for (k, dk) in d.iter_mut().enumerate() {
            if self.p[k][k] > P_MAX {
                *dk = (P_MAX / self.p[k][k]).sqrt();
            }
        }
        for i in 0..DIM {
            for j in i..DIM {
                let v = 0.5 * (self.p[i][j] + self.p[j][i]) * d[i] * d[j];
                self.p[i][j] = v;
                self.p[j][i] = v;
            }
        }
    }

    #[cfg(test)]
    pub(super) fn p_diag_max(&self) -> f64 {
        (0..DIM).map(|k| self.p[k][k]).fold(0.0, f64::max)
    }
}

fn dot(a: &[f64; DIM], b: &[f64; DIM]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// The last [`R2_WINDOW`] (predicted, observed) pairs.
#[derive(Debug, Clone)]
pub(super) struct Scores {
    pairs: [(f64, f64); R2_WINDOW],
    len: usize,
    next: usize,
}

impl Default for Scores {
    fn default() -> Self {
        Scores {
            pairs: [(0.0, 0.0); R2_WINDOW],
            len: 0,
            next: 0,
        }
    }
}

impl Scores {
    pub(super) fn record(&mut self, predicted: f64, observed: f64) {
        if !(predicted.is_finite() && observed.is_finite()) {
            return;
        }
        self.pairs[self.next] = (predicted, observed);
        self.next = (self.next + 1) % R2_WINDOW;
        self.len = (self.len + 1).min(R2_WINDOW);
    }

    /// `1 - SSE/SST` over the window; `None` with fewer than [`R2_MIN`]
    /// pairs or observations without variance (R² is undefined then).
    pub(super) fn r_squared(&self) -> Option<f64> {
        if self.len < R2_MIN {
            return None;
        }
        let pairs = &self.pairs[..self.len];
        let n = self.len as f64;
        let mean = pairs.iter().map(|p| p.1).sum::<f64>() / n;
        let sst: f64 = pairs.iter().map(|p| (p.1 - mean).powi(2)).sum();
        let sse: f64 = pairs.iter().map(|p| (p.1 - p.0).powi(2)).sum();
        let scale: f64 = pairs.iter().map(|p| p.1 * p.1).sum();
        if !(sst > scale * 1e-12 && sst > 0.0) {
            return None;
        }
        Some(1.0 - sse / sst).filter(|r| r.is_finite())
    }
}
