//! Time-bound line I/O for the upgrade handshake: every read and write is
//! bounded by a deadline, every line by [`MAX_LINE`].

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{STEP_TIMEOUT, UpgradeError};
use crate::runtime::io::{is_interrupted, is_timeout};

/// Longest protocol line; a longer one is a protocol error. The longest
/// legitimate line names two IPv6 socket addresses (~110 bytes).
pub(super) const MAX_LINE: usize = 256;

/// Reads per line before giving up: one byte per read at worst, plus a few
/// interruptions by signals (a timed socket call is not restarted).
pub(super) const MAX_READS: usize = MAX_LINE + 8;

pub(super) fn deadline() -> Instant {
    crate::runtime::timers::after(Instant::now(), STEP_TIMEOUT)
}

pub(super) fn remaining(until: Instant) -> io::Result<Duration> {
    let left = until.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

pub(super) fn set_read_deadline(sock: &UnixStream, until: Instant) -> io::Result<()> {
    sock.set_read_timeout(Some(remaining(until)?))
}

pub(super) fn eof_if_zero(n: usize) -> io::Result<usize> {
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(n)
}

/// Reads until a newline (appending to `line`), by `until`; returns the
/// line without its end.
pub(super) fn read_line(
    mut sock: &UnixStream,
    until: Instant,
    mut line: Vec<u8>,
) -> io::Result<String> {
    let mut buf = [0u8; MAX_LINE];
    for _ in 0..MAX_READS {
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(&line[..end]);
            return Ok(text.trim_end_matches('\r').to_string());
        }
        if line.len() > MAX_LINE {
            break;
        }
        set_read_deadline(sock, until)?;
        match sock.read(&mut buf) {
            Ok(n) => line.extend_from_slice(&buf[..eof_if_zero(n)?]),
            Err(e) if is_interrupted(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "no line end within {MAX_LINE} bytes"
    )))
}

pub(super) fn write_line(mut sock: &UnixStream, until: Instant, text: &str) -> io::Result<()> {
    sock.set_write_timeout(Some(remaining(until)?))?;
    sock.write_all(text.as_bytes())
}

/// One line for a failed step.
pub(super) fn describe(e: &io::Error) -> String {
    if is_timeout(e) {
        format!("no answer within {STEP_TIMEOUT:?}")
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        "the other process closed the connection".into()
    } else {
        e.to_string()
    }
}

pub(super) fn step_err(path: &Path, step: &'static str) -> impl FnOnce(io::Error) -> UpgradeError {
    let path = path.to_path_buf();
    move |e| UpgradeError::Step {
        path,
        step,
        why: describe(&e),
    }
}

pub(super) fn peer_pid(sock: &UnixStream) -> Option<i32> {
    nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.pid())
}
