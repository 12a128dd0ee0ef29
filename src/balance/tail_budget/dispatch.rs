//! The recent sends to one backend, for the recompute to see the requests
//! still unanswered ([`SendLog::pending_ages`]).
//!
//! `on_send` records the send's stamp in a slot and keeps (slot, stamp) in
//! the request's `Attempt` ticket; `observe` takes exactly that entry back
//! ([`SendLog::take`], one compare-exchange), so an answered request stops
//! counting as pending. No matching by time: the ticket says which entry.
//! An entry overwritten before its answer (more than [`SLOTS`] sends to
//! that backend while it was in flight) is simply gone, and its `take`
//! does nothing. Entries never taken (the request was abandoned: its ticket
//! dropped without `observe`) stay live until overwritten; `pending_ages`
//! reports them with the unanswered requests, and its callers cap them by
//! the in-flight count.
//!
//! Lock-free: a send claims a slot with `fetch_add` and stores its stamp;
//! a take swaps the stamp it recorded for [`CONSUMED`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// Sends remembered per backend. An entry lives for the next 128 sends to
/// its backend: at the seed's busiest backend (B, ~460 req/s) that is
/// ~280 ms, longer than B's 200 ms answers, and at A (~45 req/s) ~3 s, far
/// beyond its 400 ms. Only the recompute scans them (every 100 ms); a send
/// and its `observe` touch one slot each.
pub(in crate::balance) const SLOTS: usize = 128;

/// A slot never written.
const EMPTY: u64 = 0;

/// A slot already taken by its `observe`.
const CONSUMED: u64 = u64::MAX - 1;

/// Largest live stamp: 584 years after the epoch, below the sentinels.
const MAX_STAMP: u64 = u64::MAX - 2;

/// Nanoseconds from `epoch` to `now`, plus one so it is never [`EMPTY`];
/// saturates below the sentinels.
pub(in crate::balance) fn stamp(epoch: Instant, now: Instant) -> u64 {
    let since = now.saturating_duration_since(epoch).as_nanos();
    u64::try_from(since).unwrap_or(MAX_STAMP).min(MAX_STAMP - 1) + 1
}

/// The last [`SLOTS`] sends to one backend: their stamps.
#[derive(Debug)]
pub(in crate::balance) struct SendLog {
    slots: Box<[AtomicU64]>,
    /// Sends so far; `next % SLOTS` is the next slot to write.
    next: AtomicUsize,
}

impl Default for SendLog {
    fn default() -> Self {
        SendLog {
            slots: (0..SLOTS).map(|_| AtomicU64::new(EMPTY)).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl SendLog {
    /// Records a send at `stamp` (from [`stamp`]); returns its slot, for
    /// [`SendLog::take`].
    pub(in crate::balance) fn record(&self, stamp: u64) -> usize {
        let stamp = stamp.clamp(1, MAX_STAMP);
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % SLOTS;
        self.slots[slot].store(stamp, Ordering::Relaxed);
        slot
    }

    /// Takes the entry a [`SendLog::record`] returned, if no later send
    /// overwrote it; true if it was there. Each entry is taken at most
    /// once.
    pub(in crate::balance) fn take(&self, slot: usize, stamp: u64) -> bool {
        let stamp = stamp.clamp(1, MAX_STAMP);
        self.slots.get(slot).is_some_and(|s| {
            s.compare_exchange(stamp, CONSUMED, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Calls `f(age_ns)` for every entry not yet taken: requests still in
    /// flight, or abandoned ones not yet overwritten.
    pub(in crate::balance) fn pending_ages(&self, now: u64, mut f: impl FnMut(u64)) {
        for s in self.slots.iter() {
            let s = s.load(Ordering::Relaxed);
            if live(s) {
                f(now.saturating_sub(s));
            }
        }
    }
}

/// A recorded, untaken send.
fn live(stamp: u64) -> bool {
    stamp != EMPTY && stamp <= MAX_STAMP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_its_own_entry_once() {
        let log = SendLog::default();
        let _ = log.record(1_000);
        let b = log.record(2_000);
        let _ = log.record(3_000);
        assert!(log.take(b, 2_000));
        assert!(!log.take(b, 2_000), "taken once");
        let mut ages = Vec::new();
        log.pending_ages(5_000, |a| ages.push(a));
        assert_eq!(ages, [4_000, 2_000]);
    }

    #[test]
    fn an_overwritten_entry_is_gone() {
        let log = SendLog::default();
        let first = log.record(10);
        for k in 1..SLOTS as u64 + 1 {
            let _ = log.record(10 + k);
        }
        assert!(!log.take(first, 10));
        assert!(log.take(first, 10 + SLOTS as u64));
        assert!(!log.take(SLOTS + 5, 11), "out of range: nothing");
    }

    #[test]
    fn stamps_are_never_sentinels() {
        let t0 = Instant::now();
        assert_eq!(stamp(t0, t0), 1);
        assert_eq!(stamp(t0 + std::time::Duration::from_secs(1), t0), 1);
        let far = t0 + std::time::Duration::from_secs(u64::MAX / 4);
        assert!(live(stamp(t0, far)));
    }
}
