//! The WebSocket test harness itself (tests/util/websocket.rs), with the
//! client talking straight to the backend, no proxy: so that when
//! tests/proxy_websocket.rs fails, the proxy is to blame, not the harness.

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::Duration;

use tungstenite::Message;
use util::TestResult;
use util::websocket::{
    FLOOD_LIMIT, Mode, WsBackend, close, echo_each, lists, raw_handshake, upgrade_request,
    ws_client,
};

/// Bytes a non-reading client's connection may absorb with no proxy in
/// between (the kernel's buffers only); the proxy tests allow 16 MiB.
const DIRECT_BOUND: u64 = 12 * 1024 * 1024;

// The flood can go past the bound, so the bound is what stops it.
const _: () = assert!(FLOOD_LIMIT > DIRECT_BOUND);

#[test]
fn echo_backend_answers_a_real_client() -> TestResult {
    let b = WsBackend::start(Mode::Echo)?;
    let (mut ws, resp) = ws_client(b.addr, "/chat")?;
    assert_eq!(resp.status(), 101);
    assert!(lists(&resp, "upgrade", "websocket"));
    assert!(lists(&resp, "connection", "upgrade"));
    let messages = [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("x".repeat(70_000)),
        Message::binary(util::pattern(7, 200_000)),
    ];
    echo_each(&mut ws, &messages)?;
    close(&mut ws)?;
    let report = b.report().ok_or("no report")?;
    assert_eq!(report.echoed, messages.len());
    assert!(report.head.starts_with("get /chat\n"), "{}", report.head);
    assert!(
        report.head.contains("upgrade: websocket"),
        "{}",
        report.head
    );
    Ok(())
}

#[test]
fn raw_handshake_gets_a_valid_101() -> TestResult {
    let b = WsBackend::start(Mode::Echo)?;
    let raw = raw_handshake(b.addr, "/")?;
    assert_eq!(raw.status, 101, "{}", raw.head);
    assert!(raw.accept_is_valid(), "{}", raw.head);
    assert!(raw.leftover.is_empty());
    // A non-GET handshake is refused by tungstenite (it closes).
    let mut s = util::connect(b.addr)?;
    s.write_all(upgrade_request("POST", "/", "Content-Length: 0\r\n").as_bytes())?;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 101"));
    Ok(())
}

#[test]
fn client_half_close_then_backend_answers() -> TestResult {
    let b = WsBackend::start(Mode::AnswerAfterEof(b"last words".to_vec()))?;
    let mut raw = raw_handshake(b.addr, "/")?;
    raw.stream.write_all(b"from the client")?;
    raw.stream.shutdown(Shutdown::Write)?;
    assert_eq!(raw.read_to_eof()?, b"last words");
    let report = b.report().ok_or("no report")?;
    assert!(report.eof);
    assert_eq!(report.read, b"from the client");
    Ok(())
}

#[test]
fn backend_half_close_then_client_answers() -> TestResult {
    let b = WsBackend::start(Mode::HalfCloseFirst(b"first words".to_vec()))?;
    let mut raw = raw_handshake(b.addr, "/")?;
    assert_eq!(raw.read_to_eof()?, b"first words");
    raw.stream.write_all(b"the reply")?;
    raw.stream.shutdown(Shutdown::Write)?;
    let report = b.report().ok_or("no report")?;
    assert!(report.eof);
    assert_eq!(report.read, b"the reply");
    Ok(())
}

#[test]
fn flood_stalls_on_a_client_that_does_not_read() -> TestResult {
    let b = WsBackend::start(Mode::Flood)?;
    let mut raw = raw_handshake(b.addr, "/")?;
    thread::sleep(Duration::from_secs(2));
    let stalled = b.flooded.load(Relaxed);
    eprintln!("direct: {stalled} bytes sent to a client that does not read");
    assert!(stalled > 0, "the flood started");
    assert!(stalled < DIRECT_BOUND, "{stalled} bytes");
    // Reading releases it: the count moves on.
    let mut sink = vec![0u8; 8 * 1024 * 1024];
    raw.stream.read_exact(&mut sink)?;
    let moved = util::wait_until(Duration::from_secs(5), || b.flooded.load(Relaxed) > stalled);
    assert!(moved, "the flood resumed once the client read");
    Ok(())
}
