//! `--access-log PATH|stdout --access-log-format json|combined|csv`: what a
//! request log line holds, and its three formats. Pure: the writer thread
//! (`csvlog`) does the I/O.
//!
//! - `csv`: the seed's columns (`--log-csv FILE` is this format's alias);
//!   a row needs no per-request allocation.
//! - `json`: one object per line with the request's client, method, path,
//!   protocol, status, bytes in/out, duration, upstream, attempts, outcome
//!   and the side at fault, request id and policy.
//! - `combined`: nginx's and Apache's combined format, for tools that read it.
//!
//! The json and combined formats need the request line and a few fields,
//! which a worker copies into a [`Detail`] (one allocation per request,
//! only when such a log is on).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::RequestId;

/// The header; tools (the seed's pandas scripts, `tidegate report`) rely
/// on the first five names exactly.
pub const HEADER: &str =
    "timestamp,backend_url,latency_ms,status_code,routing_mode,outcome,worker,queue_wait_ms";

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
    /// The request waited `--queue-timeout` for a backend under its limit
    /// (or the proxy stopped while it waited): 503, no backend involved.
    QueueTimeout,
    /// The queue was full (`--max-queue`): 503, no backend involved.
    QueueFull,
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
            Outcome::QueueTimeout => "queue_timeout",
            Outcome::QueueFull => "queue_full",
        }
    }
}

/// One row, as sent by a worker.
#[derive(Debug, Clone)]
pub struct Row {
    pub at: SystemTime,
    /// The backend's address, or `None` when no backend was involved.
    pub backend: Option<SocketAddr>,
    pub latency: Duration,
    pub status: u16,
    pub outcome: Outcome,
    pub worker: u16,
    /// How long the request waited in the proxy's queue (zero if it did not).
    pub queue_wait: Duration,
    /// The request line and fields the json and combined formats show;
    /// `None` for the csv format (no allocation per request there).
    pub detail: Option<Box<Detail>>,
}

/// Paths and header values longer than this are cut in the log: a log line
/// stays bounded whatever the client sends (heads are capped at 16 KiB).
pub const MAX_LOGGED: usize = 2048;

/// Which format the request log is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Csv,
    Json,
    Combined,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Csv => "csv",
            LogFormat::Json => "json",
            LogFormat::Combined => "combined",
        }
    }

    /// Whether rows need a [`Detail`].
    pub fn wants_detail(self) -> bool {
        self != LogFormat::Csv
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(LogFormat::Csv),
            "json" => Ok(LogFormat::Json),
            "combined" => Ok(LogFormat::Combined),
            other => Err(format!("unknown format '{other}' (json, combined or csv)")),
        }
    }
}

/// Where the request log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Appended to; reopened on SIGUSR1.
    File(PathBuf),
    Stdout,
}

impl LogTarget {
    /// `stdout` or a path.
    pub fn parse(s: &str) -> LogTarget {
        if s == "stdout" {
            LogTarget::Stdout
        } else {
            LogTarget::File(PathBuf::from(s))
        }
    }
}

/// The request log's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub target: LogTarget,
    pub format: LogFormat,
}

/// What a json or combined line needs beyond a CSV row.
#[derive(Debug, Clone)]
pub struct Detail {
    pub client: SocketAddr,
    /// The method and target as received (cut at [`MAX_LOGGED`]); `-` when
    /// the head could not be parsed.
    pub method: Box<str>,
    pub path: Box<str>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub user_agent: Option<Box<str>>,
    pub referer: Option<Box<str>>,
    pub request_id: RequestId,
    /// Request bytes read from the client (head and body).
    pub bytes_in: u64,
    /// Response bytes queued for the client (head and body).
    pub bytes_out: u64,
    /// From the complete request head to the end of the exchange.
    pub duration: Duration,
    /// Backends tried (0: none, 2: retried once).
    pub attempts: u8,
}

impl Detail {
    /// A detail for a request whose head could not be parsed.
    pub fn unparsed(client: SocketAddr, bytes_in: u64, bytes_out: u64) -> Detail {
        Detail {
            client,
            method: "-".into(),
            path: "-".into(),
            minor: 1,
            user_agent: None,
            referer: None,
            request_id: RequestId::EMPTY,
            bytes_in,
            bytes_out,
            duration: Duration::ZERO,
            attempts: 0,
        }
    }
}

/// Text cut to [`MAX_LOGGED`] bytes on a character boundary.
pub fn bounded(text: &str) -> Box<str> {
    let mut end = text.len().min(MAX_LOGGED);
    // Bounded: at most 3 steps back to a char boundary.
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().into()
}

/// Bytes as text for the log: lossy UTF-8, cut to [`MAX_LOGGED`].
pub fn bounded_bytes(bytes: &[u8]) -> Box<str> {
    let cut = bytes.get(..bytes.len().min(MAX_LOGGED)).unwrap_or_default();
    String::from_utf8_lossy(cut).into()
}

/// One json line (with its newline).
pub fn format_json(line: &mut String, row: &Row, mode: &str) {
    line.push_str("{\"time\":\"");
    rfc3339_ms(line, row.at);
    line.push('"');
    if let Some(d) = &row.detail {
        let _ = write!(line, ",\"client\":\"{}\",\"method\":", d.client);
        json_str(line, &d.method);
        line.push_str(",\"path\":");
        json_str(line, &d.path);
        let _ = write!(
            line,
            ",\"protocol\":\"HTTP/1.{}\",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration_ms\":{:.3}",
            d.minor,
            row.status,
            d.bytes_in,
            d.bytes_out,
            d.duration.as_secs_f64() * 1000.0
        );
    } else {
        let _ = write!(line, ",\"status\":{}", row.status);
    }
    line.push_str(",\"upstream\":");
    match row.backend {
        Some(addr) => {
            let _ = write!(line, "\"{addr}\"");
        }
        None => line.push_str("null"),
    }
    let attempts = row.detail.as_ref().map_or(0, |d| d.attempts);
    let _ = write!(
        line,
        ",\"attempts\":{attempts},\"latency_ms\":{:.3},\"queue_wait_ms\":{:.3},\"outcome\":\"{}\",\"side\":",
        row.latency.as_secs_f64() * 1000.0,
        row.queue_wait.as_secs_f64() * 1000.0,
        row.outcome.as_str()
    );
    match row.outcome.side() {
        Some(side) => {
            let _ = write!(line, "\"{side}\"");
        }
        None => line.push_str("null"),
    }
    line.push_str(",\"request_id\":");
    match row.detail.as_ref().map(|d| d.request_id.as_str()) {
        Some(id) if !id.is_empty() => json_str(line, id),
        _ => line.push_str("null"),
    }
    line.push_str(",\"policy\":");
    json_str(line, mode);
    let _ = writeln!(line, ",\"worker\":{}}}", row.worker);
}

/// One combined-format line: `client - - [time] "request" status bytes
/// "referer" "user-agent"`, exactly nginx's and Apache's, followed by
/// ` queue_wait=SECONDS` only when the request waited in the proxy's queue
/// (extra fields after the standard ones, as nginx's `$request_time` often
/// is; tools reading combined logs split on the quotes).
pub fn format_combined(line: &mut String, row: &Row) {
    let Some(d) = &row.detail else {
        let _ = write!(line, "- - - [-] \"-\" {} - \"-\" \"-\"", row.status);
        queue_tail(line, row.queue_wait);
        return;
    };
    let _ = write!(line, "{} - - [", d.client.ip());
    clf_time(line, row.at);
    line.push_str("] \"");
    if &*d.method == "-" {
        line.push('-');
    } else {
        quoted_text(line, &d.method);
        line.push(' ');
        quoted_text(line, &d.path);
        let _ = write!(line, " HTTP/1.{}", d.minor);
    }
    let _ = write!(line, "\" {} {} \"", row.status, d.bytes_out);
    quoted_text(line, d.referer.as_deref().unwrap_or("-"));
    line.push_str("\" \"");
    quoted_text(line, d.user_agent.as_deref().unwrap_or("-"));
    line.push('"');
    queue_tail(line, row.queue_wait);
}

/// Ends a combined line: ` queue_wait=SECONDS` if the request waited.
fn queue_tail(line: &mut String, wait: Duration) {
    if !wait.is_zero() {
        let _ = write!(line, " queue_wait={:.3}", wait.as_secs_f64());
    }
    line.push('\n');
}

impl Outcome {
    /// The side at fault, for the access log (`None`: nobody failed).
    pub fn side(self) -> Option<&'static str> {
        match self {
            Outcome::Ok | Outcome::Upgraded => None,
            Outcome::BadRequest | Outcome::ClientTimeout | Outcome::ClientAbort => Some("client"),
            Outcome::ConnectFailed
            | Outcome::BackendReset
            | Outcome::BadResponse
            | Outcome::BackendTimeout
            | Outcome::Truncated => Some("backend"),
            // The proxy's own refusal: neither the client's nor a backend's.
            Outcome::QueueTimeout | Outcome::QueueFull => Some("proxy"),
        }
    }
}

/// A JSON string literal, escaped (RFC 8259 §7).
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Text inside a combined-format quoted field: `"` and `\` escaped, and
/// control bytes as `\xHH`, as nginx does.
fn quoted_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `2026-12-02T01:02:03.456Z`.
pub fn rfc3339_ms(out: &mut String, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (date, rem) = date_of(since.as_secs());
    let _ = write!(
        out,
        "{date}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// `02/Dec/2026:01:02:03 +0000` (the common log format's time).
fn clf_time(out: &mut String, t: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (y, m, d) = crate::civil::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let month = MONTHS.get((m as usize).saturating_sub(1)).unwrap_or(&"Jan");
    let _ = write!(
        out,
        "{d:02}/{month}/{y:04}:{:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

/// `YYYY-MM-DD` and the seconds into that day.
fn date_of(secs: u64) -> (String, u64) {
    let (y, m, d) = crate::civil::civil_from_days((secs / 86_400) as i64);
    (format!("{y:04}-{m:02}-{d:02}"), secs % 86_400)
}

/// Formats one CSV line (with its newline) into `line`.
pub fn format_row(line: &mut String, row: &Row, mode: &str) {
    iso8601_utc(line, row.at);
    match row.backend {
        Some(addr) => {
            let _ = write!(line, ",http://{addr}");
        }
        None => line.push_str(",-"),
    }
    let _ = writeln!(
        line,
        ",{:.3},{},{mode},{},{},{:.3}",
        row.latency.as_secs_f64() * 1000.0,
        row.status,
        row.outcome.as_str(),
        row.worker,
        row.queue_wait.as_secs_f64() * 1000.0
    );
}

/// Appends `t` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn iso8601_utc(out: &mut String, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::civil::civil_from_days(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    );
}

#[cfg(test)]
#[path = "accesslog_tests.rs"]
mod tests;
