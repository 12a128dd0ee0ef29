//! Tests of the CSV log writer: formatting, appending, reopening, and
//! failed writes.

use super::*;
use std::time::{SystemTime, UNIX_EPOCH};

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
    let mut line = String::new();
    let row = Row {
        at: UNIX_EPOCH,
        backend: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8081))),
        latency: Duration::from_micros(12_345),
        status: 200,
        outcome: Outcome::Ok,
        worker: 1,
        queue_wait: Duration::from_micros(2_500),
        detail: None,
    };
    format_row(&mut line, &row, "adaptive_ewma");
    assert_eq!(
        line,
        "1970-01-01T00:00:00.000000Z,http://127.0.0.1:8081,12.345,200,adaptive_ewma,ok,1,2.500\n"
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
        "x",
    );
    assert!(line.contains(",-,12.345,400,x,bad_request,1"));
}

fn row() -> Row {
    Row {
        at: SystemTime::now(),
        backend: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8081))),
        latency: Duration::from_millis(1),
        status: 200,
        outcome: Outcome::Ok,
        worker: 0,
        queue_wait: Duration::ZERO,
        detail: None,
    }
}

fn temp_dir(name: &str) -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tidegate-csv-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn join(writer: CsvWriter) -> io::Result<Arc<LogCounters>> {
    writer
        .thread
        .join()
        .map_err(|_| io::Error::other("writer panicked"))?;
    Ok(writer.counters)
}

#[test]
fn every_row_is_written_before_the_writer_ends() -> io::Result<()> {
    let dir = temp_dir("all")?;
    let path = dir.join("rows.csv");
    let (log, writer) = start(
        &LogTarget::File(path.clone()),
        LogFormat::Csv,
        "round-robin",
    )?;
    for _ in 0..10_000 {
        log.send(row());
    }
    drop(log);
    let counters = join(writer)?;
    let text = std::fs::read_to_string(&path)?;
    assert_eq!(text.lines().next(), Some(HEADER));
    assert_eq!(text.lines().count(), 10_001);
    assert_eq!(counters.rows.load(Relaxed), 10_000);
    assert_eq!(counters.dropped.load(Relaxed), 0);
    std::fs::remove_dir_all(&dir)
}

#[test]
fn a_second_run_appends_without_a_second_header() -> io::Result<()> {
    let dir = temp_dir("append")?;
    let path = dir.join("rows.csv");
    for _ in 0..2 {
        let (log, writer) = start(&LogTarget::File(path.clone()), LogFormat::Csv, "x")?;
        log.send(row());
        log.send(row());
        drop(log);
        join(writer)?;
    }
    let text = std::fs::read_to_string(&path)?;
    assert_eq!(text.lines().filter(|l| *l == HEADER).count(), 1);
    assert_eq!(text.lines().next(), Some(HEADER));
    assert_eq!(text.lines().count(), 5);
    std::fs::remove_dir_all(&dir)
}

#[test]
fn reopen_moves_to_a_new_file_at_the_same_path() -> io::Result<()> {
    let dir = temp_dir("reopen")?;
    let path = dir.join("rows.csv");
    let old = dir.join("rows.csv.1");
    let (log, writer) = start(&LogTarget::File(path.clone()), LogFormat::Csv, "x")?;
    log.send(row());
    // Wait until the row is out, then rotate as logrotate does.
    for _ in 0..500 {
        if writer.counters.rows.load(Relaxed) == 1 {
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    std::fs::rename(&path, &old)?;
    log.reopen();
    log.send(row());
    log.send(row());
    drop(log);
    let counters = join(writer)?;
    let old_text = std::fs::read_to_string(&old)?;
    let new_text = std::fs::read_to_string(&path)?;
    assert_eq!(old_text.lines().count(), 2, "{old_text}");
    assert_eq!(new_text.lines().next(), Some(HEADER));
    assert_eq!(new_text.lines().count(), 3, "{new_text}");
    assert_eq!(counters.rows.load(Relaxed), 3);
    std::fs::remove_dir_all(&dir)
}

/// Takes `ok` bytes, then fails `fail` writes (after taking part of
/// the first), then works again.
#[derive(Clone)]
struct Flaky {
    data: Arc<std::sync::Mutex<(Vec<u8>, usize, usize)>>,
}

impl Write for Flaky {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut g = self.data.lock().map_err(|_| io::Error::other("poisoned"))?;
        let (out, ok, fail) = &mut *g;
        if *ok > 0 {
            let n = buf.len().min(*ok);
            out.extend_from_slice(&buf[..n]);
            *ok -= n;
            return Ok(n);
        }
        if *fail > 0 {
            *fail -= 1;
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn failed_writes_are_counted_and_the_writer_goes_on() -> io::Result<()> {
    let flaky = Flaky {
        data: Arc::new(std::sync::Mutex::new((Vec::new(), 80, 2))),
    };
    let counters = Arc::new(LogCounters::default());
    let mut sink = Sink {
        out: Box::new(flaky.clone()),
        path: None,
        format: LogFormat::Csv,
        counters: Arc::clone(&counters),
        warn: RateLimit::new(WARN_EVERY),
        batch: String::new(),
        pending: 0,
        torn: false,
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let log = CsvLog { tx, detail: false };
    // Batch 1: 3 rows of 54 bytes: 80 bytes go out, then ENOSPC.
    for _ in 0..3 {
        log.send(row());
    }
    drop(log);
    sink.run(&rx, "x");
    // Batch 2 fails outright; batch 3 gets through.
    for n in [2, 4] {
        let (tx, rx) = crossbeam_channel::unbounded();
        for _ in 0..n {
            tx.send(Msg::Row(row())).map_err(io::Error::other)?;
        }
        drop(tx);
        sink.run(&rx, "x");
    }
    let (rows, errors, dropped) = (
        counters.rows.load(Relaxed),
        counters.write_errors.load(Relaxed),
        counters.dropped.load(Relaxed),
    );
    assert_eq!(rows + dropped, 9);
    assert_eq!(errors, 2);
    assert_eq!(
        rows,
        1 + 4,
        "one whole row before the failure, then batch 3"
    );
    let data = flaky
        .data
        .lock()
        .map_err(|_| io::Error::other("poisoned"))?;
    let text = String::from_utf8_lossy(&data.0);
    let lines: Vec<&str> = text.lines().collect();
    // A whole row, the torn one on a line of its own, then batch 3.
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[1].len() < lines[0].len(), "{text}");
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| i == 1 || l.ends_with(",ok,0,0.000")),
        "{text}"
    );
    Ok(())
}
