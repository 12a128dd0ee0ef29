//! Proxy metrics shared by all workers: per-backend request counters by
//! status class, in-flight gauges, fixed-bucket latency histograms, and a
//! ring of the latest requests for the dashboard.
//!
//! Counters are relaxed atomics on per-thread shards (`runtime::shard`):
//! a request costs a handful of `fetch_add`s on cache lines only its
//! worker writes. Exact latency percentiles come from [`window`]: one
//! HdrHistogram per worker and backend behind a lock only that worker and
//! the reader take. Readers (the admin endpoint, once a second) sum the
//! shards into a [`BackendSnapshot`] that may be a few requests out of
//! step across counters, which is fine for monitoring.

pub mod text;
pub mod window;

pub use text::{family, label, render_backends};

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::runtime::shard::{self, Padded};
use window::LatencyWindow;

/// Upper bounds (seconds) of the latency histogram buckets: 1 ms to 10 s in
/// 1-2.5-5 steps, Prometheus' usual spacing, so one histogram serves both a
/// 10 ms backend and a 5 s timeout.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Latest requests kept for the dashboard's table and trend chart. 512 is
/// about one second at the seed's load (500 req/s), enough for a readable
/// trend without the page fetching much.
pub const RECENT: usize = 512;

/// How an attempt at a backend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The backend answered; its latency goes into the histogram.
    Answered,
    /// The backend failed (connect, reset, timeout, bad response).
    Failed,
    /// The client left first: counted by status, but neither a backend
    /// failure nor a latency sample.
    Abandoned,
}

/// Counters of one backend: one shard per thread (see `runtime::shard`),
/// summed by [`Metrics::snapshot`].
#[derive(Debug)]
pub struct BackendMetrics {
    pub name: String,
    shards: Box<[Padded<Counts>]>,
    /// Answered latencies over the last minute, for exact percentiles
    /// (one cell per worker inside, see `window`).
    window: LatencyWindow,
}

/// One thread's share of a backend's counters.
#[derive(Debug, Default)]
struct Counts {
    /// Answered requests by status class 1xx..5xx (index 0..5).
    by_class: [AtomicU64; 5],
    /// Started minus finished here (an attempt may finish on another
    /// shard only if its worker changed, which it does not).
    in_flight: AtomicI64,
    /// Per-bucket counts (not cumulative); the last slot is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    failures: AtomicU64,
    /// Answered within `--slo-ms`.
    within_slo: AtomicU64,
}

impl BackendMetrics {
    fn new(name: String) -> Self {
        BackendMetrics {
            name,
            shards: shard::shards(Counts::default),
            window: LatencyWindow::default(),
        }
    }

    /// This thread's shard.
    fn mine(&self) -> Option<&Counts> {
        self.shards.get(shard::current()).map(|p| &p.0)
    }

    /// `f` summed over the shards.
    fn sum<T: std::iter::Sum<T>>(&self, f: impl Fn(&Counts) -> T) -> T {
        self.shards.iter().map(|p| f(&p.0)).sum()
    }
}

/// One recent request, packed into two atomics per slot.
#[derive(Debug, Default)]
struct Slot {
    /// Completion time, microseconds since the Unix epoch (0 = empty).
    at: AtomicU64,
    /// latency µs (32 bits, saturating) | status (16) | backend (16).
    packed: AtomicU64,
}

/// All proxy metrics.
#[derive(Debug)]
pub struct Metrics {
    /// One per backend; shared with the next generation's `Metrics` for a
    /// backend that stays across a reload, so its counters never restart.
    backends: Vec<Arc<BackendMetrics>>,
    /// `--slo-ms` in µs, if set.
    slo_micros: Option<u64>,
    /// One ring of the latest answers per thread shard; [`Metrics::recent`]
    /// merges them and keeps the latest [`RECENT`] overall.
    recent: Box<[Padded<Ring>]>,
}

/// One shard's latest answers.
#[derive(Debug)]
struct Ring {
    slots: Box<[Slot]>,
    /// Answers so far; `next % RECENT` is the next slot to write.
    next: AtomicUsize,
}

impl Ring {
    fn new() -> Self {
        Ring {
            slots: (0..RECENT).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

/// A request as seen by the dashboard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recent {
    pub at_micros: u64,
    pub backend: usize,
    pub status: u16,
    pub latency_ms: f64,
}

/// A consistent-enough copy of one backend's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSnapshot {
    pub name: String,
    pub by_class: [u64; 5],
    pub in_flight: i64,
    /// Cumulative counts per bucket bound, then +Inf (Prometheus order).
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
    pub failures: u64,
    /// Answered requests within `--slo-ms` (0 without it).
    pub within_slo: u64,
    /// Answered latencies (µs) over the sliding window (see [`window`]).
    pub window: Histogram<u64>,
}

impl BackendSnapshot {
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }

    /// Exact latency (within 1 %) at quantile `q` over the sliding
    /// window, in ms; `None` without a sample in the window.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        window::quantile_ms(&self.window, q)
    }
}

impl Metrics {
    /// Metrics for backends named `names`; `slo` (`--slo-ms`) enables the
    /// per-backend deadline share.
    pub fn new(names: impl IntoIterator<Item = String>, slo: Option<Duration>) -> Self {
        Metrics {
            backends: names
                .into_iter()
                .map(|n| Arc::new(BackendMetrics::new(n)))
                .collect(),
            slo_micros: slo.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            recent: shard::shards(Ring::new),
        }
    }

    pub fn backends(&self) -> usize {
        self.backends.len()
    }

    /// Metrics for a reloaded backend list: `map[i] = Some(old)` keeps the
    /// counters of the old generation's backend `old` (the same atomics, so
    /// requests still in flight there count where they should); a new
    /// backend starts at zero. The recent-requests ring starts empty, since
    /// its backend indices belong to one generation.
    pub fn carried(
        &self,
        names: impl IntoIterator<Item = String>,
        map: &[Option<usize>],
        slo: Option<Duration>,
    ) -> Self {
        let mut m = Metrics::new(names, slo);
        for (slot, old) in m.backends.iter_mut().zip(map) {
            if let Some(kept) = old.and_then(|o| self.backends.get(o)) {
                *slot = Arc::clone(kept);
            }
        }
        m
    }

    /// Requests in flight at `backend` now (0 for an unknown index).
    pub fn in_flight(&self, backend: usize) -> i64 {
        self.backends
            .get(backend)
            .map_or(0, |b| b.sum(|c| c.in_flight.load(Relaxed)).max(0))
    }

    /// A request was sent towards `backend`.
    pub fn started(&self, backend: usize) {
        if let Some(c) = self.backends.get(backend).and_then(|b| b.mine()) {
            c.in_flight.fetch_add(1, Relaxed);
        }
    }

    /// An attempt at `backend` is over. Pairs with [`Metrics::started`].
    /// `status` is what the client got (0: nothing yet, the request is
    /// retried elsewhere). Only answered attempts enter the latency
    /// histogram, the window (`worker`'s own cell) and the recent ring,
    /// which describe the backend's answers.
    pub fn finished(
        &self,
        worker: usize,
        backend: usize,
        status: u16,
        latency: Duration,
        end: End,
        at: SystemTime,
    ) {
        let Some(backend_metrics) = self.backends.get(backend) else {
            return;
        };
        let Some(b) = backend_metrics.mine() else {
            return;
        };
        b.in_flight.fetch_sub(1, Relaxed);
        if let Some(c) = b.by_class.get(usize::from(status / 100).wrapping_sub(1)) {
            c.fetch_add(1, Relaxed);
        }
        match end {
            End::Answered => {}
            End::Failed => {
                b.failures.fetch_add(1, Relaxed);
                return;
            }
            End::Abandoned => return,
        }
        let secs = latency.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(bucket) = b.buckets.get(i) {
            bucket.fetch_add(1, Relaxed);
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        b.sum_micros.fetch_add(micros, Relaxed);
        backend_metrics.window.record(worker, micros);
        if self.slo_micros.is_some_and(|slo| micros <= slo) {
            b.within_slo.fetch_add(1, Relaxed);
        }
        self.remember(backend, status, micros, at);
    }

    fn remember(&self, backend: usize, status: u16, micros: u64, at: SystemTime) {
        let Some(ring) = self.recent.get(shard::current()).map(|p| &p.0) else {
            return;
        };
        let i = ring.next.fetch_add(1, Relaxed) % RECENT;
        let Some(slot) = ring.slots.get(i) else {
            return;
        };
        let at = u64::try_from(
            at.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros(),
        )
        .unwrap_or(0);
        let packed = (micros.min(u64::from(u32::MAX)) << 32)
            | (u64::from(status) << 16)
            | (backend as u64 & 0xffff);
        slot.packed.store(packed, Relaxed);
        slot.at.store(at, Relaxed);
    }

    /// The latest requests, oldest first (at most [`RECENT`]).
    pub fn recent(&self) -> Vec<Recent> {
        let mut out: Vec<Recent> = (self.recent.iter())
            .flat_map(|ring| ring.0.slots.iter())
            .filter_map(|s| {
                let at = s.at.load(Relaxed);
                let p = s.packed.load(Relaxed);
                (at != 0).then_some(Recent {
                    at_micros: at,
                    backend: (p & 0xffff) as usize,
                    status: ((p >> 16) & 0xffff) as u16,
                    latency_ms: (p >> 32) as f64 / 1000.0,
                })
            })
            .collect();
        out.sort_by_key(|r| r.at_micros);
        let older = out.len().saturating_sub(RECENT);
        out.drain(..older);
        out
    }

    /// The reader's tick: slides every backend's latency window on (see
    /// [`window::LatencyWindow::rotate`]).
    pub fn rotate(&self, now: Instant) {
        for b in &self.backends {
            b.window.rotate(now);
        }
    }

    pub fn snapshot(&self) -> Vec<BackendSnapshot> {
        self.backends
            .iter()
            .map(|b| {
                let mut acc = 0;
                let cumulative = (0..=LATENCY_BUCKETS.len())
                    .map(|i| {
                        acc += b.sum(|c| c.buckets[i].load(Relaxed));
                        acc
                    })
                    .collect();
                let load = |f: fn(&Counts) -> &AtomicU64| b.sum(|c| f(c).load(Relaxed));
                BackendSnapshot {
                    name: b.name.clone(),
                    by_class: std::array::from_fn(|i| b.sum(|c| c.by_class[i].load(Relaxed))),
                    in_flight: b.sum(|c| c.in_flight.load(Relaxed)),
                    cumulative,
                    count: acc,
                    sum_seconds: load(|c| &c.sum_micros) as f64 / 1e6,
                    failures: load(|c| &c.failures),
                    within_slo: load(|c| &c.within_slo),
                    window: b.window.merged(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_backend_keeps_its_counters_across_a_reload() {
        let t = UNIX_EPOCH + Duration::from_secs(1_000);
        let old = Metrics::new(["a".to_string(), "b".to_string()], None);
        old.started(1);
        old.finished(0, 1, 200, Duration::from_millis(5), End::Answered, t);
        old.started(1);
        // Reload: b stays (now index 0), c is new, a is gone.
        let new = old.carried(["b".to_string(), "c".to_string()], &[Some(1), None], None);
        assert_eq!(new.snapshot()[0].requests(), 1);
        assert_eq!(
            new.snapshot()[0].in_flight,
            1,
            "in flight in the old generation"
        );
        assert_eq!(new.snapshot()[1].requests(), 0);
        // The old generation's request ends: both views agree.
        old.finished(0, 1, 200, Duration::from_millis(5), End::Answered, t);
        assert_eq!(new.snapshot()[0].in_flight, 0);
        assert_eq!(new.snapshot()[0].requests(), 2);
        assert!(new.recent().is_empty());
    }

    #[test]
    fn requests_land_in_class_bucket_and_ring() {
        let m = Metrics::new(
            ["a".to_string(), "b".to_string()],
            Some(Duration::from_millis(100)),
        );
        let t = UNIX_EPOCH + Duration::from_secs(1_000);
        m.started(1);
        assert_eq!(m.snapshot()[1].in_flight, 1);
        m.finished(0, 1, 200, Duration::from_millis(30), End::Answered, t);
        m.started(1);
        m.finished(
            0,
            1,
            200,
            Duration::from_secs(20),
            End::Answered,
            t + Duration::from_secs(1),
        );
        // A failed attempt retried elsewhere: a failure, no status class.
        m.started(1);
        m.finished(0, 1, 0, Duration::from_millis(5), End::Failed, t);
        m.started(1);
        m.finished(0, 1, 502, Duration::from_millis(5), End::Failed, t);
        m.started(1);
        m.finished(0, 1, 499, Duration::from_millis(5), End::Abandoned, t);
        let s = &m.snapshot()[1];
        assert_eq!(
            (s.by_class, s.in_flight, s.failures, s.count),
            ([0, 2, 0, 1, 1], 0, 2, 2)
        );
        // 30 ms is in the 50 ms bucket (index 5); 20 s only in +Inf.
        assert_eq!(s.cumulative[4], 0);
        assert_eq!(s.cumulative[5], 1);
        assert_eq!(s.cumulative[LATENCY_BUCKETS.len() - 1], 1);
        assert_eq!(s.cumulative[LATENCY_BUCKETS.len()], 2);
        // Exact percentiles from the window: 30 ms and 20 s.
        assert_eq!(s.quantile_ms(0.5).map(f64::round), Some(30.0));
        let p99 = s.quantile_ms(0.99).unwrap_or_default();
        assert!((p99 - 20_000.0).abs() < 200.0, "{p99}");
        let r = m.recent();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].backend, r[0].status, r[0].latency_ms), (1, 200, 30.0));
        assert_eq!(r[1].latency_ms, 20_000.0);
        assert_eq!(s.within_slo, 1, "30 ms is within 100 ms, 20 s is not");
    }

    #[test]
    fn a_backend_answering_in_251_ms_shows_p95_within_5_percent_of_it() {
        // The coarse buckets put 251 ms in (250, 500] ms: the old estimate
        // said 488 ms. The window is exact.
        let m = Metrics::new(["slow".to_string()], None);
        let t = UNIX_EPOCH + Duration::from_secs(1_000);
        for i in 0..400 {
            m.started(0);
            m.finished(i % 2, 0, 200, Duration::from_millis(251), End::Answered, t);
        }
        let p95 = m.snapshot()[0].quantile_ms(0.95).unwrap_or_default();
        assert!((p95 - 251.0).abs() <= 251.0 * 0.05, "p95 {p95} ms");
    }

    #[test]
    fn the_ring_keeps_only_the_latest() {
        let m = Metrics::new(["a".to_string()], None);
        for i in 0..(RECENT as u64 + 10) {
            m.started(0);
            m.finished(
                0,
                0,
                200,
                Duration::from_millis(i),
                End::Answered,
                UNIX_EPOCH + Duration::from_secs(i + 1),
            );
        }
        let r = m.recent();
        assert_eq!(r.len(), RECENT);
        assert_eq!(r[0].at_micros, 11_000_000);
    }

    #[test]
    fn prometheus_text_has_families_and_escaped_labels() {
        let m = Metrics::new(["x\"y".to_string()], None);
        m.started(0);
        m.finished(
            0,
            0,
            200,
            Duration::from_millis(2),
            End::Answered,
            SystemTime::now(),
        );
        let mut out = String::new();
        render_backends(&mut out, &m.snapshot());
        assert!(out.contains("# TYPE tidegate_request_duration_seconds histogram"));
        assert!(out.contains("tidegate_requests_total{backend=\"x\\\"y\",class=\"2xx\"} 1"));
        assert!(out.contains("le=\"+Inf\"} 1"));
    }
}
