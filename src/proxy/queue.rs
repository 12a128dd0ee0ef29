//! One worker's FIFO of requests waiting for a backend under its limit.
//! Pure: no sockets, no clock (the caller passes `now`).
//!
//! An entry names the waiting session by its slab key and a ticket unique
//! in this worker (slab keys are reused; tickets are not). The head is the
//! oldest entry, the only one offered a freed place, so requests leave in
//! arrival order; each waits at most `timeout`, and the oldest expires
//! first. Capacity is checked by the caller against the process-wide count
//! (see `board`), and again here against `cap`, so one worker alone can
//! never hold more than the whole queue may.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::runtime::timers::after;

/// One worker's unique name for a queued request.
pub type Ticket = u64;

/// One waiting request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// The session's slab key.
    pub key: usize,
    pub ticket: Ticket,
    /// When it joined the queue.
    pub since: Instant,
}

/// The queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// One worker's queue.
#[derive(Debug)]
pub struct Queue {
    entries: VecDeque<Waiting>,
    next: Ticket,
    /// `--max-queue`.
    cap: usize,
    /// `--queue-timeout`.
    timeout: Duration,
}

impl Queue {
    pub fn new(cap: usize, timeout: Duration) -> Self {
        Queue {
            entries: VecDeque::new(),
            next: 0,
            cap,
            timeout,
        }
    }

    /// Takes new settings (a reload); entries already queued keep theirs
    /// only in that they stay queued, in order.
    pub fn configure(&mut self, cap: usize, timeout: Duration) {
        self.cap = cap;
        self.timeout = timeout;
    }

    /// Queues the session in slab entry `key` behind every other.
    pub fn push(&mut self, key: usize, now: Instant) -> Result<Waiting, Full> {
        if self.entries.len() >= self.cap {
            return Err(Full);
        }
        let w = Waiting {
            key,
            ticket: self.next,
            since: now,
        };
        self.next += 1;
        self.entries.push_back(w);
        Ok(w)
    }

    /// The oldest entry: the next to be offered a freed place.
    pub fn head(&self) -> Option<Waiting> {
        self.entries.front().copied()
    }

    /// Whether `ticket` is the head.
    pub fn is_head(&self, ticket: Ticket) -> bool {
        self.entries.front().is_some_and(|w| w.ticket == ticket)
    }

    /// Takes `ticket` out wherever it is (admitted, timed out, or its
    /// client left); `None` if it is not queued. O(n) from the front,
    /// where admitted and expired entries are.
    pub fn remove(&mut self, ticket: Ticket) -> Option<Waiting> {
        let i = self.entries.iter().position(|w| w.ticket == ticket)?;
        self.entries.remove(i)
    }

    /// When an entry queued at `since` times out.
    pub fn deadline(&self, since: Instant) -> Instant {
        after(since, self.timeout)
    }

    /// Takes the head if it has waited `timeout` by `now` (call until
    /// `None`: entries expire oldest first).
    pub fn pop_expired(&mut self, now: Instant) -> Option<Waiting> {
        let head = self.entries.front()?;
        if self.deadline(head.since) <= now {
            return self.entries.pop_front();
        }
        None
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn requests_leave_in_arrival_order() {
        let t0 = Instant::now();
        let mut q = Queue::new(10, ms(100));
        let keys = [7, 3, 9, 3];
        let tickets: Vec<Ticket> = (keys.iter().enumerate())
            .filter_map(|(i, &k)| q.push(k, t0 + ms(i as u64)).ok())
            .map(|w| w.ticket)
            .collect();
        assert_eq!(tickets.len(), 4);
        // A reused slab key gets its own ticket.
        assert_ne!(tickets[1], tickets[3]);
        let mut order = Vec::new();
        while let Some(h) = q.head() {
            assert!(q.is_head(h.ticket));
            order.push(h.key);
            assert_eq!(q.remove(h.ticket), Some(h));
        }
        assert_eq!(order, keys);
        assert!(q.is_empty());
    }

    #[test]
    fn a_request_leaving_from_the_middle_keeps_the_rest_in_order() {
        let t0 = Instant::now();
        let mut q = Queue::new(10, ms(100));
        let w: Vec<Waiting> = (0..3).filter_map(|k| q.push(k, t0).ok()).collect();
        assert_eq!(q.remove(w[1].ticket).map(|x| x.key), Some(1));
        assert_eq!(q.remove(w[1].ticket), None);
        assert_eq!(q.head().map(|h| h.key), Some(0));
        assert!(!q.is_head(w[2].ticket));
        assert_eq!(q.remove(w[0].ticket).map(|x| x.key), Some(0));
        assert!(q.is_head(w[2].ticket));
    }

    #[test]
    fn requests_time_out_oldest_first() {
        let t0 = Instant::now();
        let mut q = Queue::new(10, ms(100));
        for k in 0..3 {
            assert!(q.push(k, t0 + ms(10 * k as u64)).is_ok());
        }
        assert_eq!(q.deadline(t0), t0 + ms(100));
        assert_eq!(q.pop_expired(t0 + ms(99)), None);
        let gone: Vec<usize> = std::iter::from_fn(|| q.pop_expired(t0 + ms(115)))
            .map(|w| w.key)
            .collect();
        assert_eq!(gone, [0, 1]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_expired(t0 + ms(120)).map(|w| w.key), Some(2));
        assert_eq!(q.pop_expired(t0 + ms(500)), None);
    }

    #[test]
    fn a_full_queue_refuses_until_one_leaves() {
        let t0 = Instant::now();
        let mut q = Queue::new(2, ms(100));
        let a = q.push(1, t0);
        assert!(a.is_ok() && q.push(2, t0).is_ok());
        assert_eq!(q.push(3, t0), Err(Full));
        if let Ok(a) = a {
            q.remove(a.ticket);
        }
        assert!(q.push(3, t0).is_ok());
        let mut none = Queue::new(0, ms(100));
        assert_eq!(none.push(1, t0), Err(Full));
        q.configure(5, ms(1));
        assert!(q.pop_expired(t0 + ms(1)).is_some());
    }
}
