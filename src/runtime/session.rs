//! The contract between the worker loop and a connection state machine.
//!
//! A worker knows nothing about what a connection does: it stores
//! [`Session`]s in a slab, routes readiness to them by token and acts on the
//! [`Step`] they return. Echo mode is one implementation; proxy mode adds
//! another with two sockets per session.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Registry, Token};

pub use crate::runtime::close::CloseReason;
use crate::runtime::stats::WorkerStats;
use crate::runtime::timers::Timers;

/// Which socket of a session an event is for. A session owns at most two
/// sockets (the client's and, in proxy mode, a backend's), so the side is
/// the low bit of the token and the slab key is the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The accepted (downstream) socket.
    Client,
    /// The upstream socket a session opened itself.
    Backend,
}

/// The token for one socket of the session stored under `key`.
pub fn token(key: usize, side: Side) -> Token {
    debug_assert!(
        key < usize::MAX >> 2,
        "slab key collides with reserved tokens"
    );
    Token(key << 1 | (side == Side::Backend) as usize)
}

/// Splits a session token into its slab key and side.
pub fn split(token: Token) -> (usize, Side) {
    let side = if token.0 & 1 == 1 {
        Side::Backend
    } else {
        Side::Client
    };
    (token.0 >> 1, side)
}

/// Readiness delivered to a session. `resume` marks a call the worker makes
/// on its own because the session asked to be run again ([`Step::Again`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub side: Side,
    pub readable: bool,
    pub writable: bool,
    /// The peer's FIN (or an error) is queued: a short read no longer
    /// proves the socket drained, so read until EOF.
    pub read_closed: bool,
}

impl Ready {
    /// A call with no new readiness: continue work left over from before.
    pub fn resume(side: Side) -> Self {
        Ready {
            side,
            readable: false,
            writable: false,
            read_closed: false,
        }
    }
}

/// What the worker should do with a session after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Wait for the next readiness event.
    Continue,
    /// The session stopped early to be fair to others and has more to do:
    /// call it again after this batch of events, without waiting.
    Again,
    /// Remove and close the session.
    Close(CloseReason),
}

/// A freshly accepted client connection, handed from the acceptor.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub at: Instant,
    /// Which listener accepted it: 0 the main one (`--listen`), i + 1 the
    /// i-th `[[listener]]` (proxy mode: its TLS settings, if any).
    pub listener: usize,
}

/// What a session may touch during a call: the worker's registry, its
/// per-worker context, its counters, its timers, and the time of this event
/// batch (one clock read per batch, passed down).
#[derive(Debug)]
pub struct Env<'a, C> {
    pub registry: &'a Registry,
    pub ctx: &'a mut C,
    pub stats: &'a WorkerStats,
    pub timers: &'a mut Timers,
    pub now: Instant,
}

/// Who handles readiness on a token, as decided by [`Session::route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The session in this slab entry, as this side.
    To(usize, Side),
    /// The per-worker context dealt with it (e.g. an idle pooled socket).
    Handled,
}

/// A connection state machine driven by a worker.
pub trait Session: Sized + Send + 'static {
    /// Per-worker state shared by all of that worker's sessions (scratch
    /// buffers, log channels, later the backend pool). Built on the main
    /// thread, then moved into the worker.
    type Ctx: Send + 'static;

    /// Takes ownership of an accepted connection and registers it under
    /// `token(key, Side::Client)`.
    fn open(conn: Accepted, key: usize, env: &mut Env<'_, Self::Ctx>) -> io::Result<Self>;

    /// Handles readiness (possibly spurious) for one of the session's sockets.
    fn ready(&mut self, ev: Ready, env: &mut Env<'_, Self::Ctx>) -> Step;

    /// Called at (or after) a deadline the session scheduled through
    /// `env.timers`; may be spurious, so the session checks its own clock.
    fn timeout(&mut self, _env: &mut Env<'_, Self::Ctx>) -> Step {
        Step::Continue
    }

    /// The server is stopping: finish the work in hand (or close now). The
    /// worker closes whatever is left when its drain deadline passes.
    fn drain(&mut self, _env: &mut Env<'_, Self::Ctx>) -> Step {
        Step::Close(CloseReason::Shutdown)
    }

    /// Per-worker upkeep, run about every [`HOUSEKEEPING`] whether or not
    /// anything happened (proxy mode closes pooled connections to drained
    /// backends here).
    ///
    /// [`HOUSEKEEPING`]: crate::runtime::worker::HOUSEKEEPING
    fn housekeep(_ctx: &mut Self::Ctx, _now: Instant) {}

    /// Maps readiness on `token(key, side)` to the session that handles it.
    /// By default a token belongs to the session in the same slab entry;
    /// proxy mode keeps backend sockets in a per-worker table instead, so
    /// pooled sockets never need re-registering.
    fn route(key: usize, side: Side, _ready: Ready, _env: &mut Env<'_, Self::Ctx>) -> Route {
        Route::To(key, side)
    }

    /// Deregisters and releases the session's sockets. Counting is the
    /// session's job, since only it knows its bytes.
    fn close(self, reason: CloseReason, env: &mut Env<'_, Self::Ctx>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for key in [0usize, 1, 2, 17, 1 << 20] {
            for side in [Side::Client, Side::Backend] {
                assert_eq!(split(token(key, side)), (key, side));
            }
        }
        assert_ne!(token(3, Side::Client), token(3, Side::Backend));
    }
}
