//! "Lowest estimate wins", shared by the latency-driven policies (SMA,
//! EWMA). A policy supplies only its per-backend [`Estimator`]; [`Lowest`]
//! does the rest, lock-free:
//!
//! 1. Cold start: an unmeasured backend is probed first, by ONE request at
//!    a time (a probe stamp claimed with `compare_exchange`, released by
//!    `observe`, reclaimable after [`PROBE_TIMEOUT`] in case it was lost).
//! 2. Otherwise the lowest measured estimate wins; exact ties rotate.
//! 3. If nothing is measured yet and every probe is in flight: round-robin.
//!
//! Benign races (several workers share one selector): a pick may read an
//! estimate just before another worker's `observe` lands, and so route on a
//! value one sample old; a pick that read "unmeasured" just before the
//! probe's `observe` may send one extra probe. Neither breaks an invariant:
//! every estimate is built from real samples only.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use log::{Level, debug, log_enabled};

use super::{Backend, Outcome, PROBE_TIMEOUT, Selector, estimates_line, labels};

/// Relaxed everywhere: each atomic is a value on its own; none guards other
/// memory, and the races above are accepted.
const ORDER: Ordering = Ordering::Relaxed;

/// Probe stamp meaning "no probe in flight"; a claim stores nanoseconds
/// since the epoch plus one, so it is never this.
const NO_PROBE: u64 = 0;

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
    /// [`NO_PROBE`], or when the cold-start probe in flight was claimed.
    probe: AtomicU64,
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
    /// Probe stamps count from here.
    epoch: Instant,
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
        now: Instant,
        mut make: impl FnMut() -> E,
    ) -> Self {
        Lowest {
            name,
            tag,
            names: backends.iter().map(|b| b.name.clone()).collect(),
            labels: labels(backends),
            slots: backends
                .iter()
                .map(|_| Slot {
                    est: make(),
                    probe: AtomicU64::new(NO_PROBE),
                })
                .collect(),
            epoch: now,
            tie_turn: AtomicUsize::new(0),
            fallback_turn: AtomicUsize::new(0),
        }
    }

    /// Claims backend `i`'s probe unless one is in flight and not yet stale.
    fn claim_probe(&self, i: usize, now: Instant) -> bool {
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        // Saturates after 584 years of uptime.
        let stamp = u64::try_from(since).unwrap_or(u64::MAX - 1) + 1;
        let probe = &self.slots[i].probe;
        let current = probe.load(ORDER);
        let timeout = u64::try_from(PROBE_TIMEOUT.as_nanos()).unwrap_or(u64::MAX);
        if current != NO_PROBE && stamp.saturating_sub(current) < timeout {
            return false;
        }
        probe.compare_exchange(current, stamp, ORDER, ORDER).is_ok()
    }

    /// The `k`-th non-excluded backend whose estimate is exactly `low`.
    /// `None` if estimates moved since the caller counted the ties.
    fn nth_tied(&self, low: f64, k: usize, exclude: Option<usize>) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, s)| Some(*i) != exclude && s.est.estimate() == Some(low))
            .nth(k)
            .map(|(i, _)| i)
    }

    /// Round-robin over the non-excluded backends.
    fn fallback(&self, exclude: Option<usize>) -> Option<usize> {
        super::rotate(&self.fallback_turn, self.slots.len(), |i| {
            Some(i) != exclude
        })
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

    fn pick(&self, now: Instant, exclude: Option<usize>) -> Option<usize> {
        // One pass: probe the first claimable unmeasured backend, else find
        // the lowest estimate (first index holding it) and how many tie.
        let mut best: Option<(usize, f64)> = None;
        let mut ties = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            if Some(i) == exclude {
                continue;
            }
            match (slot.est.estimate(), best) {
                (None, _) => {
                    if self.claim_probe(i, now) {
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
                self.nth_tied(low, k, exclude).unwrap_or(first)
            }
            // Nothing measured and every probe in flight.
            None => self.fallback(exclude)?,
        };
        self.log_choice("chosen", chosen);
        Some(chosen)
    }

    fn observe(&self, backend: usize, outcome: Outcome, _now: Instant) {
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
        slot.probe.store(NO_PROBE, ORDER);
    }

    fn estimates(&self) -> Vec<Option<f64>> {
        self.slots.iter().map(|s| s.est.estimate()).collect()
    }

    /// Each kept backend's estimator state; probes stay unclaimed (an
    /// unmeasured kept backend is probed again).
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
            assert_eq!(s.pick(t0, None), Some(i), "{}", s.name());
            s.observe(i, ok(ms), t0);
        }
    }

    #[test]
    fn cold_start_probes_each_backend_once_then_round_robins() {
        let t0 = Instant::now();
        for s in adaptive(t0, 3) {
            let picks: Vec<_> = (0..9).map(|_| s.pick(t0, None).unwrap()).collect();
            // Three probes, then nothing is measured: round-robin.
            assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0, 1, 2], "{}", s.name());
            // B answers first: it is the only measured one, so it wins while
            // the other probes are in flight, however many requests come.
            s.observe(1, ok(200), at(t0, 200));
            for _ in 0..50 {
                assert_eq!(s.pick(at(t0, 201), None), Some(1), "{}", s.name());
            }
            s.observe(0, ok(10), at(t0, 210));
            assert_eq!(s.pick(at(t0, 211), None), Some(0), "{}", s.name());
            assert_eq!(s.estimates(), [Some(10.0), Some(200.0), None]);
        }
    }

    #[test]
    fn a_lost_probe_can_be_retried_after_the_timeout() {
        let t0 = Instant::now();
        for s in adaptive(t0, 2) {
            assert_eq!(s.pick(t0, None), Some(0)); // probe, never observed
            assert_eq!(s.pick(t0, None), Some(1));
            s.observe(1, ok(50), t0);
            let late = t0 + PROBE_TIMEOUT - Duration::from_millis(1);
            assert_eq!(s.pick(late, None), Some(1));
            assert_eq!(s.pick(t0 + PROBE_TIMEOUT, None), Some(0));
            assert_eq!(s.pick(t0 + PROBE_TIMEOUT, None), Some(1));
        }
    }

    #[test]
    fn lowest_estimate_wins() {
        let t0 = Instant::now();
        for s in adaptive(t0, 3) {
            measure(&*s, t0, &[300, 100, 200]);
            for _ in 0..5 {
                assert_eq!(s.pick(t0, None), Some(1), "{}", s.name());
            }
        }
    }

    #[test]
    fn exact_ties_rotate() {
        let t0 = Instant::now();
        for s in adaptive(t0, 4) {
            measure(&*s, t0, &[100, 50, 90, 50]);
            let picks: Vec<_> = (0..4).map(|_| s.pick(t0, None).unwrap()).collect();
            assert_eq!(picks, [1, 3, 1, 3], "{}", s.name());
        }
    }

    #[test]
    fn exclude_picks_the_best_other_backend() {
        let t0 = Instant::now();
        for s in adaptive(t0, 3) {
            measure(&*s, t0, &[30, 10, 20]);
            assert_eq!(s.pick(t0, Some(1)), Some(2), "{}", s.name());
            assert_eq!(s.pick(t0, Some(0)), Some(1), "{}", s.name());
        }
        for s in adaptive(t0, 1) {
            assert_eq!(s.pick(t0, Some(0)), None);
            assert_eq!(s.pick(t0, None), Some(0));
            // Probe in flight, nothing measured: round-robin, still not 0.
            assert_eq!(s.pick(t0, Some(0)), None);
            assert_eq!(s.pick(t0, None), Some(0));
        }
        // Excluding the only measured backend while the other's probe is
        // in flight falls back to round-robin over the rest.
        for s in adaptive(t0, 2) {
            assert_eq!(s.pick(t0, None), Some(0));
            assert_eq!(s.pick(t0, None), Some(1));
            s.observe(0, ok(10), t0);
            assert_eq!(s.pick(t0, Some(0)), Some(1));
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
            s.observe(0, down, t0);
            s.observe(0, down, t0);
            assert_eq!(s.pick(t0, None), Some(1), "{}", s.name());
            let penalised = s.estimates()[0].unwrap();
            assert!(penalised > 300.0, "{}: {penalised}", s.name());
            assert!(penalised <= FAILURE_PENALTY.as_millis() as f64);
            // Fast answers pull it back below the other.
            for _ in 0..12 {
                s.observe(0, ok(10), t0);
            }
            assert_eq!(s.pick(t0, None), Some(0), "{}", s.name());
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
                            let b = s.pick(now, None).unwrap();
                            let x = (k * 7 + t) % 50;
                            if x == 0 {
                                let failed = Outcome::Failure {
                                    elapsed: Duration::ZERO,
                                };
                                s.observe(b, failed, now);
                                let retry = s.pick(now, Some(b)).unwrap();
                                assert_ne!(retry, b);
                                s.observe(retry, ok(18), now);
                            } else {
                                s.observe(b, ok(10 + x * 8), now); // 18..=402 ms
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
