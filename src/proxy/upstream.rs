//! Backend ("upstream") connections of one worker, and its keep-alive pool.
//!
//! Every backend socket lives in this per-worker slab and is registered
//! once, for READABLE | WRITABLE (edge-triggered), under
//! `token(key, Side::Backend)` with `key` its index here. A connection is
//! either owned by a session (`owner`) or idle in the pool; readiness is
//! routed accordingly, so handing a pooled connection to another session
//! costs no `epoll_ctl`. This is how nginx keeps its upstream keepalive
//! cheap.
//!
//! A backend drained through the admin API ([`Drained`]) gets no pooled
//! connection: check-out closes its idle ones instead of handing them out,
//! check-in closes the connection of a request that finished, and
//! [`Upstreams::sweep`] (the worker's housekeeping) closes those idling
//! in the pool when the drain came.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Registry;
use slab::Slab;

use super::drained::Drained;
use super::net::Net;
use crate::runtime::io::{self as sio, Io};
use crate::runtime::session::{Side, token};
use crate::tls::backend::{BackendStream, BackendTls};

/// Idle connections kept per backend per worker. Like nginx's `keepalive`
/// directive: enough for the request concurrency one worker sees against
/// one backend (wrk -c100 over 3 backends and 2 workers is ~17 each), with
/// room; beyond it, connections are closed rather than hoarded.
pub const MAX_IDLE_PER_BACKEND: usize = 128;

/// An idle connection older than this is closed instead of reused: most
/// servers drop idle keep-alive connections after 5-75 s, and reusing one
/// just as the server closes it costs a failed request.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// One backend connection.
#[derive(Debug)]
pub struct Upstream<S> {
    pub stream: S,
    pub backend: usize,
    /// The session using it; `None` while idle in the pool.
    pub owner: Option<usize>,
    /// Connect still in progress (not yet writable).
    pub connecting: bool,
    /// Edge-triggered readiness not yet consumed.
    pub read_ready: bool,
    pub write_ready: bool,
    /// The backend's FIN or an error is queued.
    pub read_closed: bool,
    /// Requests served on this connection (1 = fresh).
    pub uses: u32,
    idle_since: Instant,
    /// The pool's epoch when it was opened or last remapped: a connection
    /// in use across a reload is closed, not pooled, when it comes back.
    epoch: u64,
}

/// All backend connections of a worker.
#[derive(Debug)]
pub struct Upstreams<N: Net> {
    net: N,
    conns: Slab<Upstream<BackendStream<N::Stream>>>,
    /// Per backend, keys of idle connections; the most recently used last.
    idle: Vec<Vec<usize>>,
    /// +1 per configuration reload this worker applied.
    epoch: u64,
    /// The last reload's moves: `moved[old] = Some(new)` for a backend that
    /// stayed, so a connection in use across it can still be pooled.
    moved: Vec<Option<usize>>,
    /// Backends drained by an operator (shared with every worker).
    drained: Arc<Drained>,
}

impl<N: Net> Upstreams<N> {
    /// A pool for as many backends as `drained` tracks.
    pub fn new(net: N, drained: Arc<Drained>) -> Self {
        Upstreams {
            net,
            conns: Slab::new(),
            idle: (0..drained.len()).map(|_| Vec::new()).collect(),
            epoch: 0,
            moved: Vec::new(),
            drained,
        }
    }

    /// Follows a new configuration's drained flags (same backend count as
    /// the pool's lists, e.g. after a reload remapped them).
    pub fn set_drained(&mut self, drained: Arc<Drained>) {
        debug_assert_eq!(drained.len(), self.idle.len());
        self.drained = drained;
    }

    pub fn get(&self, key: usize) -> Option<&Upstream<BackendStream<N::Stream>>> {
        self.conns.get(key)
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut Upstream<BackendStream<N::Stream>>> {
        self.conns.get_mut(key)
    }

    /// Open connections (idle and in use).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Idle connections to `backend`.
    pub fn idle_count(&self, backend: usize) -> usize {
        self.idle.get(backend).map_or(0, Vec::len)
    }

    /// Takes the most recently used idle connection to `backend` for `owner`,
    /// closing any that idled too long. A drained backend's idle
    /// connections are closed and none is handed out.
    pub fn checkout(&mut self, backend: usize, owner: usize, now: Instant) -> Option<usize> {
        if self.drained.is_drained(backend) {
            self.close_idle(backend);
            return None;
        }
        let list = self.idle.get_mut(backend)?;
        while let Some(key) = list.pop() {
            let Some(up) = self.conns.get_mut(key) else {
                continue;
            };
            if now.saturating_duration_since(up.idle_since) > POOL_IDLE_TIMEOUT || up.read_closed {
                self.conns.remove(key);
                continue;
            }
            up.owner = Some(owner);
            up.uses += 1;
            return Some(key);
        }
        None
    }

    /// Starts a non-blocking connect to `addr` for `owner` (with `tls`, a
    /// TLS connection over it).
    pub fn connect(
        &mut self,
        backend: usize,
        (addr, tls): (SocketAddr, Option<&BackendTls>),
        owner: usize,
        registry: &Registry,
        now: Instant,
    ) -> io::Result<usize> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let sock = self
            .net
            .connect(addr, registry, token(key, Side::Backend))?;
        let stream = BackendStream::new(sock, tls)?;
        entry.insert(Upstream {
            stream,
            backend,
            owner: Some(owner),
            connecting: true,
            read_ready: false,
            write_ready: false,
            read_closed: false,
            uses: 1,
            idle_since: now,
            epoch: self.epoch,
        });
        Ok(key)
    }

    /// Returns a connection to the pool, or closes it if the pool is full
    /// or its backend is drained.
    pub fn checkin(&mut self, key: usize, now: Instant) {
        let Some(up) = self.conns.get_mut(key) else {
            return;
        };
        // In use across the last reload: it follows its backend to its new
        // index if the backend stayed; older ones are not tracked.
        if up.epoch + 1 == self.epoch
            && let Some(new) = self.moved.get(up.backend).copied().flatten()
        {
            up.backend = new;
            up.epoch = self.epoch;
        }
        let backend = up.backend;
        let current = up.epoch == self.epoch;
        let drained = self.drained.is_drained(backend);
        match self.idle.get_mut(backend) {
            Some(list)
                if current && list.len() < MAX_IDLE_PER_BACKEND && !up.read_closed && !drained =>
            {
                up.owner = None;
                up.idle_since = now;
                list.push(key);
            }
            _ => self.close(key),
        }
    }

    /// Closes a connection (dropping the socket removes it from epoll).
    pub fn close(&mut self, key: usize) {
        let Some(up) = self.conns.try_remove(key) else {
            return;
        };
        if up.owner.is_none()
            && let Some(list) = self.idle.get_mut(up.backend)
        {
            list.retain(|&k| k != key);
        }
    }

    /// Closes every idle connection to `backend`.
    fn close_idle(&mut self, backend: usize) {
        let Some(list) = self.idle.get_mut(backend) else {
            return;
        };
        // Bounded by the pool's size per backend.
        for key in list.drain(..) {
            self.conns.try_remove(key);
        }
    }

    /// Closes the idle connections to drained backends (called by the
    /// worker's housekeeping, so a drain closes them even on a worker that
    /// sees no request). One atomic load per backend when none is drained.
    pub fn sweep(&mut self) {
        for backend in 0..self.idle.len() {
            if self.idle.get(backend).is_some_and(|l| !l.is_empty())
                && self.drained.is_drained(backend)
            {
                self.close_idle(backend);
            }
        }
    }

    /// Readiness on an idle pooled connection: the backend closed it, sent
    /// something unsolicited, or failed. Any of those makes it unusable.
    pub fn on_idle_event(&mut self, key: usize, scratch: &mut [u8]) {
        let Some(up) = self.conns.get_mut(key) else {
            return;
        };
        debug_assert!(up.owner.is_none());
        if matches!(sio::read(&mut up.stream, scratch), Io::WouldBlock) {
            return; // spurious: still healthy
        }
        self.close(key);
    }

    /// Whether a pooled connection is still open right before its first
    /// write: the backend may have closed it since the last event was
    /// seen. One non-blocking read: nothing to read means alive; EOF, an
    /// error or unsolicited bytes mean the connection is unusable. Costs a
    /// syscall, so only requests that may not be replayed ask.
    pub fn still_open(&mut self, key: usize, scratch: &mut [u8]) -> bool {
        let Some(up) = self.conns.get_mut(key) else {
            return false;
        };
        if up.read_closed {
            return false;
        }
        matches!(sio::read(&mut up.stream, scratch), Io::WouldBlock)
    }

    /// A reload changed the backend list: `map[new] = Some(old)` for a
    /// backend that stays. Idle connections follow their backend to its new
    /// index; those of removed backends are closed; connections in use
    /// follow when they come back, or close if their backend was removed.
    pub fn remap(&mut self, map: &[Option<usize>]) {
        let mut old = std::mem::take(&mut self.idle);
        self.epoch += 1;
        self.moved = vec![None; old.len()];
        for (new, m) in map.iter().enumerate() {
            if let Some(slot) = m.and_then(|o| self.moved.get_mut(o)) {
                *slot = Some(new);
            }
        }
        self.idle = map
            .iter()
            .map(|m| {
                m.and_then(|o| old.get_mut(o))
                    .map(std::mem::take)
                    .unwrap_or_default()
            })
            .collect();
        for (backend, list) in self.idle.iter().enumerate() {
            for &key in list {
                if let Some(up) = self.conns.get_mut(key) {
                    up.backend = backend;
                    up.epoch = self.epoch;
                }
            }
        }
        // What is left in `old` belongs to removed backends.
        for key in old.into_iter().flatten() {
            self.conns.try_remove(key);
        }
    }

    /// Closes every connection (worker shutdown).
    pub fn clear(&mut self) {
        self.conns.clear();
        self.idle.iter_mut().for_each(Vec::clear);
    }
}
