//! The proxy session's state machine, driven without a real socket: the
//! client and every backend are in-memory streams ([`Mem`]), time is passed
//! in, and a recording selector shows which side each fault was blamed on.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Poll, Registry, Token};

use super::live::Live;
use super::net::Net;
use super::session::{ProxySession, State};
use super::{ProxyCtx, ProxyStats, Shared};
use crate::balance::{Outcome, Selector};
use crate::config::{BackendAddr, BackendConn, ProxyConfig, Timeouts};
use crate::health::{Ejector, RetryBudget};
use crate::metrics::Metrics;
use crate::runtime::io::Connect;
use crate::runtime::session::{Env, Ready, Side, Step};
use crate::runtime::stats::WorkerStats;
use crate::runtime::timers::Timers;

/// One end of an in-memory connection, as the session sees it.
#[derive(Debug, Default)]
struct Pipe {
    /// Bytes the session will read.
    input: VecDeque<u8>,
    /// The peer sent FIN (after `input`).
    eof: bool,
    /// The peer reset the connection.
    reset: bool,
    /// The connect is refused.
    refused: bool,
    /// Bytes the session wrote.
    output: Vec<u8>,
    /// The session sent FIN.
    shut: bool,
    /// The session asked not to hear about readable data.
    paused: bool,
}

#[derive(Debug, Clone, Default)]
struct Mem(Arc<Mutex<Pipe>>);

impl Mem {
    fn with<R>(&self, f: impl FnOnce(&mut Pipe) -> R) -> R {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p)
    }
    fn send(&self, bytes: &[u8]) {
        self.with(|p| p.input.extend(bytes));
    }
    fn written(&self) -> String {
        self.with(|p| String::from_utf8_lossy(&p.output).into_owned())
    }
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.with(|p| {
            if p.reset {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            if p.input.is_empty() {
                return if p.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(p.input.len());
            for (slot, b) in buf.iter_mut().zip(p.input.drain(..n)) {
                *slot = b;
            }
            Ok(n)
        })
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.with(|p| {
            if p.reset {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            p.output.extend_from_slice(buf);
            Ok(buf.len())
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Connects to in-memory backends; each connect is recorded.
#[derive(Debug, Default, Clone)]
struct MemNet {
    /// Every backend connection opened, with its backend's address.
    conns: Arc<Mutex<Vec<(SocketAddr, Mem)>>>,
    /// Addresses whose connects are refused.
    refuse: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Net for MemNet {
    type Stream = Mem;
    fn connect(&mut self, addr: SocketAddr, _: &Registry, _: Token) -> io::Result<Mem> {
        let m = Mem::default();
        let refused = self
            .refuse
            .lock()
            .map(|r| r.contains(&addr))
            .unwrap_or(false);
        m.with(|p| p.refused = refused);
        if let Ok(mut c) = self.conns.lock() {
            c.push((addr, m.clone()));
        }
        Ok(m)
    }
    fn connect_result(s: &Mem) -> Connect {
        if s.with(|p| p.refused) {
            Connect::Failed(io::ErrorKind::ConnectionRefused.into())
        } else {
            Connect::Connected
        }
    }
    fn shutdown_write(s: &mut Mem) {
        s.with(|p| p.shut = true);
    }
    fn set_reading(s: &mut Mem, _: &Registry, _: Token, on: bool) -> io::Result<()> {
        s.with(|p| p.paused = !on);
        Ok(())
    }
}

/// Round-robin that records every outcome it is told about.
#[derive(Debug, Default)]
struct Recorder {
    n: usize,
    turn: AtomicUsize,
    seen: Mutex<Vec<(usize, bool)>>,
}

impl Selector for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn pick(&self, _: Instant, exclude: Option<usize>) -> Option<usize> {
        (0..self.n)
            .map(|_| self.turn.fetch_add(1, Relaxed) % self.n)
            .find(|&b| Some(b) != exclude)
    }
    fn observe(&self, backend: usize, outcome: Outcome, _: Instant) {
        let ok = matches!(outcome, Outcome::Success { .. });
        if let Ok(mut s) = self.seen.lock() {
            s.push((backend, ok));
        }
    }
    fn estimates(&self) -> Vec<Option<f64>> {
        vec![None; self.n]
    }
}

const BACKENDS: usize = 2;

fn addr(b: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081 + b as u16))
}

/// A session over in-memory streams, with its worker's pieces.
struct Harness {
    poll: Poll,
    shared: Arc<Shared>,
    selector: Arc<Recorder>,
    net: MemNet,
    ctx: ProxyCtx<MemNet>,
    stats: WorkerStats,
    timers: Timers,
    now: Instant,
    client: Mem,
    session: Option<ProxySession<MemNet>>,
    step: Step,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        let selector = Arc::new(Recorder {
            n: BACKENDS,
            ..Recorder::default()
        });
        let backends: Vec<BackendAddr> = (0..BACKENDS)
            .map(|b| BackendAddr::new(format!("b{b}"), addr(b)))
            .collect();
        let shared = Arc::new(Shared {
            generation: 0,
            backend_conn: BackendConn::Persistent,
            timeouts: Timeouts::default(),
            selector: Arc::clone(&selector) as Arc<dyn Selector>,
            stats: Arc::new(ProxyStats::default()),
            metrics: Metrics::new(backends.iter().map(|b| b.name.clone()), None),
            latencies: Arc::new(Mutex::new(super::summary::new_histogram())),
            slo: None,
            ejector: Ejector::new(BACKENDS, now, false, 5),
            retry_budget: Arc::new(RetryBudget::new(now)),
            active: None,
            forward: crate::http::ForwardOpts::default(),
            forward_https: crate::http::ForwardOpts::default(),
            tls: Vec::new(),
            id_prefix: 7,
            drained: Arc::new(super::drained::Drained::new(BACKENDS)),
            backends,
        });
        let net = MemNet::default();
        let cfg = ProxyConfig::for_tests(addr(9), 1, shared.backends.clone());
        let live = Live::new(Arc::clone(&shared), cfg);
        let ctx = ProxyCtx::with_net(net.clone(), 0, live, None);
        let poll = Poll::new().unwrap_or_else(|e| panic!("poll: {e}"));
        let mut h = Harness {
            poll,
            shared,
            selector,
            net,
            ctx,
            stats: WorkerStats::default(),
            timers: Timers::default(),
            now,
            client: Mem::default(),
            session: None,
            step: Step::Continue,
        };
        let (client, now) = (h.client.clone(), h.now);
        let mut env = Env {
            registry: h.poll.registry(),
            ctx: &mut h.ctx,
            stats: &h.stats,
            timers: &mut h.timers,
            now,
        };
        h.session = Some(ProxySession::start(client, addr(9), 0, &mut env));
        h
    }

    /// Delivers readiness on `side` (both directions), as epoll would.
    fn ready(&mut self, side: Side) {
        let ev = Ready {
            side,
            readable: true,
            writable: true,
            read_closed: false,
        };
        self.call(|s, env| s.on_ready(ev, env));
    }

    /// Moves the clock on and fires the session's timer.
    fn wait(&mut self, d: Duration) {
        self.now += d;
        self.call(|s, env| s.on_timeout(env));
    }

    fn call(
        &mut self,
        f: impl FnOnce(&mut ProxySession<MemNet>, &mut Env<'_, ProxyCtx<MemNet>>) -> Step,
    ) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let mut env = Env {
            registry: self.poll.registry(),
            ctx: &mut self.ctx,
            stats: &self.stats,
            timers: &mut self.timers,
            now: self.now,
        };
        self.step = f(s, &mut env);
        if let Step::Close(reason) = self.step
            && let Some(s) = self.session.take()
        {
            s.on_close(reason, &mut env);
        }
    }

    /// Every backend connection opened so far, by backend index.
    fn conns(&self) -> Vec<(usize, Mem)> {
        let c = self.net.conns.lock().map(|c| c.clone()).unwrap_or_default();
        c.into_iter()
            .map(|(a, m)| ((a.port() - 8081) as usize, m))
            .collect()
    }

    fn last_conn(&self) -> Mem {
        self.conns()
            .last()
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// (backend, success) for every outcome the selector heard.
    fn observed(&self) -> Vec<(usize, bool)> {
        self.selector
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    fn state(&self) -> &'static str {
        match self.session.as_ref().map(ProxySession::state) {
            None => "closed",
            Some(State::Idle(_)) => "idle",
            Some(State::Exchange(_)) => "exchange",
            Some(State::Tunnel(_)) => "tunnel",
            Some(State::Closing(_)) => "closing",
        }
    }

    fn status_to_client(&self) -> Option<u16> {
        let out = self.client.written();
        let line = out.lines().rev().find(|l| l.starts_with("HTTP/1.1 "))?;
        line.get(9..12)?.parse().ok()
    }
}

/// How a backend treats one attempt.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Answer,
    Refuse,
    /// Reads the request, then resets.
    Reset,
    /// Reads the request and says nothing.
    Silent,
    Garbage,
    /// 503 with Retry-After.
    Busy,
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Sends `request`, lets each attempt's backend behave as `script` says,
/// and returns the harness at rest.
fn run(request: &[u8], script: &[Backend]) -> Harness {
    let mut h = Harness::new();
    for (i, b) in script.iter().enumerate() {
        if let Backend::Refuse = b
            && let Ok(mut r) = h.net.refuse.lock()
        {
            r.clear();
            r.push(addr(i % BACKENDS));
        }
    }
    h.client.send(request);
    h.ready(Side::Client);
    for attempt in 0..script.len() {
        let conns = h.conns();
        let Some((_, conn)) = conns.get(attempt) else {
            break;
        };
        // Connected: the request goes out.
        h.ready(Side::Backend);
        match script.get(attempt) {
            Some(Backend::Answer) => conn.send(OK),
            Some(Backend::Reset) => conn.with(|p| p.reset = true),
            Some(Backend::Garbage) => conn.send(b"SSH-2.0-nonsense\r\n\r\n"),
            Some(Backend::Busy) => {
                conn.send(b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nbusy")
            }
            Some(Backend::Silent | Backend::Refuse) | None => {}
        }
        h.ready(Side::Backend);
        if let Some(Backend::Silent) = script.get(attempt) {
            h.wait(Duration::from_secs(31));
        }
    }
    h
}

mod cases;
