//! The main thread's job: accept connections and deal them out round-robin
//! to the workers; survive running out of file descriptors; stop on request;
//! act on signals (stop, reopen logs, reload through [`Reloader`]).

use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::runtime::io::{AcceptFault, classify_accept, is_addr_in_use, is_interrupted};
use crate::runtime::ratelimit::RateLimit;
use crate::runtime::reload::Reloader;
use crate::runtime::session::Accepted;
use crate::runtime::stats::AcceptStats;
use crate::runtime::timers;
use crate::runtime::worker::{Msg, WorkerHandle};

pub const LISTENER: Token = Token(0);
pub const WAKE: Token = Token(1);
pub const SIGNAL: Token = Token(2);
/// Token of the first extra listener (`[[listener]]`); the i-th is this + i.
pub const EXTRA_LISTENER: Token = Token(16);

/// Accepts per poll wakeup before checking for shutdown again. The rest of
/// the backlog is taken on the next turn, which polls without blocking.
const ACCEPT_BATCH: usize = 256;

/// How long accepting pauses when the reserve descriptor cannot be had
/// (fds still exhausted) or the kernel is short of memory. 100 ms bounds
/// the wasted CPU to a few syscalls per second, while a freed fd is used
/// quickly.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Pause after an unexpected accept error, so a broken listener cannot spin.
const FATAL_BACKOFF: Duration = Duration::from_secs(1);

/// At most one fd-exhaustion warning per this interval.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Opens a non-blocking listener with SO_REUSEADDR and the given backlog.
pub fn listen(addr: SocketAddr, backlog: u32) -> Result<TcpListener, ListenError> {
    listen_with(addr, backlog, false)
}

/// [`listen`], with SO_REUSEPORT when `reuseport` is set (`--reuseport`):
/// several processes, each with such a socket on the same port, share it,
/// and the kernel spreads new connections over them.
pub fn listen_with(
    addr: SocketAddr,
    backlog: u32,
    reuseport: bool,
) -> Result<TcpListener, ListenError> {
    let fail = |source| ListenError::Io { addr, source };
    let sock =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    sock.set_reuse_address(true).map_err(fail)?;
    if reuseport {
        sock.set_reuse_port(true).map_err(fail)?;
    }
    if addr.is_ipv6() {
        sock.set_only_v6(true).map_err(fail)?;
    }
    sock.bind(&addr.into()).map_err(|e| {
        if is_addr_in_use(&e) {
            ListenError::InUse(addr)
        } else {
            fail(e)
        }
    })?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    sock.listen(backlog).map_err(fail)?;
    sock.set_nonblocking(true).map_err(fail)?;
    Ok(TcpListener::from_std(sock.into()))
}

/// Why the listener could not be opened.
#[derive(Debug)]
pub enum ListenError {
    InUse(SocketAddr),
    Io { addr: SocketAddr, source: io::Error },
}

/// Which signals arrived: set by the signal handlers before they write a
/// byte to the self-pipe, read and cleared by the acceptor when it wakes.
#[derive(Debug, Clone, Default)]
pub struct SignalFlags {
    /// SIGINT or SIGTERM: stop gracefully.
    pub stop: Arc<AtomicBool>,
    /// SIGUSR1: reopen log files (after logrotate moved them).
    pub reopen: Arc<AtomicBool>,
    /// SIGHUP: the conventional "reload configuration".
    pub reload: Arc<AtomicBool>,
}

/// Something to do on SIGUSR1: ask a log writer to reopen its file.
pub struct ReopenHook(pub Box<dyn Fn() + Send>);

impl std::fmt::Debug for ReopenHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReopenHook")
    }
}

/// Asks a running acceptor (and through it the workers) to stop.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.stop.store(true, Relaxed);
        if let Err(e) = self.waker.wake() {
            error!("cannot wake the acceptor to stop it: {e}");
        }
    }
}

/// The acceptor loop's state.
#[derive(Debug)]
pub struct Acceptor {
    poll: Poll,
    listener: TcpListener,
    /// Extra listeners (`[[listener]]`): index i is `Accepted::listener` i + 1.
    extra: Vec<TcpListener>,
    workers: Vec<WorkerHandle>,
    /// Worker that gets the next connection.
    next: usize,
    /// Workers that were handed a connection in this batch and need a wake.
    to_wake: Vec<bool>,
    /// A descriptor kept open so that, when fds run out, closing it frees one
    /// to accept-and-close a connection instead of leaving it in the backlog.
    reserve: Option<File>,
    stats: Arc<AcceptStats>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<(UnixStream, SignalFlags)>,
    /// Called on SIGUSR1, one per log file.
    reopen: Vec<ReopenHook>,
    fd_warning: RateLimit,
    /// How long workers may let sessions finish when stopping.
    drain: Duration,
    /// What SIGHUP runs (shared with `POST /api/reload`).
    reloader: Reloader,
}

impl Acceptor {
    pub fn new(
        mut listener: TcpListener,
        workers: Vec<WorkerHandle>,
        stats: Arc<AcceptStats>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let n = workers.len();
        Ok(Acceptor {
            poll,
            listener,
            extra: Vec::new(),
            workers,
            next: 0,
            to_wake: vec![false; n],
            reserve: open_reserve(),
            stats,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            signals: None,
            reopen: Vec::new(),
            fd_warning: RateLimit::new(WARN_EVERY),
            drain: Duration::ZERO,
            reloader: Reloader::default(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts on `listener` too; its connections are handed off with
    /// `Accepted::listener` = its index + 1 (0 is the main listener).
    pub fn add_listener(&mut self, mut listener: TcpListener) -> io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let token = Token(EXTRA_LISTENER.0 + self.extra.len());
        self.poll
            .registry()
            .register(&mut listener, token, Interest::READABLE)?;
        self.extra.push(listener);
        Ok(addr)
    }

    /// A second descriptor for the listening socket, to hand to a new
    /// process on upgrade (`runtime::upgrade`).
    pub fn listener_fd(&self) -> io::Result<OwnedFd> {
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Second descriptors for the `[[listener]]` sockets, with their
    /// addresses, in order (for an upgrade).
    pub fn extra_fds(&self) -> io::Result<Vec<(OwnedFd, SocketAddr)>> {
        (self.extra.iter())
            .map(|l| Ok((l.as_fd().try_clone_to_owned()?, l.local_addr()?)))
            .collect()
    }

    /// The reload path SIGHUP takes; clones share its hook.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            stop: Arc::clone(&self.stop),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Lets sessions finish for up to `drain` on shutdown (proxy mode).
    pub fn set_drain(&mut self, drain: Duration) {
        self.drain = drain;
    }

    /// Acts on `flags` when a byte arrives on `pipe` (a signal self-pipe).
    pub fn watch_signals(&mut self, mut pipe: UnixStream, flags: SignalFlags) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut pipe, SIGNAL, Interest::READABLE)?;
        self.signals = Some((pipe, flags));
        Ok(())
    }

    /// Runs `hook` on every SIGUSR1 (see [`Self::watch_signals`]).
    pub fn on_reopen(&mut self, hook: ReopenHook) {
        self.reopen.push(hook);
    }

    /// Accepts until shut down, then tells the workers to stop and returns
    /// their handles for joining.
    pub fn run(mut self) -> Vec<WorkerHandle> {
        let mut events = Events::with_capacity(16);
        // The listeners are edge-triggered: remember which backlog may hold
        // more than one batch (index 0: the main listener), or that
        // accepting is paused until a deadline.
        let mut more = vec![false; 1 + self.extra.len()];
        let mut paused_until: Option<Instant> = None;
        while !self.stop.load(Relaxed) {
            let now = Instant::now();
            let timeout = match paused_until {
                Some(t) => Some(t.saturating_duration_since(now)),
                None if more.contains(&true) => Some(Duration::ZERO),
                None => None,
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if is_interrupted(&e) {
                    continue;
                }
                error!("acceptor poll failed: {e}; shutting down");
                break;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => more[0] = true,
                    SIGNAL => self.on_signal(),
                    Token(t) if t >= EXTRA_LISTENER.0 => {
                        if let Some(m) = more.get_mut(t - EXTRA_LISTENER.0 + 1) {
                            *m = true;
                        }
                    }
                    _ => {}
                }
            }
            if self.stop.load(Relaxed) {
                break;
            }
            if paused_until.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            paused_until = None;
            for (which, pending) in more.iter_mut().enumerate() {
                if !*pending {
                    continue;
                }
                match self.accept_batch(which) {
                    Batch::Drained => *pending = false,
                    Batch::More => {}
                    Batch::Pause(d) => {
                        paused_until = Some(timers::after(Instant::now(), d));
                        break;
                    }
                }
            }
        }
        self.finish()
    }

    fn on_signal(&mut self) {
        let Some((pipe, flags)) = &mut self.signals else {
            return;
        };
        let mut buf = [0u8; 16];
        // Bounded: the pipe holds a few bytes per signal at most.
        for _ in 0..16 {
            match pipe.read(&mut buf) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        if flags.reload.swap(false, Relaxed) {
            // Logged by the reloader, whatever the outcome.
            let _ = self.reloader.reload("SIGHUP");
        }
        if flags.reopen.swap(false, Relaxed) {
            info!("SIGUSR1: reopening {} log file(s)", self.reopen.len());
            for hook in &self.reopen {
                (hook.0)();
            }
        }
        if flags.stop.swap(false, Relaxed) {
            info!("signal received: stopping");
            self.stop.store(true, Relaxed);
        }
    }

    /// The listener `which` (0: main, i + 1: extra i).
    fn listener(&self, which: usize) -> &TcpListener {
        which
            .checked_sub(1)
            .and_then(|i| self.extra.get(i))
            .unwrap_or(&self.listener)
    }

    fn accept_batch(&mut self, which: usize) -> Batch {
        let mut result = Batch::More;
        for _ in 0..ACCEPT_BATCH {
            match self.listener(which).accept() {
                Ok((stream, peer)) => self.hand_off(Accepted {
                    stream,
                    peer,
                    at: Instant::now(),
                    listener: which,
                }),
                Err(e) => match classify_accept(&e) {
                    AcceptFault::WouldBlock => {
                        result = Batch::Drained;
                        break;
                    }
                    AcceptFault::Skip => continue,
                    AcceptFault::NoFds => {
                        if !self.shed_one(which, &e) {
                            result = Batch::Pause(ACCEPT_BACKOFF);
                            break;
                        }
                    }
                    AcceptFault::NoMemory => {
                        self.warn_exhausted(&e);
                        result = Batch::Pause(ACCEPT_BACKOFF);
                        break;
                    }
                    AcceptFault::Fatal => {
                        error!("accept failed: {e}; pausing accepts for {FATAL_BACKOFF:?}");
                        result = Batch::Pause(FATAL_BACKOFF);
                        break;
                    }
                },
            }
        }
        self.wake_workers();
        result
    }

    fn hand_off(&mut self, conn: Accepted) {
        // Nagle would hold back small echoes and responses.
        if let Err(e) = conn.stream.set_nodelay(true) {
            debug!("TCP_NODELAY on {}: {e}", conn.peer);
        }
        let i = self.next;
        self.next = (self.next + 1) % self.workers.len();
        self.stats.opened();
        if self.workers[i].queue(Msg::Conn(conn)) {
            self.to_wake[i] = true;
        } else {
            // The worker is gone (it failed); the connection is dropped.
            self.stats.closed();
            error!("worker {i} is not running; dropped a connection");
        }
    }

    fn wake_workers(&mut self) {
        for (i, wake) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(wake) && !self.workers[i].wake() {
                error!("cannot wake worker {i}");
            }
        }
    }

    /// Out of fds: spend the reserve descriptor to accept one connection and
    /// close it at once, so the client sees a prompt close rather than a
    /// hang in the backlog. False when there is no reserve to spend.
    fn shed_one(&mut self, which: usize, cause: &io::Error) -> bool {
        self.warn_exhausted(cause);
        if self.reserve.take().is_none() {
            self.reserve = open_reserve();
            return false;
        }
        let shed = match self.listener(which).accept() {
            Ok((stream, _)) => {
                drop(stream);
                self.stats.shed.fetch_add(1, Relaxed);
                true
            }
            Err(_) => false,
        };
        self.reserve = open_reserve();
        shed
    }

    fn warn_exhausted(&mut self, cause: &io::Error) {
        if let Some(held_back) = self.fd_warning.allow(Instant::now()) {
            warn!(
                "accept: {cause} with {} connections open; shedding new connections \
                 ({} shed so far, {held_back} warnings suppressed). Raise RLIMIT_NOFILE: see ulimit.md",
                self.stats.open.load(Relaxed),
                self.stats.shed.load(Relaxed),
            );
        }
    }

    fn finish(mut self) -> Vec<WorkerHandle> {
        // Stop accepting first: new clients get refused instead of queued
        // (after an upgrade, the successor's copy keeps the socket and its
        // queue: nothing is refused).
        let _ = self.poll.registry().deregister(&mut self.listener);
        drop(self.listener);
        for mut l in std::mem::take(&mut self.extra) {
            let _ = self.poll.registry().deregister(&mut l);
        }
        for (i, w) in self.workers.iter().enumerate() {
            if !w.send(Msg::Shutdown { drain: self.drain }) {
                debug!("worker {i} already stopped");
            }
        }
        self.workers
    }
}

/// Outcome of one accept batch.
enum Batch {
    /// The backlog is empty; wait for the next event.
    Drained,
    /// The batch limit was hit; poll without blocking and continue.
    More,
    /// Stop accepting for a while.
    Pause(Duration),
}

fn open_reserve() -> Option<File> {
    File::open("/dev/null").ok()
}
