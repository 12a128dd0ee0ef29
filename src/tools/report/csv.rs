//! Reading one CSV request log (`tidegate proxy --log-csv`, or the seed's
//! logs) into a [`Log`]: columns found by header name, rows checked field by
//! field, every problem a [`ReportError`] naming the file and line.
//!
//! Backend URLs and routing modes repeat on every row, so each row stores
//! small indices into the log's tables instead of strings: a long run
//! (millions of rows) then costs about 32 bytes a row.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::ReportError;
use super::timestamp::parse_timestamp;

/// What the CSV writer puts in `backend_url` when no backend was involved
/// (e.g. the proxy answered 400 itself).
pub const NO_BACKEND: &str = "-";

/// The columns a log must have (the seed's five). Others are ignored.
pub const REQUIRED: [&str; 5] = [
    "timestamp",
    "backend_url",
    "latency_ms",
    "status_code",
    "routing_mode",
];
/// tidegate's extra column saying how a request ended; optional because the
/// seed's logs lack it.
pub const OUTCOME: &str = "outcome";
/// The `outcome` of a request that was answered in full.
pub const OUTCOME_OK: &str = "ok";

/// One request, as logged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// When the proxy finished the request, in microseconds since the epoch.
    pub timestamp_us: i64,
    /// Index into [`Log::backends`].
    pub backend: u32,
    pub latency_ms: f64,
    pub status: u16,
    /// Index into [`Log::modes`].
    pub mode: u32,
    /// False when an `outcome` column says anything but `ok`; true when the
    /// log has no such column.
    pub outcome_ok: bool,
}

/// One parsed log file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Log {
    /// The file, as named in error messages.
    pub name: String,
    /// Distinct `backend_url` values, in order of first appearance
    /// ([`NO_BACKEND`] included if present).
    pub backends: Vec<String>,
    /// Distinct `routing_mode` values, in order of first appearance.
    pub modes: Vec<String>,
    pub rows: Vec<Row>,
}

impl Log {
    /// The backend URL of `row`.
    pub fn backend(&self, row: &Row) -> &str {
        self.backends.get(row.backend as usize).map_or("", |s| s)
    }

    /// The routing mode of `row`.
    pub fn mode(&self, row: &Row) -> &str {
        self.modes.get(row.mode as usize).map_or("", |s| s)
    }
}

/// Reads the log at `path`; the error names the file (and line).
pub fn parse_csv(path: &Path) -> Result<Log, ReportError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| ReportError::Open {
        file: name.clone(),
        source,
    })?;
    parse_reader(&name, BufReader::new(file))
}

/// Reads a log from `reader`; `name` is the file name for error messages.
///
/// Lines may end in `\n` or `\r\n`; blank lines are skipped (as pandas
/// does); fields may be double-quoted (`""` for a quote inside). A row
/// must have as many fields as the header.
pub fn parse_reader(name: &str, mut reader: impl BufRead) -> Result<Log, ReportError> {
    let mut log = Log {
        name: name.to_string(),
        ..Log::default()
    };
    let mut lines = Lines::default();
    let Some((_, header)) = lines.next(&mut reader, name)? else {
        return Err(bad_line(name, 1, "empty file: no header line".into()));
    };
    // A UTF-8 byte-order mark, as spreadsheet tools write, is not part of
    // the first column's name.
    let header = split_fields(header.trim_start_matches('\u{feff}'))
        .map_err(|why| bad_line(name, 1, why.into()))?;
    let columns = Columns::find(&header).map_err(|column| ReportError::MissingColumn {
        file: name.to_string(),
        column,
    })?;
    let width = header.len();
    let mut backend_ids = HashMap::new();
    let mut mode_ids = HashMap::new();
    while let Some((number, line)) = lines.next(&mut reader, name)? {
        if line.trim().is_empty() {
            continue;
        }
        let fields = split_fields(line).map_err(|why| bad_line(name, number, why.into()))?;
        if fields.len() != width {
            let why = format!("expected {width} fields, found {}", fields.len());
            return Err(bad_line(name, number, why));
        }
        let field = |i: usize| fields.get(i).map_or("", |f| f.trim());
        let bad = |column: &'static str, value: &str| ReportError::BadField {
            file: name.to_string(),
            line: number,
            column,
            value: value.to_string(),
        };
        let ts = field(columns.timestamp);
        let timestamp_us = parse_timestamp(ts).ok_or_else(|| bad("timestamp", ts))?;
        let lat = field(columns.latency);
        let latency_ms = lat
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| bad("latency_ms", lat))?;
        let st = field(columns.status);
        let status = st.parse::<u16>().map_err(|_| bad("status_code", st))?;
        let url = match field(columns.backend) {
            "" => NO_BACKEND,
            url => url,
        };
        let backend = intern(&mut log.backends, &mut backend_ids, url);
        let mode = intern(&mut log.modes, &mut mode_ids, field(columns.mode));
        let outcome_ok = columns.outcome.is_none_or(|i| field(i) == OUTCOME_OK);
        log.rows.push(Row {
            timestamp_us,
            backend,
            latency_ms,
            status,
            mode,
            outcome_ok,
        });
    }
    Ok(log)
}

fn bad_line(file: &str, line: usize, why: String) -> ReportError {
    ReportError::BadLine {
        file: file.to_string(),
        line,
        why,
    }
}

/// The index of `value` in `table`, adding it if new.
fn intern(table: &mut Vec<String>, ids: &mut HashMap<String, u32>, value: &str) -> u32 {
    if let Some(&id) = ids.get(value) {
        return id;
    }
    // More distinct values than u32 can count would need more rows than
    // memory holds; saturating keeps this total without a panic.
    let id = u32::try_from(table.len()).unwrap_or(u32::MAX);
    table.push(value.to_string());
    ids.insert(value.to_string(), id);
    id
}

/// Where each needed column is in the header.
#[derive(Debug)]
struct Columns {
    timestamp: usize,
    backend: usize,
    latency: usize,
    status: usize,
    mode: usize,
    outcome: Option<usize>,
}

impl Columns {
    /// Finds the columns by name (trimmed, case-sensitive like pandas);
    /// the error is the first required column that is missing.
    fn find(header: &[&str]) -> Result<Columns, &'static str> {
        let pos = |name: &str| header.iter().position(|h| h.trim() == name);
        let need = |name: &'static str| pos(name).ok_or(name);
        let [timestamp, backend, latency, status, mode] = REQUIRED;
        Ok(Columns {
            timestamp: need(timestamp)?,
            backend: need(backend)?,
            latency: need(latency)?,
            status: need(status)?,
            mode: need(mode)?,
            outcome: pos(OUTCOME),
        })
    }
}

/// Line-by-line reading with a running line number and a reused buffer.
#[derive(Debug, Default)]
struct Lines {
    buf: Vec<u8>,
    /// 1-based number of the line last returned.
    number: usize,
}

impl Lines {
    /// The next line's number and text (without its line ending), or
    /// `None` at the end.
    fn next(
        &mut self,
        reader: &mut impl BufRead,
        name: &str,
    ) -> Result<Option<(usize, &str)>, ReportError> {
        self.buf.clear();
        let line = self.number + 1;
        let n = reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| ReportError::Read {
                file: name.to_string(),
                line,
                source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.number = line;
        let bytes = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = std::str::from_utf8(bytes)
            .map_err(|_| bad_line(name, line, "not valid UTF-8".into()))?;
        Ok(Some((line, text)))
    }
}

/// Splits one CSV line into fields. A field that starts with `"` runs to
/// the matching `"` (with `""` standing for one quote); its text is returned
/// with the quotes still escaped, which is all the columns read here need
/// (none of them may contain a quote). Quoted line breaks are not supported.
pub fn split_fields(line: &str) -> Result<Vec<&str>, &'static str> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut end = None;
            let mut i = 0;
            let b = quoted.as_bytes();
            while i < b.len() {
                if b[i] == b'"' {
                    if b.get(i + 1) == Some(&b'"') {
                        i += 2;
                        continue;
                    }
                    end = Some(i);
                    break;
                }
                i += 1;
            }
            let end = end.ok_or("unterminated quoted field")?;
            fields.push(&quoted[..end]);
            rest = &quoted[end + 1..];
            match rest.strip_prefix(',') {
                Some(r) => rest = r,
                None if rest.is_empty() => return Ok(fields),
                None => return Err("text after a closing quote"),
            }
        } else {
            match rest.split_once(',') {
                Some((field, r)) => {
                    fields.push(field);
                    rest = r;
                }
                None => {
                    fields.push(rest);
                    return Ok(fields);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_plain_and_quoted_fields() {
        assert_eq!(split_fields("a,b,,c"), Ok(vec!["a", "b", "", "c"]));
        assert_eq!(split_fields(""), Ok(vec![""]));
        assert_eq!(split_fields("\"a,b\",c"), Ok(vec!["a,b", "c"]));
        assert_eq!(split_fields("x,\"\""), Ok(vec!["x", ""]));
        assert_eq!(
            split_fields("\"say \"\"hi\"\"\""),
            Ok(vec!["say \"\"hi\"\""])
        );
        assert!(split_fields("\"open").is_err());
        assert!(split_fields("\"a\"b,c").is_err());
    }

    #[test]
    fn reordered_and_extra_columns_crlf_and_blank_lines() {
        let text = "\u{feff}region,status_code,routing_mode,latency_ms,backend_url,timestamp\r\n\
                    eu,200,adaptive_sma,1.5,http://b,2025-05-09T20:04:04.679\r\n\
                    \r\n\
                    eu,503,adaptive_sma,2,\"http://a\",2025-05-09T20:04:05\r\n";
        let log = parse_reader("x.csv", text.as_bytes()).unwrap();
        assert_eq!(log.rows.len(), 2);
        assert_eq!(log.backends, ["http://b", "http://a"]);
        assert_eq!(log.modes, ["adaptive_sma"]);
        assert_eq!(log.rows[1].status, 503);
        assert_eq!(log.rows[1].latency_ms, 2.0);
        assert!(log.rows[1].outcome_ok, "no outcome column: ok by default");
        assert_eq!(log.rows[1].timestamp_us - log.rows[0].timestamp_us, 321_000);
    }

    #[test]
    fn reads_what_the_proxy_writes() {
        use crate::proxy::csvlog::{self, Outcome};
        use std::time::{Duration, UNIX_EPOCH};
        let names: Vec<&str> = csvlog::HEADER.split(',').collect();
        assert_eq!(names[..REQUIRED.len()], REQUIRED);
        assert!(names.contains(&OUTCOME));
        let mut text = format!("{}\n", csvlog::HEADER);
        let b = std::net::SocketAddr::from(([127, 0, 0, 1], 8081));
        for (backend, outcome) in [(Some(b), Outcome::Ok), (None, Outcome::BadRequest)] {
            let row = csvlog::Row {
                at: UNIX_EPOCH + Duration::from_micros(1_746_821_044_679_379),
                backend,
                latency: Duration::from_micros(12_345),
                status: 200,
                outcome,
                worker: 3,
                queue_wait: Duration::ZERO,
                detail: None,
            };
            csvlog::format_row(&mut text, &row, "adaptive_ewma");
        }
        let log = parse_reader("proxy.csv", text.as_bytes()).unwrap();
        let row = log.rows[0];
        assert_eq!(row.timestamp_us, 1_746_821_044_679_379);
        assert_eq!(
            (row.latency_ms, row.status, row.outcome_ok),
            (12.345, 200, true)
        );
        assert_eq!(log.backend(&row), "http://127.0.0.1:8081");
        assert_eq!(log.mode(&row), "adaptive_ewma");
        assert_eq!(log.backend(&log.rows[1]), NO_BACKEND);
        assert!(!log.rows[1].outcome_ok);
    }

    #[test]
    fn empty_backend_is_no_backend() {
        let text = "timestamp,backend_url,latency_ms,status_code,routing_mode,outcome\n\
                    2026-11-22T15:54:52Z,,0,400,round-robin,bad_request\n";
        let log = parse_reader("x.csv", text.as_bytes()).unwrap();
        assert_eq!(log.backend(&log.rows[0]), NO_BACKEND);
        assert!(!log.rows[0].outcome_ok);
    }

    #[test]
    fn errors_name_file_and_line() {
        let head = "timestamp,backend_url,latency_ms,status_code,routing_mode\n";
        let row = "2026-11-22T15:54:52Z,http://a,1,200,rr\n";
        let cases = [
            ("", "report: f.csv:1: empty file: no header line"),
            (
                "timestamp,backend_url,status_code,routing_mode\n",
                "report: f.csv:1: missing column 'latency_ms'",
            ),
            (
                "2026-11-22T15:54:52Z,http://a,nan,200,rr\n",
                "report: f.csv:3: bad latency_ms 'nan'",
            ),
            (
                "2026-11-22T15:54:52Z,http://a,-1,200,rr\n",
                "report: f.csv:3: bad latency_ms '-1'",
            ),
            (
                "2026-11-22T15:54:52Z,http://a,1,OK,rr\n",
                "report: f.csv:3: bad status_code 'OK'",
            ),
            (
                "yesterday,http://a,1,200,rr\n",
                "report: f.csv:3: bad timestamp 'yesterday'",
            ),
            (
                "2026-11-22T15:54:52Z,http://a,1,200\n",
                "report: f.csv:3: expected 5 fields, found 4",
            ),
            (
                "2026-11-22T15:54:52Z,\"http://a,1,200,rr\n",
                "report: f.csv:3: unterminated quoted field",
            ),
        ];
        for (tail, want) in cases {
            let text = if tail.starts_with("timestamp") || tail.is_empty() {
                tail.to_string()
            } else {
                format!("{head}{row}{tail}")
            };
            let err = parse_reader("f.csv", text.as_bytes()).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err} vs {want}");
        }
        let not_utf8 = [head.as_bytes(), b"\xff\xfe,x\n"].concat();
        let err = parse_reader("f.csv", &not_utf8[..]).unwrap_err();
        assert_eq!(err.to_string(), "report: f.csv:2: not valid UTF-8");
    }
}
