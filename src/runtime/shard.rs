//! Per-thread shards for counters written on every request.
//!
//! A counter every worker increments on one cache line makes that line
//! bounce between cores on each request. Here each thread writes its own
//! shard ([`current`]: assigned once per thread, round-robin over
//! [`SHARDS`]), on its own cache lines ([`Padded`]), and a reader
//! (`/metrics`, `/stats`, the summary: about once a second) sums the
//! shards. Workers are long-lived threads, so with up to [`SHARDS`] of them
//! no two share a shard; beyond that two may, which stays correct (the
//! shards are atomics), only slower.
//!
//! [`Counter`] keeps the `fetch_add` / `load` shape of an `AtomicU64`, so
//! code reading a counter does not change.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards per counter: at least the workers a proxy runs with (one per
/// core; a 16-core box), at 128 bytes each, 2 KiB per counter.
pub const SHARDS: usize = 16;

/// Threads that asked for a shard so far.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// No shard assigned to this thread yet.
const UNASSIGNED: usize = usize::MAX;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(UNASSIGNED) };
}

/// This thread's shard, in `0..SHARDS`.
pub fn current() -> usize {
    SHARD.with(|s| {
        let mut i = s.get();
        if i == UNASSIGNED {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(i);
        }
        i
    })
}

/// `T` alone on its cache lines: 128 bytes, two lines, so the adjacent-line
/// prefetcher does not pair one shard with its neighbour.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

/// One shard per [`SHARDS`], built by `make`.
pub fn shards<T>(make: impl FnMut() -> T) -> Box<[Padded<T>]> {
    let mut make = make;
    (0..SHARDS).map(|_| Padded(make())).collect()
}

/// A counter (or a gauge) summed over per-thread shards. A gauge's
/// decrement may land on another shard than its increment: the shards add
/// up with wrapping arithmetic, and [`Counter::load`] reads the total as
/// signed, never below 0.
#[derive(Debug)]
pub struct Counter {
    shards: Box<[Padded<AtomicU64>]>,
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            shards: shards(|| AtomicU64::new(0)),
        }
    }
}

impl Counter {
    /// Adds `v` on this thread's shard (the ordering is that of the shard;
    /// the sum is never ordered with anything). Returns nothing useful: the
    /// total is not known here.
    pub fn fetch_add(&self, v: u64, order: Ordering) {
        if let Some(s) = self.shards.get(current()) {
            s.0.fetch_add(v, order);
        }
    }

    /// Subtracts `v` on this thread's shard (a gauge going down).
    pub fn fetch_sub(&self, v: u64, order: Ordering) {
        if let Some(s) = self.shards.get(current()) {
            s.0.fetch_sub(v, order);
        }
    }

    /// The total over all shards; 0 if the decrements outran the
    /// increments (a gauge read mid-update).
    pub fn load(&self, order: Ordering) -> u64 {
        let sum = (self.shards.iter()).fold(0u64, |acc, s| acc.wrapping_add(s.0.load(order)));
        u64::try_from(sum as i64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn threads_write_their_own_shards_and_the_sum_is_exact() {
        let c = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        c.fetch_add(1, Relaxed);
                    }
                });
            }
        });
        assert_eq!(c.load(Relaxed), 4000);
        let used = c.shards.iter().filter(|s| s.0.load(Relaxed) > 0).count();
        assert!(used >= 2, "threads spread over shards: {used}");
    }

    #[test]
    fn a_gauge_moved_down_elsewhere_still_sums_and_never_goes_negative() {
        let g = Counter::default();
        g.fetch_add(2, Relaxed);
        std::thread::scope(|s| {
            s.spawn(|| g.fetch_sub(1, Relaxed));
        });
        assert_eq!(g.load(Relaxed), 1);
        std::thread::scope(|s| {
            s.spawn(|| g.fetch_sub(5, Relaxed));
        });
        assert_eq!(g.load(Relaxed), 0, "clamped at 0");
    }

    #[test]
    fn a_thread_keeps_its_shard() {
        assert_eq!(current(), current());
        assert!(current() < SHARDS);
        assert_eq!(std::mem::align_of::<Padded<AtomicU64>>(), 128);
    }
}
