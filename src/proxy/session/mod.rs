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
//!
//! - this file: the state enum, the session, its drive loop and client I/O;
//! - `head`: Idle, reading a request head; the proxy's own answers;
//! - `end`: how an exchange ends (complete, tunnel, fault by side);
//! - `clock`: deadlines and which side a timeout blames;
//! - `tcp`: the `Session` impl the worker loop calls, on real sockets.

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
            // The client connection ends first: not the backend's doing.
            State::Exchange(ex) => end::abandon(ex, env),
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

    /// Closing: FIN once flushed, then discard input until EOF or LINGER.
    fn linger(&mut self, env: &mut Ev<'_, '_, N>) -> Result<bool, CloseReason> {
        let State::Closing(l) = &mut self.state else {
            return Ok(false);
        };
        // A TLS stream may still owe records after `out` emptied.
        if !self.client.out.is_empty()
            || self.client.write_blocked && N::is_tls(&self.client.stream)
        {
            return Ok(false);
        }
        if !l.fin_sent {
            N::shutdown_write(&mut self.client.stream);
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

mod clock;
mod end;
mod head;
mod tcp;

pub use tcp::route;
