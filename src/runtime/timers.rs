//! A per-worker deadline heap for session timeouts.
//!
//! Sessions keep their own deadlines and schedule a wake-up only when a new
//! deadline is earlier than the one already scheduled. A wake-up that finds
//! nothing due (the deadline moved, or the session closed and its slab key
//! was reused) is a harmless spurious call, so entries are never removed
//! early: that keeps scheduling O(log n) with no per-session bookkeeping here.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Due timers fired per loop iteration; the rest fire on the next one
/// (which then polls without blocking), so a burst of expiries cannot
/// starve I/O.
pub const FIRE_BATCH: usize = 1024;

/// How far ahead [`after`] puts a deadline that `Instant` cannot represent:
/// 100 years is "never" for a server, and still fits in any platform's
/// `Instant` (Linux: i64 seconds since boot).
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, saturating: a duration too large for `Instant` (a huge
/// configured timeout) gives a deadline [`FAR_FUTURE`] away instead of a
/// panic. Use this wherever a deadline is computed from a duration that is
/// not a small constant.
pub fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        // Unreachable on real clocks: "now" is never ~100 years from the end
        // of `Instant`'s range. Falling back to `now` makes the deadline due
        // at once, which is loud (a timeout) rather than a panic.
        .unwrap_or(now)
}

/// Pending wake-ups for one worker.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    /// Wakes the session in slab entry `key` at `at` (or soon after).
    pub fn schedule(&mut self, at: Instant, key: usize) {
        self.heap.push(Reverse((at, key)));
    }

    /// How long the poll may sleep before the next wake-up is due.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    /// Takes the next wake-up due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<usize> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, key))| key),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate_instead_of_overflowing() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(after(now, Duration::MAX), now + FAR_FUTURE);
        assert!(after(now, Duration::MAX) > after(now, Duration::from_secs(86_400)));
    }

    #[test]
    fn due_timers_come_out_in_deadline_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timers::default();
        t.schedule(t0 + ms(30), 3);
        t.schedule(t0 + ms(10), 1);
        t.schedule(t0 + ms(20), 2);
        assert_eq!(t.next_timeout(t0), Some(ms(10)));
        assert_eq!(t.pop_due(t0 + ms(5)), None);
        assert_eq!(t.pop_due(t0 + ms(25)), Some(1));
        assert_eq!(t.pop_due(t0 + ms(25)), Some(2));
        assert_eq!(t.pop_due(t0 + ms(25)), None);
        assert_eq!(t.next_timeout(t0 + ms(40)), Some(Duration::ZERO));
        assert_eq!(t.len(), 1);
    }
}
