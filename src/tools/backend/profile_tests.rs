use super::*;

fn ms(p: &Profile) -> Vec<u128> {
    p.delays().iter().map(Duration::as_millis).collect()
}

#[test]
fn presets_and_lists_parse() {
    let a: Profile = "A".parse().unwrap();
    assert_eq!(ms(&a), [10, 15, 20, 400, 400, 400, 10, 15, 20]);
    assert_eq!(a.preset(), Some("A"));
    assert_eq!(ms(&"b".parse().unwrap()), [200]);
    assert_eq!(ms(&"C".parse().unwrap()), [250]);
    let list: Profile = " 10, 15,20 ".parse().unwrap();
    assert_eq!(ms(&list), [10, 15, 20]);
    assert_eq!(list.preset(), None);
    assert_eq!("0".parse::<Profile>().unwrap(), Profile::immediate());
    assert_eq!(a.to_string(), "[10,15,20,400,400,400,10,15,20] ms");
}

#[test]
fn bad_profiles_are_rejected_with_the_value() {
    for bad in ["", "D", "10,,20", "10,x", "-5", "1.5", "3600001"] {
        let e = bad.parse::<Profile>().unwrap_err().to_string();
        assert!(e.contains("invalid profile"), "{bad}: {e}");
        assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
    }
}

#[test]
fn the_cycle_wraps() {
    let p: Profile = "30,60".parse().unwrap();
    let got: Vec<u128> = (0..5).map(|n| p.delay(n).as_millis()).collect();
    assert_eq!(got, [30, 60, 30, 60, 30]);
}

#[test]
fn fail_modes_parse() {
    assert_eq!("refuse".parse(), Ok(FailMode::Refuse));
    assert_eq!("HANG".parse(), Ok(FailMode::Hang));
    assert_eq!("garbage".parse(), Ok(FailMode::Garbage));
    assert_eq!("reset".parse(), Ok(FailMode::Reset));
    assert_eq!(
        "status:503:0.2".parse(),
        Ok(FailMode::Status {
            code: 503,
            rate: 0.2
        })
    );
    assert_eq!(
        "status:500".parse(),
        Ok(FailMode::Status {
            code: 500,
            rate: 1.0
        })
    );
    for bad in [
        "",
        "boom",
        "status",
        "status:99:0.1",
        "status:600:0.1",
        "status:503:1.5",
        "status:503:-0.1",
        "status:503:nan",
        "status:503:0.2:1",
    ] {
        let e = bad.parse::<FailMode>().unwrap_err().to_string();
        assert!(e.contains("invalid fail mode"), "{bad}: {e}");
    }
}

#[test]
fn injector_is_exact_and_even() {
    let mode = "status:503:0.5".parse().ok();
    let mut inj = Injector::for_mode(mode).unwrap();
    let picks: Vec<bool> = (0..20).map(|_| inj.pick().is_some()).collect();
    assert_eq!(picks.iter().filter(|p| **p).count(), 10);
    assert!(picks.windows(2).all(|w| w[0] != w[1]), "alternates");
    let mut fifth = Injector::for_mode("status:502:0.2".parse().ok()).unwrap();
    let n = (0..1000).filter(|_| fifth.pick() == Some(502)).count();
    assert_eq!(n, 200);
    assert!(Injector::for_mode(Some(FailMode::Hang)).is_none());
}

#[test]
fn slow_phases_parse_and_print_back() {
    let p: SlowPhase = "10x@10s+10s".parse().unwrap();
    assert_eq!(
        p,
        SlowPhase {
            after: Duration::from_secs(10),
            for_: Duration::from_secs(10),
            factor: 10
        }
    );
    assert_eq!(p.to_string(), "10x@10s+10s");
    let q: SlowPhase = " 3X@500ms+2m ".parse().unwrap();
    assert_eq!(q.factor, 3);
    assert_eq!(q.after, Duration::from_millis(500));
    assert_eq!(q.for_, Duration::from_secs(120));
    assert_eq!(q.to_string(), "3x@500ms+120s");
    assert_eq!(q.to_string().parse::<SlowPhase>(), Ok(q));
    let bare: SlowPhase = "2x@5+1".parse().unwrap();
    assert_eq!(
        (bare.after, bare.for_),
        (Duration::from_secs(5), Duration::from_secs(1))
    );
    for bad in [
        "",
        "10",
        "10x",
        "10@10s+10s",
        "x@1s+1s",
        "0x@1s+1s",
        "10001x@1s+1s",
        "10x@10s",
        "10x@+10s",
        "10x@10s+",
        "10x@-1s+1s",
        "10x@1h+1s",
        "10x@1.5s+1s",
        "10x@1s+90000s",
    ] {
        let e = bad.parse::<SlowPhase>().unwrap_err().to_string();
        assert!(e.contains("invalid slow phase"), "{bad}: {e}");
    }
}

#[test]
fn slow_phase_window_and_factor() {
    let p: SlowPhase = "10x@10s+5s".parse().unwrap();
    let s = Duration::from_secs;
    let d20 = Duration::from_millis(20);
    assert_eq!(p.apply(d20, s(0)), d20);
    assert_eq!(p.apply(d20, Duration::from_millis(9_999)), d20);
    assert_eq!(
        p.apply(d20, s(10)),
        Duration::from_millis(200),
        "starts at `after`"
    );
    assert_eq!(
        p.apply(d20, Duration::from_millis(14_999)),
        Duration::from_millis(200)
    );
    assert_eq!(p.apply(d20, s(15)), d20, "ends at after + for");
    assert_eq!(
        p.apply(Duration::ZERO, s(12)),
        Duration::from_millis(10),
        "zero counts as 1 ms"
    );
    assert_eq!(p.apply(Duration::ZERO, s(20)), Duration::ZERO);
    let huge = SlowPhase {
        factor: 10_000,
        ..p
    };
    assert_eq!(
        huge.apply(Duration::from_millis(MAX_DELAY_MS), s(11)),
        Duration::from_millis(MAX_DELAY_MS),
        "capped"
    );
    let one = SlowPhase { factor: 1, ..p };
    assert_eq!(
        one.apply(Duration::ZERO, s(11)),
        Duration::ZERO,
        "1x changes nothing"
    );
}
