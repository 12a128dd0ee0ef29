//! Unit tests of [`super::Gradient`] fed by hand-made windows.

use std::time::{Duration, Instant};

use super::Window;
use super::gradient::*;

fn window(ms: &[u64], inflight: u32) -> Window {
    let mut w = Window::new();
    for &m in ms {
        w.record(Duration::from_millis(m), inflight);
    }
    w
}

#[test]
fn only_a_probe_ends_learning_and_a_flat_one_leaves_it_unlimited() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut g = Gradient::new(GradientConfig::default(), t0);
    assert_eq!((g.limit(), g.phase()), (None, Phase::Learning));
    g.update(&window(&[20; 16], 10), t0 + ms(100));
    assert_eq!(
        (g.limit(), g.phase()),
        (None, Phase::Learning),
        "before FIRST_PROBE"
    );
    g.update(&window(&[20; 15], 10), t0 + FIRST_PROBE);
    assert_eq!(g.phase(), Phase::Learning, "15 samples are not a window");
    g.update(&window(&[20], 10), t0 + FIRST_PROBE);
    assert_eq!(
        (g.limit(), g.phase()),
        (Some(5), Phase::Probing),
        "half of 10"
    );
    // Requests sent above the cap still completing: not the verdict.
    g.update(&window(&[20; 16], 8), t0 + ms(700));
    assert_eq!(g.phase(), Phase::Probing);
    g.update(&window(&[20; 16], 5), t0 + ms(800));
    assert_eq!((g.limit(), g.phase()), (None, Phase::Unlimited));
    assert_eq!(g.no_load(), Some(ms(20)));
}

#[test]
fn a_stale_pending_window_is_dropped() {
    let t0 = Instant::now();
    let mut g = Gradient::new(GradientConfig::default(), t0);
    g.update(&window(&[900; 10], 4), t0 + FIRST_PROBE);
    let later = t0 + FIRST_PROBE + MAX_PENDING_AGE + Duration::from_millis(1);
    g.update(&window(&[20; 10], 4), later);
    assert_eq!(
        g.phase(),
        Phase::Learning,
        "10 fresh samples only: no window"
    );
    g.update(&window(&[20; 6], 4), later + Duration::from_millis(100));
    assert_eq!(g.phase(), Phase::Probing, "16 fresh samples: a window");
}

#[test]
fn bounds_hold() {
    let t0 = Instant::now();
    let cfg = GradientConfig {
        min_limit: 3,
        max_limit: 50,
        seed: 7,
    };
    let mut g = Gradient::new(cfg, t0);
    for i in 1..200u32 {
        let now = t0 + Duration::from_millis(u64::from(i) * 100);
        // Latency that grows with the concurrency it is given.
        let inflight = g.limit().unwrap_or(40).min(40);
        let lat = 10 * u64::from(inflight);
        g.update(&window(&[lat; 16], inflight), now);
        if let Some(l) = g.limit() {
            assert!((3..50).contains(&l), "{l} at window {i}");
        }
    }
    assert!(
        g.learned().is_some(),
        "latency proportional to load is limited"
    );
}
