//! The request log writer: `--access-log PATH|stdout` in the json,
//! combined or csv format (see `accesslog`); `--log-csv FILE` is the csv
//! format, one row per answered request in the seed's columns
//! (`timestamp,backend_url,latency_ms,status_code,routing_mode`) plus
//! `outcome` and `worker`.
//!
//! Workers send a small `Copy` record over an unbounded channel; a writer
//! thread formats rows into a batch and writes it whenever the queue runs
//! dry (or the batch is full). Workers therefore never touch the file, and
//! the channel is drained completely before the writer exits (after the
//! workers, on shutdown). A row is ~100 bytes, so even a long stall of the
//! disk costs little memory per queued request.
//!
//! The file is opened for appending: a restart adds to it, and the header
//! is written only when the file is empty. A write that fails (disk full,
//! file size limit, I/O error) is warned about at once (rate-limited),
//! counted in [`LogCounters`], and its rows are dropped and counted; the
//! proxy keeps serving and the next batch tries again. A [`CsvLog::reopen`]
//! (SIGUSR1, after logrotate renamed the file) makes the writer open the
//! path afresh; if that fails it keeps writing to the file it has.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{info, warn};

use super::accesslog::{self, LogFormat, LogTarget};
pub use super::accesslog::{HEADER, Outcome, Row, format_row, iso8601_utc};
use crate::runtime::ratelimit::RateLimit;

/// A batch is written once it reaches this size even if more rows are
/// queued: 64 KiB is ~600 rows, few enough that one failed write loses
/// little, many enough that a busy proxy makes few write calls.
const BATCH_BYTES: usize = 64 * 1024;

/// At most one warning about failed writes per this interval; the first
/// failure is always reported at once.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// `write` calls interrupted by a signal that are retried per batch before
/// the batch counts as failed (SIGUSR1 and friends can land mid-write).
const EINTR_RETRIES: usize = 16;

/// What the writer thread is sent.
#[derive(Debug, Clone)]
enum Msg {
    Row(Row),
    /// Open the path again (the old file was moved away).
    Reopen,
}

/// A worker's end of the CSV log.
#[derive(Debug, Clone)]
pub struct CsvLog {
    tx: Sender<Msg>,
    /// The format shows request details: workers fill [`Row::detail`].
    pub detail: bool,
}

impl CsvLog {
    pub fn send(&self, row: Row) {
        // Fails only once the writer is gone, which happens after workers stop.
        let _ = self.tx.send(Msg::Row(row));
    }

    /// Asks the writer to reopen the file by its path, after the rows
    /// queued so far are written to the old one.
    pub fn reopen(&self) {
        let _ = self.tx.send(Msg::Reopen);
    }
}

/// The CSV log's counters, read by `/metrics`, `/stats` and the summary.
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Rows written.
    pub rows: AtomicU64,
    /// Failed writes and failed reopens (`tidegate_log_write_errors_total`).
    pub write_errors: AtomicU64,
    /// Rows lost to failed writes.
    pub dropped: AtomicU64,
}

/// The writer thread and its counters.
#[derive(Debug)]
pub struct CsvWriter {
    pub thread: JoinHandle<()>,
    pub counters: Arc<LogCounters>,
}

/// Opens the log (a file is appended to, created if missing, with the csv
/// header if empty) and starts the writer. `mode` is the routing policy's
/// name. Fails if the file cannot be
/// opened or the header cannot be written, so a bad path is a start-up
/// error.
pub fn start(
    target: &LogTarget,
    format: LogFormat,
    mode: &'static str,
) -> io::Result<(CsvLog, CsvWriter)> {
    let (out, path): (Box<dyn Write + Send>, _) = match target {
        LogTarget::File(path) => (Box::new(open_append(path, format)?), Some(path.clone())),
        LogTarget::Stdout => (Box::new(io::stdout()), None),
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let counters = Arc::new(LogCounters::default());
    let mut sink = Sink {
        out,
        path,
        format,
        counters: Arc::clone(&counters),
        warn: RateLimit::new(WARN_EVERY),
        batch: String::with_capacity(BATCH_BYTES + 256),
        pending: 0,
        torn: false,
    };
    let thread = thread::Builder::new()
        .name("tidegate-log".into())
        .spawn(move || sink.run(&rx, mode))?;
    let log = CsvLog {
        tx,
        detail: format.wants_detail(),
    };
    Ok((log, CsvWriter { thread, counters }))
}

/// Opens for appending; writes the csv header into an empty file.
fn open_append(path: &Path, format: LogFormat) -> io::Result<File> {
    let mut f = OpenOptions::new().append(true).create(true).open(path)?;
    if format == LogFormat::Csv && f.metadata()?.len() == 0 {
        f.write_all(HEADER.as_bytes())?;
        f.write_all(b"\n")?;
    }
    Ok(f)
}

/// The writer thread's state.
struct Sink {
    out: Box<dyn Write + Send>,
    /// Where to reopen; `None` for stdout and test sinks.
    path: Option<PathBuf>,
    format: LogFormat,
    counters: Arc<LogCounters>,
    warn: RateLimit,
    /// Formatted rows not yet written.
    batch: String,
    /// Rows in `batch`.
    pending: u64,
    /// A failed write left a partial line in the file: start the next
    /// batch with a newline so that line stands alone.
    torn: bool,
}

impl Sink {
    fn run(&mut self, rx: &Receiver<Msg>, mode: &str) {
        while let Ok(first) = rx.recv() {
            // Bounded by the queue's length; the batch is written whenever
            // it fills, and once the queue runs dry.
            for msg in std::iter::once(first).chain(rx.try_iter()) {
                match msg {
                    Msg::Row(row) => {
                        match self.format {
                            LogFormat::Csv => format_row(&mut self.batch, &row, mode),
                            LogFormat::Json => accesslog::format_json(&mut self.batch, &row, mode),
                            LogFormat::Combined => {
                                accesslog::format_combined(&mut self.batch, &row)
                            }
                        }
                        self.pending += 1;
                        if self.batch.len() >= BATCH_BYTES {
                            self.write_batch();
                        }
                    }
                    Msg::Reopen => {
                        self.write_batch();
                        self.reopen();
                    }
                }
            }
            self.write_batch();
        }
    }

    /// Writes the batch; on failure counts the error and the rows not
    /// written, and warns (rate-limited). The batch is empty afterwards.
    fn write_batch(&mut self) {
        if self.pending == 0 {
            return;
        }
        let mut bytes = std::mem::take(&mut self.batch);
        if self.torn {
            bytes.insert(0, '\n');
        }
        let (written, err) = write_some(&mut *self.out, bytes.as_bytes());
        let done = bytes.as_bytes().get(..written).unwrap_or_default();
        let whole = done.iter().filter(|&&b| b == b'\n').count() as u64;
        let whole = whole.saturating_sub(u64::from(self.torn && written > 0));
        let whole = whole.min(self.pending);
        self.counters.rows.fetch_add(whole, Relaxed);
        match err {
            None => self.torn = false,
            Some(e) => {
                if written > 0 {
                    self.torn = done.last() != Some(&b'\n');
                }
                let lost = self.pending - whole;
                self.counters.write_errors.fetch_add(1, Relaxed);
                let dropped = self.counters.dropped.fetch_add(lost, Relaxed) + lost;
                if let Some(held) = self.warn.allow(Instant::now()) {
                    warn!(
                        "cannot write the request log{}: {e}; {lost} rows dropped ({dropped} so far, \
                         {held} warnings suppressed); the proxy keeps serving",
                        self.path
                            .as_ref()
                            .map_or(String::new(), |p| format!(" {}", p.display()))
                    );
                }
            }
        }
        bytes.clear();
        self.batch = bytes;
        self.pending = 0;
    }

    /// Opens the path again; keeps the current file if that fails.
    fn reopen(&mut self) {
        let Some(path) = &self.path else { return };
        match open_append(path, self.format) {
            Ok(f) => {
                self.out = Box::new(f);
                self.torn = false;
                info!("reopened the request log {}", path.display());
            }
            Err(e) => {
                self.counters.write_errors.fetch_add(1, Relaxed);
                warn!(
                    "cannot reopen the request log {}: {e}; still writing to the old file",
                    path.display()
                );
            }
        }
    }
}

/// Writes as much of `bytes` as the writer takes: how many bytes went out,
/// and the error that stopped it, if any.
fn write_some(out: &mut dyn Write, bytes: &[u8]) -> (usize, Option<io::Error>) {
    let mut done = 0;
    let mut interrupted = 0;
    // Bounded: each round writes at least one byte, or is one of at most
    // EINTR_RETRIES interruptions, or returns.
    while let Some(rest) = bytes.get(done..).filter(|r| !r.is_empty()) {
        match out.write(rest) {
            Ok(0) => return (done, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupted < EINTR_RETRIES => {
                interrupted += 1;
            }
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

#[cfg(test)]
mod tests;
