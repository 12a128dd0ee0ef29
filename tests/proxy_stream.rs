//! Proxy mode, streaming: a 64 MiB upload and a 64 MiB download pass
//! through the proxy intact, without the proxy buffering them.
//!
//! The proxy runs in this test process, so the memory check reads this
//! process's peak RSS (VmHWM): the client and the backend here stream in
//! small pieces, so a proxy that buffered a body would add 64 MiB to it.
//! This file holds one test so that no other test adds to the peak.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use util::TestResult;
use util::client::{READ_TIMEOUT, find};
use util::proxy::{self, Opts};

const BODY: u64 = 64 << 20;
const PIECE: usize = 256 * 1024;
/// Byte `i` of every body is `i % PERIOD`.
const PERIOD: usize = 251;

/// Enough of the pattern for any piece at any offset.
fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| (0..PERIOD + PIECE).map(|i| (i % PERIOD) as u8).collect())
}

/// The expected `n` body bytes at offset `pos` (`n <= PIECE`).
fn expected(pos: u64, n: usize) -> &'static [u8] {
    let at = (pos % PERIOD as u64) as usize;
    &template()[at..at + n]
}

/// Reads a head (up to the blank line); returns it and the bytes after it.
fn read_head(s: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        match s.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads `len` body bytes (after `first`) and checks them against the
/// pattern; returns the offset of the first wrong byte, if any.
fn check_body(s: &mut TcpStream, first: &[u8], len: u64) -> io::Result<Option<u64>> {
    let mut pos = 0u64;
    let mut bad = None;
    let mut check = |data: &[u8], pos: &mut u64| {
        if bad.is_none() && data != expected(*pos, data.len()) {
            bad = Some(*pos);
        }
        *pos += data.len() as u64;
    };
    check(first, &mut pos);
    let mut buf = vec![0u8; PIECE];
    while pos < len {
        let want = usize::try_from(len - pos).unwrap_or(PIECE).min(PIECE);
        let n = s.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        check(&buf[..n], &mut pos);
    }
    Ok(bad)
}

fn send_pattern(s: &mut TcpStream, len: u64) -> io::Result<()> {
    let mut pos = 0u64;
    while pos < len {
        let n = usize::try_from(len - pos).unwrap_or(PIECE).min(PIECE);
        s.write_all(expected(pos, n))?;
        pos += n as u64;
    }
    Ok(())
}

/// A keep-alive backend: `POST` bodies are checked against the pattern
/// (the answer says `ok` or where they differ); `GET` returns a 64 MiB
/// pattern body.
fn streaming_backend() -> io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    thread::spawn(move || {
        while let Ok((s, _)) = l.accept() {
            thread::spawn(move || serve(s));
        }
    });
    Ok(addr)
}

fn serve(mut s: TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    loop {
        let (head, rest) = read_head(&mut s)?;
        if head.starts_with("POST") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let verdict = match check_body(&mut s, &rest, len)? {
                None => format!("ok {len}"),
                Some(at) => format!("differs at {at}"),
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{verdict}",
                verdict.len()
            );
            s.write_all(resp.as_bytes())?;
        } else {
            s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").as_bytes())?;
            send_pattern(&mut s, BODY)?;
        }
    }
}

/// Peak resident set size of this process, in KiB.
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn sixty_four_mib_up_and_down_stream_through_the_proxy() -> TestResult {
    let backend = streaming_backend()?;
    let p = proxy::start(&[backend], Opts::default())?;
    template();
    let before = vm_hwm_kib();

    let mut c = TcpStream::connect(p.addr)?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    c.set_write_timeout(Some(Duration::from_secs(30)))?;
    c.write_all(
        format!("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {BODY}\r\n\r\n").as_bytes(),
    )?;
    send_pattern(&mut c, BODY)?;
    let (head, rest) = read_head(&mut c)?;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let want = format!("ok {BODY}");
    let mut verdict = rest;
    while verdict.len() < want.len() {
        let mut more = [0u8; 64];
        let n = c.read(&mut more)?;
        if n == 0 {
            break;
        }
        verdict.extend_from_slice(&more[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&verdict), want);

    c.write_all(b"GET /down HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let (head, rest) = read_head(&mut c)?;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {BODY}\r\n")),
        "{head}"
    );
    assert_eq!(check_body(&mut c, &rest, BODY)?, None, "download differs");

    // A chunked upload of the same size, counted by the built-in backend.
    let counting = proxy::backend("0", "count")?;
    let p2 = proxy::start(&[counting.local_addr()], Opts::default())?;
    let mut c = p2.client()?;
    c.send(b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")?;
    let mut pos = 0u64;
    while pos < BODY {
        c.send(format!("{PIECE:x}\r\n").as_bytes())?;
        c.send(expected(pos, PIECE))?;
        c.send(b"\r\n")?;
        pos += PIECE as u64;
    }
    c.send(b"0\r\n\r\n")?;
    let r = c.response(false)?;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(
        r.header("x-request-body-bytes"),
        Some(BODY.to_string().as_str())
    );

    if let (Some(before), Some(after)) = (before, vm_hwm_kib()) {
        let grew_mib = after.saturating_sub(before) / 1024;
        assert!(
            grew_mib < 24,
            "peak RSS grew by {grew_mib} MiB for a 64 MiB body"
        );
    }
    assert_eq!(p.stat(|s| &s.ok), 2);
    Ok(())
}
