//! One client event-loop thread: owns a mio `Poll` and a `Slab` of
//! connections, opens its share of the run's connections (at most
//! `max_connecting` in flight), counts them in at the run-wide barrier, and
//! once the barrier and the hold have passed drives the request phase.

use std::io::ErrorKind;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Poll, Token};
use slab::Slab;

use super::LoadConfig;
use super::conn::{Conn, Ctx, Failure, Readiness, Step};
use super::report::{ConnResult, FailureKind};

/// Events taken per `poll`: enough to amortise the syscall over many ready
/// connections, small enough that one batch does not starve the timers.
const EVENTS_CAPACITY: usize = 1024;

/// Longest single `poll` wait. Every wakeup that matters has its own timeout
/// already; this only bounds how stale the loop can get if one is missed.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);

/// Poll timeout while other threads' connects are still in progress: the
/// barrier has no wakeup of its own, and 2 ms is short against a connect
/// phase of seconds yet far from a busy spin.
const BARRIER_POLL: Duration = Duration::from_millis(2);

/// Per-thread buffer for generating and receiving message bytes; 64 KiB
/// moves large messages in few syscalls and is trivial per thread.
const SCRATCH_LEN: usize = 64 * 1024;

/// The run-wide barrier: connections not yet established or failed.
#[derive(Debug)]
pub(crate) struct Shared {
    pending: AtomicUsize,
    released: OnceLock<Instant>,
}

impl Shared {
    pub(crate) fn new(connections: usize) -> Self {
        Shared {
            pending: AtomicUsize::new(connections),
            released: OnceLock::new(),
        }
    }

    /// Counts `n` connections as established or failed; the last one
    /// releases the barrier.
    fn arrive(&self, n: usize) {
        if n > 0 && self.pending.fetch_sub(n, Ordering::AcqRel) == n {
            let _ = self.released.set(Instant::now());
        }
    }

    /// When every connection of the run was established or had failed.
    pub(crate) fn released(&self) -> Option<Instant> {
        self.released.get().copied()
    }
}

/// Connections of one worker not yet counted at the barrier. Dropping it
/// counts them all, so a worker that dies or never starts cannot leave the
/// other threads waiting forever.
#[derive(Debug)]
struct Owed<'a> {
    shared: &'a Shared,
    count: usize,
}

impl Owed<'_> {
    fn arrive_one(&mut self) {
        self.count = self.count.saturating_sub(1);
        self.shared.arrive(1);
    }
}

impl Drop for Owed<'_> {
    fn drop(&mut self) {
        self.shared.arrive(self.count);
    }
}

/// What a worker hands back.
#[derive(Debug)]
pub(crate) struct WorkerOutput {
    pub results: Vec<ConnResult>,
    pub hist: Histogram<u64>,
    /// First failure detail per kind seen by this worker.
    pub samples: Vec<(FailureKind, String)>,
    pub finished: Instant,
}

#[derive(Debug)]
enum Action {
    Event(Readiness),
    Start,
    Fail(Failure),
}

#[derive(Debug)]
pub(crate) struct Worker<'a> {
    cfg: &'a LoadConfig,
    owed: Owed<'a>,
    poll: Poll,
    /// This worker's connections are ids `first, first + stride, ...`.
    first: usize,
    stride: usize,
    /// How many of them were opened (or failed to open) so far.
    launched: usize,
    assigned: usize,
    /// Connects in progress.
    connecting: usize,
    conns: Slab<Conn>,
    results: Vec<ConnResult>,
    hist: Histogram<u64>,
    scratch: Vec<u8>,
    samples: Vec<(FailureKind, String)>,
    /// A lower bound on every connection's deadline (stale entries only
    /// cause an early, harmless scan).
    next_deadline: Option<Instant>,
    requests_started: bool,
    /// Reused key buffer for scans and the phase change.
    keys: Vec<usize>,
}

impl<'a> Worker<'a> {
    /// Worker `index` of `stride`, with its own poll and histogram.
    pub(crate) fn new(
        cfg: &'a LoadConfig,
        shared: &'a Shared,
        index: usize,
        stride: usize,
        poll: Poll,
        hist: Histogram<u64>,
    ) -> Self {
        let assigned = cfg.connections.saturating_sub(index).div_ceil(stride);
        Worker {
            cfg,
            owed: Owed {
                shared,
                count: assigned,
            },
            poll,
            first: index,
            stride,
            launched: 0,
            assigned,
            connecting: 0,
            conns: Slab::with_capacity(assigned),
            results: Vec::with_capacity(assigned),
            hist,
            scratch: vec![0; SCRATCH_LEN],
            samples: Vec::new(),
            next_deadline: None,
            requests_started: false,
            keys: Vec::new(),
        }
    }

    /// Runs until every assigned connection is done or failed.
    pub(crate) fn run(mut self) -> WorkerOutput {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            self.launch();
            self.maybe_start_requests(Instant::now());
            if self.launched == self.assigned && self.conns.is_empty() {
                break;
            }
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                log::error!("poll failed, abandoning this thread's connections: {e}");
                self.abandon(&Failure::io("poll", &e));
                break;
            }
            for event in events.iter() {
                let Token(key) = event.token();
                self.drive(key, Action::Event(Readiness::from(event)));
            }
            self.expire(Instant::now());
        }
        WorkerOutput {
            results: self.results,
            hist: self.hist,
            samples: self.samples,
            finished: Instant::now(),
        }
    }

    /// Opens connections while fewer than `max_connecting` are in progress.
    fn launch(&mut self) {
        while self.connecting < self.cfg.max_connecting && self.launched < self.assigned {
            let id = self.first + self.launched * self.stride;
            self.launched += 1;
            let sources = &self.cfg.sources;
            let source = (!sources.is_empty()).then(|| sources[id % sources.len()]);
            let key = self.conns.vacant_key();
            match Conn::open(id, Token(key), source, self.poll.registry(), self.cfg) {
                Ok(conn) => {
                    self.note_deadline(conn.deadline());
                    self.conns.insert(conn);
                    self.connecting += 1;
                }
                Err(failure) => {
                    self.owed.arrive_one();
                    self.record_failure(id, failure);
                }
            }
        }
    }

    /// Once the barrier and the hold have passed, starts every connection.
    fn maybe_start_requests(&mut self, now: Instant) {
        if self.requests_started {
            return;
        }
        match self.shared_release() {
            Some(start) if now >= start => {}
            _ => return,
        }
        self.requests_started = true;
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        keys.extend(self.conns.iter().map(|(key, _)| key));
        for &key in &keys {
            self.drive(key, Action::Start);
        }
        self.keys = keys;
    }

    /// When the request phase starts: barrier release plus the hold.
    fn shared_release(&self) -> Option<Instant> {
        self.owed
            .shared
            .released()
            .map(|released| released + self.cfg.hold)
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        let mut wait = MAX_POLL_WAIT;
        if let Some(deadline) = self.next_deadline {
            wait = wait.min(deadline.saturating_duration_since(now));
        }
        if !self.requests_started {
            wait = wait.min(match self.shared_release() {
                Some(start) => start.saturating_duration_since(now),
                None => BARRIER_POLL,
            });
        }
        wait
    }

    /// Applies one action to connection `key` and books the outcome.
    /// Unknown keys are events for connections already closed: ignored.
    fn drive(&mut self, key: usize, action: Action) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let was_connecting = conn.is_connecting();
        let mut ctx = Ctx {
            registry: self.poll.registry(),
            scratch: &mut self.scratch,
            hist: &mut self.hist,
            cfg: self.cfg,
        };
        let step = match action {
            Action::Event(ready) => conn.on_event(&mut ctx, ready),
            Action::Start => conn.start(&mut ctx),
            Action::Fail(failure) => Step::Failed(failure),
        };
        let deadline = conn.deadline();
        if was_connecting && !matches!(step, Step::Pending) {
            self.connecting -= 1;
            self.owed.arrive_one();
        }
        match step {
            Step::Pending | Step::Established => self.note_deadline(deadline),
            Step::Done => self.close(key, None),
            Step::Failed(failure) => self.close(key, Some(failure)),
        }
    }

    fn close(&mut self, key: usize, failure: Option<Failure>) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        let kind = failure.as_ref().map(|f| f.kind);
        if let Some(failure) = failure {
            self.note_sample(conn.id(), failure);
        }
        let result = conn.close(self.poll.registry(), self.cfg.size, kind);
        self.results.push(result);
    }

    /// Books a connection that failed before it had a socket to close.
    fn record_failure(&mut self, id: usize, failure: Failure) {
        self.results.push(ConnResult {
            id,
            requests: 0,
            bytes: 0,
            total_duration: Duration::ZERO,
            avg_response: Duration::ZERO,
            connect_time: Duration::ZERO,
            failure: Some(failure.kind),
        });
        self.note_sample(id, failure);
    }

    fn note_sample(&mut self, id: usize, failure: Failure) {
        log::debug!("conn {id}: {}: {}", failure.kind, failure.detail);
        if !self.samples.iter().any(|(kind, _)| *kind == failure.kind) {
            self.samples
                .push((failure.kind, format!("conn {id}: {}", failure.detail)));
        }
    }

    fn note_deadline(&mut self, deadline: Option<Instant>) {
        if let Some(d) = deadline {
            self.next_deadline = Some(self.next_deadline.map_or(d, |n| n.min(d)));
        }
    }

    /// Fails every connection whose deadline has passed, and recomputes the
    /// nearest deadline. A full scan, but only when the nearest deadline
    /// (a lower bound) is due, which is rare next to the I/O.
    fn expire(&mut self, now: Instant) {
        match self.next_deadline {
            Some(due) if due <= now => {}
            _ => return,
        }
        self.next_deadline = None;
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        for (key, conn) in &self.conns {
            match conn.deadline() {
                Some(d) if d <= now => keys.push(key),
                Some(d) => self.next_deadline = Some(self.next_deadline.map_or(d, |n| n.min(d))),
                None => {}
            }
        }
        for &key in &keys {
            let failure = self.conns.get(key).and_then(|c| c.expired(now, self.cfg));
            if let Some(failure) = failure {
                self.drive(key, Action::Fail(failure));
            }
        }
        self.keys = keys;
    }

    /// After a fatal poll error: fails everything this worker still owns.
    fn abandon(&mut self, failure: &Failure) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let failure = Failure {
                kind: FailureKind::Other,
                detail: failure.detail.clone(),
            };
            self.drive(key, Action::Fail(failure));
        }
        while self.launched < self.assigned {
            let id = self.first + self.launched * self.stride;
            self.launched += 1;
            self.owed.arrive_one();
            let failure = Failure {
                kind: FailureKind::Other,
                detail: failure.detail.clone(),
            };
            self.record_failure(id, failure);
        }
    }
}
