//! After `101 Switching Protocols` (WebSocket and other upgrades) a session
//! is a byte tunnel: what the client sends goes to the backend and back,
//! with backpressure both ways (a side that does not read stops the other
//! side being read) and half-close passed through (a FIN from one side is
//! a FIN to the other once its bytes are delivered). The backend
//! connection is never pooled afterwards.

use std::time::Instant;

use super::client::{Buffers, Client};
use super::net::Net;
use super::{PENDING_LIMIT, ProxyCtx};
use crate::runtime::io::{self as sio, Io};
use crate::runtime::session::{CloseReason, Env};

/// A switched connection pair.
#[derive(Debug)]
pub struct Tunnel {
    /// Our backend connection (a key of the worker's `Upstreams`).
    pub upstream: usize,
    pub backend: usize,
    /// Last byte moved either way; `--tunnel-timeout` counts from here.
    pub last_progress: Instant,
    /// The backend sent FIN.
    backend_eof: bool,
    /// We passed the client's FIN on to the backend.
    backend_shut: bool,
    /// We passed the backend's FIN on to the client.
    client_shut: bool,
}

/// What one step of a tunnel achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Stalled,
    Moved,
    /// Both sides finished and everything was delivered.
    Done,
}

impl Tunnel {
    /// Opens the tunnel; bytes the backend sent after its 101 (already in
    /// `bufs.bin`) are queued for the client.
    pub fn open<N: Net>(
        upstream: usize,
        backend: usize,
        client: &mut Client<N>,
        bufs: &mut Buffers,
        now: Instant,
    ) -> Self {
        client.out.push(&bufs.bin);
        bufs.bin.clear();
        bufs.bout.clear();
        Tunnel {
            upstream,
            backend,
            last_progress: now,
            backend_eof: false,
            backend_shut: false,
            client_shut: false,
        }
    }

    /// Whether the client may be read: the backend takes what we hold.
    pub fn wants_client_input(&self, bufs: &Buffers) -> bool {
        !self.backend_shut && bufs.bout.owed() < PENDING_LIMIT
    }

    /// Moves bytes both ways once; the caller flushes the client.
    pub fn pump<N: Net>(
        &mut self,
        client: &mut Client<N>,
        bufs: &mut Buffers,
        env: &mut Env<'_, ProxyCtx<N>>,
    ) -> Result<Pass, CloseReason> {
        let ctx = &mut *env.ctx;
        let Some(up) = ctx.upstreams.get_mut(self.upstream) else {
            return Err(CloseReason::Error);
        };
        let mut moved = false;
        if !client.input.is_empty() && !self.backend_shut {
            bufs.bout.push(&client.input);
            client.input.clear();
            moved = true;
        }
        if !bufs.bout.is_empty() && up.write_ready {
            let sent = bufs
                .bout
                .flush(&mut up.stream)
                .map_err(|_| CloseReason::Error)?;
            up.write_ready = !sent.blocked;
            moved |= sent.bytes > 0;
        } else if up.write_ready && up.stream.flush_owed().is_err() {
            // TLS records the socket refused earlier (none for TCP).
            up.write_ready = false;
        }
        if up.read_ready && !self.backend_eof && client.out.owed() < PENDING_LIMIT {
            let scratch = &mut ctx.scratch;
            match sio::read(&mut up.stream, scratch) {
                Io::Done(n) => {
                    if n < scratch.len() && !up.read_closed && !up.stream.read_pending() {
                        up.read_ready = false;
                    }
                    client.out.push(scratch.get(..n).unwrap_or_default());
                    moved = true;
                }
                Io::WouldBlock => up.read_ready = false,
                Io::Closed => {
                    self.backend_eof = true;
                    moved = true;
                }
                Io::Failed(_) => return Err(CloseReason::Error),
            }
        }
        if client.eof && client.input.is_empty() && bufs.bout.is_empty() && !self.backend_shut {
            up.stream.shutdown_write(N::shutdown_write);
            self.backend_shut = true;
            moved = true;
        }
        if self.backend_eof && client.out.is_empty() && !self.client_shut {
            N::shutdown_write(&mut client.stream);
            self.client_shut = true;
            moved = true;
        }
        if moved {
            self.last_progress = env.now;
        }
        Ok(if self.backend_shut && self.client_shut {
            Pass::Done
        } else if moved {
            Pass::Moved
        } else {
            Pass::Stalled
        })
    }
}
