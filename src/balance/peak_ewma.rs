//! `peak-ewma`: P2C (see `p2c`) where a backend's cost is its peak-EWMA
//! latency times (requests in flight + 1), as in Finagle, tower and
//! linkerd2 (research: load-balancing-anchors.md, section 1).
//!
//! Per backend, lock-free: the estimate in ms (f64 bits in an `AtomicU64`),
//! the stamp of its last update (ns since the base `Instant` given to
//! `build`), a probe flag, and the shared in-flight counter.
//!
//! - `observe(rtt)` at `t`: `w = exp(-(t - stamp)/tau)`. A sample above the
//!   estimate is adopted at once (the peak); otherwise
//!   `est = est*w + rtt*(1-w)`. Failures count as `max(elapsed,
//!   FAILURE_PENALTY)`, so peak adoption makes a failing backend expensive
//!   at once.
//! - Idle decay: a read at `now` sees `est * exp(-(now - stamp)/tau)`, what
//!   Finagle's `get()` (an `observe(0)`) would store, computed without a
//!   write; `observe` blends from the last written value, as Finagle does
//!   when no `get` came between.
//! - Cold start: an unmeasured backend with nothing in flight costs 0 (as
//!   in Finagle), so it takes one probe at a time; while its probe is in
//!   flight it costs `default_rtt` (linkerd2: 30 ms) x (in flight + 1).
//!
//! Benign races (all workers share the selector): the stamp is advanced
//! (`fetch_max`) before the estimate, so concurrent observations each
//! weigh in only their own share of time, and a pick in between may read
//! the old estimate with the new stamp (decayed a few ns too little). A
//! sample stamped earlier than the latest update gets `w = 1`: only a peak
//! counts from it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::{Level, debug, log_enabled};

use super::p2c::{Draw, Rng, SEED, cheaper, draw};
use super::{Attempt, Backend, Loads, Outcome, Selector, estimates_line, labels, millis};

/// CSV `routing_mode` name.
pub(super) const NAME: &str = "peak-ewma";

/// Log tag: `[PEAK] chosen: 127.0.0.1:8082`.
const TAG: &str = "PEAK";

/// Default decay time tau: Finagle's `decayTime` and linkerd2's
/// `EWMA_DECAY`. A peak halves in tau*ln 2 = 6.9 s without traffic.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// Default estimate of a probed but unmeasured backend: linkerd2's
/// `EWMA_DEFAULT_RTT`. Low enough that a new backend gets traffic soon,
/// high enough that it is not flooded before it answers.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// No sample yet. A NaN bit pattern, so no latency in ms ever has it.
const EMPTY: u64 = u64::MAX;

/// Relaxed: each atomic is a value on its own and guards no other memory;
/// the races this allows are listed in the module doc.
const ORDER: Ordering = Ordering::Relaxed;

#[derive(Debug)]
struct Node {
    /// Peak-EWMA latency in ms as f64 bits, [`EMPTY`] before any sample.
    est: AtomicU64,
    /// When `est` was last updated, in ns since `PeakEwma::base`.
    stamp: AtomicU64,
}

/// The peak-EWMA P2C selector.
#[derive(Debug)]
pub(super) struct PeakEwma {
    names: Vec<String>,
    labels: Vec<String>,
    nodes: Box<[Node]>,
    in_flight: Loads,
    rng: Rng,
    /// Stamps count from here.
    base: Instant,
    /// Decay time in ns, > 0 (`Policy::validate`).
    tau_ns: f64,
    /// Estimate of a probed, unmeasured backend, in ms.
    default_rtt_ms: f64,
}

impl PeakEwma {
    /// `base` is the start of the run; `decay` and `default_rtt` are > 0.
    pub(super) fn new(
        backends: &[Backend],
        decay: Duration,
        default_rtt: Duration,
        base: Instant,
    ) -> Self {
        PeakEwma {
            names: backends.iter().map(|b| b.name.clone()).collect(),
            labels: labels(backends),
            nodes: backends
                .iter()
                .map(|_| Node {
                    est: AtomicU64::new(EMPTY),
                    stamp: AtomicU64::new(0),
                })
                .collect(),
            in_flight: Loads::new(backends.len()),
            rng: Rng::new(SEED),
            base,
            // A zero decay would divide by zero: validate() refuses it, and
            // one nanosecond is the closest meaning if it slips through.
            tau_ns: (decay.as_nanos() as f64).max(1.0),
            default_rtt_ms: millis(default_rtt),
        }
    }

    /// `now` in ns since `base`; 0 before it, saturating after 584 years.
    fn stamp_of(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// `exp(-dt/tau)` for `dt` ns.
    fn weight(&self, dt: u64) -> f64 {
        (-(dt as f64) / self.tau_ns).exp()
    }

    /// Backend `i`'s estimate in ms decayed to `t` (ns); `None` before its
    /// first sample.
    fn decayed(&self, i: usize, t: u64) -> Option<f64> {
        let node = self.nodes.get(i)?;
        let bits = node.est.load(ORDER);
        if bits == EMPTY {
            return None;
        }
        let dt = t.saturating_sub(node.stamp.load(ORDER));
        Some(f64::from_bits(bits) * self.weight(dt))
    }

    /// Estimate (decayed, or the default) times (in flight + 1).
    fn cost(&self, i: usize, t: u64) -> f64 {
        let est = self.decayed(i, t).unwrap_or(self.default_rtt_ms);
        est * (self.in_flight.get(i) as f64 + 1.0)
    }

    /// Whether `i` is due its cold-start probe: unmeasured, nothing in
    /// flight there (see [`super::lowest`]).
    fn unprobed(&self, i: usize) -> bool {
        self.nodes
            .get(i)
            .is_some_and(|n| n.est.load(ORDER) == EMPTY)
            && self.in_flight.get(i) == 0
    }

    /// Estimates in ms decayed to `t` (ns).
    fn estimates_at(&self, t: u64) -> Vec<Option<f64>> {
        (0..self.nodes.len()).map(|i| self.decayed(i, t)).collect()
    }

    fn log_choice(&self, what: &str, i: usize, t: u64) {
        if log_enabled!(Level::Debug) {
            debug!(
                "{}",
                estimates_line(TAG, &self.labels, &self.estimates_at(t))
            );
            debug!("{}", self.in_flight.line(TAG, &self.labels));
            debug!("[{TAG}] {what}: {}", self.names[i]);
        }
    }
}

impl Selector for PeakEwma {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pick(&self, now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let t = self.stamp_of(now);
        let chosen = match draw(self.nodes.len(), eligible, self.rng.next()) {
            Draw::None => return None,
            Draw::One(i) => i,
            Draw::Two(a, b) => {
                // Cost 0 for an unmeasured idle candidate: it wins its probe.
                if let Some(p) = [a, b].into_iter().find(|&i| self.unprobed(i)) {
                    self.log_choice("probing unmeasured", p, t);
                    return Some(p);
                }
                cheaper(a, b, |i| self.cost(i, t))
            }
        };
        self.log_choice("chosen", chosen, t);
        Some(chosen)
    }

    fn on_send(&self, backend: usize, now: Instant) -> Attempt {
        Attempt::counted(backend, now, self.in_flight.take(backend))
    }

    fn observe(&self, attempt: Attempt, outcome: Outcome, now: Instant) {
        let backend = attempt.backend();
        debug_assert!(
            backend < self.nodes.len(),
            "observe({backend}): no such backend"
        );
        let Some(node) = self.nodes.get(backend) else {
            return;
        };
        let t = self.stamp_of(now);
        // A failure: twice the worst other (decayed) estimate, at least
        // FAILURE_PENALTY, so failing fast never looks fast.
        let worst = outcome
            .failed()
            .then(|| super::worst_other((0..self.nodes.len()).map(|i| self.decayed(i, t)), backend))
            .flatten();
        let rtt = millis(outcome.penalised(worst));
        let w = self.weight(t.saturating_sub(node.stamp.fetch_max(t, ORDER)));
        let update = |bits: u64| {
            let est = f64::from_bits(bits);
            let next = if bits == EMPTY || rtt > est {
                rtt
            } else {
                est * w + rtt * (1.0 - w)
            };
            Some(next.to_bits())
        };
        // The closure never refuses, so this always succeeds.
        let _ = node.est.fetch_update(ORDER, ORDER, update);
    }

    /// Decayed to the latest observation of any backend: the selector
    /// reads no clock of its own.
    fn estimates(&self) -> Vec<Option<f64>> {
        let latest = self.nodes.iter().map(|n| n.stamp.load(ORDER)).max();
        self.estimates_at(latest.unwrap_or(0))
    }

    /// Each kept backend's estimate and stamp, moved to this selector's
    /// base; one from before the base is decayed to it first (exact: it
    /// is what a read at the base sees). In-flight counts and unspent
    /// probes are not carried.
    fn inherit(&self, old: &dyn Selector, map: &[Option<usize>], _now: Instant) {
        let Some(old) = old.as_any().downcast_ref::<Self>() else {
            return;
        };
        for (i, j) in super::reload::kept(map, self.nodes.len(), old.nodes.len()) {
            let (node, from) = (&self.nodes[i], &old.nodes[j]);
            let bits = from.est.load(ORDER);
            if bits == EMPTY {
                continue; // unmeasured: probed again, as a new backend
            }
            let stamp = from.stamp.load(ORDER);
            let (est, stamp) = match super::reload::shift(stamp, old.base, self.base) {
                Ok(t) => (f64::from_bits(bits), t),
                Err(before) => (f64::from_bits(bits) * old.weight(nanos(before)), 0),
            };
            node.stamp.store(stamp, ORDER);
            node.est.store(est.to_bits(), ORDER);
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn epoch(&self) -> Option<Instant> {
        Some(self.base)
    }
}

/// A duration in ns, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    const TAU_MS: u64 = 10_000;

    fn peak(n: usize, t0: Instant) -> PeakEwma {
        PeakEwma::new(&backends(n), DEFAULT_DECAY, DEFAULT_RTT, t0)
    }

    fn est(s: &PeakEwma, i: usize, t0: Instant, ms: u64) -> f64 {
        s.decayed(i, s.stamp_of(at(t0, ms))).unwrap()
    }

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() < 1e-6 * want.abs().max(1.0)
    }

    #[test]
    fn a_peak_is_adopted_at_once() {
        let t0 = Instant::now();
        let s = peak(1, t0);
        s.answer(0, ok(20), t0);
        assert_eq!(est(&s, 0, t0, 0), 20.0);
        s.answer(0, ok(400), at(t0, 1));
        assert_eq!(est(&s, 0, t0, 1), 400.0);
        // A failure is a sample of at least FAILURE_PENALTY: a peak.
        let failed = Outcome::Failure {
            elapsed: Duration::from_millis(2),
        };
        s.answer(0, failed, at(t0, 2));
        assert_eq!(est(&s, 0, t0, 2), 1000.0);
    }

    #[test]
    fn a_lower_sample_blends_with_exp_of_elapsed_time() {
        let t0 = Instant::now();
        let s = peak(1, t0);
        s.answer(0, ok(100), t0);
        // After tau: w = e^-1, est = 100/e + 50(1 - 1/e) = 68.39397.
        s.answer(0, ok(50), at(t0, TAU_MS));
        let want = 100.0 * (-1.0f64).exp() + 50.0 * (1.0 - (-1.0f64).exp());
        assert!(close(want, 68.393_972), "{want}");
        assert!(close(est(&s, 0, t0, TAU_MS), want));
        // 1 s later: w = e^-0.1 = 0.904837, est = 68.39397w + 10(1-w).
        s.answer(0, ok(10), at(t0, TAU_MS + 1000));
        let w = (-0.1f64).exp();
        assert!(close(
            est(&s, 0, t0, TAU_MS + 1000),
            want * w + 10.0 * (1.0 - w)
        ));
        assert!(close(est(&s, 0, t0, TAU_MS + 1000), 62.837_071));
        // Same instant: w = 1, a lower sample changes nothing.
        s.answer(0, ok(1), at(t0, TAU_MS + 1000));
        assert!(close(est(&s, 0, t0, TAU_MS + 1000), 62.837_071));
    }

    #[test]
    fn the_estimate_decays_while_idle() {
        let t0 = Instant::now();
        let s = peak(2, t0);
        s.answer(0, ok(400), at(t0, 500));
        assert!(close(est(&s, 0, t0, 500 + TAU_MS), 400.0 / 1f64.exp()));
        assert!(close(est(&s, 0, t0, 500 + 2 * TAU_MS), 400.0 / 2f64.exp()));
        // Reading wrote nothing: the stamp is still the observation's.
        assert!(close(est(&s, 0, t0, 500 + TAU_MS), 147.151_776));
        // estimates() decays to the latest observation of any backend.
        s.answer(1, ok(5), at(t0, 500 + TAU_MS));
        let e = s.estimates();
        assert!(close(e[0].unwrap(), 147.151_776) && e[1] == Some(5.0));
    }

    #[test]
    fn one_probe_per_unmeasured_backend_then_the_default_rtt() {
        let t0 = Instant::now();
        let s = peak(2, t0);
        // Both unprobed: each of the first two picks (sent) is a probe.
        let a = s.tick_pick(t0, &every).unwrap();
        s.hold(a, t0);
        let b = s.tick_pick(t0, &every).unwrap();
        s.hold(b, t0);
        let mut first = [a, b];
        first.sort_unstable();
        assert_eq!(first, [0, 1]);
        assert_eq!(s.estimates(), [None, None]);
        // 0 measured at 40 ms; 1's probe is in flight (unmeasured): it
        // counts at the default 30 ms, times 2 for its probe in flight.
        s.answer(0, ok(40), t0);
        assert!(close(s.cost(1, 0), 60.0));
        assert_eq!(s.tick_pick(t0, &every), Some(0)); // 40 < 60
        s.release(1, t0);
        assert_eq!(s.tick_pick(t0, &every), Some(1)); // idle, unmeasured: 0
        // A measured backend never probes.
        let s = peak(1, t0);
        s.answer(0, ok(5), t0);
        assert!(!s.unprobed(0));
    }

    #[test]
    fn cost_multiplies_by_in_flight_plus_one() {
        let t0 = Instant::now();
        let s = peak(2, t0);
        s.answer(0, ok(10), t0); // fast
        s.answer(1, ok(25), t0); // slower
        assert_eq!(s.tick_pick(t0, &every), Some(0));
        for _ in 0..2 {
            s.hold(0, t0);
        }
        // 10 * 3 = 30 > 25 * 1: the idle slower backend wins.
        assert!(close(s.cost(0, 0), 30.0) && close(s.cost(1, 0), 25.0));
        for _ in 0..10 {
            assert_eq!(s.tick_pick(t0, &every), Some(1));
        }
        s.release(0, t0);
        assert_eq!(s.tick_pick(t0, &every), Some(0)); // 20 < 25
    }

    #[test]
    fn exclude_and_edge_cases() {
        let t0 = Instant::now();
        let s = peak(3, t0);
        for i in 0..3 {
            s.answer(i, ok(10 * (i as u64 + 1)), t0);
        }
        for _ in 0..10 {
            assert_eq!(s.tick_pick(t0, &but(0)), Some(1));
        }
        let one = peak(1, t0);
        assert_eq!(one.tick_pick(t0, &but(0)), None);
        assert_eq!(one.tick_pick(t0, &every), Some(0));
        assert_eq!(peak(0, t0).tick_pick(t0, &every), None);
        assert!(peak(0, t0).estimates().is_empty());
    }
}
