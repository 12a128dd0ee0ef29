//! The sockets a proxy session uses, behind one small trait, so that the
//! session's state machine runs unchanged over mio's TCP streams in
//! production and over in-memory streams in its unit tests.

use std::fmt::Debug;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::runtime::io::{self as sio, Connect};

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

    /// Sends our FIN; errors mean the connection is gone, which the next
    /// read reports.
    fn shutdown_write(stream: &Self::Stream);

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

impl Net for Tcp {
    type Stream = TcpStream;

    fn connect(
        &mut self,
        addr: SocketAddr,
        registry: &Registry,
        token: Token,
    ) -> io::Result<TcpStream> {
        let mut stream = TcpStream::connect(addr)?;
        // Request heads and small responses must not wait for Nagle.
        stream.set_nodelay(true)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(stream)
    }

    fn connect_result(stream: &TcpStream) -> Connect {
        sio::connect_result(stream)
    }

    fn shutdown_write(stream: &TcpStream) {
        let _ = stream.shutdown(Shutdown::Write);
    }

    fn set_reading(
        stream: &mut TcpStream,
        registry: &Registry,
        token: Token,
        on: bool,
    ) -> io::Result<()> {
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::WRITABLE
        };
        registry.reregister(stream, token, interest)
    }
}
