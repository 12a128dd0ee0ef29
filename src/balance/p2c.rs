//! `p2c`: power of two choices. Each pick draws two DISTINCT backends at
//! random and sends to the one with fewer requests in flight (counted
//! globally by the `Attempt` tickets of `on_send`, see `attempt::Loads`).
//! Outcomes are ignored. Peak-EWMA reuses the draw with another cost.
//!
//! - Randomness: [`Rng`], SplitMix64 over one `AtomicU64`. `next` advances
//!   the state with a single `fetch_add` of [`GAMMA`] (so concurrent
//!   workers always get distinct states, lock-free) and returns that state
//!   through the SplitMix64 finaliser, whose output passes BigCrush.
//! - Two distinct candidates: [`draw`], a pure function of the random word,
//!   so tests can cover every outcome. The first is uniform over the
//!   eligible backends; the second uniform over the others (an offset of
//!   1..m from the first), so every ordered pair is equally likely.
//! - Ties go to the first candidate, which is itself uniformly random:
//!   that IS a fair coin flip between the two, with no extra random bit.
//! - One eligible backend: that one; none: `None`. `exclude` (a retry)
//!   removes the failed backend before drawing.
//! - Unequal weights ([`draw_weighted`]): each candidate is drawn with
//!   probability proportional to its weight (the second among the
//!   others), so a weight-3 backend is offered three times as often as a
//!   weight-1 one; the less loaded of the two still wins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use log::{Level, debug, log_enabled};

use super::{Attempt, Backend, Loads, Outcome, Selector, labels};

/// CSV `routing_mode` name.
pub(super) const NAME: &str = "p2c";

/// Log tag: `[P2C] chosen: 127.0.0.1:8081`.
const TAG: &str = "P2C";

/// SplitMix64's increment, 2^64 / golden ratio: odd, so the state visits
/// every u64 before repeating, and its bits look random.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Initial random state. Fixed: routing needs no secrecy, and a fixed seed
/// makes single-threaded runs (tests, simulations) reproducible.
pub(super) const SEED: u64 = 0x7469_6465_6761_7465; // "tidegate"

/// Relaxed: the state and the counters guard no other memory.
const ORDER: Ordering = Ordering::Relaxed;

/// A lock-free pseudo-random source shared by all workers (SplitMix64).
#[derive(Debug)]
pub(super) struct Rng {
    state: AtomicU64,
}

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng {
            state: AtomicU64::new(seed),
        }
    }

    /// The next random word: one `fetch_add`, then the SplitMix64 mix.
    pub(super) fn next(&self) -> u64 {
        let z = self.state.fetch_add(GAMMA, ORDER).wrapping_add(GAMMA);
        mix(z)
    }
}

/// SplitMix64's finaliser (Steele, Lea & Flood 2014; the multipliers are
/// theirs, chosen for avalanche).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The candidates of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Draw {
    /// No eligible backend.
    None,
    /// Only one eligible backend.
    One(usize),
    /// Two distinct eligible backends; ties go to the first.
    Two(usize, usize),
}

/// Two distinct backends among those of `0..n` that `eligible` accepts,
/// from the random word `r`: its low half picks the first, its high half
/// the offset of the second.
pub(super) fn draw(n: usize, eligible: &dyn Fn(usize) -> bool, r: u64) -> Draw {
    let m = (0..n).filter(|&i| eligible(i)).count();
    // The k-th eligible backend (k itself when all are).
    let real = |k: usize| {
        if m == n {
            k
        } else {
            (0..n).filter(|&i| eligible(i)).nth(k).unwrap_or(k)
        }
    };
    // Truncations intended: the low and high halves of `r`.
    let (lo, hi) = (r as u32, (r >> 32) as u32);
    match m {
        0 => Draw::None,
        1 => Draw::One(real(0)),
        _ => {
            let a = below(lo, m);
            let b = (a + 1 + below(hi, m - 1)) % m;
            Draw::Two(real(a), real(b))
        }
    }
}

/// [`draw`] with each backend's chance proportional to `weights[i]` (at
/// least 1 is assumed; a 0 weight is never drawn): the low half of `r`
/// picks the first by cumulative weight, the high half the second among
/// the rest. O(n), for the few backends a proxy has.
pub(super) fn draw_weighted(weights: &[u32], eligible: &dyn Fn(usize) -> bool, r: u64) -> Draw {
    let ok = |i: usize| eligible(i) && weights[i] > 0;
    let total: u64 = (0..weights.len())
        .filter(|&i| ok(i))
        .map(|i| u64::from(weights[i]))
        .sum();
    let mut eligible = (0..weights.len()).filter(|&i| ok(i));
    let (Some(only), second) = (eligible.next(), eligible.next()) else {
        return Draw::None;
    };
    if second.is_none() {
        return Draw::One(only);
    }
    // The backend whose slice of the cumulative weights holds `x`.
    let nth = |x: u64, skip: Option<usize>| {
        let mut x = x;
        let mut last = only;
        for i in (0..weights.len()).filter(|&i| ok(i) && Some(i) != skip) {
            let w = u64::from(weights[i]);
            if x < w {
                return i;
            }
            x -= w;
            last = i;
        }
        last
    };
    // Truncations intended: the low and high halves of `r`.
    let (lo, hi) = (r as u32, (r >> 32) as u32);
    let a = nth(below_u64(lo, total), None);
    let b = nth(below_u64(hi, total - u64::from(weights[a])), Some(a));
    Draw::Two(a, b)
}

/// [`below`] for a range given as u64 (a sum of weights).
fn below_u64(x: u32, m: u64) -> u64 {
    // The result is < m, which fits u64.
    ((u128::from(x) * u128::from(m)) >> 32) as u64
}

/// `x` scaled into `0..m` by multiply-shift (Lemire): exact in range, and
/// as unbiased as `x % m` (off by at most m / 2^32) without a division.
fn below(x: u32, m: usize) -> usize {
    // m is a backend count, far below 2^64; the result is < m.
    ((u128::from(x) * m as u128) >> 32) as usize
}

/// The cheaper of the drawn candidates by `cost`; ties (and incomparable
/// costs, NaN) go to the first draw.
pub(super) fn cheaper<C: PartialOrd>(a: usize, b: usize, cost: impl Fn(usize) -> C) -> usize {
    if cost(b) < cost(a) { b } else { a }
}

/// P2C on in-flight counts.
#[derive(Debug)]
pub(super) struct P2c {
    names: Vec<String>,
    labels: Vec<String>,
    in_flight: Loads,
    rng: Rng,
    /// Only when the weights differ: the sampling weights.
    weights: Option<Vec<u32>>,
}

impl P2c {
    pub(super) fn new(backends: &[Backend]) -> Self {
        P2c {
            weights: super::weights(backends),
            names: backends.iter().map(|b| b.name.clone()).collect(),
            labels: labels(backends),
            in_flight: Loads::new(backends.len()),
            rng: Rng::new(SEED),
        }
    }
}

impl Selector for P2c {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pick(&self, _now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.in_flight.len();
        let r = self.rng.next();
        let candidates = match &self.weights {
            Some(w) => draw_weighted(w, eligible, r),
            None => draw(n, eligible, r),
        };
        let chosen = match candidates {
            Draw::None => return None,
            Draw::One(i) => i,
            Draw::Two(a, b) => cheaper(a, b, |i| self.in_flight.get(i)),
        };
        if log_enabled!(Level::Debug) {
            debug!("{}", self.in_flight.line(TAG, &self.labels));
            debug!("[{TAG}] chosen: {}", self.names[chosen]);
        }
        Some(chosen)
    }

    fn observe(&self, _attempt: Attempt, _outcome: Outcome, _now: Instant) {}

    fn estimates(&self) -> Vec<Option<f64>> {
        vec![None; self.names.len()]
    }

    fn on_send(&self, backend: usize, now: Instant) -> Attempt {
        Attempt::counted(backend, now, self.in_flight.take(backend))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::super::test_util::*;
    // Explicit: proptest's prelude has an `Rng` too.
    use super::{Rng, *};

    /// The smallest 32-bit value `below` maps to `k` in `0..m`: one
    /// representative of each outcome.
    fn rep(k: usize, m: usize) -> u64 {
        ((k as u64) << 32).div_ceil(m as u64)
    }

    fn excludes(n: usize) -> impl Iterator<Item = Option<usize>> {
        std::iter::once(None).chain((0..n + 2).map(Some))
    }

    /// Every outcome of the random word, for 1..=8 backends and every
    /// exclude: two distinct eligible candidates, and every ordered pair of
    /// eligible backends reached by exactly one outcome (uniform).
    #[test]
    fn draw_is_exhaustively_distinct_and_uniform() {
        for n in 0..=8 {
            for exclude in excludes(n) {
                let eligible: Vec<usize> = (0..n).filter(|&i| Some(i) != exclude).collect();
                let m = eligible.len();
                if m < 2 {
                    let want = eligible.first().map_or(Draw::None, |&i| Draw::One(i));
                    assert_eq!(draw(n, &|i| Some(i) != exclude, 0), want);
                    assert_eq!(draw(n, &|i| Some(i) != exclude, u64::MAX), want);
                    continue;
                }
                let mut seen = HashMap::new();
                for ka in 0..m {
                    for kb in 0..m - 1 {
                        let r = rep(ka, m) | (rep(kb, m - 1) << 32);
                        let Draw::Two(a, b) = draw(n, &|i| Some(i) != exclude, r) else {
                            panic!("n {n} exclude {exclude:?}: not two");
                        };
                        assert_ne!(a, b);
                        assert!(eligible.contains(&a) && eligible.contains(&b));
                        *seen.entry((a, b)).or_insert(0) += 1;
                    }
                }
                assert_eq!(seen.len(), m * (m - 1), "n {n} exclude {exclude:?}");
                assert!(seen.values().all(|&c| c == 1));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn draw_never_repeats_nor_returns_the_excluded(
            n in 0usize..40,
            exclude in proptest::option::of(0usize..42),
            r in any::<u64>(),
        ) {
            match draw(n, &|i| Some(i) != exclude, r) {
                Draw::None => prop_assert!(n == 0 || (n == 1 && exclude == Some(0))),
                Draw::One(i) => {
                    prop_assert!(i < n && Some(i) != exclude);
                    prop_assert!(n == 1 || (n == 2 && exclude.is_some_and(|x| x < 2)));
                }
                Draw::Two(a, b) => {
                    prop_assert!(a != b && a < n && b < n);
                    prop_assert!(Some(a) != exclude && Some(b) != exclude);
                }
            }
        }
    }

    #[test]
    fn rng_words_spread_over_pairs() {
        // 3 backends: 6 ordered pairs, each about 1/6 of 6000 draws.
        let rng = Rng::new(SEED);
        let mut counts = HashMap::new();
        for _ in 0..6000 {
            *counts.entry(draw(3, &|_| true, rng.next())).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 6);
        assert!(
            counts.values().all(|&c| (850..=1150).contains(&c)),
            "{counts:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn weighted_draw_never_repeats_nor_returns_the_excluded(
            weights in proptest::collection::vec(1u32..=256, 0..12),
            exclude in proptest::option::of(0usize..14),
            r in any::<u64>(),
        ) {
            let n = weights.len();
            let m = (0..n).filter(|&i| Some(i) != exclude).count();
            match draw_weighted(&weights, &|i| Some(i) != exclude, r) {
                Draw::None => prop_assert_eq!(m, 0),
                Draw::One(i) => prop_assert!(m == 1 && i < n && Some(i) != exclude),
                Draw::Two(a, b) => {
                    prop_assert!(m >= 2 && a != b && a < n && b < n);
                    prop_assert!(Some(a) != exclude && Some(b) != exclude);
                }
            }
        }
    }

    #[test]
    fn weighted_draws_are_proportional_to_weight() {
        // Weights 3,1,1,1: backend 0 is the first candidate half the time
        // and a candidate at all in 1/2 + 1/2 * (3/5) = 80% of draws.
        let rng = Rng::new(SEED);
        let (mut first, mut any) = (0, 0);
        for _ in 0..12_000 {
            let Draw::Two(a, b) = draw_weighted(&[3, 1, 1, 1], &|_| true, rng.next()) else {
                panic!("two expected");
            };
            first += usize::from(a == 0);
            any += usize::from(a == 0 || b == 0);
        }
        assert!((5_700..=6_300).contains(&first), "first {first}/12000");
        assert!((9_300..=9_900).contains(&any), "any {any}/12000");
        // Through the selector: all idle, ties go to the first candidate,
        // so picks follow the weights.
        let t0 = Instant::now();
        let mut b = backends(4);
        b[0].weight = 3;
        let s = P2c::new(&b);
        let zeros = (0..1200)
            .filter(|_| s.tick_pick(t0, &every) == Some(0))
            .count();
        assert!((540..=660).contains(&zeros), "{zeros}/1200");
        // Excluding the heavy one leaves a fair draw among the others.
        assert!((0..50).all(|_| s.tick_pick(t0, &but(0)) != Some(0)));
    }

    #[test]
    fn cheaper_prefers_lower_cost_and_the_first_on_ties() {
        let cost = [3, 1, 1];
        assert_eq!(cheaper(0, 1, |i| cost[i]), 1);
        assert_eq!(cheaper(1, 0, |i| cost[i]), 1);
        assert_eq!(cheaper(1, 2, |i| cost[i]), 1);
        assert_eq!(cheaper(2, 1, |i| cost[i]), 2);
        // Incomparable (NaN): the first draw, like a tie.
        assert_eq!(cheaper(0, 1, |i| [f64::NAN, 1.0][i]), 0);
        assert_eq!(cheaper(1, 0, |i| [f64::NAN, 1.0][i]), 1);
    }

    #[test]
    fn the_less_loaded_of_the_two_wins() {
        let t0 = Instant::now();
        let s = P2c::new(&backends(2));
        // Two backends: both are always drawn, so the idle one always wins.
        for _ in 0..3 {
            s.hold(0, t0);
        }
        for _ in 0..20 {
            assert_eq!(s.tick_pick(t0, &every), Some(1));
        }
        // Three: the busiest is drawn in 2 of 3 pairs but never wins.
        let s = P2c::new(&backends(3));
        s.hold(1, t0);
        let picks: Vec<_> = (0..300).map(|_| s.tick_pick(t0, &every).unwrap()).collect();
        assert!(!picks.contains(&1));
        let zeros = picks.iter().filter(|&&b| b == 0).count();
        assert!((120..=180).contains(&zeros), "tie coin flips: {zeros}/300");
        assert_eq!(s.estimates(), [None, None, None]);
    }

    #[test]
    fn one_backend_exclude_and_in_flight_release() {
        let t0 = Instant::now();
        let one = P2c::new(&backends(1));
        one.hold(0, t0);
        assert_eq!(one.tick_pick(t0, &every), Some(0));
        assert_eq!(one.tick_pick(t0, &but(0)), None);
        assert_eq!(P2c::new(&[]).tick_pick(t0, &every), None);
        let s = P2c::new(&backends(3));
        s.hold(2, t0);
        s.hold(2, t0);
        for _ in 0..20 {
            // Excluding 0 leaves 1 and 2: the idle 1 always wins.
            assert_eq!(s.tick_pick(t0, &but(0)), Some(1));
        }
        s.release(2, t0);
        s.release(2, t0);
        s.hold(1, t0);
        assert_eq!(s.tick_pick(t0, &but(0)), Some(2));
    }
}
