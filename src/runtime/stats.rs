//! Counters shared between the acceptor, the workers and whoever reports.
//!
//! Workers update their own [`WorkerStats`] once per connection (on close),
//! not per read, so the atomics stay off the per-message path. All counters
//! use `Relaxed`: they are statistics, never used for synchronisation.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::runtime::close::CloseReason;

/// Counters owned by one worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Sessions currently registered with this worker.
    pub open: AtomicUsize,
    /// Sessions this worker has closed.
    pub closed: AtomicU64,
    /// Payload bytes moved by closed sessions (echoed bytes in echo mode).
    pub bytes: AtomicU64,
    /// Sessions closed by a reset (counted, never logged).
    pub resets: AtomicU64,
    /// Sessions closed by any other socket error.
    pub errors: AtomicU64,
}

impl WorkerStats {
    /// Records one closed session.
    pub fn record_close(&self, reason: CloseReason, bytes: u64) {
        self.closed.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        match reason {
            CloseReason::Reset => {
                self.resets.fetch_add(1, Relaxed);
            }
            CloseReason::Error => {
                self.errors.fetch_add(1, Relaxed);
            }
            CloseReason::Done | CloseReason::Shutdown => {}
        }
    }
}

/// Counters owned by the acceptor.
#[derive(Debug, Default)]
pub struct AcceptStats {
    /// Connections accepted and handed to a worker.
    pub accepted: AtomicU64,
    /// Connections currently open across all workers.
    pub open: AtomicUsize,
    /// The highest value `open` has reached.
    pub peak: AtomicUsize,
    /// Connections accepted only to be closed because fds ran out.
    pub shed: AtomicU64,
}

impl AcceptStats {
    /// Called by the acceptor for each connection it hands off.
    pub fn opened(&self) {
        self.accepted.fetch_add(1, Relaxed);
        let now = self.open.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(now, Relaxed);
    }

    /// Called by a worker for each connection it closes.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }
}

/// A snapshot of a server's counters, printed as the one-line run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub accepted: u64,
    pub open: usize,
    pub peak: usize,
    pub shed: u64,
    pub closed: u64,
    pub bytes: u64,
    pub resets: u64,
    pub errors: u64,
}

impl Summary {
    /// Adds up the acceptor's and every worker's counters.
    pub fn collect<'a>(
        accept: &AcceptStats,
        workers: impl IntoIterator<Item = &'a WorkerStats>,
    ) -> Self {
        let mut s = Summary {
            accepted: accept.accepted.load(Relaxed),
            open: accept.open.load(Relaxed),
            peak: accept.peak.load(Relaxed),
            shed: accept.shed.load(Relaxed),
            ..Summary::default()
        };
        for w in workers {
            s.closed += w.closed.load(Relaxed);
            s.bytes += w.bytes.load(Relaxed);
            s.resets += w.resets.load(Relaxed);
            s.errors += w.errors.load(Relaxed);
        }
        s
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "served {} connections, peak {} concurrent, {} bytes, {} resets, {} errors, {} shed",
            self.accepted, self.peak, self.bytes, self.resets, self.errors, self.shed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_tracks_the_highest_open_count() {
        let a = AcceptStats::default();
        a.opened();
        a.opened();
        a.closed();
        a.opened();
        a.closed();
        a.closed();
        let w = WorkerStats::default();
        w.record_close(CloseReason::Done, 10);
        w.record_close(CloseReason::Reset, 5);
        let s = Summary::collect(&a, [&w]);
        assert_eq!((s.accepted, s.open, s.peak), (3, 0, 2));
        assert_eq!((s.closed, s.bytes, s.resets, s.errors), (2, 15, 1, 0));
    }
}
