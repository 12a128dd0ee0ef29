//! `round-robin`: backends in turn, one shared counter; outcomes are ignored.
//! With unequal weights, smooth weighted round-robin (`swrr`, nginx's
//! algorithm, lock-free): weights 3:1 give `a a b a`, `a a b a`, ...

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use log::{Level, debug, log_enabled};

use super::swrr::Swrr;
use super::{Attempt, Backend, Outcome, Selector};

/// CSV `routing_mode` name.
pub(super) const NAME: &str = "round-robin";

/// Log tag: `[RR] chosen: 127.0.0.1:8081`.
const TAG: &str = "RR";

/// Cycles over the backends with one atomic counter shared by all workers.
#[derive(Debug)]
pub(super) struct RoundRobin {
    names: Vec<String>,
    /// Picks so far; `next % n` is the next backend. Wrapping at
    /// `usize::MAX` only skews one turn when `n` is not a power of two.
    next: AtomicUsize,
    /// Only when the weights differ: the weighted rotation.
    weighted: Option<Swrr>,
}

impl RoundRobin {
    pub(super) fn new(backends: &[Backend]) -> Self {
        let weighted = super::weights(backends).map(|w| {
            let s = Swrr::new(w.len(), 0);
            for (i, &w) in w.iter().enumerate() {
                s.set(i, u64::from(w));
            }
            s
        });
        RoundRobin {
            names: backends.iter().map(|b| b.name.clone()).collect(),
            next: AtomicUsize::new(0),
            weighted,
        }
    }

    fn turn(&self) -> usize {
        // Relaxed: the counter publishes nothing but its own value.
        self.next.fetch_add(1, Ordering::Relaxed) % self.names.len()
    }
}

impl Selector for RoundRobin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pick(&self, _now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.names.len();
        if let Some(w) = &self.weighted {
            // Ineligible backends are skipped; the others keep their ratio.
            let i = w.pick(eligible)?;
            if log_enabled!(Level::Debug) {
                debug!("[{TAG}] chosen: {}", self.names[i]);
            }
            return Some(i);
        }
        if n == 0 {
            return None;
        }
        let mut i = self.turn();
        if !eligible(i) {
            // An ineligible turn (a retry's failed backend, an ejected one)
            // takes the next turn, so the rotation stays fair; if that one
            // is out too, the next eligible neighbour will do (bounded by
            // the backend count).
            i = self.turn();
            i = (i..n).chain(0..i).find(|&b| eligible(b))?;
        }
        if log_enabled!(Level::Debug) {
            debug!("[{TAG}] chosen: {}", self.names[i]);
        }
        Some(i)
    }

    fn observe(&self, _attempt: Attempt, _outcome: Outcome, _now: Instant) {}

    fn estimates(&self) -> Vec<Option<f64>> {
        vec![None; self.names.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn cycles_over_all_backends() {
        let t0 = Instant::now();
        let rr = RoundRobin::new(&backends(3));
        let picks: Vec<_> = (0..7).map(|_| rr.tick_pick(t0, &every).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
        // Outcomes change nothing.
        rr.answer(1, ok(1), t0);
        assert_eq!(rr.tick_pick(t0, &every), Some(1));
        assert_eq!(rr.estimates(), [None, None, None]);
    }

    #[test]
    fn exclude_skips_the_failed_backend() {
        let t0 = Instant::now();
        let rr = RoundRobin::new(&backends(3));
        assert_eq!(rr.tick_pick(t0, &but(0)), Some(1));
        assert_eq!(rr.tick_pick(t0, &every), Some(2));
        for _ in 0..10 {
            assert_ne!(rr.tick_pick(t0, &but(1)), Some(1));
        }
        let one = RoundRobin::new(&backends(1));
        assert_eq!(one.tick_pick(t0, &but(0)), None);
        assert_eq!(one.tick_pick(t0, &every), Some(0));
        // An index that is not a backend excludes nothing.
        assert_eq!(one.tick_pick(t0, &but(5)), Some(0));
    }

    #[test]
    fn weights_3_to_1_give_three_picks_to_one_smoothly() {
        let t0 = Instant::now();
        let mut b = backends(3);
        b[0].weight = 3;
        let rr = RoundRobin::new(&b);
        let picks: Vec<_> = (0..10).map(|_| rr.tick_pick(t0, &every).unwrap()).collect();
        // nginx's smooth sequence for {3,1,1}: never three in a row.
        assert_eq!(picks, [0, 1, 0, 2, 0, 0, 1, 0, 2, 0]);
        // A retry avoids the failed backend; 1 and 2 alternate.
        for _ in 0..10 {
            assert_ne!(rr.tick_pick(t0, &but(0)), Some(0));
        }
        let mut one = backends(1);
        one[0].weight = 4;
        assert_eq!(RoundRobin::new(&one).tick_pick(t0, &but(0)), None);
    }
}
