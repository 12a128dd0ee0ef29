//! Learned per-backend concurrency limits (issue 10, "learned limits").
//!
//! A pure core: no sockets, no clocks (`now` comes from the caller), no
//! allocation after construction, no atomics. One [`Gradient`] per backend
//! learns how many requests that backend serves well at once from the
//! latency it shows at the concurrency it was given.
//!
//! # Feeding it: windows, not requests
//! The request path never touches a limiter. Each worker records its
//! completed requests into its own [`Window`] per backend (plain fields, no
//! shared cache line); a periodic tick takes every worker's windows,
//! [`Window::merge`]s them and calls [`Gradient::update`] once per backend.
//! The limiter keeps merging until the pending window holds
//! [`gradient::MIN_SAMPLES`] samples, so a short tick or a quiet backend
//! does not make it decide on three requests.
//!
//! # What a window carries
//! For the samples completed in it: their count, the sum, the sum of
//! squares and the minimum of their latencies, and the largest in-flight
//! count any of them was sent at (this request included). The limiter
//! compares means, and calls a difference real only when it exceeds both
//! a fixed tolerance and twice its standard error (from the sums of
//! squares): a backend whose latency is bimodal but independent of load
//! (the seed's profile A: 10/15/20 ms with runs of 400 ms) has noisy window
//! means, and must not be taken for one whose latency grows with load.
//!
//! See `docs/adaptive.md` for the algorithm and each constant's reason.

mod gradient;

#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod gradient_tests;
#[cfg(test)]
mod sim_tests;

pub use gradient::{Gradient, GradientConfig, Phase};

use std::time::Duration;

/// A summary of the requests one backend completed during a period.
/// `Copy`, 32 bytes, no allocation: each worker keeps one per backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Samples recorded.
    count: u32,
    /// Sum of their latencies, microseconds.
    sum_us: u64,
    /// Sum of their squares, microseconds squared (f64: a u64 would
    /// overflow past ~4,000 one-second samples).
    sq_us: f64,
    /// Smallest latency, microseconds (`u64::MAX` while empty).
    min_us: u64,
    /// Largest in-flight count (this request included) at which any of
    /// the samples was sent.
    max_inflight: u32,
}

impl Default for Window {
    fn default() -> Self {
        Window::new()
    }
}

impl Window {
    /// An empty window.
    pub const fn new() -> Self {
        Window {
            count: 0,
            sum_us: 0,
            sq_us: 0.0,
            min_us: u64::MAX,
            max_inflight: 0,
        }
    }

    /// Records one completed request: its latency and the number of
    /// requests in flight to the backend when it was sent (itself
    /// included, so at least 1). Saturates instead of overflowing.
    pub fn record(&mut self, latency: Duration, inflight_at_send: u32) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.count = self.count.saturating_add(1);
        self.sum_us = self.sum_us.saturating_add(us);
        self.sq_us += (us as f64) * (us as f64);
        self.min_us = self.min_us.min(us);
        self.max_inflight = self.max_inflight.max(inflight_at_send.max(1));
    }

    /// Folds `other` into `self` (another worker's window, or the next
    /// tick's).
    pub fn merge(&mut self, other: &Window) {
        self.count = self.count.saturating_add(other.count);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.sq_us += other.sq_us;
        self.min_us = self.min_us.min(other.min_us);
        self.max_inflight = self.max_inflight.max(other.max_inflight);
    }

    /// Empties the window for the next period.
    pub fn clear(&mut self) {
        *self = Window::new();
    }

    /// Samples recorded.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Mean latency; `None` when empty.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.sum_us / u64::from(self.count)))
    }

    /// Smallest latency; `None` when empty.
    pub fn min(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.min_us))
    }

    /// Largest in-flight count at send (0 when empty).
    pub fn max_inflight(&self) -> u32 {
        self.max_inflight
    }

    /// Mean latency (µs) and its standard error (µs); `None` when empty.
    fn mean_se_us(&self) -> Option<(f64, f64)> {
        if self.count == 0 {
            return None;
        }
        let n = f64::from(self.count);
        let mean = self.sum_us as f64 / n;
        let var = (self.sq_us / n - mean * mean).max(0.0);
        Some((mean, (var / n).sqrt()))
    }

    /// Sum of latencies in seconds: over the window's duration, the mean
    /// number of requests in flight (Little's law).
    fn sum_secs(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_summarises_and_merges() {
        let ms = Duration::from_millis;
        let mut a = Window::new();
        assert!(a.is_empty());
        assert_eq!((a.mean(), a.min(), a.max_inflight()), (None, None, 0));
        a.record(ms(30), 3);
        a.record(ms(10), 5);
        let mut b = Window::new();
        b.record(ms(20), 0);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.mean(), Some(ms(20)));
        assert_eq!(a.min(), Some(ms(10)));
        assert_eq!(a.max_inflight(), 5);
        assert_eq!(b.max_inflight(), 1, "a request counts itself");
        a.clear();
        assert_eq!(a, Window::new());
        a.merge(&Window::new());
        assert!(a.is_empty(), "merging an empty window adds nothing");
    }
}
