//! Unit tests of the `balance` module's shared parts.

use super::test_util::*;
use super::*;

#[test]
fn policy_names_parse_and_unknown_names_fail() {
    assert_eq!("round-robin".parse(), Ok(Policy::RoundRobin));
    assert_eq!("sma".parse(), Ok(Policy::Sma { window: 3 }));
    assert_eq!("adaptive_ewma".parse(), Ok(Policy::Ewma { alpha: 0.2 }));
    assert_eq!("predictive".parse(), Ok(Policy::Predictive));
    assert_eq!("tail-budget".parse(), Ok(Policy::TailBudget { slo: None }));
    assert_eq!("adaptive".parse(), Ok(Policy::Adaptive { slo: None }));
    let err = "fastest".parse::<Policy>().unwrap_err();
    assert_eq!(err, PolicyError::Unknown("fastest".into()));
    assert_eq!(
        err.to_string(),
        "unknown routing policy 'fastest' (expected round-robin, sma, ewma, \
         least-conn, p2c, peak-ewma, predictive, tail-budget or adaptive)"
    );
    assert_eq!("least-conn".parse(), Ok(Policy::LeastConn));
    assert_eq!("p2c".parse(), Ok(Policy::P2c));
    assert_eq!(
        "peak-ewma".parse(),
        Ok(Policy::PeakEwma {
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
        })
    );
    for name in POLICY_NAMES {
        assert!(name.parse::<Policy>().is_ok(), "{name}");
    }
    assert!("".parse::<Policy>().is_err());
    assert!("SMA".parse::<Policy>().is_err());
}

#[test]
fn build_names_match_the_csv_and_bad_parameters_fail() {
    let t0 = Instant::now();
    let b = backends(3);
    for name in [
        "round-robin",
        "adaptive_sma",
        "adaptive_ewma",
        "least-conn",
        "p2c",
        "peak-ewma",
    ] {
        let policy: Policy = name.parse().unwrap();
        assert_eq!(policy.name(), name);
        assert_eq!(build(&policy, &b, t0).unwrap().name(), name);
    }
    for bad in [
        Policy::Sma { window: 0 },
        Policy::Sma {
            window: MAX_SMA_WINDOW + 1,
        },
        Policy::Ewma { alpha: 0.0 },
        Policy::Ewma { alpha: 1.5 },
        Policy::Ewma { alpha: f64::NAN },
        Policy::PeakEwma {
            decay: Duration::ZERO,
            default_rtt: DEFAULT_RTT,
        },
        Policy::PeakEwma {
            decay: DEFAULT_DECAY,
            default_rtt: Duration::ZERO,
        },
    ] {
        assert!(build(&bad, &b, t0).is_err(), "{bad:?}");
    }
}

#[test]
fn no_backends_means_no_pick() {
    let t0 = Instant::now();
    for name in POLICY_NAMES {
        let s = build(&name.parse().unwrap(), &[], t0).unwrap();
        assert_eq!(s.tick_pick(t0, &every), None);
        assert!(s.estimates().is_empty());
    }
}

#[test]
fn failure_sample_is_at_least_the_penalty() {
    let short = Outcome::Failure {
        elapsed: Duration::from_millis(3),
    };
    let long = Outcome::Failure {
        elapsed: Duration::from_secs(5),
    };
    assert_eq!(short.sample(), FAILURE_PENALTY);
    assert_eq!(long.sample(), Duration::from_secs(5));
    assert_eq!(ok(7).sample(), Duration::from_millis(7));
}

#[test]
fn failure_penalty_is_twice_the_worst_other_estimate_capped() {
    let fast = Outcome::Failure {
        elapsed: Duration::from_millis(1),
    };
    assert_eq!(fast.penalised(None), FAILURE_PENALTY);
    assert_eq!(fast.penalised(Some(300.0)), FAILURE_PENALTY);
    assert_eq!(fast.penalised(Some(2_000.0)), Duration::from_secs(4));
    assert_eq!(fast.penalised(Some(1e12)), PENALTY_CAP);
    assert_eq!(fast.penalised(Some(f64::NAN)), FAILURE_PENALTY);
    assert_eq!(ok(5).penalised(Some(2_000.0)), Duration::from_millis(5));
    let est = [Some(10.0), None, Some(700.0), Some(40.0)];
    assert_eq!(worst_other(est.iter().copied(), 0), Some(700.0));
    assert_eq!(worst_other(est.iter().copied(), 2), Some(40.0));
    assert_eq!(worst_other([Some(1.0)].into_iter(), 0), None);
}

#[test]
fn labels_are_ports_unless_ports_collide() {
    let b = backends(3);
    assert_eq!(labels(&b), ["8081", "8082", "8083"]);
    let line = estimates_line("EWMA", &labels(&b), &[Some(405.06), Some(211.8), None]);
    assert_eq!(line, "[EWMA] 8081=405.1ms 8082=211.8ms 8083=-");
    let mut collide = backends(2);
    collide[1] = Backend::new(SocketAddr::from(([127, 0, 0, 2], 8081)));
    assert_eq!(labels(&collide), ["127.0.0.1:8081", "127.0.0.2:8081"]);
}
