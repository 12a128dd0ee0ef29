//! Proxy mode: an HTTP/1.1 reverse proxy whose sessions run on the same
//! acceptor and workers as echo mode.
//!
//! - `session`: the client-side state machine (request heads, the exchange
//!   life cycle, timeouts, errors to the client).
//! - `exchange`: the backend side of one request (connect, forward, relay
//!   the response, fail over).
//! - `failure`: fail-over, 502/504 answers, truncated responses, client aborts.
//! - `upstream`: the per-worker table of backend sockets and the keep-alive pool.
//! - `csvlog`: the `--log-csv` writer thread.

pub mod csvlog;
mod exchange;
mod failure;
pub mod session;
pub mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::balance::Selector;
use crate::config::{BackendAddr, BackendConn, Timeouts};
use crate::ratelimit::RateLimit;

pub use session::ProxySession;

/// Size of each worker's scratch read buffer: one read takes a whole
/// loopback burst; shared by the worker's sessions.
pub const SCRATCH_SIZE: usize = 64 * 1024;

/// Output owed to one side above which the other side is not read
/// (backpressure both ways); bounds memory per session.
pub const PENDING_LIMIT: usize = 2 * SCRATCH_SIZE;

/// At most one warning about backend trouble per this interval per worker.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Settings every worker shares (read-only).
#[derive(Debug)]
pub struct Shared {
    pub backends: Vec<BackendAddr>,
    pub backend_conn: BackendConn,
    pub timeouts: Timeouts,
    pub selector: Arc<dyn Selector>,
    pub stats: ProxyStats,
    pub metrics: crate::metrics::Metrics,
}

/// Request counters across all workers (relaxed atomics, one or two
/// increments per request).
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub status_4xx: AtomicU64,
    pub status_5xx: AtomicU64,
    pub retries: AtomicU64,
    pub connect_failures: AtomicU64,
    pub backend_resets: AtomicU64,
    pub bad_responses: AtomicU64,
    pub timeouts: AtomicU64,
    pub client_aborts: AtomicU64,
}

impl ProxyStats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// A one-line summary for the end of a run.
    pub fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Relaxed);
        format!(
            "{} requests ({} 2xx/3xx, {} 4xx, {} 5xx); {} retries; failures: {} connect, {} reset, {} bad response, {} timeout, {} client aborts",
            g(&self.requests),
            g(&self.ok),
            g(&self.status_4xx),
            g(&self.status_5xx),
            g(&self.retries),
            g(&self.connect_failures),
            g(&self.backend_resets),
            g(&self.bad_responses),
            g(&self.timeouts),
            g(&self.client_aborts),
        )
    }
}

/// Per-worker state shared by that worker's proxy sessions.
#[derive(Debug)]
pub struct ProxyCtx {
    pub worker: u16,
    pub shared: Arc<Shared>,
    pub upstreams: upstream::Upstreams,
    pub scratch: Box<[u8]>,
    pub csv: Option<csvlog::CsvLog>,
    pub warn: RateLimit,
}

impl ProxyCtx {
    pub fn new(worker: usize, shared: Arc<Shared>, csv: Option<csvlog::CsvLog>) -> Self {
        let n = shared.backends.len();
        ProxyCtx {
            worker: u16::try_from(worker).unwrap_or(u16::MAX),
            shared,
            upstreams: upstream::Upstreams::new(n),
            scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
            csv,
            warn: RateLimit::new(WARN_EVERY),
        }
    }
}
