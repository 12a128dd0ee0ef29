//! What a backend looked like when each request was sent to it, matched
//! back to the request's `observe`.
//!
//! The [`Selector`](super::super::Selector) API carries no request id: the
//! proxy calls `on_send(backend, now)` and later
//! `observe(backend, outcome, now)`. A request's dispatch time is
//! `now - latency` at `observe`, so [`DispatchLog::take`] matches it to the
//! live entry whose send stamp is nearest that time (within a tolerance).
//!
//! Approximation, documented: the latency runs from the request's first
//! byte written, a little after `on_send` (connect time), and two requests
//! sent to one backend within that gap may swap entries; both entries then
//! hold nearly the same values, so nothing is lost but exactness. A request
//! whose entry was overwritten (more than [`SLOTS`] sends to that backend
//! while it was in flight) matches nothing, or a neighbour within the
//! tolerance, and its callers skip or accept that.
//!
//! Lock-free: a send claims a slot with `fetch_add` and writes it like a
//! seqlock whose version is the stamp (see [`DispatchLog::record`]); a
//! match claims an entry by a compare-exchange of its stamp to
//! [`CONSUMED`], so two observes never take the same entry. Entries never
//! matched (the request was abandoned: `on_done` without `observe`) stay
//! live until overwritten; [`DispatchLog::pending_ages`] reports them with
//! the unanswered requests, and its callers cap them by the in-flight count.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::time::Instant;

/// Sends remembered per backend. An entry lives for the next 128 sends to
/// its backend: at the seed's busiest backend (B, ~460 req/s) that is
/// ~280 ms, longer than B's 200 ms answers, and at A (~45 req/s) ~3 s, far
/// beyond its 400 ms. A match scans all of them (128 loads) once per
/// `observe`; a faster backend simply answers before its entry goes.
pub(in crate::balance) const SLOTS: usize = 128;

/// A slot never written.
const EMPTY: u64 = 0;

/// A slot being written (seqlock "odd version").
const WRITING: u64 = u64::MAX;

/// A slot already matched to its `observe`.
const CONSUMED: u64 = u64::MAX - 1;

/// Largest live stamp: 584 years after the epoch, below the sentinels.
const MAX_STAMP: u64 = u64::MAX - 2;

/// Nanoseconds from `epoch` to `now`, plus one so it is never [`EMPTY`];
/// saturates below the sentinels.
pub(in crate::balance) fn stamp(epoch: Instant, now: Instant) -> u64 {
    let since = now.saturating_duration_since(epoch).as_nanos();
    u64::try_from(since).unwrap_or(MAX_STAMP).min(MAX_STAMP - 1) + 1
}

/// One send: its stamp, then `F` values as f64 bits.
#[derive(Debug)]
struct Entry<const F: usize> {
    stamp: AtomicU64,
    vals: [AtomicU64; F],
}

/// The last [`SLOTS`] sends to one backend, `F` values each.
#[derive(Debug)]
pub(in crate::balance) struct DispatchLog<const F: usize> {
    slots: Box<[Entry<F>]>,
    /// Sends so far; `next % SLOTS` is the next slot to write.
    next: AtomicUsize,
}

impl<const F: usize> Default for DispatchLog<F> {
    fn default() -> Self {
        DispatchLog {
            slots: (0..SLOTS)
                .map(|_| Entry {
                    stamp: AtomicU64::new(EMPTY),
                    vals: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl<const F: usize> DispatchLog<F> {
    /// Records a send at `stamp` (from [`stamp`]) with its values.
    pub(in crate::balance) fn record(&self, stamp: u64, vals: [f64; F]) {
        let stamp = stamp.clamp(1, MAX_STAMP);
        let e = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % SLOTS];
        // Seqlock write: invalidate, then the values, then publish the
        // stamp. The release fence keeps the values after the invalidation
        // for a reader whose acquire fence saw one of them (`take`).
        e.stamp.store(WRITING, Ordering::Relaxed);
        fence(Ordering::Release);
        for (slot, v) in e.vals.iter().zip(vals) {
            slot.store(v.to_bits(), Ordering::Relaxed);
        }
        e.stamp.store(stamp, Ordering::Release);
    }

    /// Takes the live entry sent nearest `sent` (a stamp), if one is within
    /// `tolerance` ns, and returns its values. Each entry is taken at most
    /// once.
    pub(in crate::balance) fn take(&self, sent: u64, tolerance: u64) -> Option<[f64; F]> {
        // A lost race (another observe took the entry, or a send overwrote
        // it) retries once with the next nearest; then gives up.
        for _ in 0..2 {
            let mut best: Option<(u64, &Entry<F>)> = None;
            for e in self.slots.iter() {
                let s = e.stamp.load(Ordering::Relaxed);
                if !live(s) {
                    continue;
                }
                let d = s.abs_diff(sent);
                if d <= tolerance && best.is_none_or(|(bd, _)| d < bd) {
                    best = Some((d, e));
                }
            }
            let (_, e) = best?;
            let s = e.stamp.load(Ordering::Acquire);
            if !live(s) {
                continue;
            }
            let vals: [f64; F] =
                std::array::from_fn(|k| f64::from_bits(e.vals[k].load(Ordering::Relaxed)));
            // Seqlock validation: if a value read was a newer send's, that
            // send's WRITING is ordered before this point, so the exchange
            // below fails.
            fence(Ordering::Acquire);
            if e.stamp
                .compare_exchange(s, CONSUMED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Some(vals);
            }
        }
        None
    }

    /// Calls `f(age_ns)` for every entry not yet matched: requests still in
    /// flight, or abandoned ones not yet overwritten.
    pub(in crate::balance) fn pending_ages(&self, now: u64, mut f: impl FnMut(u64)) {
        for e in self.slots.iter() {
            let s = e.stamp.load(Ordering::Relaxed);
            if live(s) {
                f(now.saturating_sub(s));
            }
        }
    }
}

/// A published, unmatched send.
fn live(stamp: u64) -> bool {
    stamp != EMPTY && stamp <= MAX_STAMP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_nearest_send_once() {
        let log = DispatchLog::<1>::default();
        log.record(1_000, [1.0]);
        log.record(2_000, [2.0]);
        log.record(3_000, [3.0]);
        assert_eq!(log.take(2_100, 500), Some([2.0]));
        // Taken: the next nearest within tolerance, else nothing.
        assert_eq!(log.take(2_100, 500), None);
        assert_eq!(log.take(2_100, 1_000), Some([3.0]));
        let mut ages = Vec::new();
        log.pending_ages(5_000, |a| ages.push(a));
        assert_eq!(ages, [4_000]);
    }

    #[test]
    fn an_overwritten_entry_is_gone() {
        let log = DispatchLog::<2>::default();
        for k in 0..SLOTS as u64 + 1 {
            log.record(10 + k, [k as f64, -(k as f64)]);
        }
        assert_eq!(log.take(10, 0), None);
        assert_eq!(log.take(11, 0), Some([1.0, -1.0]));
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
