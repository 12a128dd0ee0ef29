//! A deadline heap: items come out in deadline order once their deadline
//! has passed. Entries are never removed early; whoever pops one checks
//! that it still applies (the connection and request ids it carries), so
//! cancelling costs nothing.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Items ordered by deadline; ties keep insertion order.
#[derive(Debug)]
pub struct Timer<T> {
    heap: BinaryHeap<Entry<T>>,
    /// Insertion counter: breaks deadline ties first-in, first-out.
    seq: u64,
}

#[derive(Debug)]
struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

// Reversed so that `BinaryHeap`, a max-heap, yields the earliest deadline.
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> Default for Timer<T> {
    fn default() -> Self {
        Timer {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<T> Timer<T> {
    /// Schedules `item` for `at`.
    pub fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            item,
        });
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// The earliest item whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<T> {
        if self.heap.peek()?.at <= now {
            self.heap.pop().map(|e| e.item)
        } else {
            None
        }
    }

    /// Entries still scheduled (including ones that no longer apply).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timer::default();
        t.push(t0 + ms(30), "c");
        t.push(t0 + ms(10), "a");
        t.push(t0 + ms(20), "b1");
        t.push(t0 + ms(20), "b2");
        assert_eq!(t.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(t.pop_expired(t0 + ms(5)), None);
        let mut got = Vec::new();
        while let Some(x) = t.pop_expired(t0 + ms(25)) {
            got.push(x);
        }
        assert_eq!(got, ["a", "b1", "b2"], "earliest first, ties in order");
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_expired(t0 + ms(30)), Some("c"));
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }
}
