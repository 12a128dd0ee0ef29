//! How one backend's latency grows with the requests already in flight at
//! dispatch: a decayed ridge least-squares line `latency ≈ base + slope·x`,
//! slope clamped at >= 0, for the overload guard.
//!
//! Lock-free: five decayed sums (`Σd·1, Σd·x, Σd·y, Σd·x², Σd·xy`), each an
//! f64 in an `AtomicU64` updated by its own compare-exchange loop
//! (`s = DECAY·s + term`). Concurrent samples all land; two of them may be
//! folded in a different order into different sums, which weighs one of
//! them by `DECAY` more or less in some sums: a relative error of 1 -
//! DECAY, harmless for a guard.

use std::sync::atomic::{AtomicU64, Ordering};

/// Per-sample decay: the fit remembers about the last 1/(1-0.99) = 100
/// samples, 0.1-0.2 s at a loaded backend in the capacity scenario, so it
/// follows a backend that gets faster or slower within a second.
const DECAY: f64 = 0.99;

/// Ridge term, in in-flight²: with in-flight varying by less than about one
/// request there is no evidence of a slope, and the estimate shrinks to 0
/// (flat) instead of dividing by a near-zero variance.
const RIDGE: f64 = 1.0;

/// Total decayed weight below which the fit is not trusted (about two
/// samples): one point determines no line.
const MIN_WEIGHT: f64 = 1.5;

/// Smallest base latency used as a divisor, in ms: a line fitted only to
/// queued requests can extrapolate to a base near or below zero; 0.1 ms
/// keeps the slowdown finite and (correctly) large.
const MIN_BASE_MS: f64 = 0.1;

/// Relaxed: each sum stands alone and guards nothing.
const ORDER: Ordering = Ordering::Relaxed;

#[derive(Debug, Default)]
pub(super) struct LoadFit {
    /// Σd, Σd·x, Σd·y, Σd·x², Σd·x·y as f64 bits (0.0 is all zero bits).
    sums: [AtomicU64; 5],
}

/// A fitted line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Line {
    /// Latency with nothing else in flight, ms (>= [`MIN_BASE_MS`]).
    pub(super) base: f64,
    /// Extra latency per request already in flight, ms (>= 0).
    pub(super) slope: f64,
}

impl Line {
    /// The predicted latency with `inflight` requests already in flight.
    pub(super) fn predict(&self, inflight: f64) -> f64 {
        self.base + self.slope * inflight.max(0.0)
    }

    /// `predict(inflight) / base`: 1.0 when the load costs nothing.
    pub(super) fn slowdown(&self, inflight: f64) -> f64 {
        self.predict(inflight) / self.base
    }
}

impl LoadFit {
    /// Folds in one request: `x` in flight when it was sent, `y` ms.
    pub(super) fn add(&self, x: f64, y: f64) {
        if !(x.is_finite() && y.is_finite()) {
            return;
        }
        for (sum, term) in self.sums.iter().zip([1.0, x, y, x * x, x * y]) {
            let fold = |bits: u64| Some((DECAY * f64::from_bits(bits) + term).to_bits());
            // The closure never refuses, so this always succeeds.
            let _ = sum.fetch_update(ORDER, ORDER, fold);
        }
    }

    /// On a reload: `old`'s sums as they are.
    pub(super) fn take_over(&self, old: &LoadFit) {
        for (sum, from) in self.sums.iter().zip(&old.sums) {
            sum.store(from.load(ORDER), ORDER);
        }
    }

    /// The current line; `None` before about two samples.
    pub(super) fn line(&self) -> Option<Line> {
        let [w, x, y, xx, xy] = self.sums.each_ref().map(|s| f64::from_bits(s.load(ORDER)));
        if w.is_nan() || w < MIN_WEIGHT {
            return None;
        }
        let (mx, my) = (x / w, y / w);
        let var = (xx / w - mx * mx).max(0.0);
        let cov = xy / w - mx * my;
        let slope = (cov / (var + RIDGE)).max(0.0);
        let base = my - slope * mx;
        (slope.is_finite() && base.is_finite()).then_some(Line {
            base: base.max(MIN_BASE_MS),
            slope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_queueing_slope() {
        let f = LoadFit::default();
        assert_eq!(f.line(), None);
        for k in 0..300 {
            let x = (k % 20) as f64;
            f.add(x, 20.0 + 5.0 * x);
        }
        let l = f.line().unwrap();
        // Ridge shrinks the slope by var/(var+1) with var ≈ 33.
        assert!((l.slope - 5.0).abs() < 0.2, "{l:?}");
        assert!((l.base - 20.0).abs() < 3.0, "{l:?}");
        assert!(l.slowdown(10.0) > 3.0);
    }

    #[test]
    fn flat_or_falling_latency_has_no_slope() {
        let f = LoadFit::default();
        for k in 0..100 {
            f.add(90.0 + (k % 3) as f64, 200.0);
        }
        let l = f.line().unwrap();
        assert!(
            l.slope.abs() < 1e-9 && (l.base - 200.0).abs() < 1e-6,
            "{l:?}"
        );
        let g = LoadFit::default();
        for k in 0..100 {
            g.add((k % 10) as f64, 100.0 - (k % 10) as f64);
        }
        assert_eq!(g.line().unwrap().slope, 0.0);
        // Constant in-flight: no evidence, no slope, no NaN.
        let h = LoadFit::default();
        for _ in 0..100 {
            h.add(4.0, 30.0);
        }
        assert_eq!(h.line().unwrap().slowdown(100.0), 1.0);
        h.add(f64::NAN, 1.0);
        assert!(h.line().unwrap().base.is_finite());
    }
}
