//! The ticket of one request sent to a backend ([`Attempt`]) and the
//! per-backend in-flight counts it holds ([`Loads`]).
//!
//! `on_send` returns an [`Attempt`]; `observe` consumes it. An attempt
//! dropped without `observe` (the client left, a stale pooled connection,
//! a retry elsewhere) still releases its in-flight count, at the drop: the
//! count is the strong count of an `Arc` the attempt holds, as tower's load
//! handles do, so it is released exactly once on every path, and to the
//! selector that counted it (a reload mid-flight cannot misdirect it).

use std::sync::Arc;
use std::time::Instant;

/// Values a policy notes at send and reads back at `observe`: tail-budget
/// keeps the in-flight count before the send, predictive its 2 load
/// features. The largest user sets the size.
pub(crate) const AT_SEND: usize = 4;

/// One backend's count, alone on its cache lines: 128 bytes, two lines, so
/// the adjacent-line prefetcher does not pair it with a neighbour's count
/// (every worker writes each count once per request).
#[repr(align(128))]
#[derive(Debug, Default)]
struct Pad;

/// Requests in flight per backend, shared by all workers. Backend `i`'s
/// count is the strong count of its `Arc` minus the table's own: taking a
/// [`Load`] is one relaxed atomic add, dropping it one atomic sub, and the
/// count can neither go below zero nor be released twice.
#[derive(Debug)]
pub(crate) struct Loads {
    slots: Box<[Arc<Pad>]>,
}

impl Loads {
    pub(crate) fn new(n: usize) -> Self {
        Loads {
            slots: (0..n).map(|_| Arc::new(Pad)).collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Requests in flight at backend `i` (0 for an index out of range).
    pub(crate) fn get(&self, i: usize) -> usize {
        self.slots
            .get(i)
            .map_or(0, |s| Arc::strong_count(s).saturating_sub(1))
    }

    /// One more request in flight at `i` until the [`Load`] drops; `None`
    /// for an index out of range.
    pub(crate) fn take(&self, i: usize) -> Option<Load> {
        debug_assert!(i < self.slots.len(), "on_send({i}): no such backend");
        self.slots.get(i).map(|s| Load(Arc::clone(s)))
    }

    /// `[LC] in-flight 8081=3 8082=0 ...` for debug logs (allocates).
    pub(crate) fn line(&self, tag: &str, labels: &[String]) -> String {
        use std::fmt::Write;
        let mut line = format!("[{tag}] in-flight");
        for (label, i) in labels.iter().zip(0..) {
            // Writing to a String cannot fail.
            let _ = write!(line, " {label}={}", self.get(i));
        }
        line
    }
}

/// One request counted in flight at one backend, until dropped.
#[derive(Debug)]
// The field is held for its drop (the release), never read.
pub(crate) struct Load(#[allow(dead_code)] Arc<Pad>);

/// One request sent to one backend: returned by `Selector::on_send`,
/// consumed by `Selector::observe` of the same selector. Dropping it
/// without `observe` ends the attempt with no sample.
#[must_use = "dropping an Attempt ends it at once"]
#[derive(Debug)]
pub struct Attempt {
    backend: usize,
    sent: Instant,
    /// What the policy noted at send (see [`AT_SEND`]).
    pub(crate) at_send: [f64; AT_SEND],
    /// Where the policy logged this send, if it keeps a log
    /// (tail-budget's `SendLog`: slot and stamp); `(0, 0)` for none.
    pub(crate) logged: (usize, u64),
    load: Option<Load>,
}

impl Attempt {
    /// A ticket for `backend` sent at `sent` that holds no count (policies
    /// that count nothing in flight).
    pub fn new(backend: usize, sent: Instant) -> Self {
        Attempt {
            backend,
            sent,
            at_send: [0.0; AT_SEND],
            logged: (0, 0),
            load: None,
        }
    }

    /// A ticket holding `load` (one request in flight).
    pub(crate) fn counted(backend: usize, sent: Instant, load: Option<Load>) -> Self {
        Attempt {
            load,
            ..Attempt::new(backend, sent)
        }
    }

    /// The backend index, in the selector that issued the ticket.
    pub fn backend(&self) -> usize {
        self.backend
    }

    /// When `on_send` was called.
    pub fn sent(&self) -> Instant {
        self.sent
    }

    /// Whether it holds an in-flight count.
    pub fn counts(&self) -> bool {
        self.load.is_some()
    }

    /// The same ticket under another index (`tiered` maps global <-> tier).
    pub(crate) fn relabel(mut self, backend: usize) -> Self {
        self.backend = backend;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_counts_until_dropped_and_only_once() {
        let loads = Loads::new(2);
        let t0 = Instant::now();
        let a = Attempt::counted(0, t0, loads.take(0));
        let b = Attempt::counted(0, t0, loads.take(0));
        assert_eq!((loads.get(0), loads.get(1)), (2, 0));
        assert!(a.counts());
        drop(a);
        assert_eq!(loads.get(0), 1);
        let b = b.relabel(5);
        assert_eq!(b.backend(), 5);
        assert_eq!(loads.get(0), 1, "relabelling keeps the count");
        drop(b);
        assert_eq!(loads.get(0), 0);
        assert_eq!(loads.get(9), 0);
    }

    #[test]
    fn an_uncounted_ticket_holds_nothing() {
        let t0 = Instant::now();
        let a = Attempt::new(3, t0);
        assert!(!a.counts());
        assert_eq!((a.backend(), a.sent()), (3, t0));
    }
}
