//! Passive health: outlier ejection and the retry budget, shared by all
//! workers (atomics only) with time passed in.
//!
//! **Ejection** (Envoy's consecutive-failure detector, with this project's
//! constants): `EJECT_AFTER` consecutive failures (connect errors, resets,
//! timeouts; 5xx with `--eject-5xx`) eject a backend for `BASE` x
//! times-ejected, capped at `CAP`. At most half the backends are ejected at
//! once; if every candidate is ejected the caller fails open. When the
//! ejection expires, exactly one request probes the backend: success brings
//! it back, failure ejects it again (for longer).
//!
//! **Retry budget** (Finagle/Envoy): retries may add at most
//! `RETRY_RATIO` of the requests seen in the last `WINDOW`, plus a small
//! floor so a quiet proxy can still retry, so a dying backend cannot double
//! the load on the others.

pub mod active;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Consecutive failures that eject a backend (Envoy's `consecutive_5xx`
/// default is 5: enough to ignore a blip, few enough to react in well under
/// a second at the seed's load).
pub const EJECT_AFTER: u32 = 5;

/// First ejection lasts this long, the n-th n times as long...
pub const BASE: Duration = Duration::from_secs(1);

/// ...but never longer than this, so a recovered backend is back within 30 s.
pub const CAP: Duration = Duration::from_secs(30);

/// Retries may add this share of the window's requests (Finagle's and
/// Envoy's 20%).
pub const RETRY_RATIO: f64 = 0.2;

/// Retries always allowed per window, so low traffic can still fail over.
pub const MIN_RETRIES: u64 = 10;

/// The retry budget's window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Whether a backend may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Healthy.
    Yes,
    /// Ejection expired: this request is the single probe.
    Probe,
    /// Ejected.
    No,
}

#[derive(Debug, Default)]
struct BackendHealth {
    consecutive: AtomicU32,
    times_ejected: AtomicU32,
    /// Nanoseconds since `base` until which the backend is out; 0 = in.
    ejected_until: AtomicU64,
    probing: AtomicBool,
}

/// Ejection state of every backend.
#[derive(Debug)]
pub struct Ejector {
    base: Instant,
    backends: Vec<BackendHealth>,
    ejected: AtomicU32,
    /// Set by `--eject-5xx`: 5xx answers count as failures.
    pub eject_5xx: bool,
    /// Consecutive failures that eject (`--eject-after`); 0 disables.
    after: u32,
}

fn nanos(base: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(base).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Ejector {
    /// `after`: consecutive failures that eject ([`EJECT_AFTER`] by
    /// default; 0 turns ejection off).
    pub fn new(backends: usize, now: Instant, eject_5xx: bool, after: u32) -> Self {
        Ejector {
            base: now,
            backends: (0..backends).map(|_| BackendHealth::default()).collect(),
            ejected: AtomicU32::new(0),
            eject_5xx,
            after,
        }
    }

    /// May `backend` take a request at `now`? `Probe` claims the single
    /// probe slot, so only one caller gets it per expiry.
    pub fn admit(&self, backend: usize, now: Instant) -> Admit {
        let Some(b) = self.backends.get(backend) else {
            return Admit::No;
        };
        let until = b.ejected_until.load(Relaxed);
        if until == 0 {
            return Admit::Yes;
        }
        if nanos(self.base, now) < until {
            return Admit::No;
        }
        match b.probing.compare_exchange(false, true, Relaxed, Relaxed) {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::No,
        }
    }

    /// Whether `backend` is currently ejected (for metrics).
    pub fn is_ejected(&self, backend: usize) -> bool {
        self.backends
            .get(backend)
            .is_some_and(|b| b.ejected_until.load(Relaxed) != 0)
    }

    /// Times `backend` was ejected so far (for metrics).
    pub fn times_ejected(&self, backend: usize) -> u64 {
        self.backends
            .get(backend)
            .map_or(0, |b| u64::from(b.times_ejected.load(Relaxed)))
    }

    /// Total ejections so far (for metrics).
    pub fn ejections(&self) -> u64 {
        self.backends
            .iter()
            .map(|b| u64::from(b.times_ejected.load(Relaxed)))
            .sum()
    }

    /// Frees the probe slot without a verdict (the client left, or a stale
    /// pooled connection failed: neither says anything about the backend).
    pub fn release(&self, backend: usize) {
        if let Some(b) = self.backends.get(backend) {
            b.probing.store(false, Relaxed);
        }
    }

    /// Records how an attempt at `backend` went.
    pub fn record(&self, backend: usize, success: bool, now: Instant) {
        let Some(b) = self.backends.get(backend) else {
            return;
        };
        let was_probe = b.probing.swap(false, Relaxed);
        if success {
            b.consecutive.store(0, Relaxed);
            if b.ejected_until.swap(0, Relaxed) != 0 {
                self.ejected.fetch_sub(1, Relaxed);
                log::info!("backend {backend} is back after a successful probe");
            }
            return;
        }
        let fails = b.consecutive.fetch_add(1, Relaxed).saturating_add(1);
        let already = b.ejected_until.load(Relaxed) != 0;
        if already && was_probe {
            // The probe failed: out again, for longer.
            self.eject(b, backend, now, false);
        } else if !already && self.after > 0 && fails >= self.after {
            // At most half the backends out at once; past that, fail open.
            let max = (self.backends.len() / 2).max(1) as u32;
            let admitted = self
                .ejected
                .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
                .is_ok();
            if admitted && self.backends.len() > 1 {
                self.eject(b, backend, now, true);
            } else if admitted {
                self.ejected.fetch_sub(1, Relaxed);
            }
        }
    }

    fn eject(&self, b: &BackendHealth, backend: usize, now: Instant, first: bool) {
        let times = b.times_ejected.fetch_add(1, Relaxed).saturating_add(1);
        let length = BASE.saturating_mul(times).min(CAP);
        b.ejected_until
            .store(nanos(self.base, now + length), Relaxed);
        b.consecutive.store(0, Relaxed);
        if first {
            log::warn!(
                "backend {backend} ejected for {length:?} after {EJECT_AFTER} consecutive failures"
            );
        } else {
            log::warn!("backend {backend}: probe failed, ejected again for {length:?}");
        }
    }
}

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
