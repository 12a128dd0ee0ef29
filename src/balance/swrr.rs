//! Smooth weighted round-robin (nginx's `ngx_http_upstream_get_peer`),
//! lock-free.
//!
//! Each pick adds every eligible backend's weight to its `current`, takes
//! the largest `current` (first index on ties, as nginx), and subtracts the
//! sum of the weights it added from the winner's. Sequentially this is
//! nginx's algorithm exactly: over any `Σw` consecutive picks with fixed
//! weights, backend `i` is picked exactly `w_i` times, spread evenly
//! (`{5,1,1}` gives `a a b a c a a`).
//!
//! Shared by all workers without a lock: the adds and the subtraction are
//! `fetch_add`s, so every pick's contribution lands in full and `Σ current`
//! returns to 0 after each pick whatever the interleaving. Concurrent picks
//! may see the same maximum and pick the same backend twice in a row; its
//! `current` then drops by two sums and it sits out correspondingly longer,
//! so the long-run shares still equal the weights (`current_i = K·w_i -
//! S·picks_i` stays bounded), only the exact interleaving differs. Weights
//! may change at any time (every recompute): as in nginx, `current` is kept
//! and the new weights take over smoothly.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Integer weight of a share of 1.0: 0.01% resolution, so the 1% floor is
/// 100 units and rounding moves no share by more than 0.005%.
pub(super) const SCALE: u64 = 10_000;

/// Relaxed: each counter stands alone; the sum invariant only needs every
/// read-modify-write to land, which atomics guarantee at any ordering.
const ORDER: Ordering = Ordering::Relaxed;

#[derive(Debug)]
pub(super) struct Swrr {
    weights: Box<[AtomicU64]>,
    current: Box<[AtomicI64]>,
}

impl Swrr {
    /// `n` backends, all weighing `weight`.
    pub(super) fn new(n: usize, weight: u64) -> Self {
        Swrr {
            weights: (0..n).map(|_| AtomicU64::new(weight.min(SCALE))).collect(),
            current: (0..n).map(|_| AtomicI64::new(0)).collect(),
        }
    }

    /// Sets backend `i`'s weight (at most [`SCALE`]).
    pub(super) fn set(&self, i: usize, weight: u64) {
        if let Some(w) = self.weights.get(i) {
            w.store(weight.min(SCALE), ORDER);
        }
    }

    #[cfg(test)]
    pub(super) fn weight(&self, i: usize) -> u64 {
        self.weights.get(i).map_or(0, |w| w.load(ORDER))
    }

    /// The next backend among those `eligible` with a non-zero weight;
    /// `None` if there is none.
    pub(super) fn pick(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<(i64, usize)> = None;
        let mut total: i64 = 0;
        for (i, (w, cur)) in self.weights.iter().zip(self.current.iter()).enumerate() {
            // At most SCALE, so the casts and sums cannot overflow.
            let w = w.load(ORDER).min(SCALE) as i64;
            if w == 0 || !eligible(i) {
                continue;
            }
            let c = cur.fetch_add(w, ORDER) + w;
            total += w;
            if best.is_none_or(|(b, _)| c > b) {
                best = Some((c, i));
            }
        }
        let (_, i) = best?;
        self.current[i].fetch_sub(total, ORDER);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(weights: &[u64]) -> Swrr {
        let s = Swrr::new(weights.len(), 0);
        for (i, &w) in weights.iter().enumerate() {
            s.set(i, w);
        }
        s
    }

    #[test]
    fn nginx_sequence() {
        let s = with(&[5, 1, 1]);
        let picks: Vec<_> = (0..14).filter_map(|_| s.pick(|_| true)).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weights_are_applied_exactly_over_each_cycle() {
        let weights = [9, 90, 1, 0, 37];
        let s = with(&weights);
        let cycle: u64 = weights.iter().sum();
        for _ in 0..3 {
            let mut counts = [0u64; 5];
            for _ in 0..cycle {
                counts[s.pick(|_| true).unwrap()] += 1;
            }
            assert_eq!(counts, weights);
        }
        // Ineligible backends are skipped; the others keep their ratio.
        let mut counts = [0u64; 5];
        for _ in 0..cycle - 90 {
            counts[s.pick(|i| i != 1).unwrap()] += 1;
        }
        assert_eq!(counts, [9, 0, 1, 0, 37]);
        assert_eq!(s.pick(|i| i == 3), None);
        assert_eq!(with(&[]).pick(|_| true), None);
    }

    #[test]
    fn shares_hold_under_concurrent_picks() {
        let s = with(&[700, 200, 100]);
        let counts: Vec<[u64; 3]> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let mut c = [0u64; 3];
                        for _ in 0..5_000 {
                            c[s.pick(|_| true).unwrap()] += 1;
                        }
                        c
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: Vec<u64> = (0..3).map(|i| counts.iter().map(|c| c[i]).sum()).collect();
        // 20 000 picks = 20 exact cycles; races shift at most a few.
        for (got, want) in total.iter().zip([14_000u64, 4_000, 2_000]) {
            assert!(got.abs_diff(want) <= 8, "{total:?}");
        }
        assert_eq!(s.weight(0), 700);
    }
}
