//! `least-conn`: the backend with the fewest requests in flight, counted
//! globally (one selector serves every worker) by the `Attempt` tickets of
//! `on_send`; ties are broken round-robin by scanning from a rotating start
//! index. Outcomes are ignored.
//!
//! The counts are `attempt::Loads`, shared in shape with P2C, peak-EWMA,
//! tail-budget and predictive: an `Attempt` holds its count until dropped.
//!
//! Benign race: between a `pick` and its `on_send` another worker may read
//! the old count and pick the same backend; the counts themselves are never
//! lost, so the next picks see both requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use log::{Level, debug, log_enabled};

use super::{Attempt, Backend, Loads, Outcome, Selector, labels};

/// CSV `routing_mode` name.
pub(super) const NAME: &str = "least-conn";

/// Log tag: `[LC] chosen: 127.0.0.1:8081`.
const TAG: &str = "LC";

/// Relaxed: each counter is a value on its own and guards no other memory.
const ORDER: Ordering = Ordering::Relaxed;

/// Fewest in flight wins; ties go to the first one found scanning from a
/// start index that advances by one on every pick.
#[derive(Debug)]
pub(super) struct LeastConn {
    names: Vec<String>,
    labels: Vec<String>,
    in_flight: Loads,
    /// Picks so far; `turn % n` is where the scan starts. Wrapping at
    /// `usize::MAX` only skews one rotation when `n` is not a power of two.
    turn: AtomicUsize,
}

impl LeastConn {
    pub(super) fn new(backends: &[Backend]) -> Self {
        LeastConn {
            names: backends.iter().map(|b| b.name.clone()).collect(),
            labels: labels(backends),
            in_flight: Loads::new(backends.len()),
            turn: AtomicUsize::new(0),
        }
    }
}

impl Selector for LeastConn {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pick(&self, _now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.in_flight.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, ORDER) % n;
        let mut best: Option<(usize, usize)> = None;
        for i in (start..n).chain(0..start) {
            if !eligible(i) {
                continue;
            }
            let load = self.in_flight.get(i);
            if best.is_none_or(|(_, low)| load < low) {
                best = Some((i, load));
            }
        }
        let (chosen, _) = best?;
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
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn fewest_in_flight_wins() {
        let t0 = Instant::now();
        let s = LeastConn::new(&backends(3));
        for (b, k) in [(0, 3), (1, 1), (2, 2)] {
            for _ in 0..k {
                s.hold(b, t0);
            }
        }
        for _ in 0..6 {
            assert_eq!(s.tick_pick(t0, &every), Some(1));
        }
        s.release(0, t0);
        s.release(0, t0);
        s.release(0, t0); // 0 is now idle
        assert_eq!(s.tick_pick(t0, &every), Some(0));
        assert_eq!(s.estimates(), [None, None, None]);
    }

    #[test]
    fn ties_rotate() {
        let t0 = Instant::now();
        let s = LeastConn::new(&backends(3));
        let picks: Vec<_> = (0..6).map(|_| s.tick_pick(t0, &every).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // 1 busy: the scan start still rotates, so the tie between 0 and 2
        // goes to 0 (scan from 0), then 2 (scan from 1), then 2 (from 2).
        s.hold(1, t0);
        let picks: Vec<_> = (0..3).map(|_| s.tick_pick(t0, &every).unwrap()).collect();
        assert_eq!(picks, [0, 2, 2]);
    }

    #[test]
    fn sending_as_picked_spreads_evenly() {
        let t0 = Instant::now();
        let s = LeastConn::new(&backends(4));
        for _ in 0..40 {
            let b = s.tick_pick(t0, &every).unwrap();
            s.hold(b, t0);
        }
        assert!((0..4).all(|i| s.in_flight.get(i) == 10));
    }

    #[test]
    fn exclude_and_edge_cases() {
        let t0 = Instant::now();
        let s = LeastConn::new(&backends(2));
        s.hold(1, t0);
        assert_eq!(s.tick_pick(t0, &but(0)), Some(1));
        let one = LeastConn::new(&backends(1));
        assert_eq!(one.tick_pick(t0, &but(0)), None);
        assert_eq!(one.tick_pick(t0, &every), Some(0));
        assert_eq!(LeastConn::new(&[]).tick_pick(t0, &every), None);
    }

    /// The count follows the ticket: observed or dropped, it is released
    /// exactly once, and to the selector that issued it (a reload's
    /// successor never sees it).
    #[test]
    fn a_ticket_releases_its_count_once_however_it_ends() {
        let t0 = Instant::now();
        let s = LeastConn::new(&backends(2));
        let (a, b) = (s.on_send(0, t0), s.on_send(0, t0));
        assert_eq!(s.in_flight.get(0), 2);
        s.observe(a, ok(5), t0);
        assert_eq!(s.in_flight.get(0), 1);
        drop(b);
        assert_eq!(s.in_flight.get(0), 0);
        let next = LeastConn::new(&backends(2));
        let old = s.on_send(1, t0);
        assert_eq!((s.in_flight.get(1), next.in_flight.get(1)), (1, 0));
        drop(old);
        assert_eq!(s.in_flight.get(1), 0);
    }

    #[test]
    fn counts_are_global_across_threads() {
        let t0 = Instant::now();
        let s = LeastConn::new(&backends(3));
        // Four threads each keep their last 10 requests open: the counters
        // must account for every one of them, whichever thread sent it.
        let open: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let mut open = std::collections::VecDeque::new();
                        for _ in 0..1000 {
                            let b = s.tick_pick(t0, &every).unwrap();
                            s.hold(b, t0);
                            open.push_back(b);
                            if open.len() > 10 {
                                s.release(open.pop_front().unwrap(), t0);
                            }
                        }
                        open
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(open.len(), 40);
        for i in 0..3 {
            let expected = open.iter().filter(|&&b| b == i).count();
            assert_eq!(s.in_flight.get(i), expected, "backend {i}");
        }
        for b in open {
            s.release(b, t0);
        }
        assert!((0..3).all(|i| s.in_flight.get(i) == 0));
        for _ in 0..12 {
            let b = s.tick_pick(t0, &every).unwrap();
            s.hold(b, t0);
        }
        assert!((0..3).all(|i| s.in_flight.get(i) == 4));
    }
}
