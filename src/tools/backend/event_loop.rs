//! The backend's single-threaded event loop: one `Poll`, a `Slab` of
//! connections, the listener, a `Waker` for stop, and two deadline heaps
//! (answers that fall due, lingering closes).
//!
//! ```text
//! loop {
//!     poll(timeout = 0 if work is left over, else time to the next deadline, ≤ STOP_CHECK)
//!     events → accept flag / Conn::on_event
//!     resume connections that ran out of budget (Next::Again)
//!     accept ≤ ACCEPT_BATCH
//!     answers due → Conn::on_due; linger timeouts → close
//! }
//! ```

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use super::conn::{Conn, Ctx, Next, SCRATCH_SIZE};
use super::profile::{FailMode, Injector};
use super::schedule::{Due, Scheduler};
use super::stats::{BackendStats, Counters};
use super::timer::Timer;
use super::{BackendConfig, StopSignal};
use crate::runtime::acceptor::{ListenError, listen};
use crate::runtime::io::{AcceptFault, classify_accept, is_addr_in_use, is_interrupted};
use crate::runtime::ratelimit::RateLimit;

/// The stop waker's token. Connection tokens are slab keys, which stay far
/// below these two.
const WAKER: Token = Token(usize::MAX);
/// The listener's token.
const LISTENER: Token = Token(usize::MAX - 1);

/// Readiness events per `poll`: enough for a wrk run's 100-odd
/// connections in one batch, small enough to keep each batch short.
const EVENTS_CAPACITY: usize = 1024;

/// Accepts per loop turn; the rest of the backlog is taken next turn (the
/// loop then polls without blocking), so a connect storm cannot delay due
/// answers by more than one batch.
const ACCEPT_BATCH: usize = 256;

/// Pause after running out of descriptors or memory: long enough not to
/// spin on a failing `accept`, short enough to resume quickly.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one accept-failure warning per this interval.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Longest poll: stop requests through [`StopSignal::flag`] (signal
/// handlers cannot use the waker) are seen within this time.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// How long a closing connection waits for the client's FIN after sending
/// its own, discarding input. 2 s covers any client that is still reading.
const LINGER: Duration = Duration::from_secs(2);

/// A bound backend, ready to run.
#[derive(Debug)]
pub struct EventLoop {
    poll: Poll,
    listener: Option<TcpListener>,
    /// `--fail refuse`: the port, bound but never listening, so connects
    /// are refused and no one else can take it.
    _reserved: Option<Socket>,
    addr: SocketAddr,
    conns: Slab<Conn>,
    ctx: Ctx,
    /// Profile, capacity and fail mode, for the start-up log line.
    describe: String,
    lingers: Timer<(usize, u64)>,
    /// Connections that returned [`Next::Again`].
    again: Vec<usize>,
    /// Reused buffer for answers falling due.
    due: Vec<Due>,
    /// The listener is edge-triggered: the backlog may hold more.
    accept_more: bool,
    accept_paused_until: Option<Instant>,
    accept_warning: RateLimit,
    /// Connections accepted so far: the next connection's serial.
    serial: u64,
    hang: bool,
    stop: StopSignal,
}

impl EventLoop {
    /// Validates `cfg`, binds, and registers with a new `Poll`.
    pub fn bind(cfg: &BackendConfig, stop: StopSignal) -> io::Result<Self> {
        cfg.validate()?;
        let poll = Poll::new()?;
        stop.register(Arc::new(Waker::new(poll.registry(), WAKER)?));
        let (listener, reserved, addr) = if cfg.fail == Some(FailMode::Refuse) {
            let sock = reserve(cfg.listen)?;
            let addr = sock.local_addr()?.as_socket().unwrap_or(cfg.listen);
            (None, Some(sock), addr)
        } else {
            let mut l = listen(cfg.listen, cfg.backlog).map_err(listen_error)?;
            poll.registry()
                .register(&mut l, LISTENER, Interest::READABLE)?;
            let addr = l.local_addr()?;
            (Some(l), None, addr)
        };
        let name = if cfg.name.is_empty() {
            addr.port().to_string()
        } else {
            cfg.name.clone()
        };
        let mut describe = format!("profile {}", cfg.profile);
        if let Some(n) = cfg.capacity {
            let service = cfg
                .service_ms
                .map_or("profile delays".into(), |m| format!("{m} ms"));
            describe += &format!(", capacity {n} (service {service})");
        }
        if let Some(f) = cfg.fail {
            describe += &format!(", fail {f}");
        }
        if let Some(p) = cfg.slow {
            describe += &format!(", slow {p}");
        }
        let service = cfg.service_ms.map(Duration::from_millis);
        Ok(EventLoop {
            poll,
            listener,
            _reserved: reserved,
            addr,
            conns: Slab::new(),
            ctx: Ctx {
                name,
                fail: cfg.fail,
                scheduler: Scheduler::new(cfg.profile.clone(), cfg.capacity, service)
                    .with_slow(cfg.slow, Instant::now()),
                injector: Injector::for_mode(cfg.fail),
                counters: Arc::new(Counters::default()),
                scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
                last_id: 0,
            },
            describe,
            lingers: Timer::default(),
            again: Vec::new(),
            due: Vec::new(),
            accept_more: false,
            accept_paused_until: None,
            accept_warning: RateLimit::new(WARN_EVERY),
            serial: 0,
            hang: cfg.fail == Some(FailMode::Hang),
            stop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.ctx.name
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.ctx.counters)
    }

    pub fn injected_status(&self) -> Option<u16> {
        injected_status(self.ctx.fail)
    }

    /// Serves until the stop signal; then closes every connection.
    pub fn run(mut self) -> io::Result<BackendStats> {
        let refusing = if self.listener.is_none() {
            " (refusing connections)"
        } else {
            ""
        };
        info!(
            "backend {} on {}{refusing} {}",
            self.ctx.name, self.addr, self.describe
        );
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let result = loop {
            if self.stop.is_stopped() {
                break Ok(());
            }
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if is_interrupted(&e) {
                    continue;
                }
                break Err(e);
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept_more = true,
                    Token(key) => {
                        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        if let Some(conn) = self.conns.get_mut(key) {
                            let next = conn.on_event(readable, key, &mut self.ctx, now);
                            self.apply(key, next, now);
                        }
                    }
                }
            }
            self.resume_again(now);
            self.accept(now);
            self.expire(Instant::now());
        };
        // Dropping the connections closes them.
        self.conns.clear();
        let stats = self.ctx.counters.snapshot(self.injected_status());
        match &result {
            Ok(()) => info!("backend {} stopped: {stats}", self.ctx.name),
            Err(e) => warn!("backend {} failed: {e}; {stats}", self.ctx.name),
        }
        result.map(|()| stats)
    }

    /// Zero when work is left over; else the time to the next deadline,
    /// capped at [`STOP_CHECK`].
    fn timeout(&self, now: Instant) -> Duration {
        let accept_now = self.accept_more && self.accept_paused_until.is_none();
        if !self.again.is_empty() || accept_now {
            return Duration::ZERO;
        }
        [
            self.ctx.scheduler.next_deadline(),
            self.lingers.next_deadline(),
            self.accept_paused_until,
        ]
        .into_iter()
        .flatten()
        .fold(now + STOP_CHECK, Instant::min)
        .saturating_duration_since(now)
    }

    /// Acts on what a connection asked for.
    fn apply(&mut self, key: usize, next: Next, now: Instant) {
        match next {
            Next::Keep => {}
            Next::Again => self.again.push(key),
            Next::Close => drop(self.conns.try_remove(key)),
            Next::Reset => {
                if let Some(conn) = self.conns.try_remove(key) {
                    conn.reset();
                }
            }
            Next::Linger => {
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                self.lingers.push(now + LINGER, (key, conn.serial()));
                // Input may already be waiting (or the FIN): no new edge
                // would announce it, so start discarding at once.
                match conn.resume(key, &mut self.ctx, now) {
                    Next::Linger => {}
                    next => self.apply(key, next, now),
                }
            }
        }
    }

    fn resume_again(&mut self, now: Instant) {
        for key in mem::take(&mut self.again) {
            if let Some(conn) = self.conns.get_mut(key) {
                let next = conn.resume(key, &mut self.ctx, now);
                self.apply(key, next, now);
            }
        }
    }

    /// Takes up to [`ACCEPT_BATCH`] connections from the backlog.
    fn accept(&mut self, now: Instant) {
        if !self.accept_more || self.accept_paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.accept_paused_until = None;
        let Some(listener) = &self.listener else {
            return;
        };
        for _ in 0..ACCEPT_BATCH {
            let e = match listener.accept() {
                Ok((mut stream, peer)) => {
                    // Nagle would hold back small responses.
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!("TCP_NODELAY on {peer}: {e}");
                    }
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
                        warn!("cannot register a connection from {peer}: {e}");
                        continue;
                    }
                    self.serial += 1;
                    entry.insert(Conn::new(stream, self.serial, self.hang));
                    Counters::add(&self.ctx.counters.connections, 1);
                    continue;
                }
                Err(e) => e,
            };
            match classify_accept(&e) {
                AcceptFault::WouldBlock => {
                    self.accept_more = false;
                    return;
                }
                AcceptFault::Skip => {}
                AcceptFault::NoFds | AcceptFault::NoMemory | AcceptFault::Fatal => {
                    if let Some(held) = self.accept_warning.allow(now) {
                        warn!(
                            "backend {}: accept failed: {e}; pausing {ACCEPT_BACKOFF:?} \
                             ({held} similar warnings suppressed)",
                            self.ctx.name
                        );
                    }
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Delivers answers that fell due and closes connections done lingering.
    fn expire(&mut self, now: Instant) {
        let mut due = mem::take(&mut self.due);
        self.ctx.scheduler.expire(now, &mut due);
        for d in due.drain(..) {
            if let Some(conn) = self.conns.get_mut(d.key).filter(|c| c.serves(d.id)) {
                let next = conn.on_due(d.latency, d.key, &mut self.ctx, now);
                self.apply(d.key, next, now);
            }
        }
        self.due = due;
        // Bounded: lingering entries are only pushed with future deadlines.
        while let Some((key, serial)) = self.lingers.pop_expired(now) {
            if self.conns.get(key).is_some_and(|c| c.serial() == serial) {
                self.conns.remove(key);
            }
        }
    }
}

/// The status `--fail status:CODE:RATE` injects.
pub fn injected_status(fail: Option<FailMode>) -> Option<u16> {
    match fail {
        Some(FailMode::Status { code, .. }) => Some(code),
        _ => None,
    }
}

/// Binds `addr` without listening: the kernel answers SYNs with RST.
fn reserve(addr: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Like the listener, so a restart is not blocked by TIME_WAIT.
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())
        .map_err(|e| if is_addr_in_use(&e) { in_use(addr) } else { e })?;
    Ok(sock)
}

fn listen_error(e: ListenError) -> io::Error {
    match e {
        ListenError::InUse(addr) => in_use(addr),
        ListenError::Io { addr, source } => {
            io::Error::new(source.kind(), format!("cannot listen on {addr}: {source}"))
        }
    }
}

fn in_use(addr: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("{addr} is already in use"),
    )
}
