//! The backend side of one proxied request: acquire a connection (pool or
//! fresh connect), forward the head and body, relay the response, and fail
//! over once when the backend fails before answering.
//!
//! Latency is measured as in the seed: from the first request byte written
//! to the backend until the last response byte is read.

use std::time::{Duration, Instant, SystemTime};

use super::csvlog::Outcome as LogOutcome;
use super::failure::warn_backend;
use super::session::{Env2, ProxySession};
use super::{PENDING_LIMIT, ProxyStats};
use crate::balance::Outcome;
use crate::config::{BackendConn, Timeouts};
use crate::http::{self, BodyFramer, BodyKind, Peer, RequestHead};
use crate::metrics::End;
use crate::runtime::io::{self as sio, Connect, Io};
use crate::runtime::session::{CloseReason, Ready};

/// Interim (1xx) responses relayed per call before yielding; a backend
/// sending endless 100 Continues cannot pin the worker.
const INTERIM_PER_TURN: usize = 8;

/// Where the response is.
#[derive(Debug)]
pub(super) enum Resp {
    /// No final response head yet.
    AwaitHead,
    /// Relaying the body.
    Body(BodyFramer),
}

/// One request in flight.
#[derive(Debug)]
pub(super) struct Exchange {
    /// The backend whose in-flight gauge this request holds, until the
    /// attempt ends (see [`Exchange::end_attempt`]).
    pub(super) attempt: Option<usize>,
    pub(super) req: RequestHead,
    pub(super) backend: usize,
    pub(super) upstream: Option<usize>,
    pub(super) req_body: BodyFramer,
    pub(super) req_done: bool,
    /// Request body bytes handed to the backend side (not retryable after).
    pub(super) body_sent: u64,
    pub(super) resp: Resp,
    /// Response bytes relayed to the client (none: failing over is safe).
    pub(super) relayed: bool,
    /// Where the final response head starts in the client's byte stream
    /// (`bytes_out` plus what was owed when it was queued).
    pub(super) resp_at: u64,
    pub(super) status: u16,
    pub(super) resp_keep_alive: bool,
    pub(super) close_after: bool,
    pub(super) backend_eof: bool,
    pub(super) retried: bool,
    /// When the current connection attempt started.
    pub(super) conn_started: Instant,
    pub(super) first_write: Option<Instant>,
    /// Last progress on the backend side, for --backend-timeout.
    pub(super) last_progress: Instant,
}

impl Exchange {
    /// Starts proxying `req`, whose rewritten head is in `s.bufs.head`.
    pub(super) fn start(
        req: RequestHead,
        s: &mut ProxySession,
        env: &mut Env2<'_, '_>,
    ) -> Exchange {
        let mut ex = Exchange {
            attempt: None,
            req_body: BodyFramer::new(req.body, Peer::Client),
            req_done: req.body == BodyKind::None,
            req,
            backend: 0,
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
            conn_started: env.now,
            first_write: None,
            last_progress: env.now,
        };
        ProxyStats::bump(&env.ctx.shared.stats.requests);
        s.bufs.bout.clear();
        s.bufs.bin.clear();
        s.bufs.bout.push(&s.bufs.head);
        env.ctx.shared.retry_budget.request(env.now);
        let picked = env.ctx.shared.choose(env.now, None);
        ex.attach(picked, s.key, env);
        ex
    }

    /// Connects to `backend` (pooled if allowed); on failure leaves
    /// `upstream` empty, which the next pump turns into a fail-over.
    pub(super) fn attach(&mut self, backend: Option<usize>, owner: usize, env: &mut Env2<'_, '_>) {
        self.upstream = None;
        self.conn_started = env.now;
        self.last_progress = env.now;
        let Some(b) = backend else { return };
        self.backend = b;
        env.ctx.shared.metrics.started(b);
        env.ctx.shared.selector.on_send(b, env.now);
        self.attempt = Some(b);
        let ctx = &mut *env.ctx;
        let pooled = match ctx.shared.backend_conn {
            BackendConn::Persistent => ctx.upstreams.checkout(b, owner, env.now),
            BackendConn::Close => None,
        };
        if let Some(key) = pooled {
            self.upstream = Some(key);
            if let Some(up) = ctx.upstreams.get_mut(key) {
                // A pooled socket is connected and had room when parked.
                up.write_ready = true;
            }
            return;
        }
        let Some(addr) = ctx.shared.backends.get(b).map(|b| b.addr) else {
            return;
        };
        match ctx.upstreams.connect(b, addr, owner, env.registry, env.now) {
            Ok(key) => self.upstream = Some(key),
            Err(e) => warn_backend(env, b, &format!("connect failed: {e}")),
        }
    }

    /// The request body still has bytes to come from the client.
    pub(super) fn wants_body(&self) -> bool {
        !self.req_done
    }

    pub(super) fn deadline(&self, t: &Timeouts) -> Instant {
        if self.first_write.is_none() && self.upstream.is_some() {
            self.conn_started + t.connect
        } else {
            self.last_progress + t.backend
        }
    }

    /// Readiness on our backend socket.
    pub(super) fn on_backend_ready(s: &mut ProxySession, ev: Ready, env: &mut Env2<'_, '_>) {
        let Some(key) = s.exchange.as_ref().and_then(|ex| ex.upstream) else {
            return;
        };
        if let Some(up) = env.ctx.upstreams.get_mut(key) {
            up.read_ready |= ev.readable;
            up.read_closed |= ev.read_closed;
            up.write_ready |= ev.writable;
        }
    }

    /// Moves request body bytes from the client buffer to the backend.
    pub(super) fn advance_request(
        s: &mut ProxySession,
        env: &mut Env2<'_, '_>,
    ) -> Result<bool, CloseReason> {
        let Some(ex) = s.exchange.as_mut() else {
            return Ok(false);
        };
        if ex.req_done {
            // The client's FIN after a complete request: answer, then close.
            ex.close_after |= s.c_eof;
            return Ok(false);
        }
        if s.c_eof && s.cin.is_empty() {
            return Err(Self::client_gone(s, env));
        }
        let connected = ex
            .upstream
            .and_then(|k| env.ctx.upstreams.get(k))
            .is_some_and(|u| !u.connecting);
        if !connected || s.cin.is_empty() || s.bufs.bout.owed() >= PENDING_LIMIT {
            return Ok(false);
        }
        match ex.req_body.advance(&s.cin) {
            Ok(a) => {
                s.bufs.bout.push(s.cin.get(..a.used).unwrap_or_default());
                s.cin.drain(..a.used);
                ex.body_sent += a.used as u64;
                ex.req_done = a.done;
                Ok(a.used > 0 || a.done)
            }
            Err(e) => {
                // A malformed body: the backend has half a request, so both go.
                log::debug!("{}: bad request body: {e}", s.peer);
                let relayed = ex.relayed;
                Self::release(s, env, false);
                if relayed {
                    return Err(CloseReason::Error);
                }
                // Nothing of a response went out yet: tell the client.
                let Some(ex) = s.exchange.take() else {
                    return Err(CloseReason::Error);
                };
                let status = e.status();
                let latency = env.now.saturating_duration_since(ex.conn_started);
                let stats = &env.ctx.shared.stats;
                ProxyStats::bump(if status >= 500 {
                    &stats.status_5xx
                } else {
                    &stats.status_4xx
                });
                s.log_row(
                    env,
                    Some(ex.backend),
                    latency,
                    status,
                    LogOutcome::BadRequest,
                );
                s.cout.push(http::error_response(status));
                s.begin_closing();
                Ok(true)
            }
        }
    }

    /// Backend I/O and response relaying; returns whether anything moved.
    pub(super) fn pump(s: &mut ProxySession, env: &mut Env2<'_, '_>) -> Result<bool, CloseReason> {
        let Some(ex) = s.exchange.as_mut() else {
            return Ok(false);
        };
        let Some(key) = ex.upstream else {
            Self::fail_over(s, env, LogOutcome::ConnectFailed);
            return Ok(true);
        };
        let ctx = &mut *env.ctx;
        let Some(up) = ctx.upstreams.get_mut(key) else {
            ex.upstream = None;
            return Ok(true);
        };
        let mut progress = false;
        if up.connecting {
            if !(up.write_ready || up.read_ready || up.read_closed) {
                return Ok(false);
            }
            match sio::connect_result(&up.stream) {
                Connect::Pending => {
                    up.write_ready = false;
                    return Ok(false);
                }
                Connect::Failed(e) => {
                    warn_backend(env, ex.backend, &format!("connect failed: {e}"));
                    Self::fail_over(s, env, LogOutcome::ConnectFailed);
                    return Ok(true);
                }
                Connect::Connected => {
                    up.connecting = false;
                    up.write_ready = true;
                    progress = true;
                }
            }
        }
        if !s.bufs.bout.is_empty() && up.write_ready {
            match s.bufs.bout.flush(&mut up.stream) {
                Ok(sent) => {
                    if sent.bytes > 0 {
                        ex.first_write.get_or_insert(env.now);
                        ex.last_progress = env.now;
                        progress = true;
                    }
                    up.write_ready = !sent.blocked;
                }
                Err(_) => {
                    Self::fail_over(s, env, LogOutcome::BackendReset);
                    return Ok(true);
                }
            }
        }
        if up.read_ready && !ex.backend_eof && s.cout.owed() < PENDING_LIMIT {
            let scratch = &mut ctx.scratch;
            match sio::read(&mut up.stream, scratch) {
                Io::Done(n) => {
                    if n < scratch.len() && !up.read_closed {
                        up.read_ready = false;
                    }
                    s.bufs
                        .bin
                        .extend_from_slice(scratch.get(..n).unwrap_or_default());
                    ex.last_progress = env.now;
                    progress = true;
                }
                Io::WouldBlock => up.read_ready = false,
                Io::Closed => {
                    ex.backend_eof = true;
                    progress = true;
                }
                Io::Failed(_) => {
                    if ex.relayed || !s.bufs.bin.is_empty() {
                        return Self::truncated(s, env, LogOutcome::BackendReset);
                    }
                    Self::fail_over(s, env, LogOutcome::BackendReset);
                    return Ok(true);
                }
            }
        }
        Ok(Self::relay(s, env)? || progress)
    }

    /// Parses and relays what the backend sent.
    fn relay(s: &mut ProxySession, env: &mut Env2<'_, '_>) -> Result<bool, CloseReason> {
        let mut progress = false;
        for _ in 0..INTERIM_PER_TURN {
            let Some(ex) = s.exchange.as_mut() else {
                return Ok(progress);
            };
            match &mut ex.resp {
                Resp::AwaitHead => {
                    if s.bufs.bin.is_empty() {
                        if ex.backend_eof {
                            Self::fail_over(s, env, LogOutcome::BackendReset);
                            return Ok(true);
                        }
                        return Ok(progress);
                    }
                    let client_close =
                        !ex.req.keep_alive || s.draining || !ex.req_done || ex.close_after;
                    let at = s.bytes_out + s.cout.owed() as u64;
                    let mut fields = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
                    let parsed = match http::parse_response(&s.bufs.bin, ex.req.method, &mut fields)
                    {
                        // RFC 9112 §6.1: no chunked reply to an HTTP/1.0 request
                        // (we forward 1.0 requests as 1.0); relaying it verbatim
                        // would hand the client a body it cannot read.
                        Ok(Some(p)) if ex.req.minor == 0 && p.head.body == BodyKind::Chunked => {
                            Err(http::HttpError::BadResponse(
                                "chunked reply to an HTTP/1.0 request",
                            ))
                        }
                        Ok(Some(p)) => {
                            let close = client_close || p.head.body == BodyKind::CloseDelimited;
                            // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client.
                            if !(p.head.is_interim && ex.req.minor == 0) {
                                let opts = &env.ctx.shared.forward;
                                let id = &ex.req.request_id;
                                p.write_head(close, ex.req.minor, opts, id, s.cout.tail());
                            }
                            Ok(Some(p.head))
                        }
                        Ok(None) => Ok(None),
                        Err(e) => Err(e),
                    };
                    match parsed {
                        Ok(None) if ex.backend_eof => {
                            Self::bad_response(s, env, "response head cut short");
                            return Ok(true);
                        }
                        Ok(None) => return Ok(progress),
                        Err(e) => {
                            Self::bad_response(s, env, &e.to_string());
                            return Ok(true);
                        }
                        Ok(Some(head)) => {
                            s.bufs.bin.drain(..head.head_len);
                            ex.relayed = true;
                            progress = true;
                            if head.is_interim {
                                continue;
                            }
                            ex.status = head.status;
                            ex.resp_at = at;
                            ex.resp_keep_alive = head.keep_alive;
                            ex.close_after = client_close || head.body == BodyKind::CloseDelimited;
                            ex.resp = Resp::Body(BodyFramer::new(head.body, Peer::Backend));
                        }
                    }
                }
                Resp::Body(framer) => {
                    let a = match framer.advance(&s.bufs.bin) {
                        Ok(a) => a,
                        Err(_) => return Self::truncated(s, env, LogOutcome::BadResponse),
                    };
                    s.cout.push(s.bufs.bin.get(..a.used).unwrap_or_default());
                    s.bufs.bin.drain(..a.used);
                    progress |= a.used > 0;
                    if a.done
                        || (ex.backend_eof && s.bufs.bin.is_empty() && framer.at_eof().is_ok())
                    {
                        Self::complete(s, env);
                        return Ok(true);
                    }
                    if ex.backend_eof && s.bufs.bin.is_empty() {
                        return Self::truncated(s, env, LogOutcome::BackendReset);
                    }
                    return Ok(progress);
                }
            }
        }
        Ok(progress)
    }

    /// Ends the current attempt in the metrics; later calls do nothing, so
    /// every exit path may call it.
    pub(super) fn end_attempt(
        &mut self,
        env: &Env2<'_, '_>,
        status: u16,
        latency: Duration,
        end: End,
    ) {
        if let Some(b) = self.attempt.take() {
            env.ctx
                .shared
                .metrics
                .finished(b, status, latency, end, SystemTime::now());
            let shared = &env.ctx.shared;
            shared.selector.on_done(b, env.now);
            match end {
                End::Answered => {
                    let bad = shared.ejector.eject_5xx && status >= 500;
                    shared.ejector.record(b, !bad, env.now);
                }
                End::Failed => shared.ejector.record(b, false, env.now),
                End::Abandoned => shared.ejector.release(b),
            }
        }
    }

    /// The response was relayed in full.
    fn complete(s: &mut ProxySession, env: &mut Env2<'_, '_>) {
        let now = env.now;
        let Some(ex) = s.exchange.as_mut() else {
            return;
        };
        let latency = now.saturating_duration_since(ex.first_write.unwrap_or(ex.conn_started));
        ex.end_attempt(env, ex.status, latency, End::Answered);
        env.ctx.record_latency(latency);
        let Some(ex) = s.exchange.as_ref() else {
            return;
        };
        let shared = &env.ctx.shared;
        shared
            .selector
            .observe(ex.backend, Outcome::Success { latency }, now);
        let stats = &shared.stats;
        ProxyStats::bump(match ex.status {
            500.. => &stats.status_5xx,
            400..=499 => &stats.status_4xx,
            _ => &stats.ok,
        });
        s.log_row(env, Some(ex.backend), latency, ex.status, LogOutcome::Ok);
        let reuse = shared.backend_conn == BackendConn::Persistent
            && ex.resp_keep_alive
            && ex.req_done
            && !ex.backend_eof
            && s.bufs.bin.is_empty();
        let keep_client = !ex.close_after && ex.req_done;
        Self::release(s, env, reuse);
        s.bufs.bin.clear();
        s.exchange_done(keep_client, now);
    }

    /// Gives the backend connection back to the pool or closes it.
    pub(super) fn release(s: &mut ProxySession, env: &mut Env2<'_, '_>, reuse: bool) {
        let Some(key) = s.exchange.as_mut().and_then(|ex| ex.upstream.take()) else {
            return;
        };
        if reuse {
            env.ctx.upstreams.checkin(key, env.now);
        } else {
            env.ctx.upstreams.close(key);
        }
    }
}
