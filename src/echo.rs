//! Echo mode: every byte read from a connection is written back, in order.
//!
//! Reads land in the worker's shared scratch buffer and are written straight
//! back, so an idle or keeping-up connection owns no buffer at all. Only the
//! part the socket would not take is copied into the connection's `pending`
//! buffer; while that exceeds [`PENDING_LIMIT`] the connection stops reading
//! (backpressure), which in turn fills the peer's send window.
//!
//! ```text
//!   Open ──peer FIN──▶ Draining ──pending flushed──▶ closed (Done)
//!    │                    │
//!    └──reset / error─────┴──────────────────────────▶ closed (Reset/Error)
//! ```

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::runtime::buffer::{Outbuf, WriteError};
use crate::runtime::connlog::{ConnLog, ConnRecord};
use crate::runtime::io::{self as sio, Fault, Io};
use crate::runtime::session::{Accepted, CloseReason, Env, Ready, Session, Side, Step, token};

/// Size of each worker's scratch read buffer. 64 KiB drains a full loopback
/// segment burst in one syscall; it is shared by all of a worker's
/// connections, so it costs nothing per connection.
pub const SCRATCH_SIZE: usize = 64 * 1024;

/// Unsent output above which a connection stops reading. Two scratch
/// buffers' worth keeps the pipe full while bounding memory per connection
/// to about 192 KiB under a peer that never reads.
pub const PENDING_LIMIT: usize = 2 * SCRATCH_SIZE;

/// Reads per call before yielding to other connections. 16 x 64 KiB = 1 MiB
/// per turn keeps one bulk sender from starving thousands of small ones.
const READS_PER_TURN: usize = 16;

/// Per-worker state for echo sessions.
#[derive(Debug)]
pub struct EchoCtx {
    scratch: Box<[u8]>,
    log: Option<ConnLog>,
}

impl EchoCtx {
    pub fn new(log: Option<ConnLog>) -> Self {
        EchoCtx {
            scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
            log,
        }
    }
}

/// Where the session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and echoing.
    Open,
    /// The peer sent FIN: flush what is owed, then close.
    Draining,
}

/// One echo connection.
#[derive(Debug)]
pub struct EchoSession {
    stream: TcpStream,
    token: Token,
    peer: SocketAddr,
    opened: Instant,
    phase: Phase,
    /// Echo bytes the socket has not taken yet.
    pending: Outbuf,
    /// The socket may still hold unread bytes (edge-triggered readiness).
    read_ready: bool,
    /// The peer's FIN or an error is queued behind any data.
    read_closed: bool,
    /// The interest currently registered.
    interest: Interest,
    /// Bytes echoed back (written) and reads that returned data.
    bytes: u64,
    reads: u64,
}

impl EchoSession {
    fn owed(&self) -> usize {
        self.pending.owed()
    }

    /// Writes as much of `pending` as the socket takes.
    fn flush(&mut self) -> Result<(), CloseReason> {
        let sent = self.pending.flush(&mut self.stream).map_err(closed)?;
        self.bytes += sent.bytes as u64;
        Ok(())
    }

    /// Echoes `data` (just read): straight to the socket when nothing is
    /// queued ahead of it, otherwise behind the queue.
    fn echo(&mut self, data: &[u8]) -> Result<(), CloseReason> {
        let sent = self.pending.send(&mut self.stream, data).map_err(closed)?;
        self.bytes += sent.bytes as u64;
        Ok(())
    }

    /// Reads and echoes until the socket is drained, the pending limit is
    /// hit, or the turn's budget is spent (then returns `Step::Again`).
    fn pump(&mut self, scratch: &mut [u8]) -> Result<Step, CloseReason> {
        for _ in 0..READS_PER_TURN {
            if !self.read_ready || self.phase != Phase::Open || self.owed() > PENDING_LIMIT {
                return Ok(Step::Continue);
            }
            match sio::read(&mut self.stream, scratch) {
                Io::Done(n) => {
                    self.reads += 1;
                    // A short read drained the socket: with edge-triggered
                    // readiness the next byte brings a new event, so skip the
                    // read that would only return EAGAIN. Not so when a FIN
                    // is already queued: no new event would announce it.
                    if n < scratch.len() && !self.read_closed {
                        self.read_ready = false;
                    }
                    self.echo(&scratch[..n])?;
                }
                Io::WouldBlock => self.read_ready = false,
                Io::Closed => {
                    self.read_ready = false;
                    self.phase = Phase::Draining;
                }
                Io::Failed(Fault::Reset) => return Err(CloseReason::Reset),
                Io::Failed(Fault::Other(_)) => return Err(CloseReason::Error),
            }
        }
        Ok(if self.read_ready {
            Step::Again
        } else {
            Step::Continue
        })
    }

    /// The interest this state calls for: WRITABLE only while output is owed,
    /// READABLE only while below the pending limit and still open.
    fn wanted_interest(&self) -> Option<Interest> {
        let read = self.phase == Phase::Open && self.owed() <= PENDING_LIMIT;
        let write = self.owed() > 0;
        match (read, write) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }

    fn step(&mut self, ev: Ready, env: &mut Env<'_, EchoCtx>) -> Result<Step, CloseReason> {
        self.read_ready |= ev.readable;
        self.read_closed |= ev.read_closed;
        if self.owed() > 0 {
            self.flush()?;
        }
        let step = self.pump(&mut env.ctx.scratch)?;
        if self.phase == Phase::Draining && self.owed() == 0 {
            // Everything owed is sent; closing sends our FIN, completing the
            // half-close (no shutdown(2) needed: nothing is left unread).
            return Err(CloseReason::Done);
        }
        match self.wanted_interest() {
            Some(want) if want != self.interest => {
                env.registry
                    .reregister(&mut self.stream, self.token, want)
                    .map_err(|_| CloseReason::Error)?;
                self.interest = want;
            }
            _ => {}
        }
        Ok(step)
    }
}

fn closed(e: WriteError) -> CloseReason {
    match e {
        WriteError::Reset => CloseReason::Reset,
        WriteError::Other => CloseReason::Error,
    }
}

impl Session for EchoSession {
    type Ctx = EchoCtx;

    fn open(conn: Accepted, key: usize, env: &mut Env<'_, EchoCtx>) -> io::Result<Self> {
        let mut stream = conn.stream;
        let interest = Interest::READABLE;
        let token = token(key, Side::Client);
        env.registry.register(&mut stream, token, interest)?;
        Ok(EchoSession {
            stream,
            token,
            peer: conn.peer,
            opened: conn.at,
            phase: Phase::Open,
            pending: Outbuf::default(),
            read_ready: false,
            read_closed: false,
            interest,
            bytes: 0,
            reads: 0,
        })
    }

    fn ready(&mut self, ev: Ready, env: &mut Env<'_, EchoCtx>) -> Step {
        self.step(ev, env).unwrap_or_else(Step::Close)
    }

    fn close(self, reason: CloseReason, env: &mut Env<'_, EchoCtx>) {
        // No deregister: the fd is never duplicated, so close(2) (when the
        // stream drops) removes it from the epoll set; one syscall saved per
        // connection.
        env.stats.record_close(reason, self.bytes);
        if let Some(log) = &env.ctx.log {
            log.send(ConnRecord {
                peer: self.peer,
                fd: self.stream.as_raw_fd(),
                bytes: self.bytes,
                requests: self.reads,
                duration: env.now.saturating_duration_since(self.opened),
                reason,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle memory per connection is the slab entry; keep it small (the
    /// target is 1 KiB per idle connection, all costs included).
    #[test]
    fn an_idle_session_is_small() {
        assert!(
            std::mem::size_of::<EchoSession>() <= 128,
            "{}",
            std::mem::size_of::<EchoSession>()
        );
    }
}
