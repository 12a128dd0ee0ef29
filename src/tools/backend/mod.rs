//! The simulated backend (`tidegate backend`): a small HTTP/1.1 keep-alive
//! server whose requests take the next delay of a latency cycle, shared by
//! all its connections, as in the report's three aiohttp servers
//! (A = 10,15,20,400,400,400,10,15,20 ms; B = 200 ms; C = 250 ms).
//!
//! One thread per backend: a mio event loop with a deadline heap, so
//! hundreds of delayed requests cost no threads. Optional capacity mode
//! models a saturating server (latency grows with load), fail modes stand
//! in for broken ones, and a slow phase makes a server temporarily slower.
//!
//! Every response is `text/plain`, names the server and its latency, and
//! echoes what the backend saw of the request:
//!
//! ```text
//! HTTP/1.1 200 OK
//! Content-Type: text/plain
//! Content-Length: 23
//! X-Backend: A
//! X-Latency-Ms: 400
//! X-Request-Body-Bytes: 0
//!
//! server A latency 400ms
//! ```
//!
//! # Layout
//! - `mod.rs`: [`BackendConfig`], [`run`], [`spawn`], [`StopSignal`].
//! - `profile`: [`Profile`], [`FailMode`], [`SlowPhase`] and their parsing.
//! - `event_loop`: Poll, Slab, accept, timers.
//! - `conn`: one connection's state machine.
//! - Request heads and body framing are `crate::http`'s, as in the proxy.
//! - `response`: the bytes sent. `schedule`: when each request is due.
//! - `timer`: the deadline heap. `stats`: counters.

mod conn;
mod event_loop;
mod profile;
mod response;
mod schedule;
mod stats;
mod timer;

pub use profile::{FailMode, MAX_DELAY_MS, ParseError, Profile, SlowPhase};
pub use stats::BackendStats;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use log::error;
use mio::Waker;

use crate::config::DEFAULT_BACKLOG;
use event_loop::EventLoop;
use stats::Counters;

/// Settings for one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub listen: SocketAddr,
    /// Server id in bodies and `X-Backend`. Empty: the bound port number.
    pub name: String,
    pub profile: Profile,
    /// At most this many requests in service; the rest queue FIFO.
    pub capacity: Option<usize>,
    /// With `capacity`: each request's service time. Without it the
    /// profile's delays are the service times.
    pub service_ms: Option<u64>,
    pub fail: Option<FailMode>,
    /// A temporary slowdown, timed from the backend's start (`--slow
    /// 10x@10s+10s`): see [`SlowPhase`].
    pub slow: Option<SlowPhase>,
    pub backlog: u32,
}

impl BackendConfig {
    /// A plain backend, named after its preset (`A`, `B`, `C`) or else its
    /// port.
    pub fn new(listen: SocketAddr, profile: Profile) -> Self {
        BackendConfig {
            listen,
            name: profile.preset().unwrap_or_default().to_string(),
            profile,
            capacity: None,
            service_ms: None,
            fail: None,
            slow: None,
            backlog: DEFAULT_BACKLOG,
        }
    }

    /// Checks what the types cannot; errors are `InvalidInput` with one
    /// line naming the setting. [`run`] and [`spawn`] call it.
    pub fn validate(&self) -> io::Result<()> {
        let bad = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if !self.name.bytes().all(|b| b.is_ascii_graphic()) {
            return bad(format!(
                "backend name '{}' must be printable ASCII without spaces",
                self.name
            ));
        }
        if self.capacity == Some(0) {
            return bad("--capacity must be at least 1".into());
        }
        if self.slow.is_some_and(|p| p.factor == 0) {
            return bad("--slow factor must be at least 1".into());
        }
        match self.service_ms {
            Some(_) if self.capacity.is_none() => bad("--service-ms needs --capacity".into()),
            Some(ms) if ms > MAX_DELAY_MS => {
                bad(format!("--service-ms {ms} is over {MAX_DELAY_MS}"))
            }
            _ if self.backlog == 0 || i32::try_from(self.backlog).is_err() => {
                bad(format!("--backlog {} is out of range", self.backlog))
            }
            _ => Ok(()),
        }
    }
}

/// Asks running backends to stop. Clones share the signal; one signal may
/// stop several backends.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    flag: Arc<AtomicBool>,
    wakers: Arc<Mutex<Vec<Arc<Waker>>>>,
}

impl StopSignal {
    pub fn new() -> Self {
        StopSignal::default()
    }

    /// Stops every backend running with this signal, promptly.
    pub fn stop(&self) {
        self.flag.store(true, Relaxed);
        let wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        for w in wakers.iter() {
            if let Err(e) = w.wake() {
                error!("cannot wake a backend to stop it: {e}");
            }
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.flag.load(Relaxed)
    }

    /// The raw flag, for `signal_hook::flag::register`: setting it stops
    /// the backends within 200 ms (they cannot be woken from a handler).
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    fn register(&self, waker: Arc<Waker>) {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        wakers.push(waker);
    }
}

/// Runs a backend on the calling thread until `stop` is signalled. Logs
/// one line at start and one at stop. Errors: invalid config, bind
/// failure (`AddrInUse` when taken), or a failed `poll`.
pub fn run(cfg: &BackendConfig, stop: &StopSignal) -> io::Result<BackendStats> {
    EventLoop::bind(cfg, stop.clone())?.run()
}

/// Binds now (so errors and the port come back at once; port 0 works) and
/// runs the backend on its own thread.
pub fn spawn(cfg: BackendConfig) -> io::Result<BackendHandle> {
    let stop = StopSignal::new();
    let backend = EventLoop::bind(&cfg, stop.clone())?;
    let addr = backend.local_addr();
    let name = backend.name().to_string();
    let counters = backend.counters();
    let injected_status = backend.injected_status();
    let thread = thread::Builder::new()
        .name(format!("backend-{name}"))
        .spawn(move || backend.run())?;
    Ok(BackendHandle {
        addr,
        name,
        stop,
        counters,
        injected_status,
        thread: Some(thread),
    })
}

/// A backend running on its own thread; stops when dropped.
#[derive(Debug)]
pub struct BackendHandle {
    addr: SocketAddr,
    name: String,
    stop: StopSignal,
    counters: Arc<Counters>,
    injected_status: Option<u16>,
    thread: Option<JoinHandle<io::Result<BackendStats>>>,
}

impl BackendHandle {
    /// The bound address (the real port when asked for port 0). With
    /// `--fail refuse` the port is bound but refuses connections.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name in `X-Backend`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counters so far, while running.
    pub fn stats(&self) -> BackendStats {
        self.counters.snapshot(self.injected_status)
    }

    /// Stops the backend, waits for its thread (connections closed, port
    /// freed) and returns its final counters.
    pub fn stop(mut self) -> io::Result<BackendStats> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> io::Result<BackendStats> {
        let Some(thread) = self.thread.take() else {
            return Ok(self.stats());
        };
        self.stop.stop();
        thread
            .join()
            .map_err(|_| io::Error::other(format!("backend {} panicked", self.name)))?
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            error!("{e}");
        }
    }
}
