//! The simulated backend over real loopback sockets: latency cycles,
//! HTTP/1.1 framing, capacity mode, fail modes, stop.
//!
//! Timing assertions use lower bounds (a delay is never cut short) and
//! generous upper bounds, because the test machine is noisy.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use tidegate::tools::backend::{
    self, BackendConfig, BackendHandle, FailMode, SlowPhase, StopSignal,
};
use util::{TestResult, connect};

/// Generous bound for a response that should take well under a second.
const SLOW: Duration = Duration::from_secs(3);

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config(profile: &str) -> BackendConfig {
    let mut cfg = BackendConfig::new(localhost(), profile.parse().expect("valid profile"));
    cfg.name = "T".into();
    cfg
}

fn start(profile: &str) -> BackendHandle {
    backend::spawn(config(profile)).expect("backend starts")
}

fn start_failing(mode: &str) -> BackendHandle {
    let mut cfg = config("0");
    cfg.fail = Some(mode.parse().expect("valid fail mode"));
    backend::spawn(cfg).expect("backend starts")
}

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// From the end of the request write to the end of the response.
    elapsed: Duration,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn num(&self, name: &str) -> u64 {
        self.header(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in {self:?}"))
    }
}

/// A blocking keep-alive client that keeps bytes read past a response.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    sent_at: Instant,
}

impl Client {
    fn new(addr: SocketAddr) -> io::Result<Client> {
        Ok(Client {
            s: connect(addr)?,
            buf: Vec::new(),
            sent_at: Instant::now(),
        })
    }

    fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.s.write_all(raw)?;
        self.sent_at = Instant::now();
        Ok(())
    }

    fn get(&mut self, path: &str) -> io::Result<Resp> {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())?;
        self.response(false)
    }

    /// Reads one response (skipping `100 Continue`).
    fn response(&mut self, head_only: bool) -> io::Result<Resp> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            let parsed = r
                .parse(&self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let httparse::Status::Complete(len) = parsed else {
                self.fill()?;
                continue;
            };
            let status = r.code.unwrap_or(0);
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_string(), value)
                })
                .collect();
            self.buf.drain(..len);
            if status == 100 {
                continue;
            }
            let mut resp = Resp {
                status,
                headers,
                body: Vec::new(),
                elapsed: Duration::ZERO,
            };
            let body_len = if head_only {
                0
            } else {
                resp.num("content-length") as usize
            };
            while self.buf.len() < body_len {
                self.fill()?;
            }
            resp.body = self.buf.drain(..body_len).collect();
            resp.elapsed = self.sent_at.elapsed();
            return Ok(resp);
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        match self.s.read(&mut chunk)? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// True if the server closes with nothing more to say.
    fn closed(&mut self) -> io::Result<bool> {
        let mut rest = Vec::new();
        self.s.read_to_end(&mut rest)?;
        Ok(rest.is_empty() && self.buf.is_empty())
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn keep_alive_requests_follow_the_cycle() -> TestResult {
    let b = start("30,60");
    let mut c = Client::new(b.local_addr())?;
    for want in [30, 60, 30] {
        let r = c.get("/")?;
        assert_eq!(r.status, 200);
        assert!(r.elapsed >= ms(want), "{want} ms: took {:?}", r.elapsed);
        assert!(r.elapsed < SLOW, "{want} ms: took {:?}", r.elapsed);
        assert_eq!(r.num("x-latency-ms"), want);
        assert_eq!(r.header("x-backend"), Some("T"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.body, format!("server T latency {want}ms\n").as_bytes());
    }
    let stats = b.stop()?;
    assert_eq!((stats.requests, stats.ok, stats.connections), (3, 3, 1));
    Ok(())
}

#[test]
fn the_cycle_is_shared_across_connections() -> TestResult {
    let b = start("10,20,30");
    let mut one = Client::new(b.local_addr())?;
    let mut two = Client::new(b.local_addr())?;
    let got = [
        one.get("/")?.num("x-latency-ms"),
        two.get("/")?.num("x-latency-ms"),
        one.get("/")?.num("x-latency-ms"),
        two.get("/")?.num("x-latency-ms"),
    ];
    assert_eq!(got, [10, 20, 30, 10]);
    Ok(())
}

#[test]
fn two_hundred_concurrent_delayed_requests_overlap() -> TestResult {
    let b = start("100");
    let t0 = Instant::now();
    let mut clients = (0..200)
        .map(|_| Client::new(b.local_addr()))
        .collect::<io::Result<Vec<_>>>()?;
    for c in &mut clients {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    }
    for c in &mut clients {
        let r = c.response(false)?;
        assert_eq!((r.status, r.num("x-latency-ms")), (200, 100));
    }
    let took = t0.elapsed();
    assert!(took >= ms(100), "{took:?}");
    assert!(took < Duration::from_secs(5), "serialised? {took:?}");
    assert_eq!(b.stats().ok, 200);
    Ok(())
}

#[test]
fn immediate_profile_answers_many_requests_fast() -> TestResult {
    let b = start("0");
    let mut c = Client::new(b.local_addr())?;
    let t0 = Instant::now();
    for _ in 0..500 {
        assert_eq!(c.get("/")?.num("x-latency-ms"), 0);
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    Ok(())
}

#[test]
fn pipelined_requests_are_answered_in_order() -> TestResult {
    let b = start("60,10");
    let mut c = Client::new(b.local_addr())?;
    c.send(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let first = c.response(false)?;
    let second = c.response(false)?;
    assert_eq!(first.num("x-latency-ms"), 60);
    assert_eq!(second.num("x-latency-ms"), 10);
    assert!(
        second.elapsed >= ms(70),
        "one at a time: {:?}",
        second.elapsed
    );
    Ok(())
}

#[test]
fn upload_bodies_are_consumed_and_counted() -> TestResult {
    let b = start("0");
    let mut c = Client::new(b.local_addr())?;
    let body = vec![b'x'; 300_000];
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.send(head.as_bytes())?;
    c.send(&body)?;
    assert_eq!(c.response(false)?.num("x-request-body-bytes"), 300_000);
    // Chunked, with an extension and a trailer, split across writes.
    c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")?;
    c.send(b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n")?;
    c.send(b"E\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: y\r\n\r\n")?;
    assert_eq!(c.response(false)?.num("x-request-body-bytes"), 23);
    // Expect: 100-continue gets its interim response before the body.
    c.send(b"PUT / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")?;
    c.fill()?;
    assert!(c.buf.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"));
    c.send(b"abc")?;
    assert_eq!(c.response(false)?.num("x-request-body-bytes"), 3);
    // The connection is still in step.
    assert_eq!(c.get("/")?.num("x-request-body-bytes"), 0);
    let stats = b.stop()?;
    assert_eq!(stats.body_bytes, 300_026);
    assert!(stats.bytes_received > 300_026);
    Ok(())
}

#[test]
fn head_gets_headers_only() -> TestResult {
    let b = start("0");
    let mut c = Client::new(b.local_addr())?;
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let r = c.response(true)?;
    assert_eq!(r.status, 200);
    assert!(r.num("content-length") > 0);
    // No body bytes followed: the next response starts right away.
    let next = c.get("/")?;
    assert_eq!(next.body, b"server T latency 0ms\n");
    Ok(())
}

#[test]
fn http10_and_connection_close_end_the_connection() -> TestResult {
    let b = start("0");
    for req in [
        "GET / HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ] {
        let mut c = Client::new(b.local_addr())?;
        c.send(req.as_bytes())?;
        let r = c.response(false)?;
        assert_eq!(r.header("connection"), Some("close"), "{req:?}");
        assert!(c.closed()?, "{req:?}: closed after the response");
    }
    // HTTP/1.0 keep-alive is honoured and confirmed.
    let mut c = Client::new(b.local_addr())?;
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")?;
    assert_eq!(c.response(false)?.header("connection"), Some("keep-alive"));
    assert_eq!(c.get("/")?.status, 200);
    Ok(())
}

#[test]
fn bad_requests_get_400_and_close() -> TestResult {
    let b = start("0");
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let bad_chunk = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    for req in ["NOT HTTP\r\n\r\n", huge.as_str(), bad_chunk] {
        let mut c = Client::new(b.local_addr())?;
        c.send(req.as_bytes())?;
        let r = c.response(false)?;
        assert_eq!(r.status, 400, "{:.30}", req);
        assert!(c.closed()?);
    }
    assert_eq!(b.stop()?.bad_requests, 3);
    Ok(())
}

#[test]
fn capacity_mode_latency_grows_with_load() -> TestResult {
    let mut cfg = config("0");
    cfg.capacity = Some(2);
    cfg.service_ms = Some(50);
    let b = backend::spawn(cfg)?;
    let mut clients = (0..6)
        .map(|_| Client::new(b.local_addr()))
        .collect::<io::Result<Vec<_>>>()?;
    for c in &mut clients {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    }
    let mut reported = Vec::new();
    let mut measured = Vec::new();
    for c in &mut clients {
        let r = c.response(false)?;
        reported.push(r.num("x-latency-ms"));
        measured.push(r.elapsed);
    }
    reported.sort_unstable();
    assert!(
        reported[..2].iter().all(|&l| (50..90).contains(&l)),
        "{reported:?}"
    );
    assert!(reported[5] >= 140, "{reported:?}");
    let slowest = measured.iter().max().copied().unwrap_or_default();
    assert!(slowest >= ms(140) && slowest < SLOW, "{measured:?}");
    Ok(())
}

#[test]
fn refuse_binds_the_port_but_refuses() -> TestResult {
    let b = start_failing("refuse");
    assert_ne!(b.local_addr().port(), 0);
    let err = TcpStream::connect_timeout(&b.local_addr(), SLOW).err();
    assert_eq!(
        err.map(|e| e.kind()),
        Some(io::ErrorKind::ConnectionRefused)
    );
    b.stop()?;
    Ok(())
}

#[test]
fn hang_reads_but_never_answers() -> TestResult {
    let b = start_failing("hang");
    let mut c = Client::new(b.local_addr())?;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    c.s.set_read_timeout(Some(ms(300)))?;
    let mut buf = [0u8; 64];
    let err = c.s.read(&mut buf).err().map(|e| e.kind());
    assert!(
        matches!(
            err,
            Some(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        ),
        "{err:?}"
    );
    drop(c);
    let stats = b.stop()?;
    assert_eq!((stats.connections, stats.ok), (1, 0));
    Ok(())
}

#[test]
fn garbage_is_not_http() -> TestResult {
    let b = start_failing("garbage");
    let mut c = Client::new(b.local_addr())?;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let mut got = Vec::new();
    c.s.read_to_end(&mut got)?;
    assert!(!got.is_empty() && !got.starts_with(b"HTTP/"), "{got:?}");
    assert_eq!(b.stop()?.garbage, 1);
    Ok(())
}

#[test]
fn reset_closes_with_rst_before_any_byte() -> TestResult {
    let b = start_failing("reset");
    let mut c = Client::new(b.local_addr())?;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let mut got = Vec::new();
    match c.s.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "{got:?}"),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
    }
    assert!(got.is_empty());
    assert_eq!(b.stop()?.resets, 1);
    Ok(())
}

#[test]
fn status_mode_injects_exactly_its_rate() -> TestResult {
    let b = start_failing("status:503:0.5");
    let mut c = Client::new(b.local_addr())?;
    let mut codes = Vec::new();
    for _ in 0..20 {
        let r = c.get("/")?;
        assert_eq!(r.header("x-backend"), Some("T"));
        codes.push(r.status);
    }
    assert_eq!(codes.iter().filter(|&&s| s == 503).count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&s| s == 200).count(), 10, "{codes:?}");
    let stats = b.stop()?;
    assert_eq!(stats.by_status(), [(200, 10), (503, 10)]);
    Ok(())
}

#[test]
fn stop_is_prompt_and_frees_the_port() -> TestResult {
    let b = start("1000");
    let addr = b.local_addr();
    let mut c = Client::new(addr)?;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    thread::sleep(ms(50)); // the request is now waiting for its delay
    let t0 = Instant::now();
    let stats = b.stop()?;
    assert!(t0.elapsed() < ms(500), "stop took {:?}", t0.elapsed());
    assert_eq!(stats.requests, 1);
    assert!(c.closed()?, "connection closed without an answer");
    assert!(
        TcpStream::connect_timeout(&addr, SLOW).is_err(),
        "not listening"
    );
    // The same port can be taken again at once; a second taker is refused.
    let mut cfg = config("0");
    cfg.listen = addr;
    let again = backend::spawn(cfg.clone())?;
    let taken = backend::spawn(cfg).err().map(|e| e.kind());
    assert_eq!(taken, Some(io::ErrorKind::AddrInUse));
    assert_eq!(Client::new(again.local_addr())?.get("/")?.status, 200);
    Ok(())
}

#[test]
fn run_returns_when_the_stop_flag_is_set() -> TestResult {
    let stop = StopSignal::new();
    let cfg = config("0");
    let runner = {
        let stop = stop.clone();
        thread::spawn(move || backend::run(&cfg, &stop))
    };
    thread::sleep(ms(50));
    let t0 = Instant::now();
    // As a signal handler would: no wake-up, only the flag.
    stop.flag()
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let stats = runner.join().map_err(|_| "run panicked")??;
    assert!(t0.elapsed() < SLOW, "{:?}", t0.elapsed());
    assert_eq!(stats.requests, 0);
    Ok(())
}

#[test]
fn invalid_configs_are_rejected() {
    let mut cfg = config("0");
    cfg.capacity = Some(0);
    assert!(backend::spawn(cfg).is_err());
    let mut cfg = config("0");
    cfg.service_ms = Some(10);
    assert!(backend::spawn(cfg).is_err(), "service-ms needs capacity");
    let mut cfg = config("0");
    cfg.name = "bad name".into();
    assert!(backend::spawn(cfg).is_err());
    assert!("status:503:2".parse::<FailMode>().is_err());
}

#[test]
fn slow_phase_multiplies_delays_then_ends() -> TestResult {
    let phase: SlowPhase = "5x@0s+1s".parse()?;
    assert_eq!(phase.factor, 5);
    assert_eq!((phase.after, phase.for_), (ms(0), ms(1_000)));
    assert_eq!(phase.to_string(), "5x@0s+1s");
    let mut cfg = config("20");
    cfg.slow = Some(phase);
    let b = backend::spawn(cfg)?;
    // The phase is timed from the bind, which happened before this.
    let started = Instant::now();
    let mut c = Client::new(b.local_addr())?;
    let r = c.get("/")?;
    assert_eq!(r.num("x-latency-ms"), 100, "inside the phase: 5 x 20 ms");
    assert!(r.elapsed >= ms(100), "took {:?}", r.elapsed);
    thread::sleep((started + ms(1_300)).saturating_duration_since(Instant::now()));
    let r = c.get("/")?;
    assert_eq!(r.num("x-latency-ms"), 20, "after the phase");
    assert!(r.elapsed < SLOW, "took {:?}", r.elapsed);

    let mut zero = config("0");
    zero.slow = Some("10x@0s+10s".parse()?);
    let z = backend::spawn(zero)?;
    let r = Client::new(z.local_addr())?.get("/")?;
    assert_eq!(
        r.num("x-latency-ms"),
        10,
        "an immediate profile counts as 1 ms"
    );

    let mut bad = config("0");
    bad.slow = Some(SlowPhase { factor: 0, ..phase });
    assert!(backend::spawn(bad).is_err(), "factor 0 is rejected");
    assert!("10x@10s".parse::<SlowPhase>().is_err());
    Ok(())
}

#[test]
fn default_name_is_the_preset_or_the_port() -> TestResult {
    let a = backend::spawn(BackendConfig::new(localhost(), "A".parse()?))?;
    assert_eq!(a.name(), "A");
    let p = backend::spawn(BackendConfig::new(localhost(), "0".parse()?))?;
    assert_eq!(p.name(), p.local_addr().port().to_string());
    let r = Client::new(p.local_addr())?.get("/")?;
    assert_eq!(r.header("x-backend"), Some(p.name()));
    Ok(())
}

#[test]
fn a_burst_of_pipelined_requests_is_answered_in_full() -> TestResult {
    const N: usize = 2000;
    let b = start("0");
    let mut c = Client::new(b.local_addr())?;
    let one = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    c.send(one.repeat(N).as_bytes())?;
    for i in 0..N {
        assert_eq!(c.response(false)?.status, 200, "response {i}");
    }
    assert_eq!(b.stop()?.ok, N as u64);
    Ok(())
}

#[test]
fn the_answer_waits_for_the_whole_body() -> TestResult {
    let b = start("20");
    let mut c = Client::new(b.local_addr())?;
    c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab")?;
    thread::sleep(ms(80)); // the delay has expired; the body has not arrived
    c.s.set_nonblocking(true)?;
    let early = c.s.read(&mut [0u8; 16]).err().map(|e| e.kind());
    assert_eq!(early, Some(io::ErrorKind::WouldBlock), "no early answer");
    c.s.set_nonblocking(false)?;
    c.send(b"cde")?;
    let r = c.response(false)?;
    assert_eq!(r.num("x-latency-ms"), 20);
    assert_eq!(r.num("x-request-body-bytes"), 5);
    Ok(())
}
