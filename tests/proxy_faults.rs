//! Faults blamed on the right side, over real sockets: a non-idempotent
//! request is never replayed once it may have reached a backend (RFC 9110
//! §9.2.2), a stalled or non-reading client is the client's fault (408 or
//! a close) and never the backend's, and a 503 with Retry-After sends an
//! idempotent request elsewhere.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use util::proxy::{self, Opts};
use util::scripted::{Reply, Scripted};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Counts what a scripted backend received (its `seen` channel drained).
fn received(s: &Scripted) -> usize {
    s.seen.try_iter().count()
}

/// Sends `request` on a fresh connection and returns the status.
fn status_of(p: &proxy::TestProxy, request: &[u8]) -> Result<u16, Box<dyn std::error::Error>> {
    let mut c = p.client()?;
    Ok(c.exchange(request)?.status)
}

fn backend_failures(p: &proxy::TestProxy) -> u64 {
    p.handles
        .shared
        .metrics
        .snapshot()
        .iter()
        .map(|b| b.failures)
        .sum()
}

#[test]
fn a_post_that_reached_a_backend_is_never_replayed() -> TestResult {
    // Reads the request, then closes without a response byte.
    let dropper = Scripted::start(|_| Reply::Close)?;
    let good = Scripted::always(OK)?;
    let p = proxy::start(&[dropper.addr, good.addr], Opts::default())?;
    let post = b"POST /pay HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    let statuses: Vec<u16> = (0..4)
        .map(|_| status_of(&p, post))
        .collect::<Result<_, _>>()?;
    let failed = statuses.iter().filter(|&&s| s == 502).count();
    let answered = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(failed + answered, 4, "{statuses:?}");
    assert!(failed >= 1, "round-robin sends some POSTs to the dropper");
    // Each POST reached exactly one backend: none went to a second one.
    assert_eq!(received(&dropper), failed, "{statuses:?}");
    assert_eq!(received(&good), answered, "{statuses:?}");
    assert_eq!(p.stat(|s| &s.retries), 0);

    // The same failure on a GET is retried on the other backend.
    let get = b"GET /read HTTP/1.1\r\nHost: a\r\n\r\n";
    for _ in 0..4 {
        assert_eq!(status_of(&p, get)?, 200);
    }
    let dropped = received(&dropper);
    assert!(dropped >= 1, "some GETs went to the dropper first");
    assert_eq!(received(&good), 4);
    assert_eq!(p.stat(|s| &s.retries), dropped as u64);
    Ok(())
}

#[test]
fn a_503_with_retry_after_sends_only_idempotent_requests_elsewhere() -> TestResult {
    let busy = Scripted::always(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nbusy",
    )?;
    let good = Scripted::always(OK)?;
    let p = proxy::start(&[busy.addr, good.addr], Opts::default())?;
    for _ in 0..4 {
        assert_eq!(status_of(&p, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")?, 200);
    }
    let post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx";
    let statuses: Vec<u16> = (0..4)
        .map(|_| status_of(&p, post))
        .collect::<Result<_, _>>()?;
    assert!(
        statuses.contains(&503),
        "the busy answer reaches POSTs: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
    Ok(())
}

#[test]
fn a_client_stalling_mid_upload_gets_408_and_the_backend_is_not_blamed() -> TestResult {
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = Arc::clone(&seen);
    let backend = Scripted::start(move |_| {
        s2.fetch_add(1, Ordering::Relaxed);
        Reply::Send(OK.to_vec())
    })?;
    let mut opts = Opts::default();
    opts.timeouts.client = Duration::from_millis(300);
    opts.timeouts.backend = Duration::from_secs(5);
    let p = proxy::start(&[backend.addr], opts)?;
    let mut c = p.client()?;
    c.send(b"PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part")?;
    let t0 = Instant::now();
    let r = c.response(false)?;
    let took = t0.elapsed();
    assert_eq!(r.status, 408, "{}", r.head);
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(
        took < Duration::from_secs(3),
        "{took:?}: not the backend timeout"
    );
    assert_eq!(p.stat(|s| &s.client_timeouts), 1);
    assert_eq!(p.stat(|s| &s.backend_timeouts), 0);
    assert_eq!(backend_failures(&p), 0, "the backend is not blamed");
    // The backend never got a whole request, so it answered nothing.
    assert_eq!(seen.load(Ordering::Relaxed), 0);
    // And the proxy still serves.
    assert_eq!(status_of(&p, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")?, 200);
    Ok(())
}

#[test]
fn a_client_that_stops_reading_is_closed_and_the_backend_is_not_blamed() -> TestResult {
    // 64 MiB: far more than the proxy's buffers and both sockets' buffers.
    let big = {
        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 64 << 20).into_bytes();
        r.resize(r.len() + (64 << 20), b'x');
        Arc::new(r)
    };
    let b2 = Arc::clone(&big);
    let backend = Scripted::start(move |_| Reply::Send(b2.to_vec()))?;
    let mut opts = Opts::default();
    opts.timeouts.client = Duration::from_millis(300);
    opts.timeouts.backend = Duration::from_secs(5);
    let p = proxy::start(&[backend.addr], opts)?;
    let mut raw = TcpStream::connect(p.addr)?;
    raw.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")?;
    // Never read. The proxy gives up on us after --client-timeout.
    let closed = util::wait_until(Duration::from_secs(4), || {
        p.stat(|s| &s.client_timeouts) == 1
    });
    assert!(closed, "the non-reading client was not timed out");
    assert_eq!(p.stat(|s| &s.backend_timeouts), 0);
    assert_eq!(backend_failures(&p), 0, "the backend is not blamed");
    assert_eq!(p.stat(|s| &s.status_5xx), 0);
    drop(raw);
    Ok(())
}
