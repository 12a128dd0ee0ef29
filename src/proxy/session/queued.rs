//! Queued: a complete request head waits in the worker's queue for a
//! backend under its limit (`maxconn`).
//!
//! ```text
//!   Idle ──head, no backend under its limit──▶ Queued ──place freed, head of
//!                                               │ │ │     the queue──▶ Exchange
//!         --queue-timeout, or draining: 503 ◀───┘ │ └──▶ client left: 499, out
//!         queue full (on arrival): 503 ◀──────────┘       of the queue
//! ```
//!
//! A queued request reaches no backend, so nothing about it is held against
//! one: no selector sample, no ejection, no backend failure; its 503s are
//! the proxy's own outcomes (`queue_timeout`, `queue_full`, side `proxy`).
//! The client is still read while queued (bounded like a read-ahead), so a
//! client that leaves (EOF or reset) is taken out of the queue at once.

use std::sync::atomic::Ordering::Relaxed;

use super::*;
use crate::proxy::queue::Waiting;
use crate::proxy::slots::SlotGuard;

/// The answer to a request the queue refused or gave up on: 503 with
/// `Retry-After: 1`. One second, because the queue already waited (or was
/// full): the overload is worth a short pause before the client retries,
/// and most transient overloads last about that long.
const QUEUE_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 20\r\nRetry-After: 1\r\nConnection: close\r\n\r\nService Unavailable\n";

/// A request waiting in the worker's queue.
#[derive(Debug)]
pub struct Queued {
    /// The exchange to start, its clock running since the head arrived.
    ex: Exchange,
    /// Its place in the worker's queue.
    waiting: Waiting,
    /// Draining: answered 503 by then if still queued (half the drain
    /// timeout, so that the answer is flushed before the worker stops).
    drain_by: Option<Instant>,
}

impl Queued {
    /// When the request stops waiting.
    pub(super) fn deadline<N: Net>(&self, ctx: &ProxyCtx<N>) -> Instant {
        let by = ctx.queue.deadline(self.waiting.since);
        self.drain_by.map_or(by, |d| d.min(by))
    }
}

impl<N: Net> ProxySession<N> {
    /// A complete request head: to a backend under its limit now, or into
    /// the queue. Requests already queued on this worker go first.
    pub(super) fn dispatch(&mut self, mut ex: Exchange, env: &mut Ev<'_, '_, N>) -> bool {
        if env.ctx.queue.is_empty() {
            let shared = &env.ctx.shared;
            let Some(b) = shared.choose(env.now, None) else {
                // Every backend is drained: 503, and no backend blamed.
                self.answer_chosen_none(env);
                return true;
            };
            if let Some(slot) = shared.slots.try_acquire(b) {
                self.begin_exchange(ex, b, slot, env);
                return true;
            }
        }
        let ctx = &mut *env.ctx;
        let worker = usize::from(ctx.worker);
        let waiting = if ctx.shared.board.join(worker, ctx.shared.queue.max) {
            let pushed = ctx.queue.push(self.key, env.now).ok();
            if pushed.is_none() {
                ctx.shared.board.leave(worker);
            }
            pushed
        } else {
            None
        };
        let Some(waiting) = waiting else {
            count_status(503, &ctx.shared.stats);
            ctx.shared.board.full.fetch_add(1, Relaxed);
            log::debug!("{}: queue full: 503", self.client.peer);
            ex.queue_wait = Duration::ZERO;
            self.refuse(ex, LogOutcome::QueueFull, env);
            return true;
        };
        ctx.publish_head();
        log::trace!("{}: queued ({} here)", self.client.peer, ctx.queue.len());
        self.state = State::Queued(Box::new(Queued {
            ex,
            waiting,
            drain_by: None,
        }));
        // A place may have been freed between the check and joining
        // the queue (see `board`): the head looks again at once.
        ctx.kick_queue(env.timers, env.now);
        true
    }

    /// Attaches `ex` to backend `b`, holding `slot`: now an exchange.
    fn begin_exchange(
        &mut self,
        mut ex: Exchange,
        b: usize,
        slot: SlotGuard,
        env: &mut Ev<'_, '_, N>,
    ) {
        ex.slot = Some(slot);
        ex.attach(b, self.key, &mut self.bufs, env);
        self.state = State::Exchange(ex);
    }

    /// Queued: if this request is the head of the queue and a backend is
    /// under its limit, it leaves the queue for that backend. A client
    /// gone meanwhile ends the session (`on_close` takes it out).
    pub(super) fn try_admit(&mut self, env: &mut Ev<'_, '_, N>) -> Result<bool, CloseReason> {
        let State::Queued(q) = &self.state else {
            return Ok(false);
        };
        if self.client.eof {
            return Err(CloseReason::Done);
        }
        let ctx = &mut *env.ctx;
        if !ctx.queue.is_head(q.waiting.ticket) {
            return Ok(false);
        }
        let shared = &ctx.shared;
        let Some((b, slot)) = shared
            .choose(env.now, None)
            .and_then(|b| Some((b, shared.slots.try_acquire(b)?)))
        else {
            return Ok(false);
        };
        let State::Queued(q) = mem::replace(&mut self.state, closing(env.now)) else {
            return Ok(false);
        };
        let Queued {
            mut ex, waiting, ..
        } = *q;
        ctx.queue.remove(waiting.ticket);
        ctx.publish_head();
        let board = &ctx.shared.board;
        board.leave(usize::from(ctx.worker));
        board.admitted.fetch_add(1, Relaxed);
        ex.queue_wait = env.now.saturating_duration_since(waiting.since);
        board.record_wait(ex.queue_wait);
        // More places may be free: the next in line looks too.
        ctx.kick_queue(env.timers, env.now);
        self.begin_exchange(ex, b, slot, env);
        Ok(true)
    }

    /// Queued past its deadline (`--queue-timeout`, or the drain's): 503
    /// with `Retry-After`.
    pub(super) fn queue_timed_out(&mut self, env: &mut Ev<'_, '_, N>) {
        let Some((mut ex, waiting)) = self.unqueue(env) else {
            return;
        };
        let ctx = &*env.ctx;
        count_status(503, &ctx.shared.stats);
        ctx.shared.board.timeouts.fetch_add(1, Relaxed);
        ex.queue_wait = env.now.saturating_duration_since(waiting.since);
        ctx.shared.board.record_wait(ex.queue_wait);
        log::debug!(
            "{}: waited {:?} in the queue: 503",
            self.client.peer,
            ex.queue_wait
        );
        self.refuse(ex, LogOutcome::QueueTimeout, env);
    }

    /// Draining: a queued request waits at most half the drain timeout
    /// more, then is answered 503 (at once with no drain timeout).
    pub(super) fn drain_queued(&mut self, env: &mut Ev<'_, '_, N>) {
        let half = env.ctx.shared.timeouts.drain / 2;
        if let State::Queued(q) = &mut self.state {
            let by = after(env.now, half);
            q.drain_by = Some(q.drain_by.map_or(by, |d| d.min(by)));
            if half.is_zero() {
                self.queue_timed_out(env);
            }
        }
    }

    /// The session ends while queued (the client left, or the worker
    /// stopped): out of the queue, counted and logged as the client's
    /// abort (499); no backend was involved.
    pub(super) fn left_queue(&mut self, env: &mut Ev<'_, '_, N>) {
        let Some((mut ex, waiting)) = self.unqueue(env) else {
            return;
        };
        count(Fault::Client(ClientFault::Abort), &env.ctx.shared.stats);
        let wait = env.now.saturating_duration_since(waiting.since);
        let detail = ex.take_detail(env.now);
        log_proxy_row(env, wait, 499, LogOutcome::ClientAbort, detail);
    }

    /// Takes the request out of the state and the worker's queue; the
    /// next in line is offered a place if there is one.
    fn unqueue(&mut self, env: &mut Ev<'_, '_, N>) -> Option<(Exchange, Waiting)> {
        if !matches!(self.state, State::Queued(_)) {
            return None;
        }
        let State::Queued(q) = mem::replace(&mut self.state, closing(env.now)) else {
            return None;
        };
        let Queued { ex, waiting, .. } = *q;
        let ctx = &mut *env.ctx;
        let was_head = ctx.queue.is_head(waiting.ticket);
        if ctx.queue.remove(waiting.ticket).is_some() {
            ctx.shared.board.leave(usize::from(ctx.worker));
            ctx.publish_head();
        }
        if was_head {
            ctx.kick_queue(env.timers, env.now);
        }
        Some((ex, waiting))
    }

    /// The queue's own 503, then close (the request was counted already).
    fn refuse(&mut self, mut ex: Exchange, outcome: LogOutcome, env: &mut Ev<'_, '_, N>) {
        self.client.out.push(QUEUE_503);
        ex.bytes_out = QUEUE_503.len() as u64;
        let detail = ex.take_detail(env.now).map(|mut d| {
            d.attempts = 0;
            d
        });
        log_proxy_row(env, ex.queue_wait, 503, outcome, detail);
        self.begin_closing(env.now);
    }
}

/// A log row for a request no backend saw, with its queue wait.
fn log_proxy_row<N: Net>(
    env: &Ev<'_, '_, N>,
    queue_wait: Duration,
    status: u16,
    outcome: LogOutcome,
    detail: Option<Box<Detail>>,
) {
    if let Some(csv) = &env.ctx.csv {
        csv.send(super::super::csvlog::Row {
            at: std::time::SystemTime::now(),
            backend: None,
            latency: Duration::ZERO,
            status,
            outcome,
            worker: env.ctx.worker,
            queue_wait,
            detail,
        });
    }
}
