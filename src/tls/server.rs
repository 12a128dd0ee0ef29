//! The server side of an HTTPS connection as the proxy uses it: a
//! [`TlsStream`] over a mio socket that counts its handshake (completed,
//! by version; failed, by reason) exactly once.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::ServerConnection;

use super::TlsStream;
use super::stats::{HandshakeError, TlsStats};

/// An accepted HTTPS connection.
#[derive(Debug)]
pub struct ServerTls {
    stream: TlsStream<ServerConnection, TcpStream>,
    stats: Arc<TlsStats>,
    /// The handshake's outcome was counted.
    counted: bool,
    /// The handshake timeout fired.
    timed_out: bool,
}

impl ServerTls {
    /// Starts a handshake on `sock` with `config`.
    pub fn new(
        sock: TcpStream,
        config: Arc<rustls::ServerConfig>,
        stats: Arc<TlsStats>,
    ) -> Result<Self, rustls::Error> {
        Ok(ServerTls {
            stream: TlsStream::new(ServerConnection::new(config)?, sock),
            stats,
            counted: false,
            timed_out: false,
        })
    }

    pub fn sock(&self) -> &TcpStream {
        self.stream.sock()
    }

    pub fn sock_mut(&mut self) -> &mut TcpStream {
        self.stream.sock_mut()
    }

    /// The TLS stream (SNI, version, ALPN through `conn()`).
    pub fn tls(&self) -> &TlsStream<ServerConnection, TcpStream> {
        &self.stream
    }

    pub fn is_handshaking(&self) -> bool {
        self.stream.is_handshaking()
    }

    pub fn read_pending(&self) -> bool {
        self.stream.read_pending()
    }

    /// The handshake did not complete in time: counted as such on close.
    pub fn handshake_timed_out(&mut self) {
        self.timed_out = true;
    }

    /// Sends `close_notify` (with what is owed), then our FIN.
    pub fn shutdown_write(&mut self) {
        self.stream.close_notify();
        let _ = self.stream.sock().shutdown(std::net::Shutdown::Write);
    }

    fn count(&mut self) {
        if self.counted {
            return;
        }
        if self.stream.take_handshake_done() {
            self.counted = true;
            self.stats.handshake(self.stream.conn().protocol_version());
        } else if let Some(f) = self.stream.failure() {
            self.counted = true;
            self.stats.error(HandshakeError::Tls(f));
        }
    }
}

impl Read for ServerTls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.stream.read(buf);
        self.count();
        r
    }
}

impl Write for ServerTls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Drop for ServerTls {
    fn drop(&mut self) {
        self.count();
        if !self.counted && self.stream.is_handshaking() {
            self.stats.error(if self.timed_out {
                HandshakeError::Timeout
            } else {
                HandshakeError::Closed
            });
        }
    }
}
