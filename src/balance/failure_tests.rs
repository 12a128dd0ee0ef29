//! Failure-aware routing, simulated in virtual time: three backends
//! answering in 20 ms (+ up to 2 ms of jitter), 40 closed-loop clients,
//! and backend 0 failing half its requests after 1 ms (a fast 503, as
//! `tidegate backend --fail status:503:0.5` does). Every policy that
//! learns from outcomes must take most of its share away; the healthy
//! backends must not lose theirs. A failure is observed as
//! `Outcome::Failure`, as the proxy now reports a 5xx.
//!
//! P2C and least-conn learn nothing from outcomes (they count requests in
//! flight, and a backend failing fast has fewer), so they are checked to
//! be *unchanged* here; the ejector's success-rate rule is what removes
//! the failing backend from them (see `health::eject`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::tail_budget::sim::Rng;
use super::test_util::*;
use super::{Outcome, Policy, build};

/// Clients with a request in flight at all times (the fastfail bench's
/// `wrk -c40`).
const CLIENTS: usize = 40;

/// Virtual run length, µs; shares are counted over the second half.
const RUN_US: u64 = 10_000_000;

/// Share of picks per backend over the second half of the run; `fail`:
/// backend 0 fails half its requests after 1 ms.
fn shares(policy: &str, fail: bool) -> [f64; 3] {
    shares_of(&policy.parse().unwrap(), fail)
}

/// [`shares`] for a policy with parameters.
fn shares_of(policy: &Policy, fail: bool) -> [f64; 3] {
    let t0 = Instant::now();
    let s = build(policy, &backends(3), t0).unwrap();
    let at = |us: u64| t0 + Duration::from_micros(us);
    let mut rng = Rng::new(7);
    let mut counts = [0u64; 3];
    // (done µs, order, backend, latency µs, failed)
    let mut heap = BinaryHeap::new();
    let mut order = 0u64;
    // Each request's ticket, by its order.
    let mut tickets = std::collections::HashMap::new();
    let mut send = |now: u64,
                    heap: &mut BinaryHeap<_>,
                    counts: &mut [u64; 3],
                    tickets: &mut std::collections::HashMap<u64, _>| {
        let b = s.tick_pick(at(now), &every).unwrap();
        tickets.insert(order + 1, s.on_send(b, at(now)));
        let failed = fail && b == 0 && rng.next() < 0.5;
        let us = if failed {
            1_000
        } else {
            20_000 + (rng.next() * 2_000.0) as u64
        };
        if now >= RUN_US / 2 {
            counts[b] += 1;
        }
        order += 1;
        heap.push(Reverse((now + us, order, b, us, failed)));
    };
    for _ in 0..CLIENTS {
        send(0, &mut heap, &mut counts, &mut tickets);
    }
    // Bounded: one answer and one send per turn until the run ends.
    while let Some(Reverse((done, key, b, us, failed))) = heap.pop() {
        if done >= RUN_US {
            break;
        }
        let d = Duration::from_micros(us);
        let outcome = if failed {
            Outcome::Failure { elapsed: d }
        } else {
            Outcome::Success { latency: d }
        };
        if let Some(ticket) = tickets.remove(&key) {
            debug_assert_eq!(ticket.backend(), b);
            s.observe(ticket, outcome, at(done));
        }
        send(done, &mut heap, &mut counts, &mut tickets);
    }
    let total = counts.iter().sum::<u64>().max(1) as f64;
    counts.map(|c| c as f64 / total)
}

#[test]
fn learning_policies_starve_a_backend_that_fails_fast() {
    for policy in ["tail-budget", "peak-ewma", "sma", "ewma", "predictive"] {
        let w = shares(policy, true);
        assert!(w[0] < 0.05, "{policy}: failing backend kept {w:?}");
        // The healthy ones take the rest between them, neither starved.
        assert!(w[1] > 0.25 && w[2] > 0.25, "{policy}: {w:?}");
    }
}

#[test]
fn tail_budget_counts_a_failure_as_tail_under_any_slo() {
    // A 5 s SLO: the 1 s penalty is within it, yet a failure is a
    // violation, so the failing backend still drops to its floor.
    let slo = Some(Duration::from_secs(5));
    let w = shares_of(&Policy::TailBudget { slo }, true);
    assert!(w[0] < 0.05, "{w:?}");
    let healthy = shares_of(&Policy::TailBudget { slo }, false);
    assert!(healthy[0] > 0.2, "{healthy:?}");
}

#[test]
fn spreading_policies_keep_a_healthy_backend_in() {
    // The control: without failures backend 0 keeps a fair share.
    for policy in ["tail-budget", "peak-ewma", "p2c", "least-conn"] {
        let w = shares(policy, false);
        assert!(w[0] > 0.2, "{policy}: healthy backend 0 got {w:?}");
    }
}

#[test]
fn in_flight_policies_do_not_learn_from_failures() {
    // Documented limitation: a fast failure frees its slot sooner, so
    // these send the failing backend at least its fair share; ejection
    // (success rate) is their protection.
    for policy in ["p2c", "least-conn"] {
        let w = shares(policy, true);
        assert!(w[0] > 0.3, "{policy}: {w:?}");
    }
}
