//! Proxy mode, client side: persistence (HTTP/1.1 and 1.0), pipelining,
//! `Connection: close`, `Expect: 100-continue`, and request bodies reaching
//! the backend intact.

mod util;

use std::time::Duration;

use util::TestResult;
use util::proxy::{self, Opts};
use util::scripted::{Reply, Scripted, header};

/// A scripted backend that answers each request with its target as body.
fn echo_target() -> std::io::Result<Scripted> {
    Scripted::start(|seen| {
        let target = seen.head.split(' ').nth(1).unwrap_or("?").to_string();
        Reply::Send(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{target}",
                target.len()
            )
            .into_bytes(),
        )
    })
}

#[test]
fn http11_is_keep_alive_by_default() -> TestResult {
    let b = proxy::backend("0", "A")?;
    let p = proxy::start(&[b.local_addr()], Opts::default())?;
    let mut c = p.client()?;
    for _ in 0..5 {
        let r = c.get("/")?;
        assert_eq!(r.status, 200, "{}", r.head);
        assert!(!r.connection_has("close"), "{}", r.head);
        assert_eq!(r.body_str(), "server A latency 0ms\n");
    }
    assert!(!c.closed_within(Duration::from_millis(100))?);
    assert_eq!(b.stats().requests, 5);
    assert_eq!(p.stat(|s| &s.ok), 5);
    Ok(())
}

#[test]
fn http10_without_keep_alive_is_closed_after_the_response() -> TestResult {
    let b = proxy::backend("0", "A")?;
    let p = proxy::start(&[b.local_addr()], Opts::default())?;
    let mut c = p.client()?;
    let r = c.exchange(b"GET / HTTP/1.0\r\n\r\n")?;
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.connection_has("close"), "{}", r.head);
    assert_eq!(r.body_str(), "server A latency 0ms\n");
    assert!(
        c.closed_within(Duration::from_secs(3))?,
        "proxy kept it open"
    );
    Ok(())
}

#[test]
fn http10_with_keep_alive_stays_open() -> TestResult {
    let b = proxy::backend("0", "A")?;
    let p = proxy::start(&[b.local_addr()], Opts::default())?;
    let mut c = p.client()?;
    for _ in 0..3 {
        let r = c.exchange(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")?;
        assert_eq!(r.status, 200, "{}", r.head);
        assert!(r.connection_has("keep-alive"), "{}", r.head);
        assert!(!r.connection_has("close"), "{}", r.head);
    }
    assert!(!c.closed_within(Duration::from_millis(100))?);
    Ok(())
}

#[test]
fn pipelined_requests_are_answered_in_order() -> TestResult {
    let s = echo_target()?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    c.send(
        b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /second HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /third HTTP/1.1\r\nHost: t\r\n\r\n",
    )?;
    for want in ["/first", "/second", "/third"] {
        let r = c.response(false)?;
        assert_eq!((r.status, r.body_str().as_str()), (200, want));
    }
    // Each request reached the backend, in order, on one connection.
    for want in ["/first", "/second", "/third"] {
        let seen = s.next().ok_or("backend saw too few requests")?;
        assert!(
            seen.head.starts_with(&format!("GET {want} ")),
            "{}",
            seen.head
        );
        assert_eq!(seen.conn, 0);
    }
    Ok(())
}

#[test]
fn a_long_pipeline_is_answered_in_order() -> TestResult {
    let s = echo_target()?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    let all: String = (0..200)
        .map(|i| format!("GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n"))
        .collect();
    c.send(all.as_bytes())?;
    for i in 0..200 {
        let r = c.response(false)?;
        assert_eq!(r.body_str(), format!("/{i}"));
    }
    assert_eq!(s.connections.load(std::sync::atomic::Ordering::Relaxed), 1);
    Ok(())
}

#[test]
fn connection_close_is_honoured() -> TestResult {
    let s = echo_target()?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    // A request pipelined after the closing one is never answered.
    c.send(
        b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n\
          GET /never HTTP/1.1\r\nHost: t\r\n\r\n",
    )?;
    let r = c.response(false)?;
    assert_eq!((r.status, r.body_str().as_str()), (200, "/last"));
    assert!(r.connection_has("close"), "{}", r.head);
    assert!(
        c.closed_within(Duration::from_secs(3))?,
        "proxy kept it open"
    );
    let seen = s.next().ok_or("backend saw nothing")?;
    assert!(seen.head.starts_with("GET /last "), "{}", seen.head);
    assert!(
        s.seen.try_recv().is_err(),
        "the second request was forwarded"
    );
    Ok(())
}

#[test]
fn expect_100_continue_reaches_the_client_before_the_final_response() -> TestResult {
    let b = proxy::backend("0", "A")?;
    let p = proxy::start(&[b.local_addr()], Opts::default())?;
    let mut c = p.client()?;
    c.send(
        b"POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\
          Content-Length: 5\r\n\r\n",
    )?;
    // The body is withheld until the interim response arrives.
    let interim = c.message(false)?;
    assert_eq!(interim.status, 100, "{}", interim.head);
    c.send(b"hello")?;
    let r = c.response(false)?;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-request-body-bytes"), Some("5"));
    // The connection is still usable.
    assert_eq!(c.get("/")?.status, 200);
    Ok(())
}

#[test]
fn content_length_body_reaches_the_backend_intact() -> TestResult {
    let s = Scripted::always(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    let body = util::pattern(7, 300_000);
    let mut req = format!(
        "POST /data HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = c.exchange(&req)?;
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    let seen = s.next().ok_or("backend saw nothing")?;
    let lower = seen.head.to_ascii_lowercase();
    assert_eq!(header(&lower, "content-length"), Some("300000"));
    assert!(
        seen.body == body,
        "body differs ({} bytes)",
        seen.body.len()
    );
    // The next request on the same connection is framed correctly.
    let r = c.get("/after")?;
    assert_eq!(r.status, 200);
    let seen = s.next().ok_or("backend saw no second request")?;
    assert!(seen.head.starts_with("GET /after "), "{}", seen.head);
    Ok(())
}

#[test]
fn chunked_body_is_forwarded_verbatim() -> TestResult {
    let s = Scripted::always(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    let chunks: &[u8] = b"5\r\nhello\r\n7;note=x\r\n, world\r\n1000\r\n";
    let big = util::pattern(3, 0x1000);
    let mut body = chunks.to_vec();
    body.extend_from_slice(&big);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut req =
        b"POST /chunks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&body);
    let r = c.exchange(&req)?;
    assert_eq!(r.status, 200);
    let seen = s.next().ok_or("backend saw nothing")?;
    let lower = seen.head.to_ascii_lowercase();
    assert_eq!(header(&lower, "transfer-encoding"), Some("chunked"));
    assert!(header(&lower, "content-length").is_none(), "{}", seen.head);
    assert!(seen.body == body, "chunked body differs");
    Ok(())
}

#[test]
fn the_builtin_backend_counts_every_body_byte() -> TestResult {
    let b = proxy::backend("0", "A")?;
    let p = proxy::start(&[b.local_addr()], Opts::default())?;
    let mut c = p.client()?;
    let mut req = b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n".to_vec();
    req.extend_from_slice(&util::pattern(1, 100_000));
    let r = c.exchange(&req)?;
    assert_eq!(
        r.header("x-request-body-bytes"),
        Some("100000"),
        "{}",
        r.head
    );
    // Chunked, with a trailer: 3 + 4 payload bytes.
    let r = c.exchange(
        b"POST /y HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: 1\r\n\r\n",
    )?;
    assert_eq!(r.header("x-request-body-bytes"), Some("7"), "{}", r.head);
    assert_eq!(b.stats().body_bytes, 100_007);
    assert_eq!(b.stats().connections, 1);
    Ok(())
}

#[test]
fn a_pipelined_post_body_does_not_swallow_the_next_request() -> TestResult {
    let s = echo_target()?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    c.send(
        b"POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: 26\r\n\r\n\
          GET /smuggled HTTP/1.1\r\n\r\n\
          GET /next HTTP/1.1\r\nHost: t\r\n\r\n",
    )?;
    assert_eq!(c.response(false)?.body_str(), "/post");
    assert_eq!(c.response(false)?.body_str(), "/next");
    let post = s.next().ok_or("backend saw nothing")?;
    assert_eq!(post.body, b"GET /smuggled HTTP/1.1\r\n\r\n");
    let next = s.next().ok_or("backend saw no second request")?;
    assert!(next.head.starts_with("GET /next "), "{}", next.head);
    Ok(())
}

#[test]
fn a_client_half_close_after_its_request_still_gets_the_response() -> TestResult {
    let b = proxy::backend("20", "A")?;
    let p = proxy::start(&[b.local_addr()], Opts::default())?;
    let mut c = p.client()?;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    c.stream.shutdown(std::net::Shutdown::Write)?;
    let r = c.response(false)?;
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.connection_has("close"), "{}", r.head);
    assert!(c.closed_within(Duration::from_secs(3))?);
    assert_eq!(p.stat(|s| &s.client_aborts), 0);
    Ok(())
}

/// RFC 9112 6.1: a server must not send a chunked body to an HTTP/1.0
/// client, which cannot decode it. The proxy forwards 1.0 requests as 1.0,
/// so a compliant backend answers with a length or by closing; a backend
/// that answers chunked anyway gets a 502 instead of reaching the client.
#[test]
fn http10_clients_never_get_a_chunked_body() -> TestResult {
    let s = Scripted::always(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    c.send(b"GET / HTTP/1.0\r\n\r\n")?;
    let got = c.read_to_end()?;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 502 "), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("transfer-encoding"),
        "{text}"
    );
    let seen = s.next().ok_or("the backend saw no request")?;
    assert!(seen.head.starts_with("GET / HTTP/1.0\r\n"), "{}", seen.head);
    assert_eq!(p.stat(|s| &s.bad_responses), 1);
    Ok(())
}
