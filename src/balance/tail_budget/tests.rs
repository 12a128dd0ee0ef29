use std::time::{Duration, Instant};

use super::super::test_util::*;
use super::super::{Policy, Selector, build};
use super::sim::{A_CYCLE, Capacity, Load, Model, Run, Seed, simulate};
use super::*;

fn tb(n: usize, t0: Instant) -> TailBudget {
    TailBudget::new(&backends(n), None, t0)
}

/// Sends to `b` at `t`, answered `ms` later.
fn exchange(s: &TailBudget, b: usize, ms: u64, t: Instant) {
    let ticket = s.on_send(b, t);
    let done = t + Duration::from_millis(ms);
    s.observe(ticket, ok(ms), done);
}

fn run(s: &dyn Selector, model: &mut dyn Model, n: usize, clients: usize, secs: u64) -> Run {
    simulate(s, model, n, Load::new(clients, Duration::from_secs(secs)))
}

#[test]
fn cold_start_probes_each_backend_once() {
    let t0 = Instant::now();
    let s = tb(3, t0);
    assert_eq!(s.name(), "tail-budget");
    let picks: Vec<_> = (0..6).map(|_| s.sent_pick(t0, &every).unwrap()).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]); // probes, then round-robin
    s.answer(1, ok(200), at(t0, 200));
    for _ in 0..10 {
        assert_eq!(s.sent_pick(at(t0, 201), &every), Some(1));
    }
    // Excluding it leaves only probes in flight: round-robin.
    assert!(matches!(s.sent_pick(at(t0, 201), &but(1)), Some(0 | 2)));
    assert_eq!(s.estimates(), [None, Some(200.0), None]);
    for w in s.weights() {
        assert!((w - 1.0 / 3.0).abs() < 1e-12);
    }
    assert_eq!(TailBudget::new(&[], None, t0).sent_pick(t0, &every), None);
}

#[test]
fn shares_follow_the_lp_with_floor_and_sum_to_one() {
    let t0 = Instant::now();
    let s = tb(3, t0);
    // 64 answers each: A the seed cycle, B 200 ms, C 250 ms.
    for k in 0..64 {
        let t = at(t0, k);
        exchange(&s, 0, A_CYCLE[k as usize % 9], t);
        exchange(&s, 1, 200, t);
        exchange(&s, 2, 250, t);
    }
    for p in 1..=40 {
        s.tick_pick(at(t0, 1_000 + 100 * p), &every);
    }
    assert_eq!(s.threshold_ms(), Some(210.0));
    let w = s.weights();
    assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{w:?}");
    // The window holds 21 slow of 64 (A_CYCLE from 0): tail 0.328.
    let tail_a = 21.0 / 64.0;
    let want_a = 0.01 + (0.04 - 0.01 * (tail_a + 1.0)) / tail_a;
    assert!((w[0] - want_a).abs() < 1e-3 && w[0] <= 0.15, "{w:?}");
    assert!((w[2] - FLOOR).abs() < 1e-3, "{w:?}");
    // SWRR follows the shares: over one cycle of its weights, each
    // backend within one pick of its weight (the cycle starts mid-state).
    let units: Vec<u64> = (0..3).map(|i| s.swrr.weight(i)).collect();
    assert!(units.iter().all(|&u| u >= 100), "{units:?}");
    let mut counts = [0u64; 3];
    for _ in 0..units.iter().sum::<u64>() {
        counts[s.tick_pick(at(t0, 5_000), &every).unwrap()] += 1;
    }
    for (c, u) in counts.iter().zip(&units) {
        assert!(c.abs_diff(*u) <= 1, "{counts:?} vs {units:?}");
    }
}

#[test]
fn an_slo_fixes_the_threshold() {
    let t0 = Instant::now();
    let s = TailBudget::new(&backends(2), Some(Duration::from_millis(300)), t0);
    for k in 0..64 {
        exchange(&s, 0, A_CYCLE[k % 9], t0);
        exchange(&s, 1, 200, t0);
    }
    for p in 1..=40 {
        s.tick_pick(at(t0, 100 * p), &every);
    }
    assert_eq!(s.threshold_ms(), Some(300.0));
    // A's 400s now count against the budget: A is cut back to ~12%.
    let w = s.weights();
    assert!(w[0] < 0.15 && w[0] > 0.08, "{w:?}");
}

#[test]
fn overload_guard_redirects_a_loaded_pick() {
    let t0 = Instant::now();
    let s = tb(2, t0);
    // Backend 0: 10 ms + 5 ms per request already in flight; 1: 100 ms.
    for k in 0..200u64 {
        let x = k % 12;
        let t = at(t0, 10 * k);
        for _ in 0..x {
            s.hold(0, t);
        }
        exchange(&s, 0, 10 + 5 * x, at(t0, 10 * k + 1));
        for _ in 0..x {
            s.release(0, t);
        }
        exchange(&s, 1, 100, t);
    }
    let line = s.slots[0].load.line().unwrap();
    assert!(line.slope > 4.0 && line.base < 15.0, "{line:?}");
    // Backend 0 never exceeds T = 1.05 × 65 ms: the LP gives it all but
    // backend 1's floor.
    for p in 1..=40 {
        s.tick_pick(at(t0, 3_000 + 100 * p), &every);
    }
    assert!(s.weights()[0] > 0.9, "{:?}", s.weights());
    let t = at(t0, 8_000);
    let idle = (0..100)
        .filter(|_| s.tick_pick(t, &every) == Some(0))
        .count();
    assert!(idle >= 95, "{idle}");
    // 10 in flight at 0: fitted 60 ms = 6× base, so the pick moves to 1.
    for _ in 0..10 {
        s.hold(0, t);
    }
    let picks: Vec<_> = (0..20).map(|_| s.tick_pick(t, &every).unwrap()).collect();
    assert!(picks.iter().all(|&b| b == 1), "{picks:?}");
    for _ in 0..10 {
        s.release(0, t);
    }
    let idle = (0..100)
        .filter(|_| s.tick_pick(t, &every) == Some(0))
        .count();
    assert!(idle >= 95, "{idle}");
}

#[test]
fn exclude_never_returns_the_failed_backend() {
    let t0 = Instant::now();
    let s = tb(3, t0);
    for b in 0..3 {
        assert_eq!(s.tick_pick(t0, &every), Some(b));
        s.answer(b, ok(10 * (b as u64 + 1)), t0);
    }
    for k in 0..500 {
        let t = at(t0, 100 * k);
        let x = (k % 3) as usize;
        assert_ne!(s.tick_pick(t, &but(x)), Some(x));
        let failed = Outcome::Failure {
            elapsed: Duration::ZERO,
        };
        s.answer(x, failed, t);
    }
    let one = tb(1, t0);
    assert_eq!(one.tick_pick(t0, &but(0)), None);
}

#[test]
fn shared_by_threads_everything_stays_consistent() {
    let t0 = Instant::now();
    let s = tb(3, t0);
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let s = &s;
            scope.spawn(move || {
                for k in 0..2_000u64 {
                    let now = at(t0, k);
                    let b = s.tick_pick(now, &every).unwrap();
                    let sent = s.on_send(b, now);
                    let ms = 10 + (k * 7 + t) % 50 * 8; // 10..=402 ms
                    let done = at(t0, k + ms);
                    if (k + t) % 40 == 0 {
                        let elapsed = Duration::ZERO;
                        s.observe(sent, Outcome::Failure { elapsed }, done);
                        let retry = s.tick_pick(done, &but(b)).unwrap();
                        assert_ne!(retry, b);
                        let ticket = s.on_send(retry, done);
                        s.observe(ticket, ok(18), at(t0, k + ms + 18));
                    } else {
                        s.observe(sent, ok(ms), done);
                    }
                }
            });
        }
    });
    let w = s.weights();
    assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{w:?}");
    assert!(w.iter().all(|&x| x >= FLOOR - 1e-9), "{w:?}");
    for e in s.estimates() {
        assert!((10.0..=1_000.0).contains(&e.unwrap()));
    }
    assert!((0..s.slots.len()).all(|i| s.loads.get(i) == 0));
}

/// The seed scenario, 100 closed-loop clients, 30 s of virtual time,
/// every answer counted (cold start included).
#[test]
fn seed_scenario_meets_the_targets() {
    let t0 = Instant::now();
    let s = tb(3, t0);
    let r = run(&s, &mut Seed::default(), 3, 100, 30);
    println!("tail-budget seed: {}", r.summary());
    println!("  above 205 ms: {:.2}%", r.above_pct(205.0));
    println!("  after 5 s: {}", r.slice(5.0, 30.0).summary());
    assert!(r.req_per_s() >= 505.0, "{}", r.summary());
    assert!(r.mean_ms() <= 198.0, "{}", r.summary());
    assert!(r.quantile_ms(0.95) <= 205.0, "{}", r.summary());
    assert!(
        r.share_pct(0) <= 15.0 && r.share_pct(2) <= 2.5,
        "{}",
        r.summary()
    );
}

/// Five seeds of A's phase and +U(0,1) ms jitter (the research's
/// robustness runs): the targets hold at the specified overhead. With the
/// overhead calibrated to the seed report (3.7 ms proxy, 0.5 ms client
/// gap) every latency is ~4 ms longer, so only the numbers are printed.
#[test]
fn seed_scenario_is_robust_to_phase_and_jitter() {
    let t0 = Instant::now();
    for seed in 1..=5 {
        let s = tb(3, t0);
        let load = Load::new(100, Duration::from_secs(20));
        let r = simulate(&s, &mut Seed::jittered(seed), 3, load);
        println!(
            "seed {seed}: {} ({:.2}% > 205)",
            r.summary(),
            r.above_pct(205.0)
        );
        assert!(r.req_per_s() >= 505.0, "{}", r.summary());
        assert!(r.mean_ms() <= 198.0, "{}", r.summary());
        assert!(r.quantile_ms(0.95) <= 205.0, "{}", r.summary());
        let calib = Load {
            overhead: Duration::from_micros(3_700),
            gap: Duration::from_micros(500),
            ..load
        };
        let s = tb(3, t0);
        let r = simulate(&s, &mut Seed::jittered(seed), 3, calib);
        println!("  calibrated: {}", r.summary());
        assert!(r.quantile_ms(0.95) <= 210.0, "{}", r.summary());
    }
}

/// Capacity 4/8/16, 20 ms service, 40 clients: against round-robin, with
/// fixed and with exponential service times.
#[test]
fn capacity_scenario_beats_round_robin() {
    let t0 = Instant::now();
    let fixed = || Capacity::new(&[4, 8, 16], Duration::from_millis(20));
    let rr = build(&Policy::RoundRobin, &backends(3), t0).unwrap();
    let base = run(&*rr, &mut fixed(), 3, 40, 20);
    let s = tb(3, t0);
    let r = run(&s, &mut fixed(), 3, 40, 20);
    println!("round-robin capacity: {}", base.summary());
    println!("tail-budget capacity: {}", r.summary());
    assert!(r.req_per_s() >= 1.5 * base.req_per_s(), "{}", r.summary());
    let ratio = r.quantile_ms(0.99) / base.quantile_ms(0.99);
    assert!(ratio <= 0.5, "p99 ratio {ratio}: {}", r.summary());
    for seed in 1..=3 {
        let exp = || Capacity::exponential(&[4, 8, 16], Duration::from_millis(20), seed);
        let rr = build(&Policy::RoundRobin, &backends(3), t0).unwrap();
        let base = run(&*rr, &mut exp(), 3, 40, 20);
        let s = tb(3, t0);
        let r = run(&s, &mut exp(), 3, 40, 20);
        let ratio = r.quantile_ms(0.99) / base.quantile_ms(0.99);
        println!("exponential {seed}: rr {}", base.summary());
        println!("  tail-budget {} (p99 ratio {ratio:.2})", r.summary());
    }
}

#[test]
fn the_floor_and_starting_shares_scale_with_weight() {
    let t0 = Instant::now();
    let mut b = backends(3);
    b[0].weight = 3;
    let s = TailBudget::new(&b, None, t0);
    // Before any answer: shares by weight, 3/5, 1/5, 1/5.
    let w = s.weights();
    assert!(
        (w[0] - 0.6).abs() < 1e-12 && (w[1] - 0.2).abs() < 1e-12,
        "{w:?}"
    );
    // Backend 1 is far better; 0 and 2 sink to their floors: 3% of the
    // floors' 3% total for the weight-3 one, 0.6% for the weight-1 one.
    for k in 0..64 {
        let t = at(t0, k);
        exchange(&s, 0, 300, t);
        exchange(&s, 1, 10, t);
        exchange(&s, 2, 300, t);
    }
    for p in 1..=60 {
        s.tick_pick(at(t0, 1_000 + 100 * p), &every);
    }
    let w = s.weights();
    assert!((w[0] - 0.03 * 3.0 / 5.0).abs() < 1e-3, "{w:?}");
    assert!((w[2] - 0.03 / 5.0).abs() < 1e-3, "{w:?}");
    assert!(w[0] > 2.5 * w[2], "{w:?}");
}
