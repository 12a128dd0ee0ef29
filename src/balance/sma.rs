//! `adaptive_sma`: each backend's estimate is the mean of its last N
//! latencies (the seed: N = 3); the lowest wins (see `lowest`).
//!
//! Lock-free ring: a write index claimed with `fetch_add` and N atomic
//! slots holding nanoseconds, [`EMPTY`] until first written. The mean is
//! taken over the non-empty slots, which is `min(count, N)` of them, and
//! never over a slot whose index was claimed but not yet written. Benign
//! race: a reader may see a slot overwritten mid-read, i.e. a window one
//! sample newer in part; it is still a mean of real samples.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Backend;
use super::lowest::{Estimator, Lowest};

/// CSV `routing_mode` name.
pub(super) const NAME: &str = "adaptive_sma";

/// Log tag: `[SMA] chosen: 127.0.0.1:8081`.
const TAG: &str = "SMA";

/// A slot never written. Samples are clamped below it (584 years).
const EMPTY: u64 = u64::MAX;

/// Relaxed: every slot is a value on its own and guards nothing else.
const ORDER: Ordering = Ordering::Relaxed;

/// The SMA selector over `backends`, averaging the last `window` samples.
pub(super) fn new(backends: &[Backend], window: usize, now: Instant) -> Lowest<Window> {
    Lowest::new(NAME, TAG, backends, now, || Window::new(window))
}

/// The last N samples of one backend.
#[derive(Debug)]
pub(super) struct Window {
    /// Nanoseconds, integers so equal sample sets give exactly equal means
    /// (ties must compare equal whatever the slot order).
    slots: Box<[AtomicU64]>,
    /// Samples recorded so far; `next % N` is the slot to write. Wrapping
    /// at `usize::MAX` only reorders the ring once.
    next: AtomicUsize,
}

impl Window {
    fn new(window: usize) -> Self {
        // `Policy::validate` keeps the window at least 1; an empty ring
        // would divide by zero in `record`.
        let window = window.max(1);
        Window {
            slots: (0..window).map(|_| AtomicU64::new(EMPTY)).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Estimator for Window {
    fn record(&self, sample: Duration) {
        let nanos = u64::try_from(sample.as_nanos()).unwrap_or(EMPTY - 1);
        let i = self.next.fetch_add(1, ORDER) % self.slots.len();
        self.slots[i].store(nanos.min(EMPTY - 1), ORDER);
    }

    fn estimate(&self) -> Option<f64> {
        let (mut sum, mut count) = (0u128, 0u32);
        for slot in &self.slots {
            let nanos = slot.load(ORDER);
            if nanos != EMPTY {
                sum += u128::from(nanos);
                count += 1;
            }
        }
        // Precision: a mean in ns is exact as f64 below 2^53 ns (104 days).
        (count > 0).then(|| sum as f64 / f64::from(count) / 1e6)
    }

    /// `old`'s samples oldest first, so the newest ones are kept if this
    /// window is shorter (`--sma-window` changed on reload).
    fn take_over(&self, old: &Self) {
        let n = old.slots.len();
        let next = old.next.load(ORDER);
        for k in (1..=next.min(n)).rev() {
            let nanos = old.slots[next.wrapping_sub(k) % n].load(ORDER);
            if nanos != EMPTY {
                self.record(Duration::from_nanos(nanos));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::Selector;
    use super::super::test_util::*;
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn mean_of_the_last_window_samples() {
        let w = Window::new(3);
        assert_eq!(w.estimate(), None);
        w.record(ms(10));
        assert_eq!(w.estimate(), Some(10.0));
        w.record(ms(20));
        assert_eq!(w.estimate(), Some(15.0));
        w.record(ms(30));
        assert_eq!(w.estimate(), Some(20.0));
        w.record(ms(40));
        assert_eq!(w.estimate(), Some(30.0));
    }

    #[test]
    fn selector_reports_window_means() {
        let t0 = Instant::now();
        let s = new(&backends(2), 3, t0);
        assert_eq!(s.name(), "adaptive_sma");
        for v in [10, 20, 30, 40] {
            s.answer(0, ok(v), t0);
        }
        assert_eq!(s.estimates(), [Some(30.0), None]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn estimate_is_the_mean_of_the_last_n(
            window in 1usize..8,
            samples in proptest::collection::vec(0u64..10_000_000, 1..40),
        ) {
            let w = Window::new(window);
            for &s in &samples {
                w.record(Duration::from_micros(s));
            }
            let last = &samples[samples.len().saturating_sub(window)..];
            let mean = last.iter().sum::<u64>() as f64 / last.len() as f64 / 1e3;
            let got = w.estimate().unwrap();
            prop_assert!((got - mean).abs() < 1e-9 * mean.max(1.0), "{got} vs {mean}");
        }
    }
}
