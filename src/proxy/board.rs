//! What the workers' queues share: how many requests wait on each worker
//! (and in all), the wakers that let a worker whose backend freed a place
//! hand it to another worker's queue, and the queue's counters.
//!
//! Written only when a request is queued or leaves the queue, never on the
//! path of a request that finds a free place: a release reads `total` (one
//! load of a line nobody writes while nothing is queued).
//!
//! No request is lost between a worker deciding to queue and a place being
//! freed: the queueing worker raises `total` and then tries again for a
//! place, while a release gives its place back and then reads `total`, all
//! sequentially consistent; so either the queued request sees the place, or
//! the release sees the request and wakes its worker. A periodic retry on
//! every worker (`housekeep`) backs this up.
//!
//! A freed place goes to the oldest head among the workers' queues (each
//! worker publishes when its head joined), so no worker's queue starves
//! while another keeps freeing places for its own.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mio::Waker;

/// Upper bounds (seconds) of the queue-wait histogram: from a 1 ms wait
/// (a place freed at once) to past the default 5 s `--queue-timeout`.
pub const WAIT_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A counter alone on its cache-line pair (see `slots::Slot`).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicUsize);

/// The queues' shared state, one for the process (kept across reloads).
#[derive(Debug)]
pub struct Board {
    /// Requests queued on all workers.
    total: Padded,
    /// Requests queued on each worker.
    per_worker: Vec<Padded>,
    /// When each worker's queue head joined, in µs since `epoch`, plus 1
    /// (0: that queue is empty); a freed place goes to the oldest head.
    heads: Vec<Padded>,
    epoch: Instant,
    /// Each worker's waker, set once the workers run.
    wakers: OnceLock<Vec<Arc<Waker>>>,
    /// Requests answered 503 after waiting `--queue-timeout`.
    pub timeouts: AtomicU64,
    /// Requests answered 503 because the queue was full.
    pub full: AtomicU64,
    /// Requests that left the queue for a backend.
    pub admitted: AtomicU64,
    /// Waits of admitted and timed-out requests: counts per bucket of
    /// [`WAIT_BUCKETS`] (not cumulative; +Inf last), and their sum in µs.
    wait_buckets: [AtomicU64; WAIT_BUCKETS.len() + 1],
    wait_sum_us: AtomicU64,
}

impl Board {
    pub fn new(workers: usize) -> Self {
        Board {
            total: Padded::default(),
            per_worker: (0..workers.max(1)).map(|_| Padded::default()).collect(),
            heads: (0..workers.max(1)).map(|_| Padded::default()).collect(),
            epoch: Instant::now(),
            wakers: OnceLock::new(),
            timeouts: AtomicU64::new(0),
            full: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            wait_buckets: Default::default(),
            wait_sum_us: AtomicU64::new(0),
        }
    }

    /// The workers' wakers, in worker order (once; later calls are ignored).
    pub fn set_wakers(&self, wakers: Vec<Arc<Waker>>) {
        let _ = self.wakers.set(wakers);
    }

    /// Counts one more request queued on `worker`, unless `max` wait
    /// already: then `false` (the queue is full).
    pub fn join(&self, worker: usize, max: usize) -> bool {
        if self.total.0.fetch_add(1, Ordering::SeqCst) >= max {
            self.total.0.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        if let Some(w) = self.per_worker.get(worker) {
            w.0.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// A request queued on `worker` left the queue.
    pub fn leave(&self, worker: usize) {
        let dec = |a: &AtomicUsize, o| {
            let _ = a.fetch_update(o, o, |n| n.checked_sub(1));
        };
        dec(&self.total.0, Ordering::SeqCst);
        if let Some(w) = self.per_worker.get(worker) {
            dec(&w.0, Ordering::Relaxed);
        }
    }

    /// Whether any request waits on any worker.
    pub fn anyone_waiting(&self) -> bool {
        self.total.0.load(Ordering::SeqCst) > 0
    }

    /// Publishes when `worker`'s queue head joined (`None`: empty).
    pub fn set_head(&self, worker: usize, since: Option<Instant>) {
        if let Some(h) = self.heads.get(worker) {
            h.0.store(since.map_or(0, |t| self.stamp(t)), Ordering::Relaxed);
        }
    }

    /// `t` as stored in `heads` (never 0).
    fn stamp(&self, t: Instant) -> usize {
        let us = t.saturating_duration_since(self.epoch).as_micros();
        usize::try_from(us).unwrap_or(usize::MAX - 1) + 1
    }

    /// The worker other than `from` whose queue head has waited longest,
    /// if it joined before `than` (or any, with `than` `None`). Bounded by
    /// the worker count; called only while requests are queued.
    pub fn older_head(&self, from: usize, than: Option<Instant>) -> Option<usize> {
        let limit = than.map_or(usize::MAX, |t| self.stamp(t));
        let mut best: Option<(usize, usize)> = None;
        for (w, h) in self.heads.iter().enumerate() {
            let at = h.0.load(Ordering::Relaxed);
            if w == from || at == 0 || at >= limit {
                continue;
            }
            if best.is_none_or(|(_, b)| at < b) {
                best = Some((w, at));
            }
        }
        best.map(|(w, _)| w)
    }

    /// Wakes worker `w` (its queue head then tries for a place).
    pub fn wake(&self, w: usize) -> bool {
        self.wakers
            .get()
            .and_then(|all| all.get(w))
            .is_some_and(|waker| waker.wake().is_ok())
    }

    /// Records how long a request waited in the queue.
    pub fn record_wait(&self, wait: Duration) {
        let s = wait.as_secs_f64();
        let i = WAIT_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(WAIT_BUCKETS.len());
        if let Some(b) = self.wait_buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.wait_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Everything, read now.
    pub fn snapshot(&self) -> QueueSnapshot {
        let mut cumulative = Vec::with_capacity(self.wait_buckets.len());
        let mut acc = 0;
        for b in &self.wait_buckets {
            acc += b.load(Ordering::Relaxed);
            cumulative.push(acc);
        }
        QueueSnapshot {
            queued: self
                .per_worker
                .iter()
                .map(|w| w.0.load(Ordering::Relaxed))
                .sum(),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            full: self.full.load(Ordering::Relaxed),
            admitted: self.admitted.load(Ordering::Relaxed),
            wait_cumulative: cumulative,
            wait_sum_seconds: self.wait_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// The queue's figures at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSnapshot {
    /// Requests waiting now, summed over the workers.
    pub queued: usize,
    pub timeouts: u64,
    pub full: u64,
    pub admitted: u64,
    /// Cumulative counts per [`WAIT_BUCKETS`] bound, +Inf last.
    pub wait_cumulative: Vec<u64>,
    pub wait_sum_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joining_stops_at_max_and_leaving_makes_room() {
        let b = Board::new(2);
        assert!(b.join(0, 2) && b.join(1, 2));
        assert!(!b.join(1, 2));
        assert!(b.anyone_waiting());
        assert_eq!(b.snapshot().queued, 2);
        b.leave(0);
        assert!(b.join(1, 2));
        b.leave(1);
        b.leave(1);
        // Never below zero.
        b.leave(1);
        assert!(!b.anyone_waiting() || b.snapshot().queued == 0);
        assert_eq!(b.snapshot().queued, 0);
        assert!(!b.wake(1), "no wakers set");
    }

    #[test]
    fn a_freed_place_goes_to_the_oldest_head() {
        let b = Board::new(3);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(b.older_head(0, None), None);
        b.set_head(1, Some(t0 + ms(20)));
        b.set_head(2, Some(t0 + ms(10)));
        assert_eq!(b.older_head(0, None), Some(2));
        assert_eq!(b.older_head(0, Some(t0 + ms(15))), Some(2));
        assert_eq!(b.older_head(0, Some(t0 + ms(5))), None);
        assert_eq!(b.older_head(2, Some(t0 + ms(30))), Some(1));
        b.set_head(2, None);
        assert_eq!(b.older_head(0, None), Some(1));
    }

    #[test]
    fn waits_land_in_their_buckets() {
        let b = Board::new(1);
        b.record_wait(Duration::from_micros(500));
        b.record_wait(Duration::from_millis(30));
        b.record_wait(Duration::from_secs(60));
        let s = b.snapshot();
        assert_eq!(s.wait_cumulative.first(), Some(&1));
        assert_eq!(s.wait_cumulative.get(5), Some(&2));
        assert_eq!(s.wait_cumulative.last(), Some(&3));
        assert!((s.wait_sum_seconds - 60.0305).abs() < 1e-6);
    }
}
