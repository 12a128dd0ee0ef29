//! Proxy mode, rejections and limits: malformed or ambiguous requests are
//! answered by the proxy and never forwarded; malformed responses become
//! 502; oversized heads, slow heads and idle connections are cut off; one
//! bad client does not disturb another.

mod util;

use std::thread;
use std::time::{Duration, Instant};

use tidegate::proxy::ProxyStats;
use util::TestResult;
use util::proxy::{self, Opts, TestProxy};
use util::scripted::{Reply, Scripted};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Sends `raw` on a new connection and checks that the proxy answered
/// `status` with `Connection: close`, then closed.
fn refused(p: &TestProxy, raw: &[u8], status: u16) -> TestResult {
    let mut c = p.client()?;
    let r = c.exchange(raw)?;
    let what = String::from_utf8_lossy(raw.get(..raw.len().min(120)).unwrap_or_default());
    assert_eq!(r.status, status, "{what:?}: {}", r.head);
    assert!(r.connection_has("close"), "{what:?}: {}", r.head);
    assert!(
        c.closed_within(Duration::from_secs(3))?,
        "{what:?}: still open"
    );
    Ok(())
}

#[test]
fn ambiguous_or_malformed_requests_are_never_forwarded() -> TestResult {
    let s = Scripted::always(OK)?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let cases: &[(&[u8], u16)] = &[
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5x\r\n\r\nhello", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello", 400),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        // obs-fold
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-A: one\r\n two\r\n\r\n", 400),
        // whitespace between the field name and the colon
        (b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-A : v\r\n\r\n", 400),
        // NUL, bare CR and a bare LF splitting a value
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\nb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ];
    for &(raw, status) in cases {
        refused(&p, raw, status)?;
    }
    assert_eq!(s.connections.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(s.seen.try_recv().is_err(), "something was forwarded");
    assert_eq!(p.stat(|s| &s.status_4xx), cases.len() as u64 - 1);
    assert_eq!(p.stat(|s| &s.status_5xx), 1, "the 505");
    assert_eq!(p.stat(|s| &s.requests), cases.len() as u64);
    // A well-formed request still goes through.
    assert_eq!(p.client()?.get("/")?.status, 200);
    Ok(())
}

#[test]
fn malformed_backend_responses_become_502() -> TestResult {
    let s = Scripted::start(|seen| {
        let target = seen.head.split(' ').nth(1).unwrap_or("/");
        let head: &[u8] = match target {
            "/cl-te" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "/two-cl" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            "/bad-cl" => b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
            "/fold" => b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 2\r\n\r\nok",
            "/space" => b"HTTP/1.1 200 OK\r\nX-A : one\r\nContent-Length: 2\r\n\r\nok",
            "/nul" => b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok",
            "/status" => b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
            "/version" => b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "/101" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            "/te10" => b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "/chunk-size" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            _ => OK,
        };
        Reply::SendClose(head.to_vec())
    })?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let cases = [
        "/cl-te",
        "/two-cl",
        "/bad-cl",
        "/fold",
        "/space",
        "/nul",
        "/status",
        "/version",
        "/101",
        "/te10",
        "/chunk-size",
    ];
    for path in cases {
        let mut c = p.client()?;
        let r = c.get(path).map_err(|e| format!("{path}: {e}"))?;
        assert_eq!(r.status, 502, "{path}: {}", r.head);
        assert!(r.connection_has("close"), "{path}: {}", r.head);
        assert!(
            c.closed_within(Duration::from_secs(3))?,
            "{path}: still open"
        );
    }
    assert_eq!(p.stat(|s| &s.bad_responses), cases.len() as u64);
    assert_eq!(p.stat(|s| &s.status_5xx), cases.len() as u64);
    assert_eq!(p.stat(|s| &s.retries), 0, "a bad response is not retried");
    assert_eq!(p.client()?.get("/fine")?.status, 200);
    Ok(())
}

#[test]
fn oversized_heads_get_414_and_431() -> TestResult {
    let s = Scripted::always(OK)?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let get = |target: &str, fields: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: t\r\n{fields}\r\n").into_bytes()
    };
    // Request line: 8 KiB with its CRLF is the limit.
    let line_max = 8 * 1024 - "GET  HTTP/1.1\r\n".len();
    let target = format!("/{}", "a".repeat(line_max - 1));
    assert_eq!(p.client()?.exchange(&get(&target, ""))?.status, 200);
    refused(&p, &get(&format!("/{}", "a".repeat(9000)), ""), 414)?;
    // Header section: 16 KiB.
    let field = format!("X-Big: {}\r\n", "b".repeat(1000));
    assert_eq!(
        p.client()?.exchange(&get("/", &field.repeat(15)))?.status,
        200
    );
    refused(&p, &get("/", &field.repeat(17)), 431)?;
    // 100 fields are allowed (Host and 99 more), 101 are not.
    let fields = |n: usize| (0..n).map(|i| format!("X-F{i}: v\r\n")).collect::<String>();
    assert_eq!(p.client()?.exchange(&get("/", &fields(99)))?.status, 200);
    refused(&p, &get("/", &fields(100)), 431)?;
    assert_eq!(s.connections.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(p.stat(|s| &s.status_4xx), 3);
    Ok(())
}

fn short_timeouts() -> Opts {
    let mut o = Opts::default();
    o.timeouts.header = Duration::from_millis(300);
    o.timeouts.idle = Duration::from_millis(300);
    o
}

#[test]
fn a_head_not_complete_within_the_header_timeout_gets_408() -> TestResult {
    let s = Scripted::always(OK)?;
    let p = proxy::start(&[s.addr], short_timeouts())?;
    // Trickling bytes does not extend the deadline.
    let mut c = p.client()?;
    let t0 = Instant::now();
    for piece in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"Host: t\r\n",
        b"X-A: 1\r\n",
        b"X-B: 2\r\n",
    ] {
        c.send(piece)?;
        thread::sleep(Duration::from_millis(100));
    }
    let r = c.response(false)?;
    let took = t0.elapsed();
    assert_eq!(r.status, 408, "{}", r.head);
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(c.closed_within(Duration::from_secs(3))?);
    assert_eq!(s.connections.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(p.stat(|s| &s.status_4xx), 1);
    Ok(())
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() -> TestResult {
    let s = Scripted::always(OK)?;
    let p = proxy::start(&[s.addr], short_timeouts())?;
    let mut c = p.client()?;
    assert_eq!(c.get("/")?.status, 200);
    let t0 = Instant::now();
    assert!(c.closed_within(Duration::from_secs(3))?, "not closed");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(250), "closed early: {took:?}");
    // A connection that never sends anything is idle too.
    let mut silent = p.client()?;
    assert!(silent.closed_within(Duration::from_secs(3))?, "not closed");
    // Activity keeps a connection open past the timeout.
    let mut busy = p.client()?;
    for _ in 0..4 {
        thread::sleep(Duration::from_millis(150));
        assert_eq!(busy.get("/")?.status, 200);
    }
    Ok(())
}

#[test]
fn one_bad_client_does_not_disturb_another() -> TestResult {
    let s = Scripted::always(OK)?;
    let mut opts = Opts::default();
    opts.timeouts.header = Duration::from_secs(2);
    // One worker: every connection shares one event loop.
    let p = proxy::start(&[s.addr], opts)?;
    let mut good = p.client()?;
    assert_eq!(good.get("/")?.status, 200);
    let mut stalled = p.client()?;
    stalled.send(b"GET /stalled HTTP/1.1\r\nHost: t\r\nX-Half: ")?;
    let mut garbage = p.client()?;
    garbage.send(b"\x00\x01garbage\xff\r\n\r\n")?;
    let t0 = Instant::now();
    for i in 0..20 {
        let r = good.get(&format!("/{i}"))?;
        assert_eq!(r.status, 200);
        if i == 5 {
            assert_eq!(garbage.response(false)?.status, 400);
        }
    }
    // Had the worker waited on the stalled client, this would take until
    // its 408 at the header timeout.
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(1800), "{took:?}");
    // The stalled client gets its own 408; the good one carries on.
    assert_eq!(stalled.response(false)?.status, 408);
    assert_eq!(good.get("/after")?.status, 200);
    assert_eq!(p.stat(|s: &ProxyStats| &s.ok), 22);
    Ok(())
}

/// A backend for one connection: reads a request head, then writes
/// `parts` with a pause before each, then closes.
fn staged(parts: Vec<(Duration, Vec<u8>)>) -> std::io::Result<std::net::SocketAddr> {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && matches!(s.read(&mut byte), Ok(1)) {
            head.push(byte[0]);
        }
        for (pause, bytes) in parts {
            thread::sleep(pause);
            if s.write_all(&bytes).is_err() {
                return;
            }
        }
    });
    Ok(addr)
}

#[test]
fn a_response_cut_short_is_cut_short_for_the_client_too() -> TestResult {
    let s = Scripted::start(|_| {
        Reply::SendClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..".to_vec())
    })?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    // The head went out before the backend's FIN was read: the client
    // learns of the loss by the close before Content-Length bytes.
    let got = c.read_to_end()?;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(text.ends_with("\r\n\r\nonly ten.."), "{text:?}");
    assert_eq!(p.stat(|s| &s.backend_resets), 1);
    Ok(())
}

#[test]
fn a_body_broken_after_its_head_was_relayed_closes_the_client() -> TestResult {
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec();
    let addr = staged(vec![
        (Duration::ZERO, head),
        (Duration::from_millis(200), b"zz\r\nbroken\r\n".to_vec()),
    ])?;
    let p = proxy::start(&[addr], Opts::default())?;
    let mut c = p.client()?;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    // The head and the good chunk arrive; then the connection just ends.
    let got = c.read_to_end()?;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(text.ends_with("\r\n\r\n5\r\nhello\r\n"), "{text:?}");
    assert_eq!(p.stat(|s| &s.bad_responses), 1);
    assert_eq!(p.stat(|s| &s.status_5xx), 0);
    Ok(())
}

#[test]
fn a_backend_stalling_mid_body_is_cut_off_after_the_backend_timeout() -> TestResult {
    let addr = staged(vec![
        (
            Duration::ZERO,
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf.".to_vec(),
        ),
        (Duration::from_secs(3), b"late!".to_vec()),
    ])?;
    let mut opts = Opts::default();
    opts.timeouts.backend = Duration::from_millis(300);
    let p = proxy::start(&[addr], opts)?;
    let mut c = p.client()?;
    let t0 = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let got = c.read_to_end()?;
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.ends_with("\r\n\r\nhalf."), "{text:?}");
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    Ok(())
}

#[test]
fn a_malformed_request_body_gets_400_and_both_connections_close() -> TestResult {
    let s = Scripted::always(OK)?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    let r = c.exchange(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\nzz\r\nbad\r\n0\r\n\r\n",
    )?;
    assert_eq!(r.status, 400, "{}", r.head);
    assert!(c.closed_within(Duration::from_secs(3))?);
    // The backend got the head and never a complete request.
    assert!(s.seen.recv_timeout(Duration::from_millis(200)).is_err());
    assert_eq!(p.stat(|s| &s.status_4xx), 1);
    assert_eq!(p.stat(|s| &s.client_aborts), 0);
    assert_eq!(p.client()?.get("/")?.status, 200);
    Ok(())
}
