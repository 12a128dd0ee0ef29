//! The admin endpoint (`--admin ADDR`): Prometheus metrics, JSON stats, a
//! live dashboard and runtime control, served by its own thread, apart
//! from the data path.
//!
//! - `GET /metrics`: Prometheus text format 0.0.4 (`prom`).
//! - `GET /stats`: the same numbers as JSON, plus a per-second history of
//!   the last minute and the latest requests (`json`).
//! - `GET /`: the dashboard (`dashboard.html`, compiled in), which polls
//!   `/stats` every second.
//! - `GET /healthz`: `200 ok` while serving (liveness).
//! - `GET /readyz`: 200 while a backend is usable, else 503 (readiness).
//! - `GET /api/backends`, `POST /api/backends/{b}/drain|enable`,
//!   `POST /api/reload`: runtime control (`api`).
//!
//! Anything else is 404; a method a path does not take is 405.
//!
//! The endpoint stays on loopback unless `--admin-token` is given: binding
//! any other address without a token is a start-up error. With a token,
//! every request must carry `Authorization: Bearer TOKEN` (else 401).
//!
//! One thread runs a small mio loop: it accepts, hands each connection to
//! a short-lived thread (`http`, at most [`MAX_CONNECTIONS`] at once, each
//! bounded by [`http::DEADLINE`]), and once a second slides the latency
//! windows on and records a sample for the trend (`view`). It reads the
//! proxy's atomics and per-worker latency windows, and flips only the
//! drained flags. `process` reads the process' descriptors and start time.
//!
//! `tidegate_slo_objective_seconds` and `tidegate_slo_share` appear when
//! `--slo-ms` is set.

pub mod api;
pub mod http;
pub mod json;
pub mod process;
pub mod prom;
pub mod queue;
pub mod view;

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::ConfigError;
use crate::runtime::reload::Reloader;
use crate::server::StartError;
pub use view::{History, Sources, View};

/// Most connections served at once; more get a quick 503. A dashboard
/// and a scraper need two or three; this bounds the threads a flood of
/// clients can cost.
pub const MAX_CONNECTIONS: usize = 16;

/// How often a sample is added to the trend history: the dashboard's
/// resolution is one point per second.
pub const TICK: Duration = Duration::from_secs(1);

/// Poll token of the listener.
const LISTENER: Token = Token(0);
/// Poll token of the stop waker.
const WAKER: Token = Token(1);

/// What connection threads share: the sources, the trend history, the
/// token and the reload path.
pub struct Endpoint {
    sources: Sources,
    started: Instant,
    history: Mutex<History>,
    /// `--admin-token`: required as `Authorization: Bearer` when set.
    token: Option<String>,
    /// What `POST /api/reload` runs (the SIGHUP path).
    reload: Reloader,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the token.
        f.debug_struct("Endpoint")
            .field("started", &self.started)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    fn new(sources: Sources, token: Option<String>, reload: Reloader) -> Self {
        let started = Instant::now();
        let mut history = History::default();
        history.push(sources.sample(started));
        Endpoint {
            sources,
            started,
            history: Mutex::new(history),
            token,
            reload,
        }
    }

    /// Reads everything now; with `detail`, also the history and the
    /// latest requests.
    pub fn view(&self, detail: bool) -> View {
        if detail {
            let h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            self.sources.view(self.started, Some(&h))
        } else {
            self.sources.view(self.started, None)
        }
    }

    /// Once a second: slides the latency windows on and samples the
    /// counters for the trend history.
    fn tick(&self) {
        self.sources.current().metrics.rotate(Instant::now());
        let s = self.sources.sample(self.started);
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(s);
    }
}

/// The admin socket, bound but not serving yet (bind first so a taken
/// port fails before the proxy starts).
pub struct AdminListener {
    listener: TcpListener,
    addr: SocketAddr,
    token: Option<String>,
}

impl std::fmt::Debug for AdminListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminListener")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// Checks the exposure rule: an admin address off loopback needs a token,
/// and a token must be one visible ASCII word (it travels in a header).
pub fn check_access(addr: SocketAddr, token: Option<&str>) -> Result<(), ConfigError> {
    let bad = |value: String, why: &str| ConfigError::BadValue {
        flag: "--admin",
        value,
        why: why.into(),
    };
    match token {
        Some(t) if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) => {
            Err(ConfigError::BadValue {
                flag: "--admin-token",
                // Never echo a secret.
                value: "(hidden)".into(),
                why: "expected a non-empty token of visible ASCII characters, without spaces"
                    .into(),
            })
        }
        None if !addr.ip().is_loopback() => Err(bad(
            addr.to_string(),
            "the admin endpoint controls the proxy: off loopback it needs --admin-token TOKEN \
             (requests then carry Authorization: Bearer TOKEN)",
        )),
        _ => Ok(()),
    }
}

fn start_err(addr: SocketAddr) -> impl FnOnce(io::Error) -> StartError {
    move |source| StartError::Io {
        what: format!("cannot serve the admin endpoint on {addr} (choose another with --admin)"),
        source,
    }
}

impl AdminListener {
    /// Binds `addr` (port 0 picks a free port; see [`Self::local_addr`]).
    /// With `token`, every request must carry it as a bearer token; without
    /// one, only a loopback address is accepted ([`check_access`]).
    pub fn bind(addr: SocketAddr, token: Option<String>) -> Result<Self, StartError> {
        check_access(addr, token.as_deref())?;
        let std = std::net::TcpListener::bind(addr).map_err(start_err(addr))?;
        std.set_nonblocking(true).map_err(start_err(addr))?;
        let local = std.local_addr().map_err(start_err(addr))?;
        Ok(AdminListener {
            listener: TcpListener::from_std(std),
            addr: local,
            token,
        })
    }

    /// A listener inherited from the process this one took over from
    /// (`--takeover`), already bound and listening; `token` as in
    /// [`Self::bind`].
    pub fn from_std(std: std::net::TcpListener, token: Option<String>) -> Result<Self, StartError> {
        let fail = |source| StartError::Io {
            what: "setting up the inherited admin listener".into(),
            source,
        };
        std.set_nonblocking(true).map_err(fail)?;
        let local = std.local_addr().map_err(fail)?;
        check_access(local, token.as_deref())?;
        Ok(AdminListener {
            listener: TcpListener::from_std(std),
            addr: local,
            token,
        })
    }

    /// A second descriptor for the listening socket, to hand to a new
    /// process on upgrade.
    pub fn try_clone_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving on its own thread; `POST /api/reload` runs `reload`
    /// (give it the server's [`crate::server::Server::reloader`], the
    /// SIGHUP path).
    pub fn serve(mut self, sources: Sources, reload: Reloader) -> Result<AdminHandle, StartError> {
        let addr = self.addr;
        let poll = Poll::new().map_err(start_err(addr))?;
        poll.registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)
            .map_err(start_err(addr))?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(start_err(addr))?);
        let stop = Arc::new(AtomicBool::new(false));
        let auth = if self.token.is_some() {
            " (bearer token required)"
        } else {
            ""
        };
        let endpoint = Arc::new(Endpoint::new(sources, self.token.take(), reload));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("tidegate-admin".into())
            .spawn(move || run(self.listener, poll, &endpoint, &flag))
            .map_err(start_err(addr))?;
        info!(
            "admin endpoint on http://{addr}/ (dashboard), /metrics, /stats, /healthz, /readyz, /api/backends{auth}"
        );
        Ok(AdminHandle {
            addr,
            stop,
            waker,
            thread: Some(thread),
        })
    }
}

/// Binds `addr` (loopback: no token) and serves `sources` there, without
/// a reload hook.
pub fn start(addr: SocketAddr, sources: Sources) -> Result<AdminHandle, StartError> {
    AdminListener::bind(addr, None)?.serve(sources, Reloader::default())
}

/// A running admin endpoint; stops when dropped.
#[derive(Debug)]
pub struct AdminHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl AdminHandle {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, waits (at most [`http::DEADLINE`]) for the
    /// connections being served, and joins the thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            warn!("waking the admin thread: {e}");
        }
        if thread.join().is_err() {
            warn!("the admin thread panicked");
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The admin thread: accept, tick, until stopped.
fn run(listener: TcpListener, mut poll: Poll, endpoint: &Arc<Endpoint>, stop: &AtomicBool) {
    let mut events = Events::with_capacity(16);
    let active = Arc::new(AtomicUsize::new(0));
    let mut next_tick = Instant::now() + TICK;
    while !stop.load(Ordering::Acquire) {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            warn!("admin endpoint poll failed, stopping it: {e}");
            break;
        }
        let now = Instant::now();
        if now >= next_tick {
            endpoint.tick();
            next_tick = (next_tick + TICK).max(now);
        }
        // Every wake-up, not just on events: retries after an accept
        // error such as EMFILE on the next tick.
        accept_all(&listener, endpoint, &active);
    }
    drop(listener);
    let end = Instant::now() + http::DEADLINE;
    while active.load(Ordering::Acquire) > 0 && Instant::now() < end {
        thread::sleep(Duration::from_millis(10));
    }
}

/// Decrements the active-connection count when a connection thread ends.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_all(listener: &TcpListener, endpoint: &Arc<Endpoint>, active: &Arc<AtomicUsize>) {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => std::net::TcpStream::from(OwnedFd::from(s)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!("admin endpoint accept failed: {e}");
                return;
            }
        };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            http::busy(stream);
            continue;
        }
        let guard = Active(Arc::clone(active));
        let endpoint = Arc::clone(endpoint);
        let spawned = thread::Builder::new()
            .name("tidegate-admin-conn".into())
            .spawn(move || {
                let _guard = guard;
                // An error here only means the client went away or stalled.
                let _ = http::serve(stream, &endpoint);
            });
        if let Err(e) = spawned {
            warn!("admin endpoint: cannot start a connection thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_needs_a_token_and_a_token_must_be_one_word() {
        let at = |a: &str| {
            a.parse::<SocketAddr>()
                .unwrap_or_else(|e| panic!("{a}: {e}"))
        };
        for ok in ["127.0.0.1:9091", "127.0.0.2:9091", "[::1]:9091"] {
            assert!(check_access(at(ok), None).is_ok(), "{ok}");
        }
        for exposed in ["0.0.0.0:9091", "10.1.2.3:9091", "[::]:9091"] {
            let e = check_access(at(exposed), None).map_err(|e| e.to_string());
            assert!(e.is_err_and(|e| e.contains("--admin-token")), "{exposed}");
            assert!(check_access(at(exposed), Some("t0k3n")).is_ok());
        }
        for bad in ["", "two words", "tab\there", "caf\u{e9}"] {
            let e = check_access(at("0.0.0.0:1"), Some(bad)).map_err(|e| e.to_string());
            assert!(
                e.is_err_and(
                    |e| e.contains("--admin-token") && (bad.is_empty() || !e.contains(bad))
                ),
                "{bad:?}"
            );
        }
    }
}
