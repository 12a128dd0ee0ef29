//! `Shared::choose` with backup backends: backups only when every primary
//! is down (active checks) or ejected; time is injected.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ProxyStats, Shared};
use crate::balance::{self, Backend, Policy};
use crate::config::{BackendAddr, BackendConn, Timeouts};
use crate::health::active::ActiveHealth;
use crate::health::{BASE, Ejector, RetryBudget};
use crate::metrics::Metrics;

/// Backends 0..n on ports 8081.. (`backup[i]`), round-robin, ejection
/// after 1 failure, optional active checks.
fn shared(backup: &[bool], now: Instant, active: bool) -> Shared {
    let backends: Vec<BackendAddr> = (0..backup.len())
        .map(|i| BackendAddr {
            backup: backup[i],
            ..BackendAddr::new(format!("b{i}"), ([127, 0, 0, 1], 8081 + i as u16).into())
        })
        .collect();
    let for_policy: Vec<Backend> = (backends.iter())
        .map(|b| Backend {
            backup: b.backup,
            ..Backend::new(b.addr)
        })
        .collect();
    let selector = balance::build(&Policy::RoundRobin, &for_policy, now);
    Shared {
        generation: 0,
        backend_conn: BackendConn::Persistent,
        timeouts: Timeouts::default(),
        selector: selector.unwrap_or_else(|e| panic!("{e}")),
        stats: Arc::new(ProxyStats::default()),
        metrics: Metrics::new(backends.iter().map(|b| b.name.clone()), None),
        latencies: Arc::new(Mutex::new(super::summary::new_histogram())),
        slo: None,
        ejector: Ejector::new(backends.len(), now, false, 1)
            .with_backups(backup.iter().filter(|&&b| b).count()),
        retry_budget: Arc::new(RetryBudget::new(now)),
        active: active.then(|| Arc::new(ActiveHealth::new(backends.len()))),
        forward: crate::http::ForwardOpts::default(),
        forward_https: crate::http::ForwardOpts::default(),
        tls: Vec::new(),
        id_prefix: 7,
        drained: Arc::new(super::drained::Drained::new(backends.len())),
        backends,
    }
}

fn picks(s: &Shared, now: Instant, n: usize) -> Vec<Option<usize>> {
    (0..n).map(|_| s.choose(now, None)).collect()
}

#[test]
fn a_backup_takes_traffic_only_while_every_primary_is_ejected() {
    let t0 = Instant::now();
    let s = shared(&[false, false, true], t0, false);
    assert_eq!(picks(&s, t0, 4), [Some(0), Some(1), Some(0), Some(1)]);
    // One primary out: the other takes everything, the backup nothing.
    s.ejector.record(0, false, t0);
    assert!(s.ejector.is_ejected(0));
    assert_eq!(picks(&s, t0, 3), [Some(1); 3]);
    // A retry away from the last primary does not go to the backup (it
    // fails open to the policy's choice, as without backups).
    assert_eq!(s.choose(t0, Some(1)), Some(0));
    // Both out (with a backup, every primary may be ejected): the backup.
    s.ejector.record(1, false, t0);
    assert_eq!(picks(&s, t0, 3), [Some(2); 3]);
    // Ejection over: the first request probes a primary; its success
    // brings it back and the backup is idle again.
    let later = t0 + BASE + Duration::from_millis(1);
    let probe = s.choose(later, None);
    assert!(matches!(probe, Some(0 | 1)), "{probe:?}");
    let b = probe.unwrap_or(0);
    s.ejector.record(b, true, later);
    assert_eq!(
        picks(&s, later, 3)
            .iter()
            .filter(|p| **p == Some(2))
            .count(),
        0
    );
}

#[test]
fn a_backup_takes_traffic_while_active_checks_say_the_primaries_are_down() {
    let t0 = Instant::now();
    let s = shared(&[true, false], t0, true);
    assert_eq!(picks(&s, t0, 3), [Some(1); 3]);
    let active = s.active.clone().unwrap_or_else(|| panic!("active"));
    for _ in 0..3 {
        active.report(1, false);
    }
    assert!(!active.is_up(1));
    assert_eq!(picks(&s, t0, 3), [Some(0); 3]);
    for _ in 0..2 {
        active.report(1, true);
    }
    assert_eq!(picks(&s, t0, 3), [Some(1); 3]);
    // Everything down: fail open with the policy's primary choice.
    for b in [0, 1] {
        for _ in 0..3 {
            active.report(b, false);
        }
    }
    assert_eq!(s.choose(t0, None), Some(1));
}
