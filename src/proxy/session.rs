//! One client connection of the proxy: a loop of request/response
//! exchanges over a keep-alive connection.
//!
//! ```text
//!            head complete                 response relayed, keep-alive
//!   Idle ───────────────────▶ Exchange ──────────────────────────────▶ Idle
//!    │ ▲ (pipelined bytes       │ failure before any response byte:
//!    │ │  are parsed at once)   │   retry once elsewhere, else 502/504
//!    │ bad head: 4xx            │ close wanted / framing unsyncable
//!    ▼                          ▼
//!   Closing: flush what is owed, shut down writing, discard input
//!            briefly (lingering close, so the last response is not lost
//!            to a reset), then close.
//! ```
//!
//! Both sockets are registered once for READABLE | WRITABLE, edge-
//! triggered; the session tracks readiness itself, so a request costs no
//! `epoll_ctl` at all.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::csvlog::{Outcome, Row};
use super::exchange::Exchange;
use super::{PENDING_LIMIT, ProxyCtx, ProxyStats};
use crate::http::{self, HttpError};
use crate::runtime::buffer::{Outbuf, WriteError};
use crate::runtime::io::{self as sio, Fault, Io};
use crate::runtime::session::{
    Accepted, CloseReason, Env, Ready, Route, Session, Side, Step, token,
};

/// Rounds of "flush, read, advance" per call before yielding to other
/// sessions (returning `Step::Again`).
const ROUNDS_PER_TURN: usize = 16;

/// How long a closing connection keeps discarding the client's input after
/// our last byte, so that unread input does not turn our close into a reset
/// that destroys the response in flight (nginx's lingering_close).
const LINGER: Duration = Duration::from_secs(2);

/// Input discarded while lingering before closing anyway.
const LINGER_BYTES: usize = 1 << 20;

pub(super) type Env2<'a, 'b> = Env<'a, ProxyCtx>;

/// Where the client connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Between requests, or reading a request head.
    Idle,
    /// A request is being proxied (`exchange` is set).
    Exchange,
    /// Flushing the last bytes, then lingering, then closing.
    Closing,
}

/// One proxied client connection.
#[derive(Debug)]
pub struct ProxySession {
    pub(super) client: TcpStream,
    pub(super) key: usize,
    pub(super) peer: SocketAddr,
    pub(super) phase: Phase,
    /// Bytes read from the client not yet consumed (head, body, pipelined).
    pub(super) cin: Vec<u8>,
    /// Bytes owed to the client.
    pub(super) cout: Outbuf,
    c_read_ready: bool,
    c_write_blocked: bool,
    c_read_closed: bool,
    /// The client sent FIN.
    pub(super) c_eof: bool,
    pub(super) exchange: Option<Exchange>,
    /// Buffers reused by every exchange of this connection.
    pub(super) bufs: Buffers,
    /// When the current request head started arriving.
    head_started: Option<Instant>,
    last_active: Instant,
    /// Lingering started: shutdown(Write) sent, input discarded until then.
    linger_until: Option<Instant>,
    lingered: usize,
    /// The earliest wake-up scheduled with the worker.
    timer_at: Option<Instant>,
    pub(super) draining: bool,
    /// Bytes written to the client.
    pub(super) bytes_out: u64,
}

/// Per-connection buffers kept across exchanges, so steady keep-alive
/// traffic allocates nothing per request.
#[derive(Debug, Default)]
pub(super) struct Buffers {
    /// Bytes owed to the backend.
    pub bout: Outbuf,
    /// Bytes read from the backend, not yet relayed.
    pub bin: Vec<u8>,
    /// The rewritten request head, kept for one retry.
    pub head: Vec<u8>,
}

impl ProxySession {
    fn flush_client(&mut self) -> Result<bool, CloseReason> {
        if self.cout.is_empty() || self.c_write_blocked {
            return Ok(false);
        }
        let sent = self.cout.flush(&mut self.client).map_err(write_closed)?;
        self.c_write_blocked = sent.blocked;
        self.bytes_out += sent.bytes as u64;
        Ok(sent.bytes > 0)
    }

    /// Whether the session wants more client bytes right now.
    fn wants_client_input(&self) -> bool {
        match self.phase {
            // The parser enforces the head size limits; stop once past them.
            Phase::Idle => self.cin.len() <= http::MAX_HEAD,
            Phase::Exchange => match self.exchange.as_ref() {
                Some(ex) if ex.wants_body() => self.bufs.bout.owed() < PENDING_LIMIT,
                // The request is complete: read ahead (pipelined requests,
                // bounded like a head) so that a client reset is noticed
                // while the backend works, not only when the response is
                // written.
                Some(_) => self.cin.len() <= http::MAX_HEAD,
                None => false,
            },
            Phase::Closing => false,
        }
    }

    fn read_client(&mut self, scratch: &mut [u8]) -> Result<bool, CloseReason> {
        if !self.c_read_ready || self.c_eof {
            return Ok(false);
        }
        match sio::read(&mut self.client, scratch) {
            Io::Done(n) => {
                if n < scratch.len() && !self.c_read_closed {
                    self.c_read_ready = false;
                }
                self.cin
                    .extend_from_slice(scratch.get(..n).unwrap_or_default());
                Ok(true)
            }
            Io::WouldBlock => {
                self.c_read_ready = false;
                Ok(false)
            }
            Io::Closed => {
                self.c_eof = true;
                Ok(true)
            }
            Io::Failed(Fault::Reset) => Err(CloseReason::Reset),
            Io::Failed(Fault::Other(_)) => Err(CloseReason::Error),
        }
    }

    /// Idle: parse a request head from `cin` and start its exchange.
    fn advance_idle(&mut self, env: &mut Env2<'_, '_>) -> Result<bool, CloseReason> {
        if self.cin.is_empty() {
            if self.c_eof || self.draining {
                return Err(CloseReason::Done);
            }
            return Ok(false);
        }
        self.head_started.get_or_insert(env.now);
        let close_backend = env.ctx.shared.backend_conn == crate::config::BackendConn::Close;
        let mut fields = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
        let parsed = match http::parse_request(&self.cin, &mut fields) {
            Ok(Some(p)) => {
                self.bufs.head.clear();
                let ctx = &mut *env.ctx;
                let mut head = p.head;
                head.request_id = p.write_head(
                    self.peer.ip(),
                    close_backend,
                    &ctx.shared.forward,
                    &mut ctx.ids,
                    &mut self.bufs.head,
                );
                Ok(Some(head))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match parsed {
            Ok(None) if self.c_eof => {
                // The client gave up mid-head.
                self.reject(HttpError::BadRequest("incomplete request head"), env);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                self.reject(e, env);
                Ok(true)
            }
            Ok(Some(head)) => {
                self.cin.drain(..head.head_len);
                self.head_started = None;
                let ex = Exchange::start(head, self, env);
                self.exchange = Some(ex);
                self.phase = Phase::Exchange;
                Ok(true)
            }
        }
    }

    /// Answers a bad request with its status and closes afterwards.
    fn reject(&mut self, e: HttpError, env: &mut Env2<'_, '_>) {
        let status = e.status();
        log::debug!("{}: rejected request: {e} -> {status}", self.peer);
        self.cout.push(http::error_response(status));
        let stats = &env.ctx.shared.stats;
        ProxyStats::bump(&stats.requests);
        // 501 (CONNECT, unknown codings) and 505 are server errors.
        ProxyStats::bump(if status >= 500 {
            &stats.status_5xx
        } else {
            &stats.status_4xx
        });
        self.log_row(env, None, Duration::ZERO, status, Outcome::BadRequest);
        self.begin_closing();
    }

    pub(super) fn log_row(
        &self,
        env: &Env2<'_, '_>,
        backend: Option<usize>,
        latency: Duration,
        status: u16,
        outcome: Outcome,
    ) {
        if let Some(csv) = &env.ctx.csv {
            csv.send(Row {
                at: SystemTime::now(),
                backend,
                latency,
                status,
                outcome,
                worker: env.ctx.worker,
            });
        }
    }

    /// Stop taking requests: flush, then linger, then close.
    pub(super) fn begin_closing(&mut self) {
        self.phase = Phase::Closing;
        self.cin.clear();
    }

    /// Called when an exchange finished relaying its response.
    pub(super) fn exchange_done(&mut self, keep_alive: bool, now: Instant) {
        self.exchange = None;
        self.last_active = now;
        if keep_alive && !self.draining {
            self.phase = Phase::Idle;
        } else {
            self.begin_closing();
        }
    }

    fn closing(&mut self, env: &mut Env2<'_, '_>) -> Result<bool, CloseReason> {
        if !self.cout.is_empty() {
            return Ok(false);
        }
        let Some(until) = self.linger_until else {
            // Everything is sent: our FIN now, then discard input for a while.
            let _ = self.client.shutdown(Shutdown::Write);
            self.linger_until = Some(env.now + LINGER);
            return Ok(true);
        };
        if self.c_eof || env.now >= until || self.lingered > LINGER_BYTES {
            return Err(CloseReason::Done);
        }
        let before = self.lingered;
        let scratch = &mut env.ctx.scratch;
        while self.c_read_ready && self.lingered <= LINGER_BYTES {
            match sio::read(&mut self.client, scratch) {
                Io::Done(n) => self.lingered += n,
                Io::WouldBlock => self.c_read_ready = false,
                Io::Closed | Io::Failed(_) => return Err(CloseReason::Done),
            }
        }
        Ok(self.lingered > before)
    }

    /// Everything the session can do now, bounded.
    fn drive(&mut self, env: &mut Env2<'_, '_>) -> Result<Step, CloseReason> {
        for _ in 0..ROUNDS_PER_TURN {
            let mut progress = self.flush_client()?;
            if self.phase == Phase::Exchange {
                progress |= Exchange::pump(self, env)?;
            }
            if self.wants_client_input() {
                let mut scratch = std::mem::take(&mut env.ctx.scratch);
                let read = self.read_client(&mut scratch);
                env.ctx.scratch = scratch;
                progress |= read?;
            }
            progress |= match self.phase {
                Phase::Idle => self.advance_idle(env)?,
                Phase::Exchange => Exchange::advance_request(self, env)?,
                Phase::Closing => self.closing(env)?,
            };
            if !progress {
                self.schedule(env);
                return Ok(Step::Continue);
            }
        }
        self.schedule(env);
        Ok(Step::Again)
    }

    /// The next moment something times out.
    fn deadline(&self, env: &Env2<'_, '_>) -> Option<Instant> {
        let t = &env.ctx.shared.timeouts;
        match self.phase {
            Phase::Idle => Some(match self.head_started {
                Some(started) => started + t.header,
                None => self.last_active + t.idle,
            }),
            Phase::Exchange => self.exchange.as_ref().map(|ex| ex.deadline(t)),
            Phase::Closing => Some(self.linger_until.unwrap_or(env.now + LINGER)),
        }
    }

    fn schedule(&mut self, env: &mut Env2<'_, '_>) {
        let Some(at) = self.deadline(env) else { return };
        if self.timer_at.is_none_or(|t| at < t) {
            env.timers.schedule(at, self.key);
            self.timer_at = Some(at);
        }
    }

    fn on_timeout(&mut self, env: &mut Env2<'_, '_>) -> Result<Step, CloseReason> {
        // Whatever was scheduled has fired (or was overtaken); re-arm below.
        self.timer_at = None;
        let due = self.deadline(env).is_some_and(|at| at <= env.now);
        if due {
            match self.phase {
                Phase::Idle if self.head_started.is_some() => {
                    self.cout.push(http::error_response(408));
                    ProxyStats::bump(&env.ctx.shared.stats.requests);
                    ProxyStats::bump(&env.ctx.shared.stats.status_4xx);
                    self.log_row(env, None, Duration::ZERO, 408, Outcome::BadRequest);
                    self.begin_closing();
                }
                Phase::Idle => return Err(CloseReason::Done),
                Phase::Exchange => Exchange::timed_out(self, env)?,
                Phase::Closing => return Err(CloseReason::Done),
            }
        }
        self.drive(env)
    }
}

fn write_closed(e: WriteError) -> CloseReason {
    match e {
        WriteError::Reset => CloseReason::Reset,
        WriteError::Other => CloseReason::Error,
    }
}

impl Session for ProxySession {
    type Ctx = ProxyCtx;

    fn open(conn: Accepted, key: usize, env: &mut Env<'_, ProxyCtx>) -> io::Result<Self> {
        let mut client = conn.stream;
        let tok: Token = token(key, Side::Client);
        env.registry
            .register(&mut client, tok, Interest::READABLE | Interest::WRITABLE)?;
        let mut s = ProxySession {
            client,
            key,
            peer: conn.peer,
            phase: Phase::Idle,
            cin: Vec::new(),
            cout: Outbuf::default(),
            c_read_ready: false,
            c_write_blocked: false,
            c_read_closed: false,
            c_eof: false,
            exchange: None,
            bufs: Buffers::default(),
            head_started: None,
            last_active: env.now,
            linger_until: None,
            lingered: 0,
            timer_at: None,
            draining: false,
            bytes_out: 0,
        };
        s.schedule(env);
        Ok(s)
    }

    fn ready(&mut self, ev: Ready, env: &mut Env<'_, ProxyCtx>) -> Step {
        match ev.side {
            Side::Client => {
                self.c_read_ready |= ev.readable;
                self.c_read_closed |= ev.read_closed;
                if ev.writable {
                    self.c_write_blocked = false;
                }
            }
            Side::Backend => Exchange::on_backend_ready(self, ev, env),
        }
        self.drive(env).unwrap_or_else(Step::Close)
    }

    fn timeout(&mut self, env: &mut Env<'_, ProxyCtx>) -> Step {
        self.on_timeout(env).unwrap_or_else(Step::Close)
    }

    fn drain(&mut self, env: &mut Env<'_, ProxyCtx>) -> Step {
        self.draining = true;
        if self.phase == Phase::Idle && self.cin.is_empty() {
            return Step::Close(CloseReason::Shutdown);
        }
        self.drive(env).unwrap_or_else(Step::Close)
    }

    fn route(key: usize, side: Side, ready: Ready, env: &mut Env<'_, ProxyCtx>) -> Route {
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

    fn close(mut self, reason: CloseReason, env: &mut Env<'_, ProxyCtx>) {
        if self.exchange.is_some() {
            Exchange::abort(&mut self, env);
        }
        env.stats.record_close(reason, self.bytes_out);
    }
}
