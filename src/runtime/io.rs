//! Non-blocking socket I/O reduced to a handful of outcomes.
//!
//! This is the one place that inspects `io::ErrorKind` and raw errno values;
//! everything above it matches on [`Io`], [`Fault`] or [`AcceptFault`].

use std::io::{self, Read, Write};

/// How many times a syscall interrupted by a signal is retried before the
/// caller is told to come back later. EINTR is rare and transient; the bound
/// only exists so that no loop is unbounded.
const EINTR_RETRIES: usize = 8;

/// Linux errno values that `io::ErrorKind` does not name on stable Rust.
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
const ENOMEM: i32 = 12;
const ENOBUFS: i32 = 105;

/// Outcome of one non-blocking read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// This many bytes moved (never zero).
    Done(usize),
    /// The socket has nothing more for now; wait for the next readiness event.
    WouldBlock,
    /// Read: the peer sent FIN. Write: the socket accepted zero bytes.
    Closed,
    /// The connection is broken.
    Failed(Fault),
}

/// Why a connection broke. Resets are normal on the Internet: counted, not logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// ECONNRESET, EPIPE, ECONNABORTED: the peer went away.
    Reset,
    /// ETIMEDOUT and friends, or anything unexpected.
    Other(io::ErrorKind),
}

/// Outcome class of a failed `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFault {
    /// The backlog is empty.
    WouldBlock,
    /// The process or system is out of file descriptors (EMFILE / ENFILE).
    NoFds,
    /// The kernel is short of memory or buffers (ENOMEM / ENOBUFS): back off.
    NoMemory,
    /// The connection died in the backlog (ECONNABORTED, EPERM by a firewall,
    /// EINTR): skip it and keep accepting.
    Skip,
    /// The listener itself is broken.
    Fatal,
}

/// Reads once into `buf`, retrying EINTR a bounded number of times.
pub fn read(src: &mut impl Read, buf: &mut [u8]) -> Io {
    debug_assert!(!buf.is_empty(), "a zero-length read cannot tell EOF apart");
    for _ in 0..EINTR_RETRIES {
        match src.read(buf) {
            Ok(0) => return Io::Closed,
            Ok(n) => return Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return classify(&e),
        }
    }
    Io::WouldBlock
}

/// Writes once from `buf`, retrying EINTR a bounded number of times.
pub fn write(dst: &mut impl Write, buf: &[u8]) -> Io {
    debug_assert!(!buf.is_empty(), "nothing to write");
    for _ in 0..EINTR_RETRIES {
        match dst.write(buf) {
            Ok(0) => return Io::Closed,
            Ok(n) => return Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return classify(&e),
        }
    }
    Io::WouldBlock
}

/// Maps a read/write error onto [`Io`].
pub fn classify(e: &io::Error) -> Io {
    use io::ErrorKind::*;
    match e.kind() {
        WouldBlock => Io::WouldBlock,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => {
            Io::Failed(Fault::Reset)
        }
        kind => Io::Failed(Fault::Other(kind)),
    }
}

/// Maps an `accept` error onto [`AcceptFault`].
pub fn classify_accept(e: &io::Error) -> AcceptFault {
    use io::ErrorKind::*;
    match (e.kind(), e.raw_os_error()) {
        (WouldBlock, _) => AcceptFault::WouldBlock,
        (_, Some(EMFILE | ENFILE)) => AcceptFault::NoFds,
        (_, Some(ENOMEM | ENOBUFS)) | (OutOfMemory, _) => AcceptFault::NoMemory,
        (ConnectionAborted | ConnectionReset | Interrupted | PermissionDenied, _) => {
            AcceptFault::Skip
        }
        _ => AcceptFault::Fatal,
    }
}

/// State of a non-blocking connect after a readiness event.
#[derive(Debug)]
pub enum Connect {
    Connected,
    /// Spurious wake-up: still in progress.
    Pending,
    Failed(io::Error),
}

/// Checks a non-blocking connect the way mio documents: a pending socket
/// error means failure; otherwise `peer_addr` tells connected from pending.
pub fn connect_result(stream: &mio::net::TcpStream) -> Connect {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Connect::Failed(e),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Connect::Connected,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Connect::Pending,
        Err(e) => Connect::Failed(e),
    }
}

/// True when a blocking call such as `poll` was interrupted by a signal.
pub fn is_interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// A blocking call with a timeout (SO_RCVTIMEO / SO_SNDTIMEO) ran out of
/// time: Linux reports EAGAIN, other systems ETIMEDOUT.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Connecting to a unix socket path found nobody there: no such file, or a
/// file left behind by a process that is gone (ECONNREFUSED).
pub fn is_nobody_listening(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

/// True when a bind failed because the address is taken.
pub fn is_addr_in_use(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrInUse
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified_by_errno() {
        let emfile = io::Error::from_raw_os_error(EMFILE);
        let enfile = io::Error::from_raw_os_error(ENFILE);
        let enobufs = io::Error::from_raw_os_error(ENOBUFS);
        assert_eq!(classify_accept(&emfile), AcceptFault::NoFds);
        assert_eq!(classify_accept(&enfile), AcceptFault::NoFds);
        assert_eq!(classify_accept(&enobufs), AcceptFault::NoMemory);
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(classify_accept(&aborted), AcceptFault::Skip);
        let wb = io::Error::from(io::ErrorKind::WouldBlock);
        assert_eq!(classify_accept(&wb), AcceptFault::WouldBlock);
    }

    #[test]
    fn reset_and_would_block_are_told_apart() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&reset), Io::Failed(Fault::Reset));
        let wb = io::Error::from(io::ErrorKind::WouldBlock);
        assert_eq!(classify(&wb), Io::WouldBlock);
    }

    #[test]
    fn read_reports_eof_as_closed() {
        let mut empty: &[u8] = &[];
        let mut buf = [0u8; 4];
        assert_eq!(read(&mut empty, &mut buf), Io::Closed);
        let mut two: &[u8] = b"ab";
        assert_eq!(read(&mut two, &mut buf), Io::Done(2));
    }
}
