//! What a run measured, and the renderings its consumers read: the seed
//! report's summary table (via `Display`), a per-connection CSV, and one
//! `RESULT key=value` line for benchmark scripts to grep.

use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Why a connection failed. A connection fails at most once, with the first
/// problem seen; it is then closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The connect was refused (ECONNREFUSED): nothing listening, or the
    /// listen backlog overflowed with `tcp_abort_on_overflow` set.
    Refused,
    /// The connect or one message's echo did not complete in time.
    Timeout,
    /// The peer reset or closed the connection (ECONNRESET, EPIPE, or EOF)
    /// before the run was done with it.
    Reset,
    /// The echo differed from what was sent, was longer, or bytes arrived
    /// before any request.
    Mismatch,
    /// Anything else, e.g. EADDRNOTAVAIL when local ports run out, or EMFILE.
    Other,
}

impl FailureKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Refused,
        FailureKind::Timeout,
        FailureKind::Reset,
        FailureKind::Mismatch,
        FailureKind::Other,
    ];

    /// Lower-case name, as used in the CSV and the `RESULT` line.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
            FailureKind::Mismatch => "mismatch",
            FailureKind::Other => "other",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Number of failed connections per [`FailureKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureCounts {
    pub refused: usize,
    pub timeout: usize,
    pub reset: usize,
    pub mismatch: usize,
    pub other: usize,
}

impl FailureCounts {
    /// Count for one kind.
    pub fn get(&self, kind: FailureKind) -> usize {
        match kind {
            FailureKind::Refused => self.refused,
            FailureKind::Timeout => self.timeout,
            FailureKind::Reset => self.reset,
            FailureKind::Mismatch => self.mismatch,
            FailureKind::Other => self.other,
        }
    }

    /// Failed connections of any kind.
    pub fn total(&self) -> usize {
        FailureKind::ALL.iter().map(|k| self.get(*k)).sum()
    }

    fn add(&mut self, kind: FailureKind) {
        match kind {
            FailureKind::Refused => self.refused += 1,
            FailureKind::Timeout => self.timeout += 1,
            FailureKind::Reset => self.reset += 1,
            FailureKind::Mismatch => self.mismatch += 1,
            FailureKind::Other => self.other += 1,
        }
    }
}

/// What happened to one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnResult {
    /// 0-based connection number within the run.
    pub id: usize,
    /// Messages whose echo came back complete and verified.
    pub requests: u64,
    /// Echoed bytes verified, i.e. `requests * size`.
    pub bytes: u64,
    /// From writing the first byte of the first message to reading the last
    /// byte of the last echo (or to the failure). Excludes the connect, the
    /// barrier and the hold, which are artifacts of the synchronised start.
    /// Zero if no message was started.
    pub total_duration: Duration,
    /// Mean round trip over the verified messages; zero if there were none.
    pub avg_response: Duration,
    /// From the `connect()` call to the connection being established; zero
    /// if it never was.
    pub connect_time: Duration,
    /// `None` if every message was echoed and verified.
    pub failure: Option<FailureKind>,
}

/// Round-trip percentiles over every verified message of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

/// Column names of the seed report's summary table, in order.
pub const SUMMARY_COLUMNS: [&str; 8] = [
    "Connections",
    "Status",
    "Requests",
    "Data Transferred",
    "Total Requests",
    "Total Data Transferred",
    "AvgTotalDuration",
    "AvgResponseTime",
];

/// Header of [`Report::write_csv`]; the first five columns are the seed
/// client's, `failure` and `connect_s` are additions at the end.
pub const CSV_HEADER: &str = "id,requests,bytes,total_duration_s,avg_response_s,failure,connect_s";

/// The outcome of [`run`](super::run).
#[derive(Clone, Debug)]
pub struct Report {
    /// Connections the run was asked to open.
    pub connections: usize,
    /// Messages each connection was asked to send.
    pub requests_per_conn: usize,
    /// Bytes per message.
    pub size: usize,
    /// One entry per connection, sorted by id.
    pub conns: Vec<ConnResult>,
    /// Round trips of all verified messages, in microseconds.
    pub histogram: Histogram<u64>,
    /// Failed connections by reason.
    pub failures: FailureCounts,
    /// The first failure message seen for each kind that occurred, for
    /// diagnosis (e.g. which errno an `Other` was).
    pub failure_samples: Vec<(FailureKind, String)>,
    /// Wall clock of the whole run.
    pub elapsed: Duration,
    /// From the start until every connection was established or had failed.
    pub connect_phase: Duration,
    /// From the end of the hold until the last connection was done.
    pub request_phase: Duration,
}

impl Report {
    /// Assembles a report; `conns` may be in any order.
    pub(crate) fn new(
        cfg: &super::LoadConfig,
        mut conns: Vec<ConnResult>,
        histogram: Histogram<u64>,
        failure_samples: Vec<(FailureKind, String)>,
        phases: Phases,
    ) -> Report {
        conns.sort_by_key(|c| c.id);
        let mut failures = FailureCounts::default();
        for kind in conns.iter().filter_map(|c| c.failure) {
            failures.add(kind);
        }
        Report {
            connections: cfg.connections,
            requests_per_conn: cfg.requests,
            size: cfg.size,
            conns,
            histogram,
            failures,
            failure_samples,
            elapsed: phases.elapsed,
            connect_phase: phases.connect,
            request_phase: phases.request,
        }
    }

    /// Connections that completed every message.
    pub fn ok(&self) -> usize {
        self.conns.iter().filter(|c| c.failure.is_none()).count()
    }

    /// Connections that failed, for any reason.
    pub fn failed(&self) -> usize {
        self.failures.total()
    }

    /// True if every connection succeeded.
    pub fn is_success(&self) -> bool {
        self.failed() == 0 && self.ok() == self.connections
    }

    /// Verified messages over all connections.
    pub fn total_requests(&self) -> u64 {
        self.conns.iter().map(|c| c.requests).sum()
    }

    /// Verified echoed bytes over all connections.
    pub fn total_bytes(&self) -> u64 {
        self.conns.iter().map(|c| c.bytes).sum()
    }

    /// Mean `total_duration` of the successful connections (failed ones
    /// stopped early, so would drag it down); zero if none succeeded.
    pub fn avg_total_duration(&self) -> Duration {
        let ok: Vec<Duration> = self
            .conns
            .iter()
            .filter(|c| c.failure.is_none())
            .map(|c| c.total_duration)
            .collect();
        mean(ok.iter().sum(), ok.len() as u64)
    }

    /// Mean round trip over every verified message of every connection
    /// (equal to the mean of the per-connection means when all succeed).
    pub fn avg_response(&self) -> Duration {
        let sum: Duration = self
            .conns
            .iter()
            .map(|c| c.avg_response.saturating_mul(saturating_u32(c.requests)))
            .sum();
        mean(sum, self.total_requests())
    }

    /// Verified messages per second over the request phase.
    pub fn msgs_per_sec(&self) -> f64 {
        let secs = self.request_phase.as_secs_f64();
        if secs > 0.0 {
            self.total_requests() as f64 / secs
        } else {
            0.0
        }
    }

    /// Round-trip percentiles; all zero if no message was verified.
    pub fn latency(&self) -> Latency {
        let at = |q: f64| Duration::from_micros(self.histogram.value_at_quantile(q));
        Latency {
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_micros(self.histogram.max()),
        }
    }

    /// The seed-style summary row, one value per [`SUMMARY_COLUMNS`] entry.
    /// "Requests" and "Data Transferred" are per connection as configured;
    /// the totals count what was actually echoed and verified; durations
    /// are in seconds.
    pub fn summary_row(&self) -> [String; 8] {
        let status = if self.is_success() { "Success" } else { "Fail" };
        [
            self.connections.to_string(),
            status.to_string(),
            self.requests_per_conn.to_string(),
            (self.requests_per_conn as u128 * self.size as u128).to_string(),
            self.total_requests().to_string(),
            self.total_bytes().to_string(),
            format!("{:.6}", self.avg_total_duration().as_secs_f64()),
            format!("{:.6}", self.avg_response().as_secs_f64()),
        ]
    }

    /// Header and row of the summary table, columns aligned.
    pub fn summary_table(&self) -> String {
        let row = self.summary_row();
        let (mut header, mut values) = (String::new(), String::new());
        for (name, value) in SUMMARY_COLUMNS.iter().zip(row.iter()) {
            let width = name.len().max(value.len());
            header.push_str(&format!("{name:<width$}  "));
            values.push_str(&format!("{value:<width$}  "));
        }
        format!("{}\n{}", header.trim_end(), values.trim_end())
    }

    /// Writes [`CSV_HEADER`] and one row per connection.
    pub fn write_csv<W: Write>(&self, mut out: W) -> io::Result<()> {
        writeln!(out, "{CSV_HEADER}")?;
        for c in &self.conns {
            writeln!(
                out,
                "{},{},{},{:.6},{:.6},{},{:.6}",
                c.id,
                c.requests,
                c.bytes,
                c.total_duration.as_secs_f64(),
                c.avg_response.as_secs_f64(),
                c.failure.map_or("", FailureKind::name),
                c.connect_time.as_secs_f64(),
            )?;
        }
        out.flush()
    }

    /// One machine-readable line: `RESULT` then space-separated `key=value`.
    pub fn result_line(&self) -> String {
        let lat = self.latency();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut line = format!(
            "RESULT connections={} ok={} failed={} requests={} bytes={} elapsed_s={:.3} \
             msgs_per_s={:.1} avg_duration_s={:.6} avg_response_ms={:.3} p50_ms={:.3} \
             p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
            self.connections,
            self.ok(),
            self.failed(),
            self.total_requests(),
            self.total_bytes(),
            self.elapsed.as_secs_f64(),
            self.msgs_per_sec(),
            self.avg_total_duration().as_secs_f64(),
            ms(self.avg_response()),
            ms(lat.p50),
            ms(lat.p99),
            ms(lat.p999),
            ms(lat.max),
        );
        for kind in FailureKind::ALL {
            line.push_str(&format!(" {}={}", kind, self.failures.get(kind)));
        }
        line
    }
}

/// Human-readable summary: the table, phase timings, throughput, latency
/// percentiles and failures by reason.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lat = self.latency();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        writeln!(f, "{}", self.summary_table())?;
        writeln!(
            f,
            "connect phase {:.3} s, request phase {:.3} s, elapsed {:.3} s",
            self.connect_phase.as_secs_f64(),
            self.request_phase.as_secs_f64(),
            self.elapsed.as_secs_f64(),
        )?;
        writeln!(f, "messages/s: {:.1}", self.msgs_per_sec())?;
        writeln!(
            f,
            "response time (ms): p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            ms(lat.p50),
            ms(lat.p99),
            ms(lat.p999),
            ms(lat.max),
        )?;
        write!(f, "failures: {} of {}", self.failed(), self.connections)?;
        for kind in FailureKind::ALL {
            write!(f, ", {} {}", kind, self.failures.get(kind))?;
        }
        for (kind, sample) in &self.failure_samples {
            write!(f, "\n  first {kind}: {sample}")?;
        }
        Ok(())
    }
}

/// Wall-clock phases of a run, measured by [`run`](super::run).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Phases {
    pub elapsed: Duration,
    pub connect: Duration,
    pub request: Duration,
}

fn mean(sum: Duration, n: u64) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(sum.as_secs_f64() / n as f64)
}

fn saturating_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
