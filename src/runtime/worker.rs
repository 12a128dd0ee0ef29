//! One worker thread: a mio `Poll`, a `Slab` of sessions, and the event loop.
//!
//! The loop is independent of what a connection does: it turns readiness
//! into [`Session::ready`] calls and acts on the returned [`Step`]. New
//! connections arrive from the acceptor through a channel, announced by the
//! worker's [`Waker`].

use std::io;
use std::mem;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use log::{debug, error, trace};
use mio::{Events, Poll, Token, Waker};
use slab::Slab;

use crate::runtime::session::{
    Accepted, CloseReason, Env, Ready, Route, Session, Side, Step, split,
};
use crate::runtime::stats::{AcceptStats, WorkerStats};
use crate::runtime::timers::{FIRE_BATCH, Timers};

/// The waker's token. Session tokens are `key << 1 | side` and keys stay far
/// below `usize::MAX >> 2`, so this can never collide.
const WAKER: Token = Token(usize::MAX);

/// Readiness events taken per `poll` call. 1024 amortises the syscall over
/// many connections without making one batch (and its latency) too long.
const EVENTS_CAPACITY: usize = 1024;

/// Messages taken from the inbox per loop iteration, so a burst of accepts
/// cannot starve connections that are already open. The rest is taken on
/// the next iteration, which then polls without blocking.
const INBOX_BATCH: usize = 512;

/// How often [`Session::housekeep`] runs on each worker: a drained
/// backend's idle pooled connections close within this long even on a
/// worker that sees no traffic, at the cost of one wake-up per second.
pub const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// A message from the acceptor.
#[derive(Debug)]
pub enum Msg {
    /// A new connection to serve.
    Conn(Accepted),
    /// Stop taking connections; let sessions finish for at most `drain`,
    /// then close the rest and exit.
    Shutdown { drain: Duration },
}

/// The acceptor's handle on a running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    pub tx: Sender<Msg>,
    pub waker: Arc<Waker>,
    pub stats: Arc<WorkerStats>,
    pub thread: JoinHandle<()>,
}

impl WorkerHandle {
    /// Queues a message and wakes the worker. Returns false if the worker is gone.
    pub fn send(&self, msg: Msg) -> bool {
        self.tx.send(msg).is_ok() && self.wake()
    }

    /// Queues a message without waking; pair with [`WorkerHandle::wake`] to
    /// wake once per batch of accepted connections.
    pub fn queue(&self, msg: Msg) -> bool {
        self.tx.send(msg).is_ok()
    }

    pub fn wake(&self) -> bool {
        self.waker.wake().is_ok()
    }
}

/// Starts worker `id` on its own thread.
pub fn spawn<S: Session>(
    id: usize,
    ctx: S::Ctx,
    accept_stats: Arc<AcceptStats>,
) -> io::Result<WorkerHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let stats = Arc::new(WorkerStats::default());
    let worker = Worker::<S> {
        id,
        poll,
        rx,
        sessions: Slab::new(),
        ctx,
        stats: Arc::clone(&stats),
        accept_stats,
        again: Vec::new(),
        inbox_pending: false,
        timers: Timers::default(),
        draining_until: None,
        next_housekeeping: Instant::now() + HOUSEKEEPING,
    };
    let thread = thread::Builder::new()
        .name(format!("tidegate-w{id}"))
        .spawn(move || worker.run())?;
    Ok(WorkerHandle {
        tx,
        waker,
        stats,
        thread,
    })
}

struct Worker<S: Session> {
    id: usize,
    poll: Poll,
    rx: Receiver<Msg>,
    sessions: Slab<S>,
    ctx: S::Ctx,
    stats: Arc<WorkerStats>,
    accept_stats: Arc<AcceptStats>,
    /// Sessions that returned [`Step::Again`] during this batch.
    again: Vec<(usize, Side)>,
    /// The inbox had more than [`INBOX_BATCH`] messages last time.
    inbox_pending: bool,
    timers: Timers,
    /// Set once asked to stop: the time by which remaining sessions are cut.
    draining_until: Option<Instant>,
    /// When [`Session::housekeep`] runs next.
    next_housekeeping: Instant,
}

impl<S: Session> Worker<S> {
    fn run(mut self) {
        debug!("worker {} started", self.id);
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut resumed = Vec::new();
        loop {
            let now = Instant::now();
            let busy = !self.again.is_empty() || self.inbox_pending;
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                self.timeout(now)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if crate::runtime::io::is_interrupted(&e) {
                    continue;
                }
                error!(
                    "worker {}: poll failed: {e}; closing its connections",
                    self.id
                );
                break;
            }
            let now = Instant::now();
            if self.inbox_pending {
                self.drain_inbox(now);
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    self.drain_inbox(now);
                    S::kick(&mut self.ctx, &mut self.timers, now);
                    continue;
                }
                let (key, side) = split(ev.token());
                let ready = Ready {
                    side,
                    // Errors and hang-ups surface through the next read.
                    readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    writable: ev.is_writable() || ev.is_write_closed(),
                    read_closed: ev.is_read_closed() || ev.is_error(),
                };
                self.dispatch(key, ready, now);
            }
            // Sessions that yielded run once more per iteration; whatever
            // they still owe goes back on the list for the next one.
            mem::swap(&mut self.again, &mut resumed);
            for (key, side) in resumed.drain(..) {
                self.dispatch(key, Ready::resume(side), now);
            }
            self.fire_timers(now);
            S::between_batches(&mut self.ctx, now);
            if now >= self.next_housekeeping {
                S::housekeep(&mut self.ctx, now);
                S::kick(&mut self.ctx, &mut self.timers, now);
                self.next_housekeeping = now + HOUSEKEEPING;
            }
            if self
                .draining_until
                .is_some_and(|until| self.sessions.is_empty() || now >= until)
            {
                break;
            }
        }
        self.close_all();
        debug!("worker {} stopped", self.id);
    }

    /// Sleep until the next timer, the drain deadline or the next
    /// housekeeping, whichever is first.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        let housekeeping = self.next_housekeeping.saturating_duration_since(now);
        let drain = self
            .draining_until
            .map(|t| t.saturating_duration_since(now));
        [self.timers.next_timeout(now), drain]
            .into_iter()
            .flatten()
            .fold(housekeeping, Duration::min)
            .into()
    }

    fn fire_timers(&mut self, now: Instant) {
        for _ in 0..FIRE_BATCH {
            let Some(key) = self.timers.pop_due(now) else {
                return;
            };
            let (sessions, mut env) = self.parts(now);
            let Some(session) = sessions.get_mut(key) else {
                continue;
            };
            let step = session.timeout(&mut env);
            self.apply(key, Side::Client, step, now);
        }
    }

    /// Asked to stop: sessions finish what they are doing (or close now),
    /// for at most `drain`.
    fn begin_drain(&mut self, drain: Duration, now: Instant) {
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(super::timers::after(now, drain));
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            let (sessions, mut env) = self.parts(now);
            let Some(session) = sessions.get_mut(key) else {
                continue;
            };
            let step = session.drain(&mut env);
            self.apply(key, Side::Client, step, now);
        }
    }

    /// Takes up to [`INBOX_BATCH`] messages.
    fn drain_inbox(&mut self, now: Instant) {
        self.inbox_pending = false;
        for _ in 0..INBOX_BATCH {
            match self.rx.try_recv() {
                Ok(Msg::Conn(conn)) if self.draining_until.is_none() => self.open(conn, now),
                Ok(Msg::Conn(_)) => self.accept_stats.closed(),
                Ok(Msg::Shutdown { drain }) => self.begin_drain(drain, now),
                Err(TryRecvError::Disconnected) => self.begin_drain(Duration::ZERO, now),
                Err(TryRecvError::Empty) => return,
            }
        }
        self.inbox_pending = true;
    }

    /// The slab and an [`Env`] over the other fields, borrowed apart.
    fn parts(&mut self, now: Instant) -> (&mut Slab<S>, Env<'_, S::Ctx>) {
        let env = Env {
            registry: self.poll.registry(),
            ctx: &mut self.ctx,
            stats: &self.stats,
            timers: &mut self.timers,
            now,
        };
        (&mut self.sessions, env)
    }

    fn open(&mut self, conn: Accepted, now: Instant) {
        let peer = conn.peer;
        let (sessions, mut env) = self.parts(now);
        let entry = sessions.vacant_entry();
        let key = entry.key();
        match S::open(conn, key, &mut env) {
            Ok(session) => {
                entry.insert(session);
                self.stats.open.fetch_add(1, Relaxed);
                trace!("worker {}: opened {peer} as {key}", self.id);
            }
            Err(e) => {
                self.accept_stats.closed();
                debug!("worker {}: could not register {peer}: {e}", self.id);
            }
        }
    }

    fn dispatch(&mut self, key: usize, ready: Ready, now: Instant) {
        let (sessions, mut env) = self.parts(now);
        let (key, side) = match S::route(key, ready.side, ready, &mut env) {
            Route::To(key, side) => (key, side),
            Route::Handled => return,
        };
        // A stale or spurious token (the session closed earlier in this
        // batch) is expected and ignored.
        let Some(session) = sessions.get_mut(key) else {
            return;
        };
        let step = session.ready(Ready { side, ..ready }, &mut env);
        self.apply(key, side, step, now);
    }

    fn apply(&mut self, key: usize, side: Side, step: Step, now: Instant) {
        match step {
            Step::Continue => {}
            Step::Again => self.again.push((key, side)),
            Step::Close(reason) => self.close(key, reason, now),
        }
    }

    fn close(&mut self, key: usize, reason: CloseReason, now: Instant) {
        let (sessions, mut env) = self.parts(now);
        let Some(session) = sessions.try_remove(key) else {
            return;
        };
        session.close(reason, &mut env);
        self.stats.open.fetch_sub(1, Relaxed);
        self.accept_stats.closed();
    }

    fn close_all(&mut self) {
        let now = Instant::now();
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, CloseReason::Shutdown, now);
        }
        // Connections still queued in the inbox were counted as open.
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Conn(_) = msg {
                self.accept_stats.closed();
            }
        }
    }
}
