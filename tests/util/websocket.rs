//! A WebSocket backend for tunnel tests (tungstenite, one thread per
//! connection, no async runtime) and a raw-bytes handshake for clients that
//! need the bare `TcpStream` afterwards (half-close, not reading).
//!
//! Every mode starts with a real server handshake (`tungstenite::accept_hdr`,
//! which checks `Upgrade`, `Connection` and the key and answers 101 with
//! `Sec-WebSocket-Accept`); what follows depends on the [`Mode`]. Each
//! connection ends with one [`Report`] on the backend's channel.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use tungstenite::handshake::derive_accept_key;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::{Message, WebSocket};

use super::client::find;
use super::{IO_TIMEOUT, connect};

/// Messages one echo connection answers before it closes: far more than
/// any test sends, so a runaway client cannot keep a thread forever.
pub const ECHO_LIMIT: usize = 1000;

/// Most bytes a flood connection tries to send: 4x the 16 MiB a bounded
/// tunnel may hold, so an unbounded proxy is caught, yet small enough
/// that the test process survives buffering all of it.
pub const FLOOD_LIMIT: u64 = 64 * 1024 * 1024;

/// One flood message: 64 KiB, so the count of bytes sent moves in small steps.
pub const FLOOD_MESSAGE: usize = 64 * 1024;

/// The key the raw handshake sends (RFC 6455 §1.3's example).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// What a connection does after the handshake.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Echo text and binary messages (up to [`ECHO_LIMIT`]) until the
    /// client closes.
    Echo,
    /// Send binary messages without reading, counting the bytes each
    /// successful send handed to the socket, until a send fails (write
    /// timeout, peer gone) or [`FLOOD_LIMIT`] is reached.
    Flood,
    /// Raw bytes: read until the client's EOF, then write these bytes and close.
    AnswerAfterEof(Vec<u8>),
    /// Raw bytes: write these, shut down the write side, then read until EOF.
    HalfCloseFirst(Vec<u8>),
}

/// What one connection saw, sent when it ends.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The handshake request: request line and `name: value` lines, lower-cased.
    pub head: String,
    /// Raw bytes read after the handshake (the raw modes).
    pub read: Vec<u8>,
    /// The client's EOF was read (the raw modes).
    pub eof: bool,
    /// Messages echoed (echo mode).
    pub echoed: usize,
}

/// A WebSocket backend on 127.0.0.1:0; stops accepting when dropped.
pub struct WsBackend {
    pub addr: SocketAddr,
    pub reports: mpsc::Receiver<Report>,
    /// Bytes flood connections have handed to their sockets so far.
    pub flooded: Arc<AtomicU64>,
    pub connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl WsBackend {
    pub fn start(mode: Mode) -> io::Result<WsBackend> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let (tx, reports) = mpsc::channel();
        let flooded = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, c, st) = (
            Arc::clone(&flooded),
            Arc::clone(&connections),
            Arc::clone(&stop),
        );
        // Bounded by the stop flag, set when the backend is dropped.
        thread::spawn(move || {
            while !st.load(Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        c.fetch_add(1, Relaxed);
                        let (mode, tx, f) = (mode.clone(), tx.clone(), Arc::clone(&f));
                        thread::spawn(move || {
                            if let Some(report) = serve(s, &mode, &f) {
                                let _ = tx.send(report);
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(WsBackend {
            addr,
            reports,
            flooded,
            connections,
            stop,
        })
    }

    /// The next connection's report (waits up to [`IO_TIMEOUT`]).
    pub fn report(&self) -> Option<Report> {
        self.reports.recv_timeout(IO_TIMEOUT).ok()
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

// tungstenite's `Callback` fixes the closure's (large) error type.
#[allow(clippy::result_large_err)]
fn serve(s: TcpStream, mode: &Mode, flooded: &AtomicU64) -> Option<Report> {
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(IO_TIMEOUT)).ok()?;
    let mut report = Report::default();
    let head = &mut report.head;
    let mut ws = tungstenite::accept_hdr(s, |req: &Request, resp: Response| {
        *head = describe(req);
        Ok(resp)
    })
    .ok()?;
    match mode {
        Mode::Echo => echo(&mut ws, &mut report),
        Mode::Flood => flood(&mut ws, flooded),
        Mode::AnswerAfterEof(last) => {
            report.eof = read_to_eof(ws.get_mut(), &mut report.read);
            let _ = ws.get_mut().write_all(last);
        }
        Mode::HalfCloseFirst(first) => {
            let s = ws.get_mut();
            s.write_all(first).ok()?;
            s.shutdown(Shutdown::Write).ok()?;
            report.eof = read_to_eof(s, &mut report.read);
        }
    }
    Some(report)
}

fn describe(req: &Request) -> String {
    let mut head = format!("{} {}\n", req.method(), req.uri());
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes());
        head.push_str(&format!("{name}: {value}\n"));
    }
    head.to_ascii_lowercase()
}

fn echo(ws: &mut WebSocket<TcpStream>, report: &mut Report) {
    while report.echoed < ECHO_LIMIT {
        match ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).is_err() {
                    return;
                }
                report.echoed += 1;
            }
            Ok(Message::Close(_)) => {
                // tungstenite queued the close reply; flush it, then wait for EOF.
                let _ = ws.flush();
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn flood(ws: &mut WebSocket<TcpStream>, flooded: &AtomicU64) {
    let mut sent = 0;
    while sent < FLOOD_LIMIT {
        let message = Message::binary(vec![0x5a; FLOOD_MESSAGE]);
        if ws.send(message).is_err() {
            return;
        }
        sent += FLOOD_MESSAGE as u64;
        flooded.fetch_add(FLOOD_MESSAGE as u64, Relaxed);
    }
}

/// Reads into `out` until EOF (true) or an error or timeout (false).
fn read_to_eof(s: &mut TcpStream, out: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    // Bounded by the read timeout and by the test's small payloads.
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(_) => return false,
        }
    }
}

/// A raw handshake's outcome: the stream, ready for tunnel bytes.
#[derive(Debug)]
pub struct Raw {
    pub stream: TcpStream,
    pub status: u16,
    /// The response head, lower-cased.
    pub head: String,
    /// Bytes that arrived after the response head.
    pub leftover: Vec<u8>,
}

impl Raw {
    /// Reads until EOF: the leftover and everything after it. An error if
    /// the connection neither ends nor fails within [`IO_TIMEOUT`].
    pub fn read_to_eof(&mut self) -> io::Result<Vec<u8>> {
        let mut out = std::mem::take(&mut self.leftover);
        self.stream.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The `Sec-WebSocket-Accept` value matches [`KEY`] (RFC 6455 §4.2.2).
    pub fn accept_is_valid(&self) -> bool {
        super::scripted::header(&self.head, "sec-websocket-accept")
            .is_some_and(|v| v == derive_accept_key(KEY.as_bytes()).to_ascii_lowercase())
    }
}

/// The request head of a WebSocket handshake for `path`, `method` and any
/// extra header lines (each ending in CRLF).
pub fn upgrade_request(method: &str, path: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends a GET upgrade request as raw bytes and reads the response head.
pub fn raw_handshake(addr: SocketAddr, path: &str) -> io::Result<Raw> {
    let mut stream = connect(addr)?;
    stream.write_all(upgrade_request("GET", path, "").as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bounded by the read timeout and the 64 KiB cap.
    let end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("response head too long"));
        }
        match stream.read(&mut chunk)? {
            0 => return Err(io::Error::other(format!("EOF in response head: {buf:?}"))),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line: {head:?}")))?;
    Ok(Raw {
        stream,
        status,
        head,
        leftover: buf.split_off(end),
    })
}

/// A tungstenite client over a fresh connection to `addr` (the handshake
/// is checked by tungstenite, `Sec-WebSocket-Accept` included).
pub fn ws_client(
    addr: SocketAddr,
    path: &str,
) -> Result<
    (
        WebSocket<TcpStream>,
        tungstenite::handshake::client::Response,
    ),
    Box<dyn std::error::Error>,
> {
    let stream = connect(addr)?;
    let url = format!("ws://{addr}{path}");
    let (ws, resp) = tungstenite::client(url.as_str(), stream).map_err(|e| e.to_string())?;
    Ok((ws, resp))
}

/// Sends each message and expects it back unchanged.
pub fn echo_each(ws: &mut WebSocket<TcpStream>, messages: &[Message]) -> tungstenite::Result<()> {
    for m in messages {
        ws.send(m.clone())?;
        let back = ws.read()?;
        assert_eq!(&back, m, "echoed");
    }
    Ok(())
}

/// Starts the close handshake and reads until it completes (or fails).
pub fn close(ws: &mut WebSocket<TcpStream>) -> tungstenite::Result<()> {
    ws.close(None)?;
    // Bounded: after our close frame the peer answers and closes, or the
    // read times out.
    while ws.read().is_ok() {}
    Ok(())
}

/// Does the `name` header of a tungstenite response list `token`?
pub fn lists(resp: &tungstenite::handshake::client::Response, name: &str, token: &str) -> bool {
    resp.headers().get_all(name).iter().any(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}
