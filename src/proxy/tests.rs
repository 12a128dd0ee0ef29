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
use crate::config::{BackendAddr, BackendConn, ProxyConfig, ServerConfig, Timeouts};
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
    fn shutdown_write(s: &Mem) {
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
            id_prefix: 7,
            drained: Arc::new(super::drained::Drained::new(BACKENDS)),
            backends,
        });
        let net = MemNet::default();
        let cfg = ProxyConfig {
            server: ServerConfig {
                listen: addr(9),
                workers: 1,
                backlog: 16,
                reuseport: false,
            },
            backends: shared.backends.clone(),
            policy: crate::balance::Policy::RoundRobin,
            backend_conn: BackendConn::Persistent,
            timeouts: Timeouts::default(),
            access_log: None,
            slo: None,
            eject_5xx: false,
            eject_after: 5,
            health_check: None,
            forward: crate::http::ForwardOpts::default(),
            admin: None,
            admin_token: None,
            resolve_interval: crate::config::DEFAULT_RESOLVE_INTERVAL,
        };
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

/// (case, request, per-attempt behaviour, status, attempts, outcomes heard)
type Case = (
    &'static str,
    &'static [u8],
    &'static [Backend],
    u16,
    usize,
    &'static [(usize, bool)],
);

#[test]
fn every_fault_is_blamed_on_its_side() {
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    use Backend::*;
    let table: [Case; 9] = [
        ("answered", get, &[Answer], 200, 1, &[(0, true)]),
        (
            "GET reset: retried",
            get,
            &[Reset, Answer],
            200,
            2,
            &[(0, false), (1, true)],
        ),
        (
            "POST reset: not replayed",
            post,
            &[Reset],
            502,
            1,
            &[(0, false)],
        ),
        (
            "POST refused: retried",
            post,
            &[Refuse, Answer],
            200,
            2,
            &[(0, false), (1, true)],
        ),
        ("silent backend: 504", get, &[Silent], 504, 1, &[(0, false)]),
        (
            "garbage: 502, no retry",
            get,
            &[Garbage],
            502,
            1,
            &[(0, false)],
        ),
        (
            "GET 503+Retry-After: retried",
            get,
            &[Busy, Answer],
            200,
            2,
            &[(0, false), (1, true)],
        ),
        ("POST 503: relayed", post, &[Busy], 503, 1, &[(0, false)]),
        (
            "two resets: 502",
            get,
            &[Reset, Reset],
            502,
            2,
            &[(0, false), (1, false)],
        ),
    ];
    for (case, request, script, status, attempts, heard) in table {
        let h = run(request, script);
        assert_eq!(
            h.status_to_client(),
            Some(status),
            "{case}: {}",
            h.client.written()
        );
        assert_eq!(h.conns().len(), attempts, "{case}");
        assert_eq!(h.observed(), heard, "{case}");
        // The backend's own answers keep the connection; the proxy's close it.
        let relayed = status == 200 || case == "POST 503: relayed";
        let want = if relayed { "idle" } else { "closing" };
        assert_eq!(h.state(), want, "{case}");
    }
}

#[test]
fn a_client_stalling_mid_body_gets_408_and_the_backend_is_not_blamed() {
    let mut h = Harness::new();
    h.client
        .send(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    h.ready(Side::Client);
    h.ready(Side::Backend);
    assert!(h.last_conn().written().ends_with("abc"));
    assert_eq!(h.state(), "exchange");
    // Before --client-timeout (30 s) nothing happens...
    h.wait(Duration::from_secs(29));
    assert_eq!(h.state(), "exchange");
    // ...after it, the client's fault: 408, and no sample against the backend.
    h.wait(Duration::from_secs(2));
    assert_eq!(h.status_to_client(), Some(408));
    assert_eq!(h.observed(), []);
    assert_eq!(h.shared.stats.client_timeouts.load(Relaxed), 1);
    assert_eq!(h.shared.stats.backend_timeouts.load(Relaxed), 0);
    assert_eq!(h.state(), "closing");
}

#[test]
fn a_client_leaving_mid_body_is_an_abort_not_a_backend_failure() {
    let mut h = Harness::new();
    h.client
        .send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    h.ready(Side::Client);
    h.ready(Side::Backend);
    h.client.with(|p| p.eof = true);
    h.ready(Side::Client);
    assert_eq!(h.state(), "closed");
    assert_eq!(h.observed(), []);
    assert_eq!(h.shared.stats.client_aborts.load(Relaxed), 1);
    assert_eq!(h.ctx.upstreams.len(), 0, "the backend connection is closed");
}

#[test]
fn a_switch_becomes_a_tunnel_both_ways_with_half_close() {
    let mut h = Harness::new();
    h.client
        .send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    h.ready(Side::Client);
    h.ready(Side::Backend);
    let b = h.last_conn();
    assert!(
        b.written()
            .contains("Upgrade: websocket\r\nConnection: upgrade\r\n")
    );
    b.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello");
    h.ready(Side::Backend);
    assert_eq!(h.state(), "tunnel");
    assert!(
        h.client
            .written()
            .ends_with("Connection: upgrade\r\n\r\nhello")
    );
    h.client.send(b"ping");
    h.ready(Side::Client);
    assert!(b.written().ends_with("ping"));
    // The client's FIN reaches the backend; the backend still talks.
    h.client.with(|p| p.eof = true);
    h.ready(Side::Client);
    assert!(b.with(|p| p.shut));
    b.send(b"bye");
    h.ready(Side::Backend);
    assert_eq!(h.state(), "tunnel");
    b.with(|p| p.eof = true);
    h.ready(Side::Backend);
    assert!(h.client.written().ends_with("bye"));
    assert_eq!(h.state(), "closed");
    assert_eq!(h.shared.stats.tunnels.load(Relaxed), 1);
    assert_eq!(h.shared.stats.tunnels_open.load(Relaxed), 0);
}

#[test]
fn a_quiet_tunnel_closes_after_the_tunnel_timeout() {
    let mut h = Harness::new();
    h.client
        .send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    h.ready(Side::Client);
    h.last_conn()
        .send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    h.ready(Side::Backend);
    h.wait(Duration::from_secs(3599));
    assert_eq!(h.state(), "tunnel");
    h.wait(Duration::from_secs(2));
    assert_eq!(h.state(), "closed");
}

#[test]
fn an_unasked_switch_is_a_bad_response() {
    let h = {
        let mut h = Harness::new();
        h.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        h.ready(Side::Client);
        h.last_conn()
            .send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
        h.ready(Side::Backend);
        h
    };
    assert_eq!(h.status_to_client(), Some(502));
    assert_eq!(h.observed(), [(0, false)]);
}

#[test]
fn keep_alive_returns_to_idle_and_the_idle_timeout_closes() {
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Backend::Answer]);
    assert_eq!(h.state(), "idle");
    assert_eq!(h.ctx.upstreams.idle_count(0), 1, "pooled");
    h.wait(Duration::from_secs(61));
    assert_eq!(h.state(), "closed");
}

#[test]
fn a_head_trickling_in_pauses_reading_between_batches() {
    let mut h = Harness::new();
    let head = b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    // One byte per wake-up: after a few, the session stops reading.
    let mut sent = 0;
    while sent < head.len() && !h.client.with(|p| p.paused) {
        h.client.send(&head[sent..sent + 1]);
        sent += 1;
        h.ready(Side::Client);
    }
    assert!(
        h.client.with(|p| p.paused),
        "never paused after {sent} bytes"
    );
    assert!(sent <= 12, "paused only after {sent} single bytes");
    // Bytes piling up meanwhile are not read...
    h.client.send(&head[sent..]);
    h.ready(Side::Client);
    assert_eq!(h.state(), "idle");
    // ...until the pause ends: then all at once, and the request goes out.
    h.wait(Duration::from_millis(4));
    assert!(h.client.with(|p| p.paused));
    h.wait(Duration::from_millis(1));
    assert!(!h.client.with(|p| p.paused));
    assert_eq!(h.state(), "exchange");
    h.ready(Side::Backend);
    assert!(
        h.last_conn()
            .written()
            .starts_with("GET /slow HTTP/1.1\r\n")
    );
}

#[test]
fn a_head_sent_in_two_segments_is_never_paused() {
    let mut h = Harness::new();
    h.client.send(b"GET / HTTP/1.1\r\n");
    h.ready(Side::Client);
    h.client.send(b"Host: a\r\n\r\n");
    h.ready(Side::Client);
    assert!(!h.client.with(|p| p.paused));
    assert_eq!(h.state(), "exchange");
}

#[test]
fn draining_keeps_a_just_idle_connection_for_its_next_request() {
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Backend::Answer]);
    assert_eq!(h.state(), "idle");
    // A takeover or a stop begins right after the answer: the client's
    // next request may be on its way, so the connection is kept...
    h.call(|s, env| s.on_drain(env));
    assert_eq!(h.state(), "idle");
    h.client.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    h.ready(Side::Client);
    h.ready(Side::Backend);
    h.last_conn().send(OK);
    h.ready(Side::Backend);
    // ...and that request is answered, with Connection: close.
    let out = h.client.written();
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    let last = out.rsplit("HTTP/1.1 200").next().unwrap_or_default();
    assert!(
        last.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert!(matches!(h.state(), "closing" | "closed"), "{}", h.state());
}

#[test]
fn draining_closes_an_idle_connection_after_the_grace_or_at_once_if_long_idle() {
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Backend::Answer]);
    h.call(|s, env| s.on_drain(env));
    h.wait(Duration::from_millis(999));
    assert_eq!(h.state(), "idle");
    h.wait(Duration::from_millis(1));
    assert_eq!(h.state(), "closed");
    // Idle for longer than the grace: closed as soon as draining starts.
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Backend::Answer]);
    h.now += Duration::from_secs(2);
    h.call(|s, env| s.on_drain(env));
    assert_eq!(h.state(), "closed");
}

#[test]
fn a_drained_backend_is_never_chosen_not_even_failing_open() {
    let h = Harness::new();
    let now = h.now;
    h.shared.drained.set(1, true);
    for _ in 0..6 {
        assert_eq!(h.shared.choose(now, None), Some(0));
    }
    // Excluding the only other one (a retry): never the drained one, and
    // not the excluded one either (no retry onto the backend that failed).
    assert_eq!(h.shared.choose(now, Some(0)), None);
    h.shared.drained.set(0, true);
    assert_eq!(h.shared.choose(now, None), None);
    assert!(!h.shared.ready());
    h.shared.drained.set(1, false);
    assert_eq!(h.shared.choose(now, None), Some(1));
    assert!(h.shared.ready());
}

#[test]
fn with_every_backend_drained_a_request_gets_503_and_no_backend_is_blamed() {
    let mut h = Harness::new();
    h.shared.drained.set(0, true);
    h.shared.drained.set(1, true);
    h.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    h.ready(Side::Client);
    assert_eq!(h.status_to_client(), Some(503));
    assert!(h.conns().is_empty(), "no backend connection");
    assert!(h.observed().is_empty(), "nobody blamed");
    assert_eq!(h.shared.stats.status_5xx.load(Relaxed), 1);
}

#[test]
fn a_request_in_flight_at_the_drain_finishes_and_its_connection_closes() {
    let mut h = Harness::new();
    h.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    h.ready(Side::Client);
    assert_eq!(h.state(), "exchange");
    h.shared.drained.set(0, true);
    h.last_conn()
        .send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    h.ready(Side::Backend);
    assert_eq!(h.status_to_client(), Some(200));
    assert_eq!(h.state(), "idle");
    assert_eq!(h.ctx.upstreams.idle_count(0), 0, "closed, not pooled");
    assert!(h.ctx.upstreams.is_empty());
}

#[test]
fn pooled_connections_to_a_drained_backend_are_closed_not_reused() {
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Backend::Answer]);
    assert_eq!(h.ctx.upstreams.idle_count(0), 1, "pooled");
    h.shared.drained.set(0, true);
    // Check-out refuses it (and closes it)...
    assert_eq!(h.ctx.upstreams.checkout(0, 5, h.now), None);
    assert!(h.ctx.upstreams.is_empty());
    // ...and the worker's sweep closes one idling when the drain came.
    h.shared.drained.set(0, false);
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Backend::Answer]);
    assert_eq!(h.ctx.upstreams.idle_count(0), 1);
    h.ctx.upstreams.sweep();
    assert_eq!(h.ctx.upstreams.idle_count(0), 1, "not drained: kept");
    h.shared.drained.set(0, true);
    h.ctx.upstreams.sweep();
    assert_eq!(h.ctx.upstreams.idle_count(0), 0);
    assert!(h.ctx.upstreams.is_empty());
}
