//! The client's half of a proxy session: its socket, the bytes read from
//! it and not yet consumed, the bytes owed to it, and its readiness; and
//! the buffers a session keeps for its backend side.

use std::io::Write;
use std::net::SocketAddr;

use super::net::Net;
use crate::runtime::buffer::{Outbuf, WriteError};
use crate::runtime::io::{self as sio, Fault as IoFault, Io};
use crate::runtime::session::CloseReason;

/// Per-connection buffers kept across exchanges, so steady keep-alive
/// traffic allocates nothing per request.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Bytes owed to the backend.
    pub bout: Outbuf,
    /// Bytes read from the backend, not yet relayed.
    pub bin: Vec<u8>,
    /// The rewritten request head, kept for one retry.
    pub head: Vec<u8>,
}

/// One accepted client connection.
#[derive(Debug)]
pub struct Client<N: Net> {
    pub stream: N::Stream,
    pub peer: SocketAddr,
    /// Bytes read from the client not yet consumed (head, body, pipelined).
    pub input: Vec<u8>,
    /// Bytes owed to the client.
    pub out: Outbuf,
    /// Edge-triggered read readiness not yet consumed.
    pub read_ready: bool,
    /// The last write was refused; wait for WRITABLE.
    pub write_blocked: bool,
    /// The client's FIN (or an error) is queued: read until EOF.
    pub read_closed: bool,
    /// The client sent FIN.
    pub eof: bool,
    /// Bytes written to the client.
    pub bytes_out: u64,
}

impl<N: Net> Client<N> {
    pub fn new(stream: N::Stream, peer: SocketAddr) -> Self {
        Client {
            stream,
            peer,
            input: Vec::new(),
            out: Outbuf::default(),
            read_ready: false,
            write_blocked: false,
            read_closed: false,
            eof: false,
            bytes_out: 0,
        }
    }

    /// Writes what is owed, then what the stream itself holds (a TLS
    /// stream's records); returns whether any byte moved.
    pub fn flush(&mut self) -> Result<bool, CloseReason> {
        if self.write_blocked {
            return Ok(false);
        }
        let mut moved = false;
        if !self.out.is_empty() {
            let sent = self.out.flush(&mut self.stream).map_err(write_closed)?;
            self.write_blocked = sent.blocked;
            self.bytes_out += sent.bytes as u64;
            moved = sent.bytes > 0;
        }
        if !self.write_blocked {
            match self.stream.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.write_blocked = true,
                Err(_) => return Err(CloseReason::Error),
            }
        }
        Ok(moved)
    }

    /// Reads once into `input` (through `scratch`); returns whether
    /// anything happened (bytes or EOF).
    pub fn read(&mut self, scratch: &mut [u8]) -> Result<bool, CloseReason> {
        if !self.read_ready || self.eof {
            return Ok(false);
        }
        match sio::read(&mut self.stream, scratch) {
            Io::Done(n) => {
                if n < scratch.len() && !self.read_closed && !N::read_pending(&self.stream) {
                    self.read_ready = false;
                }
                self.input
                    .extend_from_slice(scratch.get(..n).unwrap_or_default());
                Ok(true)
            }
            Io::WouldBlock => {
                self.read_ready = false;
                Ok(false)
            }
            Io::Closed => {
                self.eof = true;
                Ok(true)
            }
            Io::Failed(IoFault::Reset) => Err(CloseReason::Reset),
            Io::Failed(IoFault::Other(_)) => Err(CloseReason::Error),
        }
    }

    /// Reads and throws away input (a lingering close); returns the bytes
    /// discarded, or `None` once the client has closed or failed.
    pub fn discard(&mut self, scratch: &mut [u8], limit: usize) -> Option<usize> {
        let mut gone = 0;
        while self.read_ready && gone <= limit {
            match sio::read(&mut self.stream, scratch) {
                Io::Done(n) => gone += n,
                Io::WouldBlock => self.read_ready = false,
                Io::Closed | Io::Failed(_) => return None,
            }
        }
        Some(gone)
    }
}

/// A failed write to the client ends the session.
pub fn write_closed(e: WriteError) -> CloseReason {
    match e {
        WriteError::Reset => CloseReason::Reset,
        WriteError::Other => CloseReason::Error,
    }
}
