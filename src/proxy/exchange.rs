//! The backend side of one proxied request: acquire a connection (pool or
//! fresh connect), forward the head and body, read and relay the response.
//!
//! An exchange never decides what a failure means for the session: every
//! step returns a [`Flow`], and a failure is a [`Fault`] owned by the side
//! that caused it; the session turns it into a retry, an answer or a close.
//!
//! Latency is measured as in the seed: from the first request byte written
//! to the backend until the last response byte is read.

use std::time::{Duration, Instant};

use super::accesslog::Detail;
use super::client::{Buffers, Client};
use super::fault::{BackendFault, ClientFault, Fault, Progress};
use super::net::Net;
use super::{PENDING_LIMIT, ProxyCtx};
use crate::config::BackendConn;
use crate::http::{self, BodyFramer, BodyKind, ForwardOpts, Peer, RequestHead};
use crate::runtime::io::{self as sio, Connect, Io};
use crate::runtime::session::Env;

/// Interim (1xx) responses relayed per call before yielding; a backend
/// sending endless 100 Continues cannot pin the worker.
const INTERIM_PER_TURN: usize = 8;

/// What one step of an exchange achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Nothing can move until the next event.
    Stalled,
    /// Bytes moved; call again.
    Moved,
    /// The response was relayed in full.
    Complete,
    /// The backend switched protocols (101 relayed): become a tunnel.
    Switched,
    /// The exchange failed; the session decides what follows.
    Failed(Fault),
}

/// Where the response is.
#[derive(Debug)]
pub enum Resp {
    /// No final response head yet.
    AwaitHead,
    /// Relaying the body.
    Body(BodyFramer),
}

/// One request in flight.
#[derive(Debug)]
pub struct Exchange {
    pub req: RequestHead,
    /// The backend of the current attempt (an index into the backends of
    /// configuration generation `generation`).
    pub backend: usize,
    /// The configuration generation the current attempt started in.
    pub generation: u64,
    /// The backend whose in-flight gauge this attempt holds, until
    /// [`Exchange::end_attempt`] releases it.
    pub attempt: Option<usize>,
    /// The selector's ticket for the current attempt: consumed by its
    /// `observe`, else released when replaced (a retry) or dropped.
    pub ticket: Option<crate::balance::Attempt>,
    /// Our connection to it (a key of the worker's `Upstreams`).
    pub upstream: Option<usize>,
    pub req_body: BodyFramer,
    pub req_done: bool,
    /// Request body bytes handed to the backend side (not replayable).
    pub body_sent: u64,
    pub resp: Resp,
    /// A response byte (an interim or the final head) was queued for the
    /// client: failing over is no longer possible.
    pub relayed: bool,
    /// Where the final response head starts in the client's byte stream.
    pub resp_at: u64,
    pub status: u16,
    pub resp_keep_alive: bool,
    /// Close the client connection after this response.
    pub close_after: bool,
    pub backend_eof: bool,
    pub retried: bool,
    /// When the current connection attempt started.
    pub conn_started: Instant,
    /// When the first request byte reached the current connection.
    pub first_write: Option<Instant>,
    /// Last progress on either side; inactivity timeouts count from here
    /// and are charged to the side the exchange is waiting on.
    pub last_progress: Instant,
    /// When the request head was complete.
    pub started: Instant,
    /// Response bytes queued for the client (heads and body).
    pub bytes_out: u64,
    /// The access log's copy of the request line and fields, when its
    /// format wants one.
    pub log: Option<Box<Detail>>,
    /// The place held on the attempt's backend under its limit; given back
    /// when the attempt ends (`account::end_attempt`) or, failing that,
    /// when dropped.
    pub slot: Option<super::slots::SlotGuard>,
    /// How long the request waited in the proxy's queue.
    pub queue_wait: Duration,
}

impl Exchange {
    /// A new exchange for `req` (its rewritten head is in `bufs.head`).
    pub fn new(req: RequestHead, now: Instant) -> Self {
        Exchange {
            req_body: BodyFramer::new(req.body, Peer::Client),
            req_done: matches!(req.body, BodyKind::None | BodyKind::Length(0)),
            req,
            backend: 0,
            generation: 0,
            attempt: None,
            ticket: None,
            upstream: None,
            body_sent: 0,
            resp: Resp::AwaitHead,
            relayed: false,
            resp_at: 0,
            status: 0,
            resp_keep_alive: false,
            close_after: false,
            backend_eof: false,
            retried: false,
            conn_started: now,
            first_write: None,
            last_progress: now,
            started: now,
            bytes_out: 0,
            log: None,
            slot: None,
            queue_wait: Duration::ZERO,
        }
    }

    /// The access log's detail, completed with what this exchange moved.
    pub fn take_detail(&mut self, now: Instant) -> Option<Box<Detail>> {
        let mut d = self.log.take()?;
        d.request_id = self.req.request_id;
        d.bytes_in = self.req.head_len as u64 + self.body_sent;
        d.bytes_out = self.bytes_out;
        d.duration = now.saturating_duration_since(self.started);
        d.attempts = 1 + u8::from(self.retried);
        Some(d)
    }

    /// How far the current attempt got.
    pub fn progress(&self) -> Progress {
        if self.relayed {
            Progress::Answered
        } else if self.first_write.is_some() {
            Progress::Sent
        } else {
            Progress::Unsent
        }
    }

    /// Connects to `backend` (a pooled connection if allowed); a failed
    /// connect leaves `upstream` empty, which the next pump reports.
    pub fn attach<N: Net>(
        &mut self,
        backend: usize,
        owner: usize,
        bufs: &mut Buffers,
        env: &mut Env<'_, ProxyCtx<N>>,
    ) {
        self.upstream = None;
        self.backend = backend;
        self.conn_started = env.now;
        self.last_progress = env.now;
        self.first_write = None;
        self.backend_eof = false;
        bufs.bout.clear();
        bufs.bout.push(&bufs.head);
        bufs.bin.clear();
        env.ctx.shared.metrics.started(backend);
        self.ticket = Some(env.ctx.shared.selector.on_send(backend, env.now));
        self.generation = env.ctx.shared.generation;
        env.ctx.gens.began();
        self.attempt = Some(backend);
        let ctx = &mut *env.ctx;
        if ctx.shared.backend_conn == BackendConn::Persistent {
            // Bounded by the pool's size: each turn removes one entry.
            while let Some(key) = ctx.upstreams.checkout(backend, owner, env.now) {
                // A request that may not be replayed must not go out on a
                // connection the backend already closed (RFC 9110 §9.2.2).
                if !self.req.method.is_idempotent()
                    && !ctx.upstreams.still_open(key, &mut ctx.scratch)
                {
                    ctx.upstreams.close(key);
                    continue;
                }
                if let Some(up) = ctx.upstreams.get_mut(key) {
                    // A pooled socket is connected and had room when parked.
                    up.write_ready = true;
                }
                self.upstream = Some(key);
                return;
            }
        }
        let Some(b) = ctx.shared.backends.get(backend) else {
            return;
        };
        let target = (b.addr, b.tls.as_deref());
        match ctx
            .upstreams
            .connect(backend, target, owner, env.registry, env.now)
        {
            Ok(key) => self.upstream = Some(key),
            Err(e) => log::debug!("connect to backend {backend} failed at once: {e}"),
        }
    }

    /// Whether the current connection was reused from the pool.
    pub fn reused<N: Net>(&self, ctx: &ProxyCtx<N>) -> bool {
        self.upstream
            .and_then(|k| ctx.upstreams.get(k))
            .is_some_and(|u| u.uses > 1)
    }

    /// Whether the connect of the current attempt is still in progress.
    pub fn connecting<N: Net>(&self, ctx: &ProxyCtx<N>) -> bool {
        self.upstream
            .and_then(|k| ctx.upstreams.get(k))
            .is_some_and(|u| u.connecting)
    }

    /// The request body still has bytes to come from the client.
    pub fn wants_body(&self) -> bool {
        !self.req_done
    }

    /// Whether the exchange waits on the client rather than the backend:
    /// a body that does not arrive, or a response the client does not read.
    pub fn waits_on_client<N: Net>(&self, client: &Client<N>, bufs: &Buffers) -> bool {
        let body_stalled = !self.req_done && bufs.bout.is_empty() && client.input.is_empty();
        let not_reading = client.out.owed() >= PENDING_LIMIT;
        body_stalled || not_reading
    }

    /// Moves request body bytes from the client's input to the backend.
    pub fn forward_body<N: Net>(
        &mut self,
        client: &mut Client<N>,
        bufs: &mut Buffers,
        ctx: &ProxyCtx<N>,
    ) -> Flow {
        if self.req_done {
            // A FIN after a complete request: answer, then close.
            self.close_after |= client.eof;
            return Flow::Stalled;
        }
        if client.eof && client.input.is_empty() {
            return Flow::Failed(Fault::Client(ClientFault::Abort));
        }
        let connected = self
            .upstream
            .and_then(|k| ctx.upstreams.get(k))
            .is_some_and(|u| !u.connecting);
        if !connected || client.input.is_empty() || bufs.bout.owed() >= PENDING_LIMIT {
            return Flow::Stalled;
        }
        match self.req_body.advance(&client.input) {
            Ok(a) => {
                bufs.bout
                    .push(client.input.get(..a.used).unwrap_or_default());
                client.input.drain(..a.used);
                self.body_sent += a.used as u64;
                self.req_done = a.done;
                if a.used > 0 || a.done {
                    Flow::Moved
                } else {
                    Flow::Stalled
                }
            }
            Err(e) => {
                log::debug!("{}: bad request body: {e}", client.peer);
                Flow::Failed(Fault::Client(ClientFault::BadBody))
            }
        }
    }

    /// Backend I/O, then response relaying.
    pub fn pump<N: Net>(
        &mut self,
        client: &mut Client<N>,
        bufs: &mut Buffers,
        draining: bool,
        env: &mut Env<'_, ProxyCtx<N>>,
    ) -> Flow {
        let Some(key) = self.upstream else {
            return Flow::Failed(Fault::Backend(BackendFault::ConnectFailed));
        };
        let ctx = &mut *env.ctx;
        let Some(up) = ctx.upstreams.get_mut(key) else {
            self.upstream = None;
            return Flow::Failed(Fault::Backend(BackendFault::Reset));
        };
        let mut moved = false;
        if up.connecting {
            if !(up.write_ready || up.read_ready || up.read_closed) {
                return Flow::Stalled;
            }
            match up.stream.connect_result(N::connect_result) {
                Connect::Pending => {
                    up.write_ready = false;
                    return Flow::Stalled;
                }
                Connect::Failed(e) => {
                    log::debug!("connect to backend {} failed: {e}", self.backend);
                    return Flow::Failed(Fault::Backend(BackendFault::ConnectFailed));
                }
                Connect::Connected => {
                    up.connecting = false;
                    up.write_ready = true;
                    moved = true;
                }
            }
        }
        if !bufs.bout.is_empty() && up.write_ready {
            match bufs.bout.flush(&mut up.stream) {
                Ok(sent) => {
                    if sent.bytes > 0 {
                        self.first_write.get_or_insert(env.now);
                        self.last_progress = env.now;
                        moved = true;
                    }
                    up.write_ready = !sent.blocked;
                }
                Err(_) => return Flow::Failed(Fault::Backend(BackendFault::Reset)),
            }
        } else if up.write_ready {
            // TLS records the socket refused earlier (none for TCP).
            match up.stream.flush_owed() {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => up.write_ready = false,
                Err(_) => return Flow::Failed(Fault::Backend(BackendFault::Reset)),
            }
        }
        if up.read_ready && !self.backend_eof && client.out.owed() < PENDING_LIMIT {
            let scratch = &mut ctx.scratch;
            match sio::read(&mut up.stream, scratch) {
                Io::Done(n) => {
                    if n < scratch.len() && !up.read_closed && !up.stream.read_pending() {
                        up.read_ready = false;
                    }
                    bufs.bin
                        .extend_from_slice(scratch.get(..n).unwrap_or_default());
                    self.last_progress = env.now;
                    moved = true;
                }
                Io::WouldBlock => up.read_ready = false,
                Io::Closed => {
                    self.backend_eof = true;
                    moved = true;
                }
                Io::Failed(_) => return Flow::Failed(Fault::Backend(BackendFault::Reset)),
            }
        }
        let forward = &env.ctx.shared.forward;
        match self.relay(client, bufs, draining, forward) {
            Flow::Stalled if moved => Flow::Moved,
            flow => flow,
        }
    }

    /// Parses and relays what the backend sent.
    fn relay<N: Net>(
        &mut self,
        client: &mut Client<N>,
        bufs: &mut Buffers,
        draining: bool,
        forward: &ForwardOpts,
    ) -> Flow {
        let mut flow = Flow::Stalled;
        for _ in 0..INTERIM_PER_TURN {
            match &mut self.resp {
                Resp::AwaitHead => {
                    if bufs.bin.is_empty() {
                        if self.backend_eof {
                            return Flow::Failed(Fault::Backend(BackendFault::Reset));
                        }
                        return flow;
                    }
                    match self.relay_head(client, bufs, draining, forward) {
                        Flow::Moved => flow = Flow::Moved,
                        other => return other,
                    }
                }
                Resp::Body(framer) => {
                    let Ok(a) = framer.advance(&bufs.bin) else {
                        return Flow::Failed(Fault::Backend(BackendFault::BadResponse));
                    };
                    client.out.push(bufs.bin.get(..a.used).unwrap_or_default());
                    bufs.bin.drain(..a.used);
                    self.bytes_out += a.used as u64;
                    let drained = self.backend_eof && bufs.bin.is_empty();
                    if a.done || (drained && framer.at_eof().is_ok()) {
                        return Flow::Complete;
                    }
                    if drained {
                        return Flow::Failed(Fault::Backend(BackendFault::Reset));
                    }
                    return if a.used > 0 { Flow::Moved } else { flow };
                }
            }
        }
        flow
    }

    /// Parses one response head from `bufs.bin` and queues it for the
    /// client: `Moved` after a head (interim or final), `Stalled` when more
    /// bytes are needed, `Switched` after a 101.
    fn relay_head<N: Net>(
        &mut self,
        client: &mut Client<N>,
        bufs: &mut Buffers,
        draining: bool,
        forward: &ForwardOpts,
    ) -> Flow {
        let client_close = !self.req.keep_alive || draining || !self.req_done || self.close_after;
        let at = client.bytes_out + client.out.owed() as u64;
        let mut fields = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
        let bad = Flow::Failed(Fault::Backend(BackendFault::BadResponse));
        let parsed =
            match http::parse_response(&bufs.bin, self.req.method, self.req.upgrade, &mut fields) {
                Ok(Some(p)) => p,
                Ok(None) if self.backend_eof => return bad,
                Ok(None) => return Flow::Stalled,
                Err(e) => {
                    log::debug!("backend {}: bad response: {e}", self.backend);
                    return bad;
                }
            };
        let head = parsed.head;
        // RFC 9112 §6.1: no chunked reply to an HTTP/1.0 request (we
        // forward 1.0 requests as 1.0); relayed verbatim, the client could
        // not read it.
        if self.req.minor == 0 && head.body == BodyKind::Chunked {
            return bad;
        }
        if head.status == 503 && head.retry_after && self.may_retry_unavailable() {
            return Flow::Failed(Fault::Backend(BackendFault::Unavailable));
        }
        let close = client_close || head.body == BodyKind::CloseDelimited;
        // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client.
        if !(head.is_interim && self.req.minor == 0) {
            let id = &self.req.request_id;
            let tail = client.out.tail();
            let before = tail.len();
            parsed.write_head(close, self.req.minor, forward, id, tail);
            self.bytes_out += tail.len().saturating_sub(before) as u64;
        }
        bufs.bin.drain(..head.head_len);
        self.relayed = true;
        if head.is_interim {
            return Flow::Moved;
        }
        self.status = head.status;
        self.resp_at = at;
        self.resp_keep_alive = head.keep_alive;
        self.close_after = close;
        if head.switching {
            return Flow::Switched;
        }
        self.resp = Resp::Body(BodyFramer::new(head.body, Peer::Backend));
        Flow::Moved
    }

    /// A 503 with Retry-After is only diverted when a retry is allowed;
    /// otherwise it is relayed as it is.
    fn may_retry_unavailable(&self) -> bool {
        super::fault::may_retry(
            self.req.method,
            BackendFault::Unavailable,
            self.progress(),
            self.retried,
            self.body_sent > 0,
        )
    }

    /// Time since the current attempt's first write (or its start).
    pub fn latency(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.first_write.unwrap_or(self.conn_started))
    }
}
