//! Reload carry-over (`reload`, `Selector::inherit`) for every policy, with
//! injected time: a selector trained on three backends of clearly
//! different latencies is replaced by one for [old 2, new, old 0].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::test_util::*;
use super::{Backend, POLICY_NAMES, Policy, Selector, build, carry_map, rebuild};

/// Old backends' latencies: 0 fast, 1 middling, 2 slow.
const LATENCY_MS: [u64; 3] = [10, 100, 300];

/// The policies that learn (round-robin, least-conn and P2C keep nothing
/// but requests in flight).
const LEARNING: [&str; 5] = ["sma", "ewma", "peak-ewma", "predictive", "tail-budget"];

/// Rounds of training: past tail-budget's 64-answer window and
/// predictive's 12 model updates.
const ROUNDS: u64 = 80;

/// Requests left in flight at the fast backend when the reload comes.
const IN_FLIGHT: usize = 10;

fn policy(name: &str) -> Policy {
    name.parse().unwrap()
}

/// [old 2, a new backend, old 0].
fn new_backends(old: &[Backend]) -> Vec<Backend> {
    let added = Backend::new(SocketAddr::from(([127, 0, 0, 1], 9000)));
    vec![old[2].clone(), added, old[0].clone()]
}

/// A selector for `name` trained from `t0`: every round, one pick (so
/// periodic work runs) and one exchange per backend, answered after its
/// latency; rounds 400 ms apart. Returns it and the last answer's time.
fn trained(name: &str, t0: Instant) -> (Arc<dyn Selector>, Instant) {
    let s = build(&policy(name), &backends(3), t0).unwrap();
    let mut last = t0;
    for r in 0..ROUNDS {
        let t = at(t0, 400 * r);
        s.tick_pick(t, &every);
        for (b, &ms) in LATENCY_MS.iter().enumerate() {
            let ticket = s.on_send(b, t);
            let done = at(t, ms);
            s.observe(ticket, ok(ms), done);
            last = last.max(done);
        }
    }
    (s, last)
}

/// Leaves [`IN_FLIGHT`] requests at the old fast backend.
fn leave_in_flight(s: &dyn Selector, now: Instant) {
    for _ in 0..IN_FLIGHT {
        s.hold(0, now);
    }
}

/// Where 20 picks at `now` go (none sent), per new backend index.
fn picks(s: &dyn Selector, now: Instant) -> [usize; 3] {
    let mut count = [0; 3];
    for _ in 0..20 {
        count[s.sent_pick(now, &every).unwrap()] += 1;
    }
    count
}

#[test]
fn kept_backends_keep_their_estimates_and_win_at_once() {
    for name in LEARNING {
        let t0 = Instant::now();
        let (old, now) = trained(name, t0);
        let est = old.estimates();
        let gauges = old.gauges();
        assert!(est.iter().all(Option::is_some), "{name}: {est:?}");
        assert!(est[0] < est[2], "{name}: {est:?}");
        leave_in_flight(&*old, now);

        let new_set = new_backends(&backends(3));
        let map = carry_map(&backends(3), &new_set);
        assert_eq!(map, [Some(2), None, Some(0)]);
        let new = rebuild(&policy(name), &new_set, &*old, &map, now).unwrap();
        assert_eq!(new.name(), old.name());
        assert_eq!(new.estimates(), [est[2], None, est[0]], "{name}");
        for ((label, was), (label2, is)) in gauges.iter().zip(new.gauges()) {
            assert_eq!(*label, label2);
            if *label == "weight" {
                // Tail-budget: re-solved for the new set. The new backend
                // holds its equal start share, the kept ones split the rest
                // in the old proportion, moved towards the LP target.
                let (was, is) = (unwrap(was), unwrap(&is));
                assert!((is.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{is:?}");
                assert!((is[1] - 1.0 / 3.0).abs() < 1e-9, "{is:?}");
                let ratio = |fast: f64, slow: f64| fast / (fast + slow);
                let (r_was, r_is) = (ratio(was[0], was[2]), ratio(is[2], is[0]));
                assert!(r_was > 0.8 && (r_was - r_is).abs() < 0.05, "{was:?} {is:?}");
            } else {
                assert_eq!(is, [was[2], None, was[0]], "{name} {label}");
            }
        }
        // No cold start: apart from probing the new backend, picks go to
        // the kept fast one, whose old in-flight requests do not count
        // here (peak-EWMA would cost it 11x, tail-budget's guard too).
        let count = picks(&*new, at(now, 1));
        assert!(count[2] >= 12 && count[0] <= 2, "{name}: {count:?}");
        if name != "peak-ewma" {
            // P2C draws the new backend against the slow one a third of
            // the time, and it wins at its default RTT; the others probe
            // it once and are done with it.
            assert_eq!(count[1], 1, "{name}: {count:?}");
        }
        // The fresh selector of the same list, for contrast, knows nothing.
        let fresh = build(&policy(name), &new_set, now).unwrap();
        assert_eq!(fresh.estimates(), [None, None, None], "{name}");
    }
}

fn unwrap(v: &[Option<f64>]) -> Vec<f64> {
    v.iter().map(|w| w.unwrap()).collect()
}

#[test]
fn a_new_epoch_still_carries_the_estimates() {
    // `build(.., now)` then `inherit`, without `rebuild`'s old epoch: the
    // stamps before `now` move up to it (see `reload`).
    for name in LEARNING {
        let t0 = Instant::now();
        let (old, now) = trained(name, t0);
        let est = old.estimates();
        let new_set = new_backends(&backends(3));
        let new = build(&policy(name), &new_set, now).unwrap();
        new.inherit(&*old, &[Some(2), None, Some(0)], now);
        let got = new.estimates();
        if name == "predictive" {
            // The idle-time feature lost its age: close, same order.
            assert!(got[1].is_none() && got[2] < got[0], "{got:?}");
        } else {
            assert_eq!(got, [est[2], None, est[0]], "{name}");
        }
        let count = picks(&*new, at(now, 1));
        assert!(count[2] >= 12 && count[0] <= 2, "{name}: {count:?}");
    }
}

#[test]
fn another_policy_type_inherits_nothing() {
    let t0 = Instant::now();
    let new_set = new_backends(&backends(3));
    let map = [Some(2), None, Some(0)];
    for from in POLICY_NAMES {
        let (old, now) = trained(from, t0);
        // `adaptive` is tail-budget's selector under another name: the same
        // type, so it inherits (asserted below).
        let same = |n: &str| n == *from || [n, *from] == ["tail-budget", "adaptive"];
        for name in LEARNING.iter().filter(|&n| !same(n) && !same_rev(n, from)) {
            let new = rebuild(&policy(name), &new_set, &*old, &map, now).unwrap();
            assert_eq!(new.estimates(), [None, None, None], "{from} -> {name}");
            // Still a working cold start.
            assert!(new.tick_pick(now, &every).is_some());
        }
    }
    // tail-budget -> adaptive: the same selector, its learning carried.
    let (old, now) = trained("tail-budget", t0);
    let new = rebuild(&policy("adaptive"), &new_set, &*old, &map, now).unwrap();
    assert_eq!(new.name(), "adaptive");
    assert_eq!(new.estimates()[0], old.estimates()[2]);
    // SMA with another window is still SMA: the newest samples are kept.
    let (old, now) = trained("sma", t0);
    let new = rebuild(&Policy::Sma { window: 1 }, &new_set, &*old, &map, now).unwrap();
    assert_eq!(new.estimates(), [Some(300.0), None, Some(10.0)]);
}

#[test]
fn an_empty_or_bad_map_carries_nothing_it_should_not() {
    let new_set = new_backends(&backends(3));
    for name in LEARNING {
        let t0 = Instant::now();
        let (old, now) = trained(name, t0);
        let est = old.estimates();
        let new = rebuild(&policy(name), &new_set, &*old, &[], now).unwrap();
        assert_eq!(new.estimates(), [None, None, None], "{name}");
        // Out of range and short maps: only the valid entries count.
        let new = rebuild(&policy(name), &new_set, &*old, &[Some(9), None], now).unwrap();
        assert_eq!(new.estimates(), [None, None, None], "{name}");
        let long = [None, Some(7), Some(0), Some(1), Some(2)];
        let new = rebuild(&policy(name), &new_set, &*old, &long, now).unwrap();
        let got = new.estimates();
        assert_eq!(got[..2], [None, None], "{name}");
        if name == "peak-ewma" {
            // Its `estimates()` decay to the latest update of any backend
            // it has: now the fast one's own, not the slow one's later.
            assert!(got[2] >= est[0] && got[2] <= Some(10.0), "{got:?}");
        } else {
            assert_eq!(got[2], est[0], "{name}");
        }
        // No backends at all, on either side.
        let none = rebuild(&policy(name), &[], &*old, &[], now).unwrap();
        assert!(none.estimates().is_empty() && none.tick_pick(now, &every).is_none());
        let empty = build(&policy(name), &[], now).unwrap();
        let from_empty = rebuild(&policy(name), &new_set, &*empty, &[None; 3], now).unwrap();
        assert_eq!(from_empty.estimates(), [None, None, None], "{name}");
    }
}

#[test]
fn an_unmeasured_kept_backend_is_probed_again() {
    for name in ["sma", "ewma", "predictive", "tail-budget"] {
        let t0 = Instant::now();
        let old = build(&policy(name), &backends(2), t0).unwrap();
        // 0's probe is in flight (its answer will go to `old`); 1 answers.
        assert_eq!(old.sent_pick(t0, &every), Some(0));
        assert_eq!(old.sent_pick(t0, &every), Some(1));
        old.answer(1, ok(20), at(t0, 20));
        let now = at(t0, 30);
        let new = rebuild(&policy(name), &backends(2), &*old, &[Some(0), Some(1)], now).unwrap();
        assert_eq!(new.estimates(), [None, Some(20.0)], "{name}");
        assert_eq!(new.sent_pick(now, &every), Some(0), "{name}: probe again");
        assert_eq!(new.sent_pick(now, &every), Some(1), "{name}");
        let later = now + Duration::from_millis(1);
        assert_eq!(new.sent_pick(later, &every), Some(1), "{name}");
    }
}

/// Whether `a` is `adaptive` and `b` `tail-budget` (the same selector).
fn same_rev(a: &str, b: &str) -> bool {
    [a, b] == ["adaptive", "tail-budget"]
}
