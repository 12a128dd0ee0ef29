//! `adaptive_ewma`: each backend's estimate is `a*latency + (1-a)*ewma`
//! (the seed: a = 0.2), the first sample setting it outright; the lowest
//! wins (see `lowest`).
//!
//! Lock-free: one `AtomicU64` per backend holds the f64 bits, updated by a
//! compare-exchange loop, so concurrent samples are all folded in, in some
//! order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::lowest::{Estimator, Lowest};
use super::{Backend, millis};

/// CSV `routing_mode` name.
pub(super) const NAME: &str = "adaptive_ewma";

/// Log tag: `[EWMA] chosen: 127.0.0.1:8082`.
const TAG: &str = "EWMA";

/// No sample yet. A NaN bit pattern, so no latency in ms ever has it.
const EMPTY: u64 = u64::MAX;

/// Relaxed: the value guards nothing else.
const ORDER: Ordering = Ordering::Relaxed;

/// The EWMA selector over `backends` with smoothing factor `alpha`.
pub(super) fn new(backends: &[Backend], alpha: f64, now: Instant) -> Lowest<Ewma> {
    Lowest::new(NAME, TAG, backends, now, || Ewma::new(alpha))
}

/// One backend's moving average, in ms.
#[derive(Debug)]
pub(super) struct Ewma {
    alpha: f64,
    bits: AtomicU64,
}

impl Ewma {
    fn new(alpha: f64) -> Self {
        Ewma {
            alpha,
            bits: AtomicU64::new(EMPTY),
        }
    }
}

impl Estimator for Ewma {
    fn record(&self, sample: Duration) {
        let ms = millis(sample);
        let update = |bits: u64| {
            let next = if bits == EMPTY {
                ms
            } else {
                self.alpha * ms + (1.0 - self.alpha) * f64::from_bits(bits)
            };
            Some(next.to_bits())
        };
        // The closure never refuses, so this always succeeds.
        let _ = self.bits.fetch_update(ORDER, ORDER, update);
    }

    fn estimate(&self) -> Option<f64> {
        let bits = self.bits.load(ORDER);
        (bits != EMPTY).then(|| f64::from_bits(bits))
    }

    /// The average as it is; a new `alpha` applies from the next sample.
    fn take_over(&self, old: &Self) {
        self.bits.store(old.bits.load(ORDER), ORDER);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::Selector;
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn first_sample_initialises_then_alpha_blends() {
        let e = Ewma::new(0.2);
        assert_eq!(e.estimate(), None);
        e.record(Duration::from_millis(100));
        assert_eq!(e.estimate(), Some(100.0));
        e.record(Duration::from_millis(200));
        assert!((e.estimate().unwrap() - 120.0).abs() < 1e-9);
    }

    #[test]
    fn selector_reports_the_average() {
        let t0 = Instant::now();
        let s = new(&backends(2), 0.2, t0);
        assert_eq!(s.name(), "adaptive_ewma");
        s.answer(1, ok(100), t0);
        s.answer(1, ok(200), t0);
        let est = s.estimates();
        assert_eq!(est[0], None);
        assert!((est[1].unwrap() - 120.0).abs() < 1e-9);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn estimate_stays_within_the_samples(
            alpha in 0.01f64..=1.0,
            samples in proptest::collection::vec(0u64..10_000_000, 1..40),
        ) {
            let e = Ewma::new(alpha);
            for &s in &samples {
                e.record(Duration::from_micros(s));
            }
            let lo = *samples.iter().min().unwrap() as f64 / 1e3;
            let hi = *samples.iter().max().unwrap() as f64 / 1e3;
            let got = e.estimate().unwrap();
            prop_assert!(got >= lo - 1e-6 && got <= hi + 1e-6, "{got} not in {lo}..{hi}");
        }
    }
}
