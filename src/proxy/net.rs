//! The sockets a proxy session uses, behind one small trait, so that the
//! session's state machine runs unchanged over mio's TCP streams in
//! production and over in-memory streams in its unit tests.

use std::fmt::Debug;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::runtime::io::{self as sio, Connect};
use crate::tls::server::ServerTls;

/// How a session reaches its peers.
pub trait Net: Debug + Send + 'static {
    /// A connected (or connecting) non-blocking byte stream.
    type Stream: Read + Write + Debug + Send;

    /// Starts a non-blocking connect to `addr`, registered under `token`
    /// for READABLE | WRITABLE, edge-triggered.
    fn connect(
        &mut self,
        addr: SocketAddr,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Self::Stream>;

    /// Whether a connect started by [`Net::connect`] has finished.
    fn connect_result(stream: &Self::Stream) -> Connect;

    /// Sends our FIN (after TLS's `close_notify`); errors mean the
    /// connection is gone, which the next read reports.
    fn shutdown_write(stream: &mut Self::Stream);

    /// Whether a read that came back short may still find more without a
    /// new readiness event (a TLS stream stopped at its per-call bound).
    fn read_pending(_stream: &Self::Stream) -> bool {
        false
    }

    /// Whether the stream is a TLS one still in its handshake.
    fn handshaking(_stream: &Self::Stream) -> bool {
        false
    }

    /// Whether the client connected over TLS (`X-Forwarded-Proto: https`).
    fn is_tls(_stream: &Self::Stream) -> bool {
        false
    }

    /// The handshake timeout fired (counted as such when the stream closes).
    fn handshake_timed_out(_stream: &mut Self::Stream) {}

    /// Turns read readiness reports for a registered stream off or back on
    /// (writes stay reported). Used to stop a client that trickles its head
    /// one byte at a time from waking the worker once per byte.
    fn set_reading(
        stream: &mut Self::Stream,
        registry: &Registry,
        token: Token,
        on: bool,
    ) -> io::Result<()>;
}

/// Real TCP sockets, through mio.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tcp;

/// A production socket: plain TCP, or TLS over it (an HTTPS client).
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    /// Boxed: the TLS state is ~1 KiB; plaintext connections stay small.
    Tls(Box<ServerTls>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.sock(),
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.sock_mut(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write_vectored(bufs),
            Stream::Tls(t) => t.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.flush(),
        }
    }
}

impl Net for Tcp {
    type Stream = Stream;

    fn connect(
        &mut self,
        addr: SocketAddr,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Stream> {
        let mut stream = TcpStream::connect(addr)?;
        // Request heads and small responses must not wait for Nagle.
        stream.set_nodelay(true)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Stream::Plain(stream))
    }

    fn connect_result(stream: &Stream) -> Connect {
        sio::connect_result(stream.tcp())
    }

    fn shutdown_write(stream: &mut Stream) {
        match stream {
            Stream::Plain(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            Stream::Tls(t) => t.shutdown_write(),
        }
    }

    fn read_pending(stream: &Stream) -> bool {
        matches!(stream, Stream::Tls(t) if t.read_pending())
    }

    fn handshaking(stream: &Stream) -> bool {
        matches!(stream, Stream::Tls(t) if t.is_handshaking())
    }

    fn is_tls(stream: &Stream) -> bool {
        matches!(stream, Stream::Tls(_))
    }

    fn handshake_timed_out(stream: &mut Stream) {
        if let Stream::Tls(t) = stream {
            t.handshake_timed_out();
        }
    }

    fn set_reading(
        stream: &mut Stream,
        registry: &Registry,
        token: Token,
        on: bool,
    ) -> io::Result<()> {
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::WRITABLE
        };
        registry.reregister(stream.tcp_mut(), token, interest)
    }
}
