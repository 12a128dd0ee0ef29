//! Per-backend `maxconn` and the proxy's queue, over real sockets: the
//! limit holds across workers, requests beyond it wait and are served in
//! turn, a wait past `--queue-timeout` or a full queue is the proxy's own
//! 503 with `Retry-After` (never a backend's fault), a client that leaves
//! frees its place, and stopping leaves no queued request unanswered.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use tidegate::config::{BackendAddr, QueueConfig};
use util::client::Client;
use util::proxy::{self, Opts, TestProxy};
use util::{TestResult, run_bin, wait_until};

/// A backend that answers every request after `delay` and records how many
/// requests it held at once (one thread per connection, keep-alive).
struct Counting {
    addr: SocketAddr,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    seen: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Counting {
    fn start(delay: Duration) -> std::io::Result<Counting> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let c = Counting {
            addr,
            now: Arc::default(),
            peak: Arc::default(),
            seen: Arc::default(),
            stop: Arc::default(),
        };
        let (now, peak, seen, stop) = (
            Arc::clone(&c.now),
            Arc::clone(&c.peak),
            Arc::clone(&c.seen),
            Arc::clone(&c.stop),
        );
        thread::spawn(move || {
            // Bounded by the stop flag (set on drop) and a 60 s cap.
            let end = Instant::now() + Duration::from_secs(60);
            while !stop.load(SeqCst) && Instant::now() < end {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (now, peak, seen) =
                            (Arc::clone(&now), Arc::clone(&peak), Arc::clone(&seen));
                        thread::spawn(move || serve(s, delay, &now, &peak, &seen));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(c)
    }

    fn backend(&self, maxconn: u32) -> BackendAddr {
        let mut b = BackendAddr::new(self.addr.to_string(), self.addr);
        b.maxconn = Some(maxconn);
        b
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

/// Serves one connection: each request head, `delay`, then `200 ok`.
fn serve(s: TcpStream, delay: Duration, now: &AtomicUsize, peak: &AtomicUsize, seen: &AtomicUsize) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    // Bounded by the read timeout and the client closing.
    loop {
        let mut line = String::new();
        let mut head_done = false;
        for _ in 0..100 {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => {
                    head_done = true;
                    break;
                }
                Ok(_) => {}
            }
        }
        if !head_done {
            return;
        }
        seen.fetch_add(1, SeqCst);
        let n = now.fetch_add(1, SeqCst) + 1;
        peak.fetch_max(n, SeqCst);
        thread::sleep(delay);
        now.fetch_sub(1, SeqCst);
        if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

fn opts(workers: usize, timeout: Duration, max: usize) -> Opts {
    Opts {
        workers,
        queue: QueueConfig { timeout, max },
        ..Opts::default()
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: q\r\n\r\n";

/// Sends one request on a fresh connection, in a thread.
fn request_in_thread(
    addr: SocketAddr,
) -> thread::JoinHandle<Result<(u16, Option<String>), String>> {
    thread::spawn(move || {
        let mut c = Client::connect(addr).map_err(|e| e.to_string())?;
        let r = c.exchange(GET).map_err(|e| e.to_string())?;
        Ok((r.status, r.header("retry-after").map(str::to_string)))
    })
}

fn queued(p: &TestProxy) -> usize {
    p.handles.shared.board.snapshot().queued
}

#[test]
fn a_limit_of_two_holds_across_two_workers_and_every_request_is_served() -> TestResult {
    let b = Counting::start(Duration::from_millis(15))?;
    let p = proxy::start_backends(vec![b.backend(2)], opts(2, Duration::from_secs(10), 10_000))?;
    let addr = p.addr;
    let clients: Vec<_> = (0..16)
        .map(|_| {
            thread::spawn(move || -> Result<Vec<u16>, String> {
                let mut c = Client::connect(addr).map_err(|e| e.to_string())?;
                (0..4)
                    .map(|_| c.exchange(GET).map(|r| r.status).map_err(|e| e.to_string()))
                    .collect()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in clients {
        statuses.extend(c.join().map_err(|_| "client panicked")??);
    }
    assert_eq!(statuses.len(), 64);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(b.seen.load(SeqCst), 64);
    let peak = b.peak.load(SeqCst);
    assert!(peak <= 2, "the backend held {peak} requests at once");
    assert_eq!(peak, 2, "the limit is used in full");
    let q = p.handles.shared.board.snapshot();
    assert!(q.admitted > 0, "16 clients on 2 places must queue: {q:?}");
    assert_eq!((q.queued, q.timeouts, q.full), (0, 0, 0));
    assert_eq!(
        p.handles.shared.slots.get(0).map(|s| s.in_flight()),
        Some(0)
    );
    Ok(())
}

#[test]
fn a_request_waiting_past_the_queue_timeout_gets_503_with_retry_after() -> TestResult {
    let b = Counting::start(Duration::from_millis(1500))?;
    let log = std::env::temp_dir().join(format!("tidegate-queue-{}.csv", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut o = opts(1, Duration::from_millis(200), 100);
    o.csv = Some(log.clone());
    let p = proxy::start_backends(vec![b.backend(1)], o)?;
    let first = request_in_thread(p.addr);
    assert!(wait_until(Duration::from_secs(5), || b.seen.load(SeqCst) == 1));
    let started = Instant::now();
    let mut c = p.client()?;
    let r = c.exchange(GET)?;
    let waited = started.elapsed();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(waited >= Duration::from_millis(190), "{waited:?}");
    assert!(waited < Duration::from_millis(1400), "{waited:?}");
    assert_eq!(first.join().map_err(|_| "panicked")??.0, 200);
    assert_eq!(
        b.seen.load(SeqCst),
        1,
        "the timed-out request reached no backend"
    );
    let shared = &p.handles.shared;
    assert_eq!(shared.board.snapshot().timeouts, 1);
    // The proxy's own outcome: nothing held against the backend.
    assert_eq!(shared.metrics.snapshot()[0].failures, 0);
    assert!(!shared.ejector.is_ejected(0));
    assert_eq!(
        p.stat(|s| &s.connect_failures) + p.stat(|s| &s.backend_timeouts),
        0
    );
    p.stop();
    // Logged as the proxy's outcome, with no backend and the time waited.
    let text = std::fs::read_to_string(&log)?;
    let _ = std::fs::remove_file(&log);
    let row: Vec<&str> = (text.lines())
        .find(|l| l.contains(",queue_timeout,"))
        .ok_or_else(|| format!("no queue_timeout row in\n{text}"))?
        .split(',')
        .collect();
    assert_eq!((row[1], row[3]), ("-", "503"), "{row:?}");
    let wait_ms: f64 = row.last().unwrap_or(&"").parse()?;
    assert!((190.0..1400.0).contains(&wait_ms), "{row:?}");
    Ok(())
}

#[test]
fn a_full_queue_answers_503_at_once() -> TestResult {
    let b = Counting::start(Duration::from_millis(800))?;
    let p = proxy::start_backends(vec![b.backend(1)], opts(1, Duration::from_secs(10), 1))?;
    let first = request_in_thread(p.addr);
    assert!(wait_until(Duration::from_secs(5), || b.seen.load(SeqCst) == 1));
    let second = request_in_thread(p.addr);
    assert!(wait_until(Duration::from_secs(5), || queued(&p) == 1));
    let started = Instant::now();
    let mut c = p.client()?;
    let r = c.exchange(GET)?;
    assert_eq!((r.status, r.header("retry-after")), (503, Some("1")));
    assert!(started.elapsed() < Duration::from_millis(500));
    for h in [first, second] {
        assert_eq!(h.join().map_err(|_| "panicked")??.0, 200);
    }
    assert_eq!(b.seen.load(SeqCst), 2);
    let q = p.handles.shared.board.snapshot();
    assert_eq!((q.full, q.admitted, q.queued), (1, 1, 0));
    Ok(())
}

#[test]
fn a_client_that_leaves_while_queued_frees_its_place() -> TestResult {
    let b = Counting::start(Duration::from_millis(600))?;
    let p = proxy::start_backends(vec![b.backend(1)], opts(1, Duration::from_secs(10), 100))?;
    let first = request_in_thread(p.addr);
    assert!(wait_until(Duration::from_secs(5), || b.seen.load(SeqCst) == 1));
    let mut leaving = TcpStream::connect(p.addr)?;
    leaving.write_all(GET)?;
    assert!(wait_until(Duration::from_secs(5), || queued(&p) == 1));
    let last = request_in_thread(p.addr);
    assert!(wait_until(Duration::from_secs(5), || queued(&p) == 2));
    drop(leaving);
    assert!(
        wait_until(Duration::from_secs(5), || queued(&p) == 1),
        "the client that left is out of the queue"
    );
    assert_eq!(first.join().map_err(|_| "panicked")??.0, 200);
    assert_eq!(last.join().map_err(|_| "panicked")??.0, 200);
    assert_eq!(
        b.seen.load(SeqCst),
        2,
        "the request of the client that left was never sent"
    );
    assert_eq!(p.stat(|s| &s.client_aborts), 1);
    assert_eq!(queued(&p), 0);
    Ok(())
}

#[test]
fn stopping_with_a_queue_leaves_no_request_unanswered() -> TestResult {
    let b = Counting::start(Duration::from_millis(300))?;
    let mut o = opts(2, Duration::from_secs(30), 100);
    o.timeouts.drain = Duration::from_secs(2);
    let p = proxy::start_backends(vec![b.backend(1)], o)?;
    let clients: Vec<_> = (0..8).map(|_| request_in_thread(p.addr)).collect();
    assert!(wait_until(Duration::from_secs(5), || queued(&p) >= 5));
    let stopped = Instant::now();
    p.stop();
    let took = stopped.elapsed();
    let mut statuses = Vec::new();
    for c in clients {
        let (status, retry) = c.join().map_err(|_| "panicked")??;
        if status == 503 {
            assert_eq!(retry.as_deref(), Some("1"));
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&200),
        "requests in hand are served: {statuses:?}"
    );
    // 8 x 300 ms of work on one place cannot all fit in half the drain.
    assert!(
        statuses.contains(&503),
        "the rest are told to retry: {statuses:?}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(b.peak.load(SeqCst) <= 1);
    Ok(())
}

#[test]
fn backend_options_and_queue_flags_are_checked() -> TestResult {
    let base = ["proxy", "--listen", "127.0.0.1:0"];
    let cases: &[(&[&str], &str)] = &[
        (
            &["--backend", "127.0.0.1:1,maxconn=0"],
            "invalid --backend '127.0.0.1:1,maxconn=0': maxconn out of range (1..=1000000)",
        ),
        (
            &["--backend", "127.0.0.1:1,speed=2"],
            "unknown option 'speed' (maxconn, weight)",
        ),
        (
            &["--backend", "127.0.0.1:1", "--queue-timeout", "0s"],
            "invalid --queue-timeout '0s': must be between 1ms and 24h",
        ),
        (
            &["--backend", "127.0.0.1:1", "--max-queue", "100001"],
            "invalid --max-queue '100001': out of range (0..=100000)",
        ),
    ];
    for &(extra, want) in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (code, err) = run_bin(&args)?;
        assert_eq!(code, Some(1), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    Ok(())
}
