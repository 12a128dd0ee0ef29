//! The retry budget (Finagle/Envoy): retries may add at most
//! [`RETRY_RATIO`] of the requests seen in the last [`WINDOW`], plus a
//! small floor ([`MIN_RETRIES`]) so a quiet proxy can still retry, so a
//! dying backend cannot double the load on the others.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Retries may add this share of the window's requests (Finagle's and
/// Envoy's 20%).
pub const RETRY_RATIO: f64 = 0.2;

/// Retries always allowed per window, so low traffic can still fail over.
pub const MIN_RETRIES: u64 = 10;

/// The retry budget's window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The retry budget: a two-window sliding count of requests and retries.
#[derive(Debug)]
pub struct RetryBudget {
    base: Instant,
    /// Index of the current window (time since base / WINDOW).
    window: AtomicU64,
    requests: [AtomicU64; 2],
    retries: [AtomicU64; 2],
}

impl RetryBudget {
    pub fn new(now: Instant) -> Self {
        RetryBudget {
            base: now,
            window: AtomicU64::new(0),
            requests: Default::default(),
            retries: Default::default(),
        }
    }

    fn slot(&self, now: Instant) -> usize {
        let w =
            (now.saturating_duration_since(self.base).as_nanos() / WINDOW.as_nanos().max(1)) as u64;
        let cur = self.window.load(Relaxed);
        if w > cur
            && self
                .window
                .compare_exchange(cur, w, Relaxed, Relaxed)
                .is_ok()
        {
            // Entering a new window: clear the slot it reuses (and both, if
            // a whole window passed in silence).
            let stale = if w > cur + 1 {
                0..2
            } else {
                (w % 2) as usize..(w % 2) as usize + 1
            };
            for i in stale {
                self.requests[i].store(0, Relaxed);
                self.retries[i].store(0, Relaxed);
            }
        }
        (w % 2) as usize
    }

    /// Counts a client request.
    pub fn request(&self, now: Instant) {
        let i = self.slot(now);
        self.requests[i].fetch_add(1, Relaxed);
    }

    /// Asks to spend one retry; `false` means the budget is spent.
    pub fn try_retry(&self, now: Instant) -> bool {
        let i = self.slot(now);
        let requests: u64 = self.requests.iter().map(|c| c.load(Relaxed)).sum();
        let retries: u64 = self.retries.iter().map(|c| c.load(Relaxed)).sum();
        let allowed = MIN_RETRIES.max((requests as f64 * RETRY_RATIO) as u64);
        if retries >= allowed {
            return false;
        }
        self.retries[i].fetch_add(1, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_limited_to_a_fifth_of_requests() {
        let t0 = Instant::now();
        let r = RetryBudget::new(t0);
        for _ in 0..1000 {
            r.request(t0);
        }
        let granted = (0..1000).filter(|_| r.try_retry(t0)).count();
        assert_eq!(granted, 200);
        // The floor lets a quiet proxy retry a little.
        let quiet = RetryBudget::new(t0);
        quiet.request(t0);
        assert_eq!(
            (0..100).filter(|_| quiet.try_retry(t0)).count() as u64,
            MIN_RETRIES
        );
        // Two windows later the old counts are gone.
        let later = t0 + 2 * WINDOW + Duration::from_millis(1);
        r.request(later);
        assert!(r.try_retry(later));
        assert_eq!(
            (0..100).filter(|_| r.try_retry(later)).count() as u64,
            MIN_RETRIES - 1
        );
    }
}
