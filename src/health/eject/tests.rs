use super::*;

fn fail_n(e: &Ejector, b: usize, n: u32, now: Instant) {
    for _ in 0..n {
        e.record(b, false, now);
    }
}

#[test]
fn five_consecutive_failures_eject_for_base_times_count() {
    let t0 = Instant::now();
    let e = Ejector::new(3, t0, false, EJECT_AFTER);
    fail_n(&e, 0, 4, t0);
    e.record(0, true, t0); // a success resets the streak
    fail_n(&e, 0, 4, t0);
    assert_eq!(e.admit(0, t0), Admit::Yes);
    e.record(0, false, t0);
    assert_eq!(e.admit(0, t0), Admit::No);
    assert_eq!(e.admit(0, t0 + Duration::from_millis(999)), Admit::No);
    // Expired: exactly one probe.
    let t1 = t0 + BASE;
    assert_eq!(e.admit(0, t1), Admit::Probe);
    assert_eq!(e.admit(0, t1), Admit::No);
    // The probe fails: out for 2 x BASE.
    e.record(0, false, t1);
    assert_eq!(e.admit(0, t1 + Duration::from_millis(1999)), Admit::No);
    assert_eq!(e.admit(0, t1 + 2 * BASE), Admit::Probe);
    // The probe succeeds: back.
    e.record(0, true, t1 + 2 * BASE);
    assert_eq!(e.admit(0, t1 + 2 * BASE), Admit::Yes);
    assert_eq!(e.ejections(), 2);
}

#[test]
fn ejection_length_is_capped() {
    let t0 = Instant::now();
    let e = Ejector::new(2, t0, false, EJECT_AFTER);
    let mut t = t0;
    fail_n(&e, 1, EJECT_AFTER, t);
    for _ in 0..40 {
        // Jump past any ejection, probe, fail.
        t += CAP;
        assert_eq!(e.admit(1, t), Admit::Probe);
        e.record(1, false, t);
    }
    assert_eq!(e.admit(1, t + CAP - Duration::from_millis(1)), Admit::No);
    assert_eq!(e.admit(1, t + CAP), Admit::Probe);
}

#[test]
fn at_most_half_are_ejected_then_fail_open() {
    let t0 = Instant::now();
    let e = Ejector::new(4, t0, false, EJECT_AFTER);
    for b in 0..4 {
        fail_n(&e, b, EJECT_AFTER, t0);
    }
    let out = (0..4).filter(|&b| e.admit(b, t0) == Admit::No).count();
    assert_eq!(out, 2, "half of 4");
    // A single backend is never ejected: there is nothing to fail over to.
    let one = Ejector::new(1, t0, false, EJECT_AFTER);
    fail_n(&one, 0, 50, t0);
    assert_eq!(one.admit(0, t0), Admit::Yes);
    // --eject-after 0 turns ejection off.
    let off = Ejector::new(3, t0, false, 0);
    fail_n(&off, 0, 50, t0);
    assert_eq!(off.admit(0, t0), Admit::Yes);
}

/// `n` answers from `b` at `t`, every `every`-th one a 503 (0: none).
fn answers(e: &Ejector, b: usize, n: u32, every: u32, t: Instant) {
    for k in 1..=n {
        let status = if every > 0 && k % every == 0 {
            503
        } else {
            200
        };
        e.record_answer(b, status, t);
    }
}

#[test]
fn half_failing_backend_is_ejected_by_success_rate() {
    let t0 = Instant::now();
    let e = Ejector::new(3, t0, false, EJECT_AFTER);
    answers(&e, 1, 40, 0, t0);
    answers(&e, 2, 40, 0, t0);
    // Alternating 200/503: never 2 in a row, so only the rate can eject.
    answers(&e, 0, 19, 2, t0);
    assert_eq!(e.admit(0, t0), Admit::Yes, "19 requests: too few to judge");
    answers(&e, 0, 1, 1, t0); // the 20th, a 503: 10/20 = 50%
    assert_eq!(e.admit(0, t0), Admit::No);
    assert_eq!(e.times_ejected(0), 1);
    // The usual return: one probe after BASE; a 503 probe fails...
    let t1 = t0 + BASE;
    assert_eq!(e.admit(0, t1), Admit::Probe);
    e.record_answer(0, 503, t1);
    assert_eq!(e.admit(0, t1 + BASE), Admit::No, "out for 2 x BASE");
    // ...a 200 probe brings it back with a clean window.
    let t2 = t1 + 2 * BASE;
    assert_eq!(e.admit(0, t2), Admit::Probe);
    e.record_answer(0, 200, t2);
    assert_eq!(e.admit(0, t2), Admit::Yes);
    answers(&e, 0, 10, 2, t2);
    assert_eq!(e.admit(0, t2), Admit::Yes, "old failures forgotten");
}

#[test]
fn under_twenty_requests_nothing_is_judged() {
    let t0 = Instant::now();
    let e = Ejector::new(3, t0, false, EJECT_AFTER);
    answers(&e, 1, 100, 0, t0);
    // 19 requests, 7 failing (37%).
    answers(&e, 0, 15, 5, t0); // 3 failures
    for _ in 0..4 {
        e.record_answer(0, 503, t0);
    }
    assert_eq!(e.admit(0, t0), Admit::Yes);
    assert_eq!(e.ejections(), 0);
}

#[test]
fn equal_failure_everywhere_ejects_nobody() {
    let t0 = Instant::now();
    let e = Ejector::new(3, t0, false, EJECT_AFTER);
    // All at 50%: above 30%, but not 2x the others.
    for _ in 0..50 {
        for b in 0..3 {
            answers(&e, b, 2, 2, t0);
        }
    }
    assert_eq!(e.ejections(), 0);
    // Others at 20%: 35% is above the 30% floor but under 2 x 20%.
    let f = Ejector::new(2, t0, false, EJECT_AFTER);
    answers(&f, 1, 100, 5, t0);
    for k in 0..100u32 {
        // 35 failures in 100, spread evenly (every prefix within one).
        f.record_answer(0, if (k * 7) % 20 < 7 { 503 } else { 200 }, t0);
    }
    assert_eq!(f.ejections(), 0, "35% vs 20%: under 2x");
}

#[test]
fn old_failures_leave_the_window() {
    let t0 = Instant::now();
    let e = Ejector::new(3, t0, false, EJECT_AFTER);
    answers(&e, 1, 40, 0, t0);
    answers(&e, 2, 40, 0, t0);
    // 19 requests, 10 failing, then a quiet window.
    answers(&e, 0, 18, 2, t0);
    e.record_answer(0, 503, t0);
    let later = t0 + SR_WINDOW + Duration::from_millis(1);
    // The others stay healthy in the new window; 0 gets 2 more 503s: 21
    // requests and 12 failures if the window had kept the old ones.
    answers(&e, 1, 40, 0, later);
    e.record_answer(0, 503, later);
    e.record_answer(0, 503, later);
    assert_eq!(e.admit(0, later), Admit::Yes);
    assert_eq!(e.ejections(), 0);
    // Within the window they add up: 9 s after t0, 21 requests.
    let e2 = Ejector::new(3, t0, false, EJECT_AFTER);
    answers(&e2, 1, 40, 0, t0);
    answers(&e2, 0, 18, 2, t0);
    e2.record_answer(0, 503, t0);
    let soon = t0 + SR_WINDOW - BASE;
    e2.record_answer(0, 200, soon);
    e2.record_answer(0, 503, soon);
    assert_eq!(e2.admit(0, soon), Admit::No);
}

#[test]
fn a_5xx_feeds_the_streak_only_with_eject_5xx() {
    let t0 = Instant::now();
    let plain = Ejector::new(3, t0, false, EJECT_AFTER);
    let strict = Ejector::new(3, t0, true, EJECT_AFTER);
    for e in [&plain, &strict] {
        answers(e, 1, 100, 0, t0);
        for _ in 0..EJECT_AFTER {
            e.record_answer(0, 502, t0);
        }
    }
    assert_eq!(strict.admit(0, t0), Admit::No, "5 x 5xx in a row");
    assert_eq!(plain.admit(0, t0), Admit::Yes, "5 requests: under 20");
    // Answers to requests sent before an ejection do not bring it back.
    strict.record_answer(0, 200, t0);
    assert_eq!(strict.admit(0, t0), Admit::No);
}
