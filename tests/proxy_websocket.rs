//! Proxy mode, Upgrade and tunnels (RFC 9110 §7.8, RFC 6455): a WebSocket
//! handshake passes through, the 101 turns the connection into a two-way
//! byte tunnel with half-close on each side and backpressure, a refused
//! upgrade stays plain HTTP, an Upgrade on anything but GET is dropped,
//! and `/metrics` counts tunnels.
//!
//! The harness (tests/util/websocket.rs) is checked without a proxy in
//! tests/websocket_util.rs.

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::Duration;

use tungstenite::Message;
use util::TestResult;
use util::admin;
use util::proxy::{self, Opts};
use util::scripted::{Reply, Scripted, header};
use util::websocket::{
    FLOOD_LIMIT, Mode, WsBackend, close, echo_each, lists, raw_handshake, upgrade_request,
    ws_client,
};

/// Most bytes a tunnel to a client that does not read may absorb: the
/// kernel buffers of four sockets (measured at about 9 MiB on loopback
/// through a plain 8 KiB relay) plus the proxy's own bounded buffers.
const TUNNEL_BOUND: u64 = 16 * 1024 * 1024;

// The flood can go past the bound, so a proxy without backpressure fails.
const _: () = assert!(FLOOD_LIMIT > TUNNEL_BOUND);

/// How long a client stays silent in the backpressure test: long enough
/// for an unbounded proxy to buffer far beyond [`TUNNEL_BOUND`].
const STALL: Duration = Duration::from_secs(3);

fn ws_proxy(mode: Mode) -> Result<(WsBackend, proxy::TestProxy), Box<dyn std::error::Error>> {
    let backend = WsBackend::start(mode)?;
    let p = proxy::start(&[backend.addr], Opts::default())?;
    Ok((backend, p))
}

#[test]
fn websocket_handshake_and_echo_through_the_proxy() -> TestResult {
    let (b, p) = ws_proxy(Mode::Echo)?;
    // tungstenite checks the 101 and Sec-WebSocket-Accept.
    let (mut ws, resp) = ws_client(p.addr, "/chat?room=1")?;
    assert_eq!(resp.status(), 101);
    assert!(lists(&resp, "upgrade", "websocket"), "{resp:?}");
    assert!(lists(&resp, "connection", "upgrade"), "{resp:?}");
    let messages = [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("é".repeat(40_000)),
        Message::binary(util::pattern(3, 300_000)),
        Message::text(""),
        Message::binary(util::pattern(4, 1)),
    ];
    echo_each(&mut ws, &messages)?;
    close(&mut ws)?;
    let report = b.report().ok_or("the backend never finished a handshake")?;
    assert_eq!(report.echoed, messages.len());
    assert!(
        report.head.starts_with("get /chat?room=1\n"),
        "{}",
        report.head
    );
    assert!(
        report.head.contains("upgrade: websocket"),
        "{}",
        report.head
    );
    assert!(
        report.head.contains("sec-websocket-key: "),
        "{}",
        report.head
    );
    Ok(())
}

#[test]
fn client_half_close_reaches_the_backend_which_still_answers() -> TestResult {
    let (b, p) = ws_proxy(Mode::AnswerAfterEof(
        b"last words from the backend".to_vec(),
    ))?;
    let mut raw = raw_handshake(p.addr, "/")?;
    assert_eq!(raw.status, 101, "{}", raw.head);
    assert!(raw.accept_is_valid(), "{}", raw.head);
    raw.stream.write_all(b"from the client")?;
    raw.stream.shutdown(Shutdown::Write)?;
    // The backend sees the client's EOF, answers, closes; the answer and
    // then the end of the connection reach the client.
    assert_eq!(raw.read_to_eof()?, b"last words from the backend");
    let report = b.report().ok_or("no report from the backend")?;
    assert!(report.eof, "the backend saw the client's EOF");
    assert_eq!(report.read, b"from the client");
    Ok(())
}

#[test]
fn backend_half_close_reaches_the_client_which_still_answers() -> TestResult {
    let (b, p) = ws_proxy(Mode::HalfCloseFirst(
        b"first words from the backend".to_vec(),
    ))?;
    let mut raw = raw_handshake(p.addr, "/")?;
    assert_eq!(raw.status, 101, "{}", raw.head);
    assert_eq!(raw.read_to_eof()?, b"first words from the backend");
    // The client's side is still open: its bytes and its EOF get through.
    raw.stream.write_all(b"the client's reply")?;
    raw.stream.shutdown(Shutdown::Write)?;
    let report = b.report().ok_or("no report from the backend")?;
    assert_eq!(report.read, b"the client's reply");
    assert!(report.eof, "the backend saw the client's EOF");
    Ok(())
}

#[test]
fn a_tunnel_to_a_client_that_does_not_read_pushes_back_on_the_backend() -> TestResult {
    let (b, p) = ws_proxy(Mode::Flood)?;
    let mut raw = raw_handshake(p.addr, "/")?;
    assert_eq!(raw.status, 101, "{}", raw.head);
    thread::sleep(STALL);
    let stalled = b.flooded.load(Relaxed);
    eprintln!("backend sent {stalled} bytes into a tunnel whose client does not read");
    assert!(stalled > 0, "the flood started");
    assert!(
        stalled < TUNNEL_BOUND,
        "{stalled} bytes in {STALL:?}: the proxy buffers without bound"
    );
    // The tunnel is stalled, not broken: reading lets the backend go on.
    let mut sink = vec![0u8; 8 * 1024 * 1024];
    raw.stream.read_exact(&mut sink)?;
    let moved = util::wait_until(Duration::from_secs(5), || b.flooded.load(Relaxed) > stalled);
    assert!(moved, "the backend resumed once the client read");
    Ok(())
}

#[test]
fn a_refused_upgrade_is_relayed_and_the_connection_stays_http() -> TestResult {
    // A backend that refuses the upgrade with 400 (by path, whatever the
    // proxy forwarded of Upgrade).
    let s = Scripted::start(|seen| {
        let answer: &[u8] = if seen.head.starts_with("GET /ws ") {
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\nnope"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        Reply::Send(answer.to_vec())
    })?;
    // And a plain HTTP backend that ignores Upgrade and answers 200.
    let plain = proxy::backend("0", "plain")?;
    for (addr, want) in [(s.addr, 400), (plain.local_addr(), 200)] {
        let p = proxy::start(&[addr], Opts::default())?;
        let mut c = p.client()?;
        let r = c.exchange(upgrade_request("GET", "/ws", "").as_bytes())?;
        assert_eq!(r.status, want, "{}", r.head);
        assert!(r.interim.is_empty(), "no 101 before it: {:?}", r.interim);
        // The same connection goes on as HTTP/1.1.
        let again = c.get("/")?;
        assert_eq!(again.status, 200, "{}", again.head);
        let again = c.get("/")?;
        assert_eq!(again.status, 200, "{}", again.head);
    }
    Ok(())
}

#[test]
fn upgrade_on_a_non_get_request_is_not_forwarded() -> TestResult {
    let s = Scripted::always(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    let post = upgrade_request("POST", "/submit", "Content-Length: 5\r\n") + "hello";
    let r = c.exchange(post.as_bytes())?;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = s.next().ok_or("the backend saw no request")?;
    let lower = seen.head.to_ascii_lowercase();
    assert!(header(&lower, "upgrade").is_none(), "{}", seen.head);
    let connection = header(&lower, "connection").unwrap_or("");
    assert!(!connection.contains("upgrade"), "{}", seen.head);
    assert_eq!(seen.body, b"hello");
    // Still plain HTTP afterwards.
    assert_eq!(c.get("/")?.status, 200);
    Ok(())
}

/// The value of the sample `name` (no labels, or summed over them).
fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[test]
fn metrics_count_tunnels() -> TestResult {
    let b = WsBackend::start(Mode::Echo)?;
    let p = admin::start(&[("ws", b.addr)], Opts::default())?;
    let text = p.body("/metrics")?;
    assert!(
        text.contains("# TYPE tidegate_tunnels_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE tidegate_tunnels_open gauge"),
        "{text}"
    );
    assert_eq!(metric(&text, "tidegate_tunnels_total"), Some(0.0));
    assert_eq!(metric(&text, "tidegate_tunnels_open"), Some(0.0));

    let (mut ws, _) = ws_client(p.addr, "/")?;
    echo_each(&mut ws, &[Message::text("ping")])?;
    let text = p.body("/metrics")?;
    assert_eq!(metric(&text, "tidegate_tunnels_total"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "tidegate_tunnels_open"), Some(1.0), "{text}");

    close(&mut ws)?;
    drop(ws);
    let closed = util::wait_until(Duration::from_secs(5), || {
        p.body("/metrics")
            .is_ok_and(|t| metric(&t, "tidegate_tunnels_open") == Some(0.0))
    });
    assert!(closed, "tidegate_tunnels_open went back to 0");
    let text = p.body("/metrics")?;
    assert_eq!(metric(&text, "tidegate_tunnels_total"), Some(1.0), "{text}");
    Ok(())
}
