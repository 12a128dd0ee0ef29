//! `--log-connections`: one line per closed connection, in the spirit of the
//! seed's server log (peer, fd, bytes, requests), written off the workers.
//!
//! Workers send a small fixed-size [`ConnRecord`] over a channel; a writer
//! thread formats and writes it, so a slow stdout never blocks a worker.
//! The channel is unbounded on purpose: a record is under 100 bytes and
//! dropping lines would make the log disagree with the client's counts.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::runtime::ratelimit::RateLimit;
use crate::runtime::session::CloseReason;

/// One closed connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnRecord {
    pub peer: SocketAddr,
    pub fd: RawFd,
    pub bytes: u64,
    /// Reads that returned data: one per message when messages are sent one
    /// at a time, as in the seed.
    pub requests: u64,
    pub duration: Duration,
    pub reason: CloseReason,
}

impl fmt::Display for ConnRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match self.reason {
            CloseReason::Done => "done",
            CloseReason::Reset => "reset",
            CloseReason::Error => "error",
            CloseReason::Shutdown => "shutdown",
        };
        write!(
            f,
            "closed peer={} fd={} bytes={} requests={} duration_s={:.6} reason={reason}",
            self.peer,
            self.fd,
            self.bytes,
            self.requests,
            self.duration.as_secs_f64()
        )
    }
}

/// A worker's end of the connection log.
#[derive(Debug, Clone)]
pub struct ConnLog {
    tx: Sender<ConnRecord>,
}

impl ConnLog {
    /// Queues a record; never blocks. A record for a log whose writer is
    /// gone (only during shutdown) is dropped.
    pub fn send(&self, rec: ConnRecord) {
        let _ = self.tx.send(rec);
    }
}

/// Starts the writer thread on `out`. The thread ends, after writing every
/// queued record, once all [`ConnLog`] clones are dropped.
pub fn start<W: Write + Send + 'static>(out: W) -> io::Result<(ConnLog, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let thread = thread::Builder::new()
        .name("tidegate-connlog".into())
        .spawn(move || write_all(&rx, out))?;
    Ok((ConnLog { tx }, thread))
}

/// At most one warning about failed writes per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);

fn write_all<W: Write>(rx: &Receiver<ConnRecord>, out: W) {
    let mut out = BufWriter::new(out);
    let mut warn = RateLimit::new(WARN_EVERY);
    let mut dropped: u64 = 0;
    // Blocks until a record arrives; flushes whenever the queue runs dry so
    // lines appear promptly without a syscall per line under load. A failed
    // write is warned about and counted, and the writer carries on (a
    // closed stdout must not silently end the log, nor stop the server).
    while let Ok(first) = rx.recv() {
        let mut batch = 0u64;
        let mut result = Ok(());
        for rec in std::iter::once(first).chain(rx.try_iter()) {
            batch += 1;
            if result.is_ok() {
                result = writeln!(out, "{rec}");
            }
        }
        if let Err(e) = result.and_then(|()| out.flush()) {
            dropped += batch;
            // The buffer may hold part of the batch: start afresh.
            out = BufWriter::new(out.into_parts().0);
            if let Some(held) = warn.allow(Instant::now()) {
                log::warn!(
                    "cannot write the connection log: {e}; up to {dropped} lines lost so far \
                     ({held} warnings suppressed)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_record_is_written_once_senders_are_gone() -> io::Result<()> {
        let out = Shared::default();
        let (log, thread) = start(out.clone())?;
        let peer: SocketAddr = "127.0.0.1:5555".parse().map_err(io::Error::other)?;
        for i in 0..1000 {
            log.send(ConnRecord {
                peer,
                fd: 7,
                bytes: i,
                requests: 1,
                duration: Duration::from_millis(5),
                reason: CloseReason::Done,
            });
        }
        drop(log);
        thread
            .join()
            .map_err(|_| io::Error::other("writer panicked"))?;
        let text = String::from_utf8(
            out.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .clone(),
        )
        .map_err(io::Error::other)?;
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(
            text.lines().next(),
            Some(
                "closed peer=127.0.0.1:5555 fd=7 bytes=0 requests=1 duration_s=0.005000 reason=done"
            )
        );
        Ok(())
    }
}
