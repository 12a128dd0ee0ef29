//! "Lowest estimate wins", shared by the latency-driven policies (SMA,
//! EWMA). A policy supplies only its per-backend [`Estimator`]; [`Lowest`]
//! does the rest, lock-free:
//!
//! 1. Cold start: an unmeasured backend is probed first, by one request at
//!    a time: only while nothing is in flight there ([`super::probe`]; the
//!    probe's `Attempt` frees it when observed or dropped).
//! 2. Otherwise the lowest measured estimate wins; exact ties rotate.
//! 3. If nothing is measured yet and every probe is in flight: round-robin.
//!
//! Benign races (several workers share one selector): a pick may read an
//! estimate just before another worker's `observe` lands, and so route on a
//! value one sample old; a pick that read "unmeasured" just before the
//! probe's `on_send` or `observe` may send one extra probe. Neither breaks an invariant:
//! every estimate is built from real samples only.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use log::{Level, debug, log_enabled};

use super::{Attempt, Backend, Loads, Outcome, Selector, estimates_line, labels};

/// Relaxed everywhere: each atomic is a value on its own; none guards other
/// memory, and the races above are accepted.
const ORDER: Ordering = Ordering::Relaxed;

/// One backend's latency estimate, updated lock-free from any thread.
pub(super) trait Estimator: Send + Sync + fmt::Debug + 'static {
    /// Folds in one latency sample. Must not allocate or block.
    fn record(&self, sample: Duration);
    /// The estimate in ms; `None` before the first sample.
    fn estimate(&self) -> Option<f64>;
    /// On a reload: takes over `old`'s samples (see `reload`). Called
    /// on a fresh estimator before it takes traffic.
    fn take_over(&self, old: &Self)
    where
        Self: Sized;
}

#[derive(Debug)]
struct Slot<E> {
    est: E,
}

/// A selector sending each request to the backend with the lowest estimate.
#[derive(Debug)]
pub(super) struct Lowest<E> {
    name: &'static str,
    /// Log tag, e.g. `SMA` in `[SMA] chosen: ...`.
    tag: &'static str,
    names: Vec<String>,
    labels: Vec<String>,
    slots: Vec<Slot<E>>,
    /// Requests in flight per backend: a cold-start probe goes only where
    /// nothing is.
    loads: Loads,
    /// Rotates among backends tied for the lowest estimate.
    tie_turn: AtomicUsize,
    /// Round-robin while nothing is measured.
    fallback_turn: AtomicUsize,
}

impl<E: Estimator> Lowest<E> {
    /// `make` builds one empty estimator per backend.
    pub(super) fn new(
        name: &'static str,
        tag: &'static str,
        backends: &[Backend],
        _now: Instant,
        mut make: impl FnMut() -> E,
    ) -> Self {
        Lowest {
            name,
            tag,
            names: backends.iter().map(|b| b.name.clone()).collect(),
            labels: labels(backends),
            slots: backends.iter().map(|_| Slot { est: make() }).collect(),
            loads: Loads::new(backends.len()),
            tie_turn: AtomicUsize::new(0),
            fallback_turn: AtomicUsize::new(0),
        }
    }

    /// The `k`-th eligible backend whose estimate is exactly `low`.
    /// `None` if estimates moved since the caller counted the ties.
    fn nth_tied(&self, low: f64, k: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, s)| eligible(*i) && s.est.estimate() == Some(low))
            .nth(k)
            .map(|(i, _)| i)
    }

    /// Round-robin over the eligible backends.
    fn fallback(&self, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        super::rotate(&self.fallback_turn, self.slots.len(), eligible)
    }

    fn log_choice(&self, what: &str, i: usize) {
        if log_enabled!(Level::Debug) {
            debug!(
                "{}",
                estimates_line(self.tag, &self.labels, &self.estimates())
            );
            debug!("[{}] {what}: {}", self.tag, self.names[i]);
        }
    }
}

impl<E: Estimator> Selector for Lowest<E> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn pick(&self, _now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        // One pass: probe the first idle unmeasured backend, else find the
        // lowest estimate (first index holding it) and how many tie.
        let mut best: Option<(usize, f64)> = None;
        let mut ties = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            match (slot.est.estimate(), best) {
                (None, _) => {
                    if self.loads.get(i) == 0 {
                        self.log_choice("probing unmeasured", i);
                        return Some(i);
                    }
                }
                (Some(e), Some((_, low))) if e > low => {}
                (Some(e), Some((_, low))) if e == low => ties += 1,
                (Some(e), _) => {
                    best = Some((i, e));
                    ties = 1;
                }
            }
        }
        let chosen = match best {
            Some((first, _)) if ties == 1 => first,
            Some((first, low)) => {
                let k = self.tie_turn.fetch_add(1, ORDER) % ties;
                self.nth_tied(low, k, eligible).unwrap_or(first)
            }
            // Nothing measured and every probe in flight.
            None => self.fallback(eligible)?,
        };
        self.log_choice("chosen", chosen);
        Some(chosen)
    }

    fn on_send(&self, backend: usize, now: Instant) -> Attempt {
        Attempt::counted(backend, now, self.loads.take(backend))
    }

    fn observe(&self, attempt: Attempt, outcome: Outcome, _now: Instant) {
        let backend = attempt.backend();
        debug_assert!(
            backend < self.slots.len(),
            "observe({backend}): no such backend"
        );
        let Some(slot) = self.slots.get(backend) else {
            return;
        };
        // A failure counts as twice the worst other estimate, at least
        // FAILURE_PENALTY (see `Outcome::penalised`).
        let worst = outcome
            .failed()
            .then(|| super::worst_other(self.slots.iter().map(|s| s.est.estimate()), backend))
            .flatten();
        slot.est.record(outcome.penalised(worst));
        // The sample is in: dropping the ticket frees the probe.
        drop(attempt);
    }

    fn estimates(&self) -> Vec<Option<f64>> {
        self.slots.iter().map(|s| s.est.estimate()).collect()
    }

    /// Each kept backend's estimator state (an unmeasured kept backend is
    /// probed again; requests in flight stay counted by `old`).
    fn inherit(&self, old: &dyn Selector, map: &[Option<usize>], _now: Instant) {
        let Some(old) = old.as_any().downcast_ref::<Self>() else {
            return;
        };
        for (i, j) in super::reload::kept(map, self.slots.len(), old.slots.len()) {
            self.slots[i].est.take_over(&old.slots[j].est);
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_util::*;
    use super::super::{FAILURE_PENALTY, PENALTY_CAP, Policy, build};
    use super::*;

    fn adaptive(t0: Instant, n: usize) -> Vec<Arc<dyn Selector>> {
        ["sma", "ewma"]
            .iter()
            .map(|p| build(&p.parse::<Policy>().unwrap(), &backends(n), t0).unwrap())
            .collect()
    }

    /// Picks backends 0..n once each (their probes) and reports `ms[i]`.
    fn measure(s: &dyn Selector, t0: Instant, ms: &[u64]) {
        for (i, &ms) in ms.iter().enumerate() {
            assert_eq!(s.tick_pick(t0, &every), Some(i), "{}", s.name());
            s.answer(i, ok(ms), t0);
        }
    }

    #[test]
    fn cold_start_probes_each_backend_once_then_round_robins() {
        let t0 = Instant::now();
        for s in adaptive(t0, 3) {
            let picks: Vec<_> = (0..9).map(|_| s.sent_pick(t0, &every).unwrap()).collect();
            // Three probes, then nothing is measured: round-robin.
            assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0, 1, 2], "{}", s.name());
            // B answers first: it is the only measured one, so it wins while
            // the other probes are in flight, however many requests come.
            s.answer(1, ok(200), at(t0, 200));
            for _ in 0..50 {
                assert_eq!(s.sent_pick(at(t0, 201), &every), Some(1), "{}", s.name());
            }
            s.answer(0, ok(10), at(t0, 210));
            assert_eq!(s.sent_pick(at(t0, 211), &every), Some(0), "{}", s.name());
            assert_eq!(s.estimates(), [Some(10.0), Some(200.0), None]);
        }
    }

    #[test]
    fn a_dropped_probe_frees_its_backend_at_once() {
        let t0 = Instant::now();
        for s in adaptive(t0, 2) {
            assert_eq!(s.pick(t0, &every), Some(0));
            let probe = s.on_send(0, t0); // in flight, never observed
            assert_eq!(s.pick(t0, &every), Some(1));
            s.answer(1, ok(50), t0);
            assert_eq!(s.pick(t0, &every), Some(1), "0's probe is in flight");
            drop(probe); // abandoned: no sample, the count is released
            assert_eq!(s.pick(t0, &every), Some(0));
        }
    }

    #[test]
    fn lowest_estimate_wins() {
        let t0 = Instant::now();
        for s in adaptive(t0, 3) {
            measure(&*s, t0, &[300, 100, 200]);
            for _ in 0..5 {
                assert_eq!(s.tick_pick(t0, &every), Some(1), "{}", s.name());
            }
        }
    }

    #[test]
    fn exact_ties_rotate() {
        let t0 = Instant::now();
        for s in adaptive(t0, 4) {
            measure(&*s, t0, &[100, 50, 90, 50]);
            let picks: Vec<_> = (0..4).map(|_| s.tick_pick(t0, &every).unwrap()).collect();
            assert_eq!(picks, [1, 3, 1, 3], "{}", s.name());
        }
    }

    #[test]
    fn exclude_picks_the_best_other_backend() {
        let t0 = Instant::now();
        for s in adaptive(t0, 3) {
            measure(&*s, t0, &[30, 10, 20]);
            assert_eq!(s.sent_pick(t0, &but(1)), Some(2), "{}", s.name());
            assert_eq!(s.sent_pick(t0, &but(0)), Some(1), "{}", s.name());
        }
        for s in adaptive(t0, 1) {
            assert_eq!(s.sent_pick(t0, &but(0)), None);
            assert_eq!(s.sent_pick(t0, &every), Some(0));
            // Probe in flight, nothing measured: round-robin, still not 0.
            assert_eq!(s.sent_pick(t0, &but(0)), None);
            assert_eq!(s.sent_pick(t0, &every), Some(0));
        }
        // Excluding the only measured backend while the other's probe is
        // in flight falls back to round-robin over the rest.
        for s in adaptive(t0, 2) {
            assert_eq!(s.sent_pick(t0, &every), Some(0));
            assert_eq!(s.sent_pick(t0, &every), Some(1));
            s.answer(0, ok(10), t0);
            assert_eq!(s.sent_pick(t0, &but(0)), Some(1));
        }
    }

    #[test]
    fn a_failing_backend_loses_until_it_recovers() {
        let t0 = Instant::now();
        let down = Outcome::Failure {
            elapsed: Duration::from_millis(2),
        };
        for s in adaptive(t0, 2) {
            measure(&*s, t0, &[10, 300]);
            s.answer(0, down, t0);
            s.answer(0, down, t0);
            assert_eq!(s.tick_pick(t0, &every), Some(1), "{}", s.name());
            let penalised = s.estimates()[0].unwrap();
            assert!(penalised > 300.0, "{}: {penalised}", s.name());
            assert!(penalised <= FAILURE_PENALTY.as_millis() as f64);
            // Fast answers pull it back below the other.
            for _ in 0..12 {
                s.answer(0, ok(10), t0);
            }
            assert_eq!(s.tick_pick(t0, &every), Some(0), "{}", s.name());
        }
    }

    #[test]
    fn shared_by_threads_estimates_stay_within_the_samples() {
        let t0 = Instant::now();
        // A failure may count for twice another backend's estimate, which
        // may itself hold a penalty: bounded by the cap.
        let penalty = PENALTY_CAP.as_millis() as f64;
        for s in adaptive(t0, 3) {
            std::thread::scope(|scope| {
                for t in 0..4u64 {
                    let s = &s;
                    scope.spawn(move || {
                        for k in 0..2000u64 {
                            let now = at(t0, k);
                            let b = s.tick_pick(now, &every).unwrap();
                            let x = (k * 7 + t) % 50;
                            if x == 0 {
                                let failed = Outcome::Failure {
                                    elapsed: Duration::ZERO,
                                };
                                s.answer(b, failed, now);
                                let retry = s.tick_pick(now, &but(b)).unwrap();
                                assert_ne!(retry, b);
                                s.answer(retry, ok(18), now);
                            } else {
                                s.answer(b, ok(10 + x * 8), now); // 18..=402 ms
                            }
                        }
                    });
                }
            });
            for e in s.estimates() {
                let e = e.unwrap();
                assert!((18.0 - 1e-9..=penalty + 1e-9).contains(&e), "{e}");
            }
        }
    }
}
