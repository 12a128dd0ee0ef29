//! The event-driven echo load client behind `examples/echo_client.rs`.
//!
//! It reproduces the seed report's "basic_client" (each connection sends
//! `requests` messages of `size` bytes one at a time and waits for each
//! echo), but one process drives tens of thousands of connections from a
//! few mio event-loop threads instead of one thread per connection.
//!
//! A run has two phases. First every connection is opened (at most
//! `max_connecting` connects in flight per thread, so the SYN burst does not
//! overflow the server's listen backlog). When every connection of the run
//! is established or has failed, and `hold` has passed, every connection
//! exchanges its messages. So all connections are open at once, which is the
//! point of a scaling test. Connection failures are counted in the
//! [`Report`], never returned as errors.
//!
//! ```no_run
//! use tidegate::tools::loadgen::{self, LoadConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = LoadConfig {
//!     target: "127.0.0.1:8000".parse()?,
//!     connections: 1000,
//!     ..LoadConfig::default()
//! };
//! let report = loadgen::run(&cfg)?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
//!
//! Modules: `conn` is one connection's state machine, `worker` one
//! event-loop thread, `payload` the verifiable message contents, `report`
//! the results and their renderings.

mod conn;
mod payload;
mod report;
mod worker;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::Poll;

use report::Phases;
pub use report::{
    CSV_HEADER, ConnResult, FailureCounts, FailureKind, Latency, Report, SUMMARY_COLUMNS,
};
use worker::{Shared, Worker, WorkerOutput};

/// Longest accepted timeout or hold: anything longer is a typo, and the cap
/// keeps `Instant` arithmetic far from overflow.
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest round trip the histogram resolves, in microseconds (one hour):
/// above any sane timeout; longer ones saturate at it.
const HIST_MAX_US: u64 = 3_600_000_000;

/// Significant digits of the histogram: 0.1% resolution, ~200 KiB per thread.
const HIST_SIGFIGS: u8 = 3;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadConfig {
    /// The echo server.
    pub target: SocketAddr,
    /// Connections to open, all concurrently.
    pub connections: usize,
    /// Messages per connection; 0 means connect, hold, close.
    pub requests: usize,
    /// Bytes per message (at least 1).
    pub size: usize,
    /// Event-loop threads (capped at `connections`).
    pub threads: usize,
    /// Local addresses to bind, round-robin by connection id, to get past
    /// the ~28k ephemeral ports of one source address. Empty: the kernel
    /// chooses. Each must be of the target's address family.
    pub sources: Vec<IpAddr>,
    /// How long one connect may take.
    pub connect_timeout: Duration,
    /// How long one message's complete echo may take.
    pub timeout: Duration,
    /// How long to keep every connection open and idle after all are
    /// established, before the requests (for idle-memory measurements).
    pub hold: Duration,
    /// Connects in progress at once, per thread.
    pub max_connecting: usize,
}

impl Default for LoadConfig {
    /// The seed report's basic client: 100 connections x 100 messages of
    /// 64 bytes, against 127.0.0.1:8000.
    fn default() -> Self {
        LoadConfig {
            target: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8000),
            connections: 100,
            requests: 100,
            size: 64,
            threads: 2,
            sources: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            hold: Duration::ZERO,
            // With 2 threads, 1024 handshakes in flight: a quarter of Linux's
            // default somaxconn (4096), so the burst fits a default backlog
            // yet keeps thousands of connects per second going.
            max_connecting: 512,
        }
    }
}

impl LoadConfig {
    /// Checks the configuration without touching the network.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |msg: String| Err(LoadError::Config(msg));
        if self.connections == 0 {
            return bad("connections must be at least 1".into());
        }
        if self.size == 0 {
            return bad("size must be at least 1 byte".into());
        }
        if self.threads == 0 {
            return bad("threads must be at least 1".into());
        }
        if self.max_connecting == 0 {
            return bad("max_connecting must be at least 1".into());
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("timeout", self.timeout),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be positive"));
            }
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("timeout", self.timeout),
            ("hold", self.hold),
        ] {
            if d > MAX_WAIT {
                return bad(format!("{name} {d:?} exceeds the maximum {MAX_WAIT:?}"));
            }
        }
        if let Some(ip) = self
            .sources
            .iter()
            .find(|ip| ip.is_ipv4() != self.target.is_ipv4())
        {
            return bad(format!(
                "source {ip} is not of the same address family as target {}",
                self.target
            ));
        }
        Ok(())
    }
}

/// Why a run could not be carried out at all.
#[derive(Debug)]
pub enum LoadError {
    /// The configuration is invalid.
    Config(String),
    /// A resource the run needs (poll instance, thread) could not be had.
    Setup(io::Error),
    /// A worker thread panicked; its results are lost.
    WorkerPanicked,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Config(msg) => write!(f, "invalid configuration: {msg}"),
            LoadError::Setup(e) => write!(f, "cannot set up the run: {e}"),
            LoadError::WorkerPanicked => f.write_str("a worker thread panicked"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Setup(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs the load and reports what happened to every connection.
pub fn run(cfg: &LoadConfig) -> Result<Report, LoadError> {
    cfg.validate()?;
    let threads = cfg.threads.min(cfg.connections);
    let shared = Shared::new(cfg.connections);
    let mut workers = Vec::with_capacity(threads);
    for index in 0..threads {
        let poll = Poll::new().map_err(LoadError::Setup)?;
        let hist = new_histogram()?;
        workers.push(Worker::new(cfg, &shared, index, threads, poll, hist));
    }
    let start = Instant::now();
    let outputs = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        let mut spawn_error = None;
        for (index, worker) in workers.into_iter().enumerate() {
            // A worker that is not spawned is dropped, which counts its
            // connections at the barrier, so the spawned ones still finish.
            let spawned = thread::Builder::new()
                .name(format!("loadgen-{index}"))
                .spawn_scoped(scope, move || worker.run());
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        if let Some(e) = spawn_error {
            return Err(LoadError::Setup(e));
        }
        joined
            .into_iter()
            .map(|r| r.map_err(|_| LoadError::WorkerPanicked))
            .collect::<Result<Vec<WorkerOutput>, LoadError>>()
    })?;
    let end = Instant::now();
    merge(cfg, outputs, start, end, shared.released())
}

fn new_histogram() -> Result<Histogram<u64>, LoadError> {
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIGS)
        .map_err(|e| LoadError::Setup(io::Error::other(format!("histogram: {e:?}"))))
}

fn merge(
    cfg: &LoadConfig,
    outputs: Vec<WorkerOutput>,
    start: Instant,
    end: Instant,
    released: Option<Instant>,
) -> Result<Report, LoadError> {
    let mut hist = new_histogram()?;
    let mut results = Vec::with_capacity(cfg.connections);
    let mut samples: Vec<(FailureKind, String)> = Vec::new();
    let mut last_done = start;
    for out in outputs {
        if let Err(e) = hist.add(&out.hist) {
            // Same bounds everywhere, so this cannot happen; lose only the
            // percentiles of one thread if it does.
            log::warn!("merging a thread's histogram failed: {e:?}");
        }
        results.extend(out.results);
        for (kind, sample) in out.samples {
            if !samples.iter().any(|(k, _)| *k == kind) {
                samples.push((kind, sample));
            }
        }
        last_done = last_done.max(out.finished);
    }
    samples.sort_by_key(|(kind, _)| FailureKind::ALL.iter().position(|k| k == kind));
    let released = released.unwrap_or(end);
    let requests_from = released + cfg.hold;
    let phases = Phases {
        elapsed: end - start,
        connect: released - start,
        request: last_done.saturating_duration_since(requests_from),
    };
    Ok(Report::new(cfg, results, hist, samples, phases))
}
