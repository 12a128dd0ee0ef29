//! One client connection of the proxy: one state machine, one enum.
//!
//! ```text
//!          head parsed                    response relayed, keep-alive
//!   Idle ─────────────▶ Exchange ───────────────────────────────────▶ Idle
//!    │ bad head: 4xx      │ │ │ 101 Switching Protocols
//!    │ header timeout:408 │ │ └──────────────────────────▶ Tunnel ──▶ (closed)
//!    │                    │ │ Fault::Backend, may retry (RFC 9110 §9.2.2):
//!    │                    │ └──▶ Exchange (again, on another backend)
//!    │                    │ Fault::Backend: 502/503/504 │ Fault::Client: 408/400
//!    ▼                    ▼ response cut / client gone: close
//!   Closing: flush what is owed, FIN, discard input briefly (lingering
//!            close), then close; bounded by LINGER in all.
//! ```
//!
//! Every failure is a [`Fault`] owned by one side; the transition it causes
//! is decided in one place (`ProxySession::on_flow`). Only backend faults
//! reach the selector, the ejector and the backend's failure metrics.
//!
//! Both sockets are registered once for READABLE | WRITABLE, edge-
//! triggered; the session tracks readiness itself, so a request costs no
//! `epoll_ctl` at all. The session is generic over [`Net`], so its unit
//! tests drive it over in-memory streams.

use std::mem;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::accesslog::{self, Detail};
use super::account::{blame, count, count_status, end_attempt, log_row, observe, wants_detail};
use super::client::{Buffers, Client};
use super::csvlog::Outcome as LogOutcome;
use super::exchange::{Exchange, Flow, Resp};
use super::fault::{self, BackendFault, ClientFault, Fault, Progress, Recovery};
use super::net::{Net, Tcp};
use super::tunnel::{Pass, Tunnel};
use super::{PENDING_LIMIT, ProxyCtx, ProxyStats};
use crate::balance::Outcome;
use crate::http::{self, HttpError};
use crate::metrics::End;
use crate::runtime::session::{
    Accepted, CloseReason, Env, Ready, Route, Session, Side, Step, token,
};
use crate::runtime::timers::after;

/// Rounds of "flush, pump, read, advance" per call before yielding to
/// other sessions (returning `Step::Again`).
const ROUNDS_PER_TURN: usize = 16;

/// How long a closing connection may take to flush its last bytes and then
/// discard the client's input, so that unread input does not turn our close
/// into a reset that destroys the response in flight (nginx's
/// lingering_close); also bounds a client that never reads its last answer.
const LINGER: Duration = Duration::from_secs(2);

/// Draining (stop, or a takeover by a new process), a keep-alive
/// connection idle for less than this is kept until its next request
/// (answered with `Connection: close`) or until it has been idle this long.
/// Closing it at once would race a request already on its way, which the
/// client would see as a reset: a busy client sends its next request within
/// microseconds to milliseconds of the previous answer, so 1 s covers a
/// loaded machine, while a connection quiet for longer is closed at once
/// (the same race as --idle-timeout, which clients must retry anyway).
const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

/// Input discarded while lingering before closing anyway.
const LINGER_BYTES: usize = 1 << 20;

/// Reads of one incomplete head after which its pace is checked. A real
/// client sends a head in one or two segments; eight reads of an unfinished
/// head mean it trickles in (a slow link, or a slowloris-style client).
const TRICKLE_READS: u32 = 8;

/// Average bytes per read below which a head counts as trickling: less
/// than a small header line per wake-up.
const TRICKLE_BYTES: usize = 64;

/// While a head trickles, the client is not read (nor are its bytes
/// reported) for this long between reads, so that one wake-up takes what
/// many segments brought. 5 ms is invisible next to the 10 s header
/// timeout, and cuts a byte-per-segment 16 KiB head from one wake-up per
/// byte (~175 ms of proxy CPU here) to ~24 ms, most of it the kernel
/// copying 16,000 one-byte segments out (measured: 20 ms pauses cost the
/// same, so longer pauses would only add latency).
const TRICKLE_PAUSE: Duration = Duration::from_millis(5);

/// Where the client connection is.
///
/// `Exchange` is the large variant (it carries the request id inline); it is
/// not boxed because a box would cost an allocation per request, while the
/// extra bytes sit once per connection in the worker's slab.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum State {
    /// Between requests, or reading a request head.
    Idle(Idle),
    /// A request is being proxied.
    Exchange(Exchange),
    /// Switched protocols: bytes both ways.
    Tunnel(Tunnel),
    /// Flushing the last bytes, then lingering, then closing.
    Closing(Linger),
}

/// Waiting for (the rest of) a request head.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    /// Since when the connection has been idle (for --idle-timeout).
    since: Instant,
    /// When the current head started arriving (for --header-timeout).
    head_started: Option<Instant>,
    /// Bytes of the current head already scanned for its end.
    scanned: usize,
    /// Reads that brought bytes of the current head.
    reads: u32,
    /// A trickling head: reading is paused until then.
    paused_until: Option<Instant>,
}

impl Idle {
    fn new(since: Instant) -> Self {
        Idle {
            since,
            head_started: None,
            scanned: 0,
            reads: 0,
            paused_until: None,
        }
    }
}

/// Closing: `fin_sent` once everything owed was flushed.
#[derive(Debug, Clone, Copy)]
pub struct Linger {
    started: Instant,
    fin_sent: bool,
    discarded: usize,
}

/// One proxied client connection.
#[derive(Debug)]
pub struct ProxySession<N: Net = Tcp> {
    key: usize,
    client: Client<N>,
    bufs: Buffers,
    state: State,
    /// The earliest wake-up scheduled with the worker.
    timer_at: Option<Instant>,
    draining: bool,
}

type Ev<'a, 'b, N> = Env<'a, ProxyCtx<N>>;

impl<N: Net> ProxySession<N> {
    /// A session for an accepted (and registered) client stream.
    pub fn start(stream: N::Stream, peer: SocketAddr, key: usize, env: &mut Ev<'_, '_, N>) -> Self {
        let mut s = ProxySession {
            key,
            client: Client::new(stream, peer),
            bufs: Buffers::default(),
            state: State::Idle(Idle::new(env.now)),
            timer_at: None,
            draining: false,
        };
        s.schedule(env);
        s
    }

    /// The state, for tests and debugging.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The client's stream, for tests.
    pub fn client_stream(&self) -> &N::Stream {
        &self.client.stream
    }

    /// Readiness on one of the session's sockets.
    pub fn on_ready(&mut self, ev: Ready, env: &mut Ev<'_, '_, N>) -> Step {
        env.ctx.refresh();
        match ev.side {
            Side::Client => {
                self.client.read_ready |= ev.readable;
                self.client.read_closed |= ev.read_closed;
                if ev.writable {
                    self.client.write_blocked = false;
                }
            }
            Side::Backend => {
                let key = match &self.state {
                    State::Exchange(ex) => ex.upstream,
                    State::Tunnel(t) => Some(t.upstream),
                    _ => None,
                };
                if let Some(up) = key.and_then(|k| env.ctx.upstreams.get_mut(k)) {
                    up.read_ready |= ev.readable;
                    up.read_closed |= ev.read_closed;
                    up.write_ready |= ev.writable;
                }
            }
        }
        self.drive(env).unwrap_or_else(Step::Close)
    }

    /// A deadline this session scheduled may have passed.
    pub fn on_timeout(&mut self, env: &mut Ev<'_, '_, N>) -> Step {
        env.ctx.refresh();
        self.timed_out(env)
            .and_then(|()| self.drive(env))
            .unwrap_or_else(Step::Close)
    }

    /// The server is stopping: finish the request in hand, take no other.
    /// A connection idle for less than [`DRAIN_IDLE_GRACE`] is likely to
    /// have its next request on the way: it is kept that long, and that
    /// request is answered with `Connection: close`.
    pub fn on_drain(&mut self, env: &mut Ev<'_, '_, N>) -> Step {
        env.ctx.refresh();
        self.draining = true;
        if let State::Idle(i) = &self.state
            && self.client.input.is_empty()
            && env.now.saturating_duration_since(i.since) >= DRAIN_IDLE_GRACE
        {
            return Step::Close(CloseReason::Shutdown);
        }
        self.drive(env).unwrap_or_else(Step::Close)
    }

    /// Releases what the session holds and counts its end.
    pub fn on_close(mut self, reason: CloseReason, env: &mut Ev<'_, '_, N>) {
        match mem::replace(&mut self.state, closing(env.now)) {
            State::Exchange(mut ex) => {
                // The client connection ends first: not the backend's doing.
                let elapsed = ex.latency(env.now);
                count(Fault::Client(ClientFault::Abort), &env.ctx.shared.stats);
                let detail = ex.take_detail(env.now);
                log_row(
                    env,
                    Some(&ex),
                    elapsed,
                    499,
                    LogOutcome::ClientAbort,
                    detail,
                );
                end_attempt(&mut ex, env, 499, elapsed, End::Abandoned);
                release(&mut ex.upstream, env, false);
            }
            State::Tunnel(t) => {
                env.ctx.upstreams.close(t.upstream);
                ProxyStats::drop_gauge(&env.ctx.shared.stats.tunnels_open);
            }
            State::Idle(_) | State::Closing(_) => {}
        }
        env.stats.record_close(reason, self.client.bytes_out);
    }

    /// Everything the session can do now, bounded.
    fn drive(&mut self, env: &mut Ev<'_, '_, N>) -> Result<Step, CloseReason> {
        for _ in 0..ROUNDS_PER_TURN {
            let mut client_moved = self.client.flush()?;
            let mut progress = self.pump(env)?;
            if self.wants_client_input() {
                let mut scratch = mem::take(&mut env.ctx.scratch);
                let read = self.client.read(&mut scratch);
                env.ctx.scratch = scratch;
                client_moved |= read?;
            }
            if client_moved {
                self.touch(env.now);
            }
            progress |= client_moved;
            progress |= self.advance(env)?;
            if !progress {
                self.schedule(env);
                return Ok(Step::Continue);
            }
        }
        self.schedule(env);
        Ok(Step::Again)
    }

    /// The client moved bytes: its inactivity clock restarts.
    fn touch(&mut self, now: Instant) {
        match &mut self.state {
            State::Exchange(ex) => ex.last_progress = now,
            State::Tunnel(t) => t.last_progress = now,
            State::Idle(_) | State::Closing(_) => {}
        }
    }

    /// Backend-side work of the current state.
    fn pump(&mut self, env: &mut Ev<'_, '_, N>) -> Result<bool, CloseReason> {
        match &mut self.state {
            State::Exchange(ex) => {
                let flow = ex.pump(&mut self.client, &mut self.bufs, self.draining, env);
                self.on_flow(flow, env)
            }
            State::Tunnel(t) => match t.pump(&mut self.client, &mut self.bufs, env)? {
                Pass::Stalled => Ok(false),
                Pass::Moved => Ok(true),
                Pass::Done => Err(CloseReason::Done),
            },
            State::Idle(_) | State::Closing(_) => Ok(false),
        }
    }

    /// Client-side work of the current state.
    fn advance(&mut self, env: &mut Ev<'_, '_, N>) -> Result<bool, CloseReason> {
        match &mut self.state {
            State::Idle(_) => self.parse_head(env),
            State::Exchange(ex) => {
                let flow = ex.forward_body(&mut self.client, &mut self.bufs, env.ctx);
                self.on_flow(flow, env)
            }
            State::Tunnel(_) => Ok(false),
            State::Closing(_) => self.linger(env),
        }
    }

    /// Whether the session wants more client bytes right now.
    fn wants_client_input(&self) -> bool {
        match &self.state {
            // The parser enforces the head size limits; stop once past them.
            State::Idle(i) => i.paused_until.is_none() && self.client.input.len() <= http::MAX_HEAD,
            State::Exchange(ex) if ex.wants_body() => self.bufs.bout.owed() < PENDING_LIMIT,
            // The request is complete: read ahead (pipelined requests,
            // bounded like a head) so that a client reset is noticed while
            // the backend works, not only when the response is written.
            State::Exchange(_) => self.client.input.len() <= http::MAX_HEAD,
            State::Tunnel(t) => t.wants_client_input(&self.bufs),
            State::Closing(_) => false,
        }
    }

    /// Idle: parse a request head from the client's input and start its
    /// exchange.
    fn parse_head(&mut self, env: &mut Ev<'_, '_, N>) -> Result<bool, CloseReason> {
        let State::Idle(idle) = &mut self.state else {
            return Ok(false);
        };
        if self.client.input.is_empty() {
            // Draining, an idle connection ends at its deadline (below).
            if self.client.eof {
                return Err(CloseReason::Done);
            }
            return Ok(false);
        }
        idle.head_started.get_or_insert(env.now);
        // httparse re-reads from the start: only call it when it can answer
        // (a head trickling in byte by byte is scanned once, not n times).
        let grew = self.client.input.len() > idle.scanned;
        if !self.client.eof && !http::parse_due(&self.client.input, &mut idle.scanned) {
            if !grew {
                return Ok(false);
            }
            idle.reads = idle.reads.saturating_add(1);
            let trickle = idle.reads >= TRICKLE_READS
                && self.client.input.len() < idle.reads as usize * TRICKLE_BYTES;
            if trickle && idle.paused_until.is_none() {
                let tok = token(self.key, Side::Client);
                if N::set_reading(&mut self.client.stream, env.registry, tok, false).is_ok() {
                    idle.paused_until = Some(after(env.now, TRICKLE_PAUSE));
                }
            }
            return Ok(false);
        }
        let close_backend = env.ctx.shared.backend_conn == crate::config::BackendConn::Close;
        let mut fields = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
        let parsed = match http::parse_request(&self.client.input, &mut fields) {
            Ok(Some(p)) => {
                self.bufs.head.clear();
                let detail =
                    wants_detail(env.ctx).then(|| Box::new(detail_of(&p, self.client.peer)));
                let ctx = &mut *env.ctx;
                let mut head = p.head;
                head.request_id = p.write_head(
                    self.client.peer.ip(),
                    close_backend,
                    &ctx.shared.forward,
                    &mut ctx.ids,
                    &mut self.bufs.head,
                );
                Ok(Some((head, detail)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match parsed {
            // The client gave up mid-head.
            Ok(None) if self.client.eof => {
                self.reject(HttpError::BadRequest("incomplete request head"), env);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                self.reject(e, env);
                Ok(true)
            }
            Ok(Some((head, detail))) => {
                self.client.input.drain(..head.head_len);
                let shared = &env.ctx.shared;
                ProxyStats::bump(&shared.stats.requests);
                shared.retry_budget.request(env.now);
                let Some(b) = shared.choose(env.now, None) else {
                    // Every backend is drained: 503, and no backend blamed.
                    self.answer_chosen_none(env);
                    return Ok(true);
                };
                let mut ex = Exchange::new(head, env.now);
                ex.log = detail;
                ex.attach(b, self.key, &mut self.bufs, env);
                self.state = State::Exchange(ex);
                Ok(true)
            }
        }
    }

    /// Answers a bad request with its status and closes afterwards.
    fn reject(&mut self, e: HttpError, env: &mut Ev<'_, '_, N>) {
        let status = e.status();
        log::debug!("{}: rejected request: {e} -> {status}", self.client.peer);
        self.answer_alone(status, LogOutcome::BadRequest, env);
    }

    /// The proxy's own answer to a request no backend saw, then close.
    fn answer_alone(&mut self, status: u16, outcome: LogOutcome, env: &mut Ev<'_, '_, N>) {
        let answer = http::error_response(status);
        self.client.out.push(answer);
        let stats = &env.ctx.shared.stats;
        ProxyStats::bump(&stats.requests);
        count_status(status, stats);
        let detail = wants_detail(env.ctx).then(|| {
            let bytes_in = self.client.input.len() as u64;
            Box::new(Detail::unparsed(
                self.client.peer,
                bytes_in,
                answer.len() as u64,
            ))
        });
        log_row(env, None, Duration::ZERO, status, outcome, detail);
        self.begin_closing(env.now);
    }

    /// No backend may take the request (all drained): 503, then close.
    /// The request was counted already.
    fn answer_chosen_none(&mut self, env: &mut Ev<'_, '_, N>) {
        self.client.out.push(http::error_response(503));
        count_status(503, &env.ctx.shared.stats);
        let detail = wants_detail(env.ctx).then(|| {
            let bytes_in = self.client.input.len() as u64;
            Box::new(Detail::unparsed(self.client.peer, bytes_in, 0))
        });
        log_row(
            env,
            None,
            Duration::ZERO,
            503,
            LogOutcome::ConnectFailed,
            detail,
        );
        self.begin_closing(env.now);
    }

    /// Stop taking requests: flush, then linger, then close.
    fn begin_closing(&mut self, now: Instant) {
        self.state = closing(now);
        self.client.input.clear();
    }

    /// The one place where an exchange's step becomes a transition.
    fn on_flow(&mut self, flow: Flow, env: &mut Ev<'_, '_, N>) -> Result<bool, CloseReason> {
        match flow {
            Flow::Stalled => Ok(false),
            Flow::Moved => Ok(true),
            Flow::Complete => {
                self.complete(env);
                Ok(true)
            }
            Flow::Switched => {
                self.switch(env);
                Ok(true)
            }
            Flow::Failed(Fault::Backend(f)) => self.backend_failed(f, env),
            Flow::Failed(Fault::Client(f)) => self.client_failed(f, env),
        }
    }

    /// Takes the exchange out of the state (leaving `Closing`).
    fn take_exchange(&mut self, now: Instant) -> Option<Exchange> {
        match mem::replace(&mut self.state, closing(now)) {
            State::Exchange(ex) => Some(ex),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The response was relayed in full.
    fn complete(&mut self, env: &mut Ev<'_, '_, N>) {
        let now = env.now;
        let Some(mut ex) = self.take_exchange(now) else {
            return;
        };
        let (latency, status) = (ex.latency(now), ex.status);
        end_attempt(&mut ex, env, status, latency, End::Answered);
        env.ctx.record_latency(latency);
        // A 5xx is a failed attempt for routing, however fast it came.
        let outcome = if status >= 500 {
            Outcome::Failure { elapsed: latency }
        } else {
            Outcome::Success { latency }
        };
        observe(&ex, outcome, env);
        let shared = &env.ctx.shared;
        count_status(status, &shared.stats);
        let detail = ex.take_detail(now);
        log_row(env, Some(&ex), latency, status, LogOutcome::Ok, detail);
        let reuse = shared.backend_conn == crate::config::BackendConn::Persistent
            && ex.resp_keep_alive
            && ex.req_done
            && !ex.backend_eof
            && self.bufs.bin.is_empty();
        release(&mut ex.upstream, env, reuse);
        self.bufs.bin.clear();
        if !ex.close_after && ex.req_done && !self.draining {
            self.state = State::Idle(Idle::new(now));
        } else {
            self.begin_closing(now);
        }
    }

    /// 101 relayed: the connection becomes a tunnel.
    fn switch(&mut self, env: &mut Ev<'_, '_, N>) {
        let now = env.now;
        let Some(mut ex) = self.take_exchange(now) else {
            return;
        };
        let (latency, status) = (ex.latency(now), ex.status);
        end_attempt(&mut ex, env, status, latency, End::Answered);
        observe(&ex, Outcome::Success { latency }, env);
        let shared = &env.ctx.shared;
        count_status(status, &shared.stats);
        ProxyStats::bump(&shared.stats.tunnels);
        ProxyStats::bump(&shared.stats.tunnels_open);
        let detail = ex.take_detail(now);
        log_row(
            env,
            Some(&ex),
            latency,
            status,
            LogOutcome::Upgraded,
            detail,
        );
        let Some(upstream) = ex.upstream.take() else {
            self.begin_closing(now);
            return;
        };
        self.client.input.shrink_to(http::MAX_HEAD);
        let t = Tunnel::open(upstream, ex.backend, &mut self.client, &mut self.bufs, now);
        self.state = State::Tunnel(t);
    }

    /// The backend failed this attempt: retry where RFC 9110 allows, else
    /// answer or cut the response short. The backend is blamed, except for
    /// a pooled connection it had closed before we wrote to it.
    fn backend_failed(
        &mut self,
        f: BackendFault,
        env: &mut Ev<'_, '_, N>,
    ) -> Result<bool, CloseReason> {
        let now = env.now;
        let Some(mut ex) = self.take_exchange(now) else {
            return Ok(false);
        };
        let progress = ex.progress();
        // A stale pooled connection says nothing about the backend.
        let stale = ex.reused(env.ctx) && f == BackendFault::Reset && !ex.relayed;
        release(&mut ex.upstream, env, false);
        if !stale {
            blame(&ex, f, env);
        }
        count(Fault::Backend(f), &env.ctx.shared.stats);
        let end = if stale { End::Abandoned } else { End::Failed };
        let elapsed = ex.latency(now);
        // The failed backend as the current configuration knows it (a
        // reload may have moved or removed it since the attempt began).
        let failed = env.ctx.current_index(ex.generation, ex.backend);
        let shared = &env.ctx.shared;
        // A stale pooled connection is not a backend failure: its retry does
        // not spend the retry budget (still at most one per request).
        if fault::may_retry(ex.req.method, f, progress, ex.retried, ex.body_sent > 0)
            && (stale || shared.retry_budget.try_retry(now))
        {
            // Prefer another backend even after a stale pooled connection:
            // when a backend dies, all its pooled connections fail at once.
            // With no other, a stale one is retried on a fresh connection.
            let other = match failed {
                Some(b) => shared.choose(now, Some(b)),
                None => shared.choose(now, None),
            };
            if let Some(next) = other.or(failed.filter(|_| stale)) {
                ProxyStats::bump(&shared.stats.retries);
                end_attempt(&mut ex, env, 0, elapsed, end);
                ex.retried = true;
                ex.relayed = false;
                ex.resp = Resp::AwaitHead;
                ex.attach(next, self.key, &mut self.bufs, env);
                self.state = State::Exchange(ex);
                return Ok(true);
            }
        }
        self.give_up(ex, Fault::Backend(f), end, env)
    }

    /// The client failed: nothing is held against the backend, whose
    /// connection is closed (its state mid-request is unknown).
    fn client_failed(
        &mut self,
        f: ClientFault,
        env: &mut Ev<'_, '_, N>,
    ) -> Result<bool, CloseReason> {
        let Some(mut ex) = self.take_exchange(env.now) else {
            return Ok(false);
        };
        release(&mut ex.upstream, env, false);
        count(Fault::Client(f), &env.ctx.shared.stats);
        if f == ClientFault::Abort {
            let elapsed = ex.latency(env.now);
            let detail = ex.take_detail(env.now);
            log_row(
                env,
                Some(&ex),
                elapsed,
                499,
                LogOutcome::ClientAbort,
                detail,
            );
            end_attempt(&mut ex, env, 499, elapsed, End::Abandoned);
            return Err(CloseReason::Done);
        }
        self.give_up(ex, Fault::Client(f), End::Abandoned, env)
    }

    /// No retry: answer with the fault's status if no byte of a final
    /// response reached the client yet (unqueueing what was queued), else
    /// close, the only way left to say the response is incomplete.
    fn give_up(
        &mut self,
        mut ex: Exchange,
        f: Fault,
        end: End,
        env: &mut Ev<'_, '_, N>,
    ) -> Result<bool, CloseReason> {
        let head_queued = matches!(ex.resp, Resp::Body(_));
        let unsent = !head_queued || self.client.bytes_out <= ex.resp_at;
        let progress = if unsent {
            Progress::Sent
        } else {
            Progress::Answered
        };
        let elapsed = ex.latency(env.now);
        match fault::recovery(f, progress) {
            Recovery::Answer(status) => {
                if head_queued {
                    // Unqueue the head and body bytes relayed so far.
                    let queued = self.client.bytes_out + self.client.out.owed() as u64 - ex.resp_at;
                    let tail = self.client.out.tail();
                    tail.truncate(tail.len().saturating_sub(queued as usize));
                }
                end_attempt(&mut ex, env, status, elapsed, end);
                count_status(status, &env.ctx.shared.stats);
                let answer = http::error_response(status);
                ex.bytes_out = answer.len() as u64;
                let detail = ex.take_detail(env.now);
                log_row(env, Some(&ex), elapsed, status, f.outcome(), detail);
                self.client.out.push(answer);
                self.begin_closing(env.now);
                Ok(true)
            }
            Recovery::Close => {
                let status = ex.status;
                end_attempt(&mut ex, env, status, elapsed, end);
                let outcome = match f {
                    Fault::Backend(_) => LogOutcome::Truncated,
                    Fault::Client(_) => f.outcome(),
                };
                let detail = ex.take_detail(env.now);
                log_row(env, Some(&ex), elapsed, status, outcome, detail);
                Err(match f {
                    Fault::Backend(_) => CloseReason::Error,
                    Fault::Client(_) => CloseReason::Done,
                })
            }
        }
    }

    /// Closing: FIN once flushed, then discard input until EOF or LINGER.
    fn linger(&mut self, env: &mut Ev<'_, '_, N>) -> Result<bool, CloseReason> {
        let State::Closing(l) = &mut self.state else {
            return Ok(false);
        };
        if !self.client.out.is_empty() {
            return Ok(false);
        }
        if !l.fin_sent {
            N::shutdown_write(&self.client.stream);
            l.fin_sent = true;
            return Ok(true);
        }
        if self.client.eof || l.discarded > LINGER_BYTES {
            return Err(CloseReason::Done);
        }
        let scratch = &mut env.ctx.scratch;
        match self.client.discard(scratch, LINGER_BYTES) {
            None => Err(CloseReason::Done),
            Some(n) => {
                l.discarded += n;
                Ok(n > 0)
            }
        }
    }

    /// The next moment something times out.
    fn deadline(&self, env: &Ev<'_, '_, N>) -> Instant {
        let t = &env.ctx.shared.timeouts;
        match &self.state {
            State::Idle(i) => match (i.head_started, i.paused_until) {
                (Some(started), Some(resume)) => resume.min(after(started, t.header)),
                (Some(started), None) => after(started, t.header),
                (None, _) if self.draining => after(i.since, t.idle.min(DRAIN_IDLE_GRACE)),
                (None, _) => after(i.since, t.idle),
            },
            State::Exchange(ex) if ex.connecting(env.ctx) => after(ex.conn_started, t.connect),
            State::Exchange(ex) if ex.waits_on_client(&self.client, &self.bufs) => {
                after(ex.last_progress, t.client)
            }
            State::Exchange(ex) => after(ex.last_progress, t.backend),
            State::Tunnel(tu) => after(tu.last_progress, t.tunnel),
            State::Closing(l) => after(l.started, LINGER),
        }
    }

    fn schedule(&mut self, env: &mut Ev<'_, '_, N>) {
        let at = self.deadline(env);
        if self.timer_at.is_none_or(|t| at < t) {
            env.timers.schedule(at, self.key);
            self.timer_at = Some(at);
        }
    }

    /// A deadline passed: the side being waited on is at fault.
    fn timed_out(&mut self, env: &mut Ev<'_, '_, N>) -> Result<(), CloseReason> {
        // Whatever was scheduled has fired (or was overtaken); re-arm later.
        self.timer_at = None;
        if let State::Idle(i) = &mut self.state
            && i.paused_until.is_some_and(|at| at <= env.now)
        {
            // The pause of a trickling head is over: read what piled up.
            i.paused_until = None;
            let tok = token(self.key, Side::Client);
            N::set_reading(&mut self.client.stream, env.registry, tok, true)
                .map_err(|_| CloseReason::Error)?;
            self.client.read_ready = true;
        }
        if self.deadline(env) > env.now {
            return Ok(());
        }
        let fault = match &self.state {
            State::Idle(i) if i.head_started.is_some() => {
                count(Fault::Client(ClientFault::Timeout), &env.ctx.shared.stats);
                self.answer_alone(408, LogOutcome::ClientTimeout, env);
                return Ok(());
            }
            State::Idle(_) | State::Tunnel(_) | State::Closing(_) => {
                return Err(CloseReason::Done);
            }
            State::Exchange(ex) if ex.connecting(env.ctx) => {
                Fault::Backend(BackendFault::ConnectTimeout)
            }
            State::Exchange(ex) if ex.waits_on_client(&self.client, &self.bufs) => {
                Fault::Client(ClientFault::Timeout)
            }
            State::Exchange(_) => Fault::Backend(BackendFault::Timeout),
        };
        self.on_flow(Flow::Failed(fault), env).map(|_| ())
    }
}

/// The access log's copy of a parsed request's line and fields.
fn detail_of(p: &http::ParsedRequest<'_, '_>, client: SocketAddr) -> Detail {
    let field = |name: &str| {
        p.headers()
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| accesslog::bounded_bytes(h.value))
    };
    let mut d = Detail::unparsed(client, 0, 0);
    d.method = accesslog::bounded(p.method_str());
    d.path = accesslog::bounded(p.target());
    d.minor = p.head.minor;
    d.user_agent = field("user-agent");
    d.referer = field("referer");
    d
}

/// The Closing state, starting now.
fn closing(now: Instant) -> State {
    State::Closing(Linger {
        started: now,
        fin_sent: false,
        discarded: 0,
    })
}

/// Gives a backend connection back to the pool, or closes it.
fn release<N: Net>(upstream: &mut Option<usize>, env: &mut Ev<'_, '_, N>, reuse: bool) {
    let Some(key) = upstream.take() else { return };
    if reuse {
        env.ctx.upstreams.checkin(key, env.now);
    } else {
        env.ctx.upstreams.close(key);
    }
}

impl Session for ProxySession<Tcp> {
    type Ctx = ProxyCtx<Tcp>;

    fn open(conn: Accepted, key: usize, env: &mut Env<'_, ProxyCtx<Tcp>>) -> std::io::Result<Self> {
        let mut stream = conn.stream;
        env.registry.register(
            &mut stream,
            token(key, Side::Client),
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )?;
        Ok(ProxySession::start(stream, conn.peer, key, env))
    }

    fn ready(&mut self, ev: Ready, env: &mut Env<'_, ProxyCtx<Tcp>>) -> Step {
        self.on_ready(ev, env)
    }

    fn timeout(&mut self, env: &mut Env<'_, ProxyCtx<Tcp>>) -> Step {
        self.on_timeout(env)
    }

    fn drain(&mut self, env: &mut Env<'_, ProxyCtx<Tcp>>) -> Step {
        self.on_drain(env)
    }

    fn housekeep(ctx: &mut ProxyCtx<Tcp>, _now: Instant) {
        ctx.upstreams.sweep();
    }

    fn route(key: usize, side: Side, ready: Ready, env: &mut Env<'_, ProxyCtx<Tcp>>) -> Route {
        route(key, side, ready, env)
    }

    fn close(self, reason: CloseReason, env: &mut Env<'_, ProxyCtx<Tcp>>) {
        self.on_close(reason, env);
    }
}

/// Backend tokens belong to the worker's pool: readiness goes to the
/// session owning the connection, or to the pool for an idle one.
pub fn route<N: Net>(key: usize, side: Side, ready: Ready, env: &mut Ev<'_, '_, N>) -> Route {
    if side == Side::Client {
        return Route::To(key, side);
    }
    match env.ctx.upstreams.get(key).map(|u| u.owner) {
        Some(Some(owner)) => Route::To(owner, Side::Backend),
        Some(None) => {
            if ready.readable {
                let ctx = &mut *env.ctx;
                ctx.upstreams.on_idle_event(key, &mut ctx.scratch);
            }
            Route::Handled
        }
        None => Route::Handled,
    }
}
