//! The tail-budget linear program, solved exactly.
//!
//! Given per backend `i` its mean latency `m_i` and tail probability
//! `t_i = P(L_i > T)`, choose traffic shares `w`:
//!
//! ```text
//! minimise  Σ w_i m_i
//! s.t.      Σ w_i = 1,   Σ w_i t_i <= budget,   w_i >= floor
//! ```
//!
//! # Method
//! Backend weights scale the floors: `f_i = min(n·floor, 1)·g_i / Σ g` for
//! weights `g` (all equal: `min(floor, 1/n)` each), so the floors' total
//! stays what equal weights would give. Below, `floor` stands for `f_i`.
//!
//! Substitute `w_i = floor + v_i`: the rest `R = 1 - n·floor` is shared
//! freely (`Σ v_i = R`, `v_i >= 0`) under the remaining budget
//! `B = budget - floor·Σ t_i`. This is a fractional knapsack with one
//! "must fill exactly R" constraint: every unit of share sent to `i` costs
//! `m_i` latency and `t_i` budget. [`solve`] enumerates
//! - every single backend taking all of `R`, if `t_i·R <= B`, and
//! - every pair `(i, k)` with `t_k·R <= B < t_i·R`, mixed so the budget is
//!   spent exactly: `v_i = (B - t_k·R) / (t_i - t_k)`, `v_k = R - v_i`,
//!
//! and keeps the cheapest: O(n²), a few thousand flops for tens of
//! backends, every 100 ms.
//!
//! # Why this is the exact optimum
//! The feasible set `{v >= 0, Σ v = R, Σ t·v <= B}` is a bounded polytope,
//! so a linear objective attains its minimum at a vertex. With a slack
//! variable for the budget there are two equality constraints, so a vertex
//! (basic feasible solution) has at most two non-zero variables among the
//! `v_i` and the slack: either one `v_i = R` (the slack takes whatever
//! budget is left: a "single"), or two `v_i, v_k` with the slack at zero
//! (the budget is exactly spent: a "pair"; feasibility with `v >= 0` needs
//! `t_k·R <= B <= t_i·R`). The enumeration visits every vertex, so its
//! cheapest is optimal.
//!
//! "Sort by mean and fill the cheapest while the budget allows" is the
//! intuition but not the algorithm: which safe backend absorbs the rest
//! matters too. With `s = (t 3.9%, 200 ms)`, `k = (t 0%, 201 ms)` and
//! `i = (t 50%, 10 ms)` at a 4% budget, anchoring on the cheapest feasible
//! `s` lets `i` take only 0.2% (mean 199.6 ms) while `k` lets `i` take 8%
//! (mean 185.7 ms). The enumeration finds the latter.
//!
//! # Infeasible budgets
//! If even the safest backend alone exceeds the budget (`min t_i·R > B`),
//! no share meets it; the rest goes to the backend with the lowest tail
//! (ties: lower mean), which minimises the tail, and the floors stay.

/// One backend as the LP sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Arm {
    /// Mean latency (any unit; only compared).
    pub(super) mean: f64,
    /// Probability of a latency above the threshold, in [0, 1].
    pub(super) tail: f64,
    /// The backend's configured weight (> 0): its floor's multiplier.
    pub(super) weight: f64,
}

/// Slack in feasibility tests, for shares computed in floating point.
const EPS: f64 = 1e-12;

/// Fills `out` (same length as `arms`) with the optimal shares: each at
/// least `min(floor, 1/n)`, summing to 1. See the module doc.
pub(super) fn solve(arms: &[Arm], budget: f64, floor: f64, out: &mut [f64]) {
    let n = arms.len().min(out.len());
    if n == 0 {
        return;
    }
    let out = &mut out[..n];
    let arms = &arms[..n];
    let total_floor = (floor * n as f64).clamp(0.0, 1.0);
    let weights: f64 = arms.iter().map(|a| a.weight.max(0.0)).sum();
    for (o, a) in out.iter_mut().zip(arms) {
        *o = if weights > 0.0 {
            total_floor * a.weight.max(0.0) / weights
        } else {
            total_floor / n as f64
        };
    }
    let rest = (1.0 - total_floor).max(0.0);
    let left = budget
        - arms
            .iter()
            .zip(out.iter())
            .map(|(a, f)| f * a.tail)
            .sum::<f64>();

    // (cost, i, v_i, k): `v_i` to `i`, the rest to `k` (k == i: a single).
    let mut best: Option<(f64, usize, f64, usize)> = None;
    let mut consider = |cost: f64, i: usize, vi: f64, k: usize| {
        if cost.is_finite() && best.is_none_or(|(c, ..)| cost < c) {
            best = Some((cost, i, vi, k));
        }
    };
    for (i, a) in arms.iter().enumerate().take(n) {
        if a.tail * rest <= left + EPS {
            consider(a.mean * rest, i, rest, i);
        }
    }
    for (i, a) in arms.iter().enumerate().take(n) {
        if a.tail * rest <= left + EPS {
            continue; // not a risky end: pairs need t_i·R > B
        }
        for (k, b) in arms.iter().enumerate().take(n) {
            if b.tail * rest > left + EPS {
                continue; // not a safe end
            }
            // t_i > B/R >= t_k, so the denominator is positive.
            let vi = ((left - b.tail * rest) / (a.tail - b.tail)).clamp(0.0, rest);
            consider(a.mean * vi + b.mean * (rest - vi), i, vi, k);
        }
    }
    match best {
        Some((_, i, vi, k)) => {
            out[i] += vi;
            out[k] += rest - vi;
        }
        None => {
            // Infeasible (or no finite mean): lowest tail, then lowest mean.
            let safest = (0..n).min_by(|&x, &y| {
                let (a, b) = (arms[x], arms[y]);
                a.tail.total_cmp(&b.tail).then(a.mean.total_cmp(&b.mean))
            });
            if let Some(s) = safest {
                out[s] += rest;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(mean: f64, tail: f64) -> Arm {
        Arm {
            mean,
            tail,
            weight: 1.0,
        }
    }

    fn shares(arms: &[Arm], budget: f64, floor: f64) -> Vec<f64> {
        let mut out = vec![0.0; arms.len()];
        solve(arms, budget, floor, &mut out);
        out
    }

    fn cost(arms: &[Arm], w: &[f64]) -> f64 {
        arms.iter().zip(w).map(|(a, w)| a.mean * w).sum()
    }

    fn tail(arms: &[Arm], w: &[f64]) -> f64 {
        arms.iter().zip(w).map(|(a, w)| a.tail * w).sum()
    }

    fn check_basic(arms: &[Arm], w: &[f64], budget: f64, floor: f64) {
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{w:?}");
        for &x in w {
            assert!(x >= floor.min(1.0 / w.len() as f64) - 1e-12, "{w:?}");
        }
        assert!(tail(arms, w) <= budget + 1e-9, "{w:?}");
    }

    #[test]
    fn seed_mix_keeps_a_small_and_c_at_the_floor() {
        // A: cycle mean 143.3 ms, 1/3 of answers at 400 > T = 210;
        // B 200 ms; C 250 ms, always above T.
        let arms = [arm(143.33, 1.0 / 3.0), arm(200.0, 0.0), arm(250.0, 1.0)];
        let w = shares(&arms, 0.04, 0.01);
        check_basic(&arms, &w, 0.04, 0.01);
        // Budget exactly spent: 0.01·1 (C) + w_A/3 = 0.04 → w_A = 9%.
        assert!((w[0] - 0.09).abs() < 1e-9, "{w:?}");
        assert!(w[0] <= 0.15);
        assert!((w[2] - 0.01).abs() < 1e-12, "{w:?}");
        assert!((w[1] - 0.90).abs() < 1e-9, "{w:?}");
        // Without C's floor in the tail, A may take up to 12%.
        let w = shares(&[arms[0], arms[1]], 0.04, 0.0);
        assert!((w[0] - 0.12).abs() < 1e-9, "{w:?}");
    }

    #[test]
    fn no_tail_means_the_cheapest_takes_the_rest() {
        let arms = [arm(30.0, 0.0), arm(10.0, 0.0), arm(20.0, 0.0)];
        let w = shares(&arms, 0.04, 0.01);
        check_basic(&arms, &w, 0.04, 0.01);
        assert_eq!(w, [0.01, 0.98, 0.01]);
    }

    #[test]
    fn the_safe_partner_is_not_always_the_cheapest_safe_backend() {
        let arms = [arm(200.0, 0.039), arm(201.0, 0.0), arm(10.0, 0.5)];
        let w = shares(&arms, 0.04, 0.0);
        check_basic(&arms, &w, 0.04, 0.0);
        assert!((w[2] - 0.08).abs() < 1e-9, "{w:?}");
        assert!((cost(&arms, &w) - 185.72).abs() < 1e-6);
    }

    #[test]
    fn infeasible_budget_minimises_the_tail() {
        let arms = [arm(10.0, 0.5), arm(20.0, 0.2), arm(5.0, 0.9)];
        let w = shares(&arms, 0.04, 0.01);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((w[1] - 0.98).abs() < 1e-12, "{w:?}");
    }

    #[test]
    fn floors_scale_with_weight() {
        // Backend 1 is best, so 0 and 2 sit at their floors: 3% and 1%
        // (the 4 x 1% of equal weights, shared 3:1:... by weight).
        let mut arms = [
            arm(100.0, 0.0),
            arm(10.0, 0.0),
            arm(100.0, 0.0),
            arm(50.0, 0.0),
        ];
        arms[0].weight = 3.0;
        arms[1].weight = 1.0;
        arms[3].weight = 2.0;
        let w = shares(&arms, 0.04, 0.01);
        let want = [0.04 * 3.0 / 7.0, 0.0, 0.04 / 7.0, 0.04 * 2.0 / 7.0];
        for i in [0, 2, 3] {
            assert!((w[i] - want[i]).abs() < 1e-12, "{w:?}");
        }
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(w[1] > 0.9);
    }

    #[test]
    fn floor_is_capped_at_an_equal_split() {
        let arms = [arm(1.0, 0.0); 4];
        assert_eq!(shares(&arms, 0.04, 0.5), [0.25; 4]);
        assert!(shares(&[], 0.04, 0.01).is_empty());
    }

    /// The LP optimum is never beaten by any feasible point of a fine grid
    /// over the simplex, on pseudo-random three-backend cases.
    #[test]
    fn no_grid_point_beats_the_solver() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        const STEPS: usize = 200;
        for _ in 0..200 {
            let arms: Vec<Arm> = (0..3)
                .map(|_| arm(1.0 + 400.0 * rand(), (rand() * 1.5 - 0.25).clamp(0.0, 1.0)))
                .collect();
            let (budget, floor) = (0.04, 0.01);
            let w = shares(&arms, budget, floor);
            // Feasible iff floors everywhere plus the rest on the safest fit.
            let min_tail = arms.iter().map(|a| a.tail).fold(1.0, f64::min);
            let least = floor * arms.iter().map(|a| a.tail).sum::<f64>() + 0.97 * min_tail;
            if least > budget {
                continue;
            }
            check_basic(&arms, &w, budget, floor);
            let best = cost(&arms, &w);
            for a in 0..=STEPS {
                for b in 0..=STEPS - a {
                    let g = [a, b, STEPS - a - b].map(|x| x as f64 / STEPS as f64);
                    let ok = g.iter().all(|&x| x >= floor) && tail(&arms, &g) <= budget;
                    if ok {
                        assert!(cost(&arms, &g) >= best - 1e-9, "{arms:?}: {g:?} < {w:?}");
                    }
                }
            }
        }
    }
}
