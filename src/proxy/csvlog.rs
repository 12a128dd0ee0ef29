//! `--log-csv FILE`: one row per answered request, in the seed's columns
//! (`timestamp,backend_url,latency_ms,status_code,routing_mode`) plus
//! `outcome` and `worker`.
//!
//! Workers send a small `Copy` record over an unbounded channel; a writer
//! thread formats and writes it through a `BufWriter`, flushing whenever the
//! queue runs dry. Workers therefore never touch the file, and no row is
//! dropped: the channel is drained completely before the writer exits
//! (after the workers, on shutdown). A row is ~100 bytes, so even a long
//! stall of the disk costs little memory per queued request.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

/// The header; tools (the seed's pandas scripts, `tidegate report`) rely
/// on the first five names exactly.
pub const HEADER: &str = "timestamp,backend_url,latency_ms,status_code,routing_mode,outcome,worker";

/// How a request ended, as logged in the `outcome` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response was relayed in full.
    Ok,
    /// The request was malformed; the proxy answered 4xx itself.
    BadRequest,
    /// No backend could be reached (502).
    ConnectFailed,
    /// The backend closed or reset before answering (502).
    BackendReset,
    /// The backend's response was malformed (502).
    BadResponse,
    /// No progress from the backend within --backend-timeout (504).
    BackendTimeout,
    /// No progress from the client within --client-timeout (408, or a close).
    ClientTimeout,
    /// The response was cut off after its head was relayed.
    Truncated,
    /// The client went away before the response was complete.
    ClientAbort,
    /// The request switched protocols (101) and became a byte tunnel.
    Upgraded,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BadRequest => "bad_request",
            Outcome::ConnectFailed => "connect_failed",
            Outcome::BackendReset => "backend_reset",
            Outcome::BadResponse => "bad_response",
            Outcome::BackendTimeout => "backend_timeout",
            Outcome::ClientTimeout => "client_timeout",
            Outcome::Truncated => "truncated",
            Outcome::ClientAbort => "client_abort",
            Outcome::Upgraded => "upgraded",
        }
    }
}

/// One row, as sent by a worker.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub at: SystemTime,
    /// Index into the backend list, or `None` when no backend was involved.
    pub backend: Option<usize>,
    pub latency: Duration,
    pub status: u16,
    pub outcome: Outcome,
    pub worker: u16,
}

/// A worker's end of the CSV log.
#[derive(Debug, Clone)]
pub struct CsvLog {
    tx: Sender<Row>,
}

impl CsvLog {
    pub fn send(&self, row: Row) {
        // Fails only once the writer is gone, which happens after workers stop.
        let _ = self.tx.send(row);
    }
}

/// The writer thread and its counters.
#[derive(Debug)]
pub struct CsvWriter {
    pub thread: JoinHandle<io::Result<()>>,
    /// Rows written so far (for metrics and tests).
    pub rows: Arc<AtomicU64>,
}

/// Creates `path` (truncating it), writes the header, and starts the writer.
/// `backend_urls[i]` names backend `i`; `mode` fills `routing_mode`.
pub fn start(
    path: &Path,
    backend_urls: Vec<String>,
    mode: &'static str,
) -> io::Result<(CsvLog, CsvWriter)> {
    let mut out = BufWriter::new(File::create(path)?);
    writeln!(out, "{HEADER}")?;
    out.flush()?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let rows = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&rows);
    let thread = thread::Builder::new()
        .name("tidegate-csv".into())
        .spawn(move || write_rows(&rx, out, &backend_urls, mode, &counter))?;
    Ok((CsvLog { tx }, CsvWriter { thread, rows }))
}

fn write_rows(
    rx: &Receiver<Row>,
    mut out: BufWriter<File>,
    urls: &[String],
    mode: &str,
    rows: &AtomicU64,
) -> io::Result<()> {
    let mut line = String::with_capacity(160);
    while let Ok(first) = rx.recv() {
        for row in std::iter::once(first).chain(rx.try_iter()) {
            line.clear();
            format_row(&mut line, &row, urls, mode);
            out.write_all(line.as_bytes())?;
            rows.fetch_add(1, Relaxed);
        }
        out.flush()?;
    }
    out.flush()
}

/// Formats one CSV line (with its newline) into `line`.
pub fn format_row(line: &mut String, row: &Row, urls: &[String], mode: &str) {
    iso8601_utc(line, row.at);
    let url = row
        .backend
        .and_then(|i| urls.get(i))
        .map_or("-", String::as_str);
    let _ = writeln!(
        line,
        ",{url},{:.3},{},{mode},{},{}",
        row.latency.as_secs_f64() * 1000.0,
        row.status,
        row.outcome.as_str(),
        row.worker
    );
}

/// Appends `t` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn iso8601_utc(out: &mut String, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    );
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso8601_utc_with_microseconds() {
        let mut s = String::new();
        iso8601_utc(&mut s, UNIX_EPOCH);
        assert_eq!(s, "1970-01-01T00:00:00.000000Z");
        s.clear();
        // 2025-05-09T20:04:04.679379Z, the first row of the seed's log.
        iso8601_utc(
            &mut s,
            UNIX_EPOCH + Duration::from_micros(1_746_821_044_679_379),
        );
        assert_eq!(s, "2025-05-09T20:04:04.679379Z");
        s.clear();
        iso8601_utc(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400)); // leap day
        assert_eq!(s, "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn rows_have_the_seed_columns_first() {
        let urls = vec!["http://127.0.0.1:8081".to_string()];
        let mut line = String::new();
        let row = Row {
            at: UNIX_EPOCH,
            backend: Some(0),
            latency: Duration::from_micros(12_345),
            status: 200,
            outcome: Outcome::Ok,
            worker: 1,
        };
        format_row(&mut line, &row, &urls, "adaptive_ewma");
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000000Z,http://127.0.0.1:8081,12.345,200,adaptive_ewma,ok,1\n"
        );
        line.clear();
        format_row(
            &mut line,
            &Row {
                backend: None,
                status: 400,
                outcome: Outcome::BadRequest,
                ..row
            },
            &urls,
            "x",
        );
        assert!(line.contains(",-,12.345,400,x,bad_request,1"));
    }

    #[test]
    fn every_row_is_written_before_the_writer_ends() -> io::Result<()> {
        let dir = std::env::temp_dir().join(format!("tidegate-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("rows.csv");
        let (log, writer) = start(&path, vec!["http://a".into()], "round-robin")?;
        let row = Row {
            at: SystemTime::now(),
            backend: Some(0),
            latency: Duration::from_millis(1),
            status: 200,
            outcome: Outcome::Ok,
            worker: 0,
        };
        for _ in 0..10_000 {
            log.send(row);
        }
        drop(log);
        writer
            .thread
            .join()
            .map_err(|_| io::Error::other("writer panicked"))??;
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(text.lines().next(), Some(HEADER));
        assert_eq!(text.lines().count(), 10_001);
        assert_eq!(writer.rows.load(Relaxed), 10_000);
        std::fs::remove_dir_all(&dir)
    }
}
