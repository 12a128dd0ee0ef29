//! Plaintext over TLS on a non-blocking socket: a `Read + Write` stream
//! that the HTTP session uses exactly like a TCP stream.
//!
//! rustls is a synchronous state machine: ciphertext goes in with
//! `read_tls` + `process_new_packets`, plaintext comes out of `reader()`,
//! plaintext goes in through `writer()` and ciphertext comes out with
//! `write_tls`. [`TlsStream`] drives those calls from `read`, `write` and
//! `flush`, for a server or a client connection alike, over any
//! non-blocking byte stream (a mio `TcpStream` in production, an in-memory
//! pipe in tests).
//!
//! Edge-triggered readiness is kept honest:
//! - `read` returns `WouldBlock` only after the socket itself did, and a
//!   short read is only returned once the socket would block (or at EOF);
//!   otherwise [`TlsStream::read_pending`] says more may be had without a
//!   new readiness event.
//! - `write` takes plaintext only when no ciphertext is owed, and returns
//!   `WouldBlock` only after the socket refused bytes, so WRITABLE will be
//!   reported. At most [`WRITE_CHUNK`] of plaintext (two records) plus what
//!   the socket refused is ever held per connection.
//! - `flush` pushes owed ciphertext (handshake messages, alerts, records);
//!   the caller calls it once its own output is written.
//!
//! Dropping the stream sends `close_notify` (best effort, one attempt) if
//! the handshake completed and none was sent yet.

use std::io::{self, Read, Write};
use std::ops::DerefMut;

use rustls::{ClientConnection, ConnectionCommon, ServerConnection, SideData};

/// A rustls connection of either side: what [`TlsStream`] is generic over.
pub trait TlsConn: DerefMut<Target = ConnectionCommon<Self::Data>> {
    type Data: SideData;
}

impl TlsConn for ServerConnection {
    type Data = rustls::server::ServerConnectionData;
}

impl TlsConn for ClientConnection {
    type Data = rustls::client::ClientConnectionData;
}

/// Plaintext accepted per `write` call: two full TLS records (16 KiB of
/// payload each). Enough to keep the socket busy with large writes, small
/// enough that one connection holds only a few records of ciphertext.
pub const WRITE_CHUNK: usize = 2 * 16 * 1024;

/// Socket reads (of at most 4 KiB each, rustls's read size) plus record
/// decryptions per `read` call. 64 fills a 64 KiB scratch buffer from
/// full-size records; with tiny records the call stops early and reports
/// [`TlsStream::read_pending`], so the per-turn bound holds.
const READ_STEPS: usize = 64;

/// `write_tls` calls per flush: each writes up to 64 buffered chunks at
/// once, so a handful drains all that [`WRITE_CHUNK`] can produce.
const FLUSH_STEPS: usize = 16;

/// What the TLS layer saw fail, coarse enough for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The peer's bytes were not TLS at all (e.g. plaintext HTTP).
    NotTls,
    /// A malformed or unacceptable handshake (bad ClientHello, no shared
    /// version, cipher suite or ALPN protocol, ...).
    BadHandshake,
    /// No certificate for the requested server name (and no default).
    NoCertificate,
    /// The peer sent a fatal alert.
    PeerAlert,
    /// The peer's certificate was rejected (client side).
    BadCertificate,
    /// Anything else rustls reported.
    Other,
}

impl TlsFailure {
    /// Classifies a rustls error.
    pub fn of(e: &rustls::Error) -> Self {
        use rustls::Error as E;
        match e {
            E::InvalidMessage(_) => TlsFailure::NotTls,
            E::AlertReceived(_) => TlsFailure::PeerAlert,
            E::InvalidCertificate(_) | E::NoCertificatesPresented => TlsFailure::BadCertificate,
            E::General(m) if m.contains("no server certificate chain resolved") => {
                TlsFailure::NoCertificate
            }
            E::PeerIncompatible(_)
            | E::PeerMisbehaved(_)
            | E::NoApplicationProtocol
            | E::InappropriateHandshakeMessage { .. }
            | E::InappropriateMessage { .. } => TlsFailure::BadHandshake,
            _ => TlsFailure::Other,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::NotTls => "not_tls",
            TlsFailure::BadHandshake => "bad_handshake",
            TlsFailure::NoCertificate => "unknown_sni",
            TlsFailure::PeerAlert => "peer_alert",
            TlsFailure::BadCertificate => "bad_certificate",
            TlsFailure::Other => "other",
        }
    }
}

/// A TLS connection `C` (a `rustls::ServerConnection` or
/// `ClientConnection`) over a non-blocking stream `S`.
#[derive(Debug)]
pub struct TlsStream<C: TlsConn, S: Read + Write> {
    conn: C,
    sock: S,
    /// The socket returned `WouldBlock` on the last read attempt.
    drained: bool,
    /// The socket reported EOF.
    eof: bool,
    /// The handshake completed (noticed once, see [`Self::take_handshake_done`]).
    handshaken: bool,
    /// Completion not yet taken by the caller.
    handshake_news: bool,
    /// What failed the connection, if something did.
    failure: Option<TlsFailure>,
    /// `close_notify` was queued.
    closed: bool,
}

impl<C: TlsConn, S: Read + Write> TlsStream<C, S> {
    pub fn new(conn: C, sock: S) -> Self {
        TlsStream {
            conn,
            sock,
            drained: false,
            eof: false,
            handshaken: false,
            handshake_news: false,
            failure: None,
            closed: false,
        }
    }

    /// The socket underneath.
    pub fn sock(&self) -> &S {
        &self.sock
    }

    /// The socket underneath, mutably (to register it, set options).
    pub fn sock_mut(&mut self) -> &mut S {
        &mut self.sock
    }

    /// The rustls connection (SNI, negotiated version, ALPN...).
    pub fn conn(&self) -> &C {
        &self.conn
    }

    /// Whether the handshake is still in progress.
    pub fn is_handshaking(&self) -> bool {
        !self.handshaken
    }

    /// True exactly once, on the first call after the handshake completed.
    pub fn take_handshake_done(&mut self) -> bool {
        std::mem::take(&mut self.handshake_news)
    }

    /// What failed the connection at the TLS level, if anything.
    pub fn failure(&self) -> Option<TlsFailure> {
        self.failure
    }

    /// Whether a read may yield more without a new readiness event: the
    /// socket has not said `WouldBlock` since it last gave bytes, or
    /// decrypted bytes wait.
    pub fn read_pending(&self) -> bool {
        !self.eof && !self.drained
    }

    /// Whether ciphertext is owed to the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Queues `close_notify` and tries once to send it with what is owed.
    pub fn close_notify(&mut self) {
        if !self.closed {
            self.closed = true;
            self.conn.send_close_notify();
        }
        let _ = self.flush_tls();
    }

    /// Writes owed ciphertext until done or the socket blocks (`WouldBlock`).
    fn flush_tls(&mut self) -> io::Result<()> {
        for _ in 0..FLUSH_STEPS {
            if !self.conn.wants_write() {
                return Ok(());
            }
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Feeds received ciphertext to rustls; on error records why and
    /// tries to send the alert rustls queued.
    fn process(&mut self) -> io::Result<()> {
        match self.conn.process_new_packets() {
            Ok(_) => {
                if !self.handshaken && !self.conn.is_handshaking() {
                    self.handshaken = true;
                    self.handshake_news = true;
                }
                Ok(())
            }
            Err(e) => {
                self.failure.get_or_insert(TlsFailure::of(&e));
                let _ = self.flush_tls();
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
        }
    }
}

impl<C: TlsConn, S: Read + Write> Read for TlsStream<C, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        for _ in 0..READ_STEPS {
            let room = buf.get_mut(filled..).unwrap_or_default();
            if room.is_empty() {
                return Ok(filled);
            }
            match self.conn.reader().read(room) {
                // A clean close_notify: EOF (after what was already taken).
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP EOF without close_notify: HTTP framing detects a
                // truncated message, so this is a plain EOF here.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
            // Handshake messages (or alerts) owed go out before more is read;
            // a blocked socket keeps them for the caller's flush.
            match self.flush_tls() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
            if self.eof {
                return Ok(filled);
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => self.eof = true,
                Ok(_) => self.drained = false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    return if filled > 0 { Ok(filled) } else { Err(e) };
                }
                Err(e) => return Err(e),
            }
            self.process()?;
        }
        // Bound reached with the socket not known to be drained: report what
        // there is; `read_pending` tells the caller to come back.
        if filled > 0 {
            Ok(filled)
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
}

impl<C: TlsConn, S: Read + Write> Write for TlsStream<C, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.flush_tls()?;
        let take = buf.get(..WRITE_CHUNK.min(buf.len())).unwrap_or_default();
        let n = self.conn.writer().write(take)?;
        if n == 0 && !take.is_empty() {
            // Only while handshaking, with rustls's plaintext buffer full.
            return Err(io::Error::other("TLS handshake not complete"));
        }
        match self.flush_tls() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

impl<C: TlsConn, S: Read + Write> Drop for TlsStream<C, S> {
    fn drop(&mut self) {
        if self.handshaken && !self.closed && self.failure.is_none() {
            self.close_notify();
        }
    }
}

#[cfg(test)]
mod tests;
