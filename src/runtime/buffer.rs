//! [`Outbuf`]: bytes owed to a socket. Data is written straight through
//! when nothing is queued ahead of it, so the common case copies nothing;
//! only what the socket refuses is kept, and the memory is released once a
//! burst has drained.

use std::io::Write;

use crate::runtime::io::{self as sio, Fault, Io};

/// A drained buffer larger than this is freed rather than kept, so a burst
/// leaves no lasting memory behind on an idle connection.
pub const KEEP_CAPACITY: usize = 4 * 1024;

/// Why writing stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The peer reset the connection or stopped reading (EPIPE).
    Reset,
    /// Any other socket error.
    Other,
}

/// Output queued for one socket; `buf[sent..]` is owed.
#[derive(Debug, Default)]
pub struct Outbuf {
    buf: Vec<u8>,
    sent: usize,
}

impl Outbuf {
    /// Bytes still owed.
    pub fn owed(&self) -> usize {
        self.buf.len() - self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.owed() == 0
    }

    /// Queues `data` behind what is owed, without writing.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Gives access to the queue for in-place formatting (e.g. a rewritten
    /// header section appended by the HTTP layer).
    pub fn tail(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes `data` now if nothing is owed, queueing what the socket does
    /// not take; otherwise queues it all. Returns the bytes written now and
    /// whether the socket would block.
    pub fn send(&mut self, dst: &mut impl Write, data: &[u8]) -> Result<Sent, WriteError> {
        let mut sent = Sent::default();
        if self.is_empty() {
            while sent.bytes < data.len() {
                match write_once(dst, &data[sent.bytes..])? {
                    Some(n) => sent.bytes += n,
                    None => {
                        sent.blocked = true;
                        break;
                    }
                }
            }
        }
        self.push(&data[sent.bytes..]);
        Ok(sent)
    }

    /// Writes as much of what is owed as the socket takes.
    pub fn flush(&mut self, dst: &mut impl Write) -> Result<Sent, WriteError> {
        let mut sent = Sent::default();
        while self.owed() > 0 {
            match write_once(dst, &self.buf[self.sent..])? {
                Some(n) => {
                    self.sent += n;
                    sent.bytes += n;
                }
                None => {
                    sent.blocked = true;
                    return Ok(sent);
                }
            }
        }
        self.reset();
        Ok(sent)
    }

    /// Drops everything owed (the connection is being abandoned).
    pub fn clear(&mut self) {
        self.reset();
    }

    fn reset(&mut self) {
        self.sent = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }
}

/// What one `send`/`flush` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub bytes: usize,
    /// The socket refused more: wait for a writable event.
    pub blocked: bool,
}

/// `Some(n)` bytes written, `None` would block.
fn write_once(dst: &mut impl Write, data: &[u8]) -> Result<Option<usize>, WriteError> {
    match sio::write(dst, data) {
        Io::Done(n) => Ok(Some(n)),
        Io::WouldBlock => Ok(None),
        Io::Closed | Io::Failed(Fault::Reset) => Err(WriteError::Reset),
        Io::Failed(Fault::Other(_)) => Err(WriteError::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// A writer that takes at most `room` bytes, then would block.
    struct Tight {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Tight {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_through_then_queues_the_rest_in_order() -> Result<(), WriteError> {
        let mut w = Tight {
            room: 3,
            got: Vec::new(),
        };
        let mut out = Outbuf::default();
        assert_eq!(
            out.send(&mut w, b"hello")?,
            Sent {
                bytes: 3,
                blocked: true
            }
        );
        assert_eq!(out.owed(), 2);
        // Later data queues behind what is owed, even if there is room.
        w.room = 100;
        assert_eq!(
            out.send(&mut w, b" world")?,
            Sent {
                bytes: 0,
                blocked: false
            }
        );
        assert_eq!(
            out.flush(&mut w)?,
            Sent {
                bytes: 8,
                blocked: false
            }
        );
        assert_eq!(w.got, b"hello world");
        assert!(out.is_empty());
        Ok(())
    }

    #[test]
    fn a_large_drained_buffer_is_released() -> Result<(), WriteError> {
        let mut w = Tight {
            room: 0,
            got: Vec::new(),
        };
        let mut out = Outbuf::default();
        out.send(&mut w, &[7u8; 100_000])?;
        w.room = usize::MAX;
        out.flush(&mut w)?;
        assert_eq!(out.buf.capacity(), 0);
        Ok(())
    }
}
