//! One client connection: an HTTP/1.1 keep-alive server state machine.
//!
//! Requests are served one at a time, in order. A request's head starts
//! its delay (see `schedule`); its body streams past and is counted; when
//! both the body is complete and the delay has expired, the response is
//! appended to `out`. Pipelined requests wait in `inbuf` meanwhile.
//!
//! ```text
//!            head ─▶ body ─▶ wait for due ─▶ respond ─┐  (keep-alive: next head)
//!   Serving ◀───────────────────────────────────────┘
//!      │ last response flushed (close / HTTP/1.0 / 400 / garbage)
//!      ▼
//!   Discarding: FIN sent, read and drop until the peer's FIN or the linger
//!               timeout. `--fail hang` connections start here, untimed.
//! ```
//!
//! Lingering before the close keeps unread client bytes from turning the
//! close into a RST that could destroy the last response in flight.

use std::mem;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;
use mio::net::TcpStream;
use socket2::SockRef;

use super::profile::{FailMode, Injector};
use super::response::{self, CONTINUE, GARBAGE, Reply};
use super::schedule::Scheduler;
use super::stats::Counters;
use crate::http::{self, BodyFramer, EMPTY_HEADER, HttpError, MAX_HEADERS, Peer, RequestHead};
use crate::runtime::io::{self as sio, Io};

/// Size of the loop's shared read buffer: 64 KiB drains a loopback burst in
/// one syscall and is shared by every connection.
pub const SCRATCH_SIZE: usize = 64 * 1024;

/// Reads per turn before yielding (then [`Next::Again`]): 16 x 64 KiB = 1 MiB,
/// so one fast uploader cannot starve hundreds of other connections.
const READS_PER_TURN: usize = 16;

/// Unparsed input above which a connection stops reading: four heads' worth
/// of pipelined requests is plenty, and it bounds memory per connection.
const INBUF_LIMIT: usize = 4 * http::MAX_HEAD;

/// Unsent output above which pipelined requests are not started: a client
/// that does not read cannot make the backend queue responses without end.
const OUT_LIMIT: usize = 64 * 1024;

/// Buffers larger than this are freed when they empty, so a burst leaves
/// no lasting memory on an idle connection.
const KEEP_CAPACITY: usize = 4 * 1024;

/// Server-wide state every connection uses; owned by the event loop.
#[derive(Debug)]
pub struct Ctx {
    pub name: String,
    pub fail: Option<FailMode>,
    pub scheduler: Scheduler,
    pub injector: Option<Injector>,
    pub counters: Arc<Counters>,
    pub scratch: Box<[u8]>,
    /// Last request id handed out; ids are never reused.
    pub last_id: u64,
}

/// What the event loop should do with the connection after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait for readiness or a due answer.
    Keep,
    /// The turn's budget ran out with input left: call `resume` soon.
    Again,
    /// Close it now.
    Close,
    /// Close it with RST (`--fail reset`).
    Reset,
    /// It sent its FIN and is discarding input: close it at the linger
    /// timeout unless the peer closes first.
    Linger,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Discarding,
}

/// The request being served.
#[derive(Debug)]
struct Request {
    id: u64,
    head_only: bool,
    keep_alive: bool,
    http10: bool,
    body: BodyFramer,
    body_bytes: u64,
    /// The injected status, if `status:CODE:RATE` picked this request.
    status: Option<u16>,
    /// Set when the delay has expired: the latency to report.
    due: Option<Duration>,
}

/// What `pump` should do next, decided before borrowing the request.
enum Want {
    Head,
    Body,
    Reply(Option<Duration>),
}

#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    /// Distinguishes this connection from later ones in the same slab slot.
    serial: u64,
    phase: Phase,
    /// Input read but not yet consumed (partial heads, pipelined requests).
    inbuf: Vec<u8>,
    /// Output not yet written: `out[sent..]` is owed.
    out: Vec<u8>,
    sent: usize,
    req: Option<Request>,
    /// No WouldBlock since the last readable event (edge-triggered).
    readable: bool,
    /// The peer sent its FIN.
    peer_eof: bool,
    /// The last response is queued: close once it is written.
    closing: bool,
    /// `pump` left complete input alone because too much output was owed;
    /// once flushed, nothing else would announce that work is waiting.
    held: bool,
}

impl Conn {
    /// A new connection; `hang` ones only ever read and discard.
    pub fn new(stream: TcpStream, serial: u64, hang: bool) -> Self {
        Conn {
            stream,
            serial,
            phase: if hang {
                Phase::Discarding
            } else {
                Phase::Serving
            },
            inbuf: Vec::new(),
            out: Vec::new(),
            sent: 0,
            req: None,
            readable: false,
            peer_eof: false,
            closing: false,
            held: false,
        }
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// True while request `id` is the one this connection serves.
    pub fn serves(&self, id: u64) -> bool {
        self.req.as_ref().is_some_and(|r| r.id == id)
    }

    /// A readiness event (possibly spurious).
    pub fn on_event(&mut self, readable: bool, key: usize, ctx: &mut Ctx, now: Instant) -> Next {
        self.readable |= readable;
        self.drive(key, ctx, now)
    }

    /// The current request's delay expired; `latency` is what to report.
    pub fn on_due(&mut self, latency: Duration, key: usize, ctx: &mut Ctx, now: Instant) -> Next {
        if let Some(req) = &mut self.req {
            req.due = Some(latency);
        }
        self.drive(key, ctx, now)
    }

    /// Continues after [`Next::Again`].
    pub fn resume(&mut self, key: usize, ctx: &mut Ctx, now: Instant) -> Next {
        self.drive(key, ctx, now)
    }

    /// Closes with RST: SO_LINGER 0 makes the close abort the connection.
    pub fn reset(self) {
        if let Err(e) = SockRef::from(&self.stream).set_linger(Some(Duration::ZERO)) {
            debug!("SO_LINGER 0 failed ({e}); closing normally");
        }
    }

    /// Consume input, answer what is due, write, read: until the socket
    /// would block, the connection ends, or the turn's budget is spent.
    fn drive(&mut self, key: usize, ctx: &mut Ctx, now: Instant) -> Next {
        for turn in 0..=READS_PER_TURN {
            if self.phase == Phase::Serving
                && let Some(next) = self.pump(key, ctx, now)
            {
                return next;
            }
            if !self.flush() {
                return Next::Close;
            }
            if let Some(next) = self.settle() {
                return next;
            }
            if turn == READS_PER_TURN {
                break;
            }
            if self.held && self.owed() <= OUT_LIMIT {
                continue; // pump the input it held back
            }
            if !self.readable || !self.wants_input() {
                return Next::Keep;
            }
            match sio::read(&mut self.stream, &mut ctx.scratch) {
                Io::Done(n) => {
                    Counters::add(&ctx.counters.bytes_received, n as u64);
                    if self.phase == Phase::Serving {
                        let data = ctx.scratch.get(..n).unwrap_or_default();
                        match self.feed(data) {
                            Ok(payload) => Counters::add(&ctx.counters.body_bytes, payload),
                            Err(why) => self.bad_request(ctx, why),
                        }
                    }
                }
                Io::WouldBlock => {
                    self.readable = false;
                    return Next::Keep;
                }
                Io::Closed => {
                    self.readable = false;
                    self.peer_eof = true;
                }
                Io::Failed(_) => return Next::Close,
            }
        }
        Next::Again
    }

    /// New bytes: a streaming body takes them straight from the scratch
    /// buffer; anything else is kept in `inbuf` for `pump`. Returns the
    /// body payload bytes consumed.
    fn feed(&mut self, data: &[u8]) -> Result<u64, HttpError> {
        let mut data = data;
        let mut payload = 0;
        if self.inbuf.is_empty()
            && !self.closing
            && let Some(req) = self.req.as_mut().filter(|r| !r.body.is_done())
        {
            let adv = req.body.advance(data)?;
            req.body_bytes += adv.payload;
            payload = adv.payload;
            data = data.get(adv.used..).unwrap_or_default();
        }
        self.inbuf.extend_from_slice(data);
        Ok(payload)
    }

    /// Works through `inbuf`: heads, bodies, and answers that are due.
    fn pump(&mut self, key: usize, ctx: &mut Ctx, now: Instant) -> Option<Next> {
        let mut buf = mem::take(&mut self.inbuf);
        let mut pos = 0;
        self.held = false;
        // Bounded: each turn consumes input, answers a request, or breaks.
        let result = loop {
            if self.closing {
                pos = buf.len(); // nothing after the last response is read
                break None;
            }
            let rest = buf.get(pos..).unwrap_or_default();
            let want = match &self.req {
                None => Want::Head,
                Some(r) if !r.body.is_done() => Want::Body,
                Some(r) => Want::Reply(r.due),
            };
            match want {
                Want::Head if rest.is_empty() => break None,
                Want::Head if self.owed() > OUT_LIMIT => {
                    self.held = true;
                    break None;
                }
                Want::Head => {
                    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
                    match http::parse_request(rest, &mut headers) {
                        Ok(None) => break None,
                        Err(why) => self.bad_request(ctx, why),
                        Ok(Some(parsed)) => {
                            pos += parsed.head.head_len;
                            if let Some(next) = self.start(parsed.head, key, ctx, now) {
                                break Some(next);
                            }
                        }
                    }
                }
                Want::Body if rest.is_empty() => break None,
                Want::Body => {
                    let Some(req) = self.req.as_mut() else {
                        break None;
                    };
                    match req.body.advance(rest) {
                        Ok(adv) => {
                            pos += adv.used;
                            req.body_bytes += adv.payload;
                            Counters::add(&ctx.counters.body_bytes, adv.payload);
                        }
                        Err(why) => self.bad_request(ctx, why),
                    }
                }
                Want::Reply(Some(latency)) => self.respond(latency, ctx),
                Want::Reply(None) => break None,
            }
        };
        buf.drain(..pos.min(buf.len()));
        self.inbuf = shrink(buf);
        result
    }

    /// A complete head: count it, pick its status and delay.
    fn start(
        &mut self,
        head: RequestHead,
        key: usize,
        ctx: &mut Ctx,
        now: Instant,
    ) -> Option<Next> {
        ctx.last_id += 1;
        Counters::add(&ctx.counters.requests, 1);
        if ctx.fail == Some(FailMode::Reset) {
            Counters::add(&ctx.counters.resets, 1);
            return Some(Next::Reset);
        }
        let body = BodyFramer::new(head.body, Peer::Client);
        if head.expect_continue && !body.is_done() {
            self.out.extend_from_slice(CONTINUE);
        }
        self.req = Some(Request {
            id: ctx.last_id,
            head_only: head.method.is_head(),
            keep_alive: head.keep_alive,
            http10: head.minor == 0,
            body,
            body_bytes: 0,
            status: ctx.injector.as_mut().and_then(Injector::pick),
            due: ctx.scheduler.admit(key, ctx.last_id, now),
        });
        None
    }

    /// Queues the current request's response.
    fn respond(&mut self, latency: Duration, ctx: &mut Ctx) {
        let Some(req) = self.req.take() else {
            return;
        };
        if ctx.fail == Some(FailMode::Garbage) {
            self.out.extend_from_slice(GARBAGE);
            Counters::add(&ctx.counters.garbage, 1);
            self.closing = true;
            return;
        }
        let status = req.status.unwrap_or(200);
        let counter = match req.status {
            Some(_) => &ctx.counters.injected,
            None => &ctx.counters.ok,
        };
        Counters::add(counter, 1);
        response::write(
            &mut self.out,
            &Reply {
                name: &ctx.name,
                status,
                latency,
                body_bytes: req.body_bytes,
                head_only: req.head_only,
                close: !req.keep_alive,
                http10: req.http10,
            },
        );
        self.closing |= !req.keep_alive;
    }

    /// Answers 400 (whatever status the proxy would pick: this backend keeps
    /// one answer for all bad input) and closes; a pending delay no longer
    /// applies.
    fn bad_request(&mut self, ctx: &mut Ctx, why: HttpError) {
        debug!("backend {}: {why}", ctx.name);
        self.req = None;
        Counters::add(&ctx.counters.bad_requests, 1);
        response::write(
            &mut self.out,
            &Reply {
                name: &ctx.name,
                status: 400,
                latency: Duration::ZERO,
                body_bytes: 0,
                head_only: false,
                close: true,
                http10: false,
            },
        );
        self.closing = true;
    }

    /// Writes what is owed. False when the connection is broken.
    fn flush(&mut self) -> bool {
        // Bounded: every Done moves the cursor forward.
        while let Some(owed) = self.out.get(self.sent..).filter(|o| !o.is_empty()) {
            match sio::write(&mut self.stream, owed) {
                Io::Done(n) => self.sent += n,
                Io::WouldBlock => return true,
                Io::Closed | Io::Failed(_) => return false,
            }
        }
        self.out.clear();
        self.sent = 0;
        self.out = shrink(mem::take(&mut self.out));
        true
    }

    /// Decides whether the connection ends, once output is flushed.
    fn settle(&mut self) -> Option<Next> {
        if self.phase == Phase::Discarding {
            return self.peer_eof.then_some(Next::Close);
        }
        if self.owed() > 0 {
            return None;
        }
        if self.closing {
            if self.peer_eof || self.stream.shutdown(Shutdown::Write).is_err() {
                return Some(Next::Close);
            }
            self.phase = Phase::Discarding;
            self.inbuf = Vec::new();
            return Some(Next::Linger);
        }
        let awaiting_reply = self.req.as_ref().is_some_and(|r| r.body.is_done());
        (self.peer_eof && !awaiting_reply).then_some(Next::Close)
    }

    /// Output bytes not yet written.
    fn owed(&self) -> usize {
        self.out.len() - self.sent
    }

    fn wants_input(&self) -> bool {
        self.phase == Phase::Discarding || (!self.closing && self.inbuf.len() < INBUF_LIMIT)
    }
}

/// An empty buffer that grew past [`KEEP_CAPACITY`] is freed.
fn shrink(buf: Vec<u8>) -> Vec<u8> {
    if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
        Vec::new()
    } else {
        buf
    }
}
