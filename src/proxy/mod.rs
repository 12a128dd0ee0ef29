//! Proxy mode: an HTTP/1.1 reverse proxy whose sessions run on the same
//! acceptor and workers as echo mode.
//!
//! - `session`: the state machine of one client connection (one enum:
//!   Idle, Exchange, Tunnel, Closing) and every transition.
//! - `fault`: who broke an exchange ([`fault::Fault`]: client or backend),
//!   the retry rules of RFC 9110 §9.2.2, and what follows. Pure.
//! - `exchange`: the backend side of one request (connect, forward, relay
//!   the response), reporting a `Flow`.
//! - `tunnel`: the byte tunnel after `101 Switching Protocols`.
//! - `client`: the client's socket and buffers.
//! - `account`: metrics, selector, ejector, counters and log rows at the
//!   end of an attempt.
//! - `live`: the running configuration, swapped whole on reload, and
//!   each worker's older generations still in use.
//! - `net`: the [`net::Net`] trait: TCP in production, in-memory in tests.
//! - `reload`: what a configuration reload changes (pure).
//! - `resolver`: the thread that re-resolves backends given as host names
//!   and reloads when their addresses change.
//! - `upstream`: the per-worker table of backend sockets and the keep-alive pool.
//! - `accesslog`: what a request log line holds and its formats (csv,
//!   json, combined); pure.
//! - `csvlog`: the request log's writer thread (`--access-log`, `--log-csv`).
//! - `drained`: the backends an operator drained through the admin API.
//! - `summary`: the run summary.

pub mod accesslog;
mod account;
mod client;
pub mod csvlog;
pub mod drained;
mod exchange;
pub mod fault;
pub mod live;
pub mod net;
pub mod reload;
pub mod resolver;
pub mod session;
pub mod summary;
mod tunnel;
pub mod upstream;

#[cfg(test)]
mod choose_tests;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::balance::Selector;
use crate::config::{BackendAddr, BackendConn, Timeouts};
use crate::http::{ForwardOpts, IdGen};
use crate::runtime::ratelimit::RateLimit;

pub use session::ProxySession;

/// Size of each worker's scratch read buffer: one read takes a whole
/// loopback burst; shared by the worker's sessions.
pub const SCRATCH_SIZE: usize = 64 * 1024;

/// Output owed to one side above which the other side is not read
/// (backpressure both ways); bounds memory per session.
pub const PENDING_LIMIT: usize = 2 * SCRATCH_SIZE;

/// At most one warning about backend trouble per this interval per worker.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// One generation of the configuration every worker shares (read-only;
/// a reload publishes a new one, see [`live`]).
#[derive(Debug)]
pub struct Shared {
    /// Which configuration this is: 0 at start, +1 per applied reload.
    pub generation: u64,
    pub backends: Vec<BackendAddr>,
    pub backend_conn: BackendConn,
    pub timeouts: Timeouts,
    pub selector: Arc<dyn Selector>,
    /// Request counters: one set for the process, shared by all generations.
    pub stats: Arc<ProxyStats>,
    pub metrics: crate::metrics::Metrics,
    /// Every worker's latency histogram, merged in when the worker stops
    /// (one lock per worker, at exit; never on the data path).
    pub latencies: Arc<Mutex<Histogram<u64>>>,
    /// `--slo-ms`: the deadline whose hit rate the summary reports.
    pub slo: Option<Duration>,
    /// Outlier ejection, shared by all workers.
    pub ejector: crate::health::Ejector,
    /// Caps retries at a share of recent requests (one for the process).
    pub retry_budget: Arc<crate::health::RetryBudget>,
    /// With `--health-check`: the checker's up/down verdicts.
    pub active: Option<Arc<crate::health::active::ActiveHealth>>,
    /// `--via`, `--request-id`: the proxy fields written on forwarded heads.
    pub forward: ForwardOpts,
    /// The same, with `X-Forwarded-Proto: https`, for HTTPS clients.
    pub forward_https: ForwardOpts,
    /// Each listener's TLS configuration, by `Accepted::listener` (0: the
    /// main, plaintext listener; i + 1: `[[listener]]` i). Reloaded with
    /// the rest: new handshakes use the new certificates.
    pub tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    /// The process part of generated request ids (see [`id_prefix`]).
    pub id_prefix: u64,
    /// Backends drained through the admin API (also read by each
    /// worker's pool, which closes their idle connections).
    pub drained: Arc<drained::Drained>,
}

/// A backend's state as the admin API and `/readyz` report it. The first
/// that applies wins: an operator's drain, then the active check's verdict,
/// then outlier ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// Takes requests.
    Up,
    /// Failing its active health checks (`--health-check`).
    Down,
    /// Ejected by outlier detection.
    Ejected,
    /// Drained by an operator: takes no new requests.
    Drained,
}

impl BackendState {
    /// The name in `/api/backends` and `/stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::Ejected => "ejected",
            BackendState::Drained => "drained",
        }
    }
}

impl Shared {
    /// Picks a backend the way the policy wants, skipping ejected ones (and
    /// those active checks found down). Backup backends are tried only when
    /// every primary is down or ejected. A drained backend is never chosen,
    /// not even to fail open: `None` when every backend is drained (or,
    /// for a retry, every other one). If the policy keeps offering unusable
    /// backends (or all are), fails open with its first choice rather than
    /// refusing the request.
    pub fn choose(&self, now: std::time::Instant, exclude: Option<usize>) -> Option<usize> {
        let selector = &*self.selector;
        let first = selector.pick(now, exclude);
        if let Some(b) =
            first.and_then(|f| self.usable_from(f, now, exclude, |x| selector.pick(now, x)))
        {
            return Some(b);
        }
        // Cold path: no usable primary was offered. Backups only if every
        // primary is really out (not merely excluded by this retry).
        let backup = selector.pick_backup(now, exclude);
        if let Some(b) = backup {
            let primaries_out = (0..self.backends.len())
                .filter(|&i| !self.backends[i].backup)
                .all(|i| self.is_out(i));
            if primaries_out
                && let Some(u) = self.usable_from(b, now, exclude, |x| selector.pick_backup(now, x))
            {
                return Some(u);
            }
        }
        // Fail open, but never onto a drained backend (bounded by the
        // backend count; rare, as draining is manual).
        let drained = |b: usize| self.drained.is_drained(b);
        first
            .filter(|&b| !drained(b))
            .or(backup.filter(|&b| !drained(b)))
            .or_else(|| (0..self.backends.len()).find(|&b| Some(b) != exclude && !drained(b)))
    }

    /// `first`, or the next the policy offers (`pick(last)`), that is
    /// usable; `None` after one try per backend.
    fn usable_from(
        &self,
        first: usize,
        now: std::time::Instant,
        exclude: Option<usize>,
        pick: impl Fn(Option<usize>) -> Option<usize>,
    ) -> Option<usize> {
        use crate::health::Admit;
        let drained = |b: usize| self.drained.is_drained(b);
        // Health checks first: admitting claims an ejected backend's probe.
        let usable = |b: usize| {
            !drained(b)
                && self.active.as_ref().is_none_or(|a| a.is_up(b))
                && self.ejector.admit(b, now) != Admit::No
        };
        if usable(first) {
            return Some(first);
        }
        let mut last = first;
        // Bounded: one try per backend.
        for _ in 0..self.backends.len() {
            match pick(Some(last)) {
                Some(b) if Some(b) != exclude && usable(b) => return Some(b),
                Some(b) => last = b,
                None => break,
            }
        }
        None
    }

    /// Whether backend `i` is down (active checks) or ejected, without
    /// claiming its probe.
    fn is_out(&self, i: usize) -> bool {
        self.drained.is_drained(i)
            || self.active.as_ref().is_some_and(|a| !a.is_up(i))
            || self.ejector.is_ejected(i)
    }

    /// `backend`'s state now (reads atomics only; claims no probe).
    pub fn backend_state(&self, backend: usize) -> BackendState {
        if self.drained.is_drained(backend) {
            BackendState::Drained
        } else if self.active.as_ref().is_some_and(|a| !a.is_up(backend)) {
            BackendState::Down
        } else if self.ejector.is_ejected(backend) {
            BackendState::Ejected
        } else {
            BackendState::Up
        }
    }

    /// Readiness (`/readyz`): at least one backend is up (not down, not
    /// ejected, not drained).
    pub fn ready(&self) -> bool {
        (0..self.backends.len()).any(|b| self.backend_state(b) == BackendState::Up)
    }
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
    /// No progress from a backend within --backend-timeout.
    pub backend_timeouts: AtomicU64,
    /// 503 + Retry-After answers diverted to another backend or answered.
    pub unavailable: AtomicU64,
    /// No progress from a client within --client-timeout (or a head
    /// within --header-timeout).
    pub client_timeouts: AtomicU64,
    pub client_aborts: AtomicU64,
    /// Request bodies that broke their own framing.
    pub bad_bodies: AtomicU64,
    /// Protocol switches (101) turned into tunnels.
    pub tunnels: AtomicU64,
    /// Tunnels open now.
    pub tunnels_open: AtomicU64,
    /// Answered requests within `--slo-ms`.
    pub within_slo: AtomicU64,
    /// TLS handshakes (by version) and handshake failures (by reason).
    pub tls: Arc<crate::tls::stats::TlsStats>,
}

impl ProxyStats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Decrements a gauge, never below zero.
    pub fn drop_gauge(gauge: &AtomicU64) {
        let _ = gauge.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
    }
}

/// Per-worker state shared by that worker's proxy sessions.
#[derive(Debug)]
pub struct ProxyCtx<N: net::Net = net::Tcp> {
    pub worker: u16,
    /// The configuration generation new requests use.
    pub shared: Arc<Shared>,
    /// Where reloads are published.
    pub live: Arc<live::Live>,
    /// Older generations this worker's requests in flight still use.
    pub gens: live::Generations,
    pub upstreams: upstream::Upstreams<N>,
    pub scratch: Box<[u8]>,
    pub csv: Option<csvlog::CsvLog>,
    pub warn: RateLimit,
    /// Latency of answered requests in µs, merged into `Shared` on drop.
    pub latencies: Histogram<u64>,
    /// This worker's request id generator.
    pub ids: IdGen,
}

impl ProxyCtx<net::Tcp> {
    pub fn new(worker: usize, live: Arc<live::Live>, csv: Option<csvlog::CsvLog>) -> Self {
        Self::with_net(net::Tcp, worker, live, csv)
    }
}

impl<N: net::Net> ProxyCtx<N> {
    /// A worker's context reaching backends through `net`.
    pub fn with_net(
        net: N,
        worker: usize,
        live: Arc<live::Live>,
        csv: Option<csvlog::CsvLog>,
    ) -> Self {
        let shared = live.current();
        let worker = u16::try_from(worker).unwrap_or(u16::MAX);
        let upstreams = upstream::Upstreams::new(net, Arc::clone(&shared.drained));
        ProxyCtx {
            worker,
            ids: IdGen::new(shared.id_prefix, worker),
            shared,
            live,
            gens: live::Generations::default(),
            upstreams,
            scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
            csv,
            warn: RateLimit::new(WARN_EVERY),
            latencies: summary::new_histogram(),
        }
    }

    /// Moves to the newest configuration if a reload published one (one
    /// relaxed load when there is none). Idle pooled connections follow
    /// their backend to its new index; those of removed backends close.
    pub fn refresh(&mut self) {
        if self.live.generation() == self.shared.generation {
            return;
        }
        let next = self.live.current();
        let map = reload::map_backends(&self.shared.backends, &next.backends);
        self.upstreams.remap(&map);
        self.upstreams.set_drained(Arc::clone(&next.drained));
        let old = std::mem::replace(&mut self.shared, next);
        self.gens.retire(old);
    }

    /// Generation `generation` of the configuration: the current one, or an
    /// older one a request in flight started with. Falls back to the
    /// current one if this worker no longer holds it (see `live`).
    pub fn generation(&self, generation: u64) -> &Arc<Shared> {
        if generation == self.shared.generation {
            return &self.shared;
        }
        self.gens.get(generation).unwrap_or(&self.shared)
    }

    /// In the current generation, the backend that was `backend` in
    /// generation `generation` (same address), if it is still there.
    pub fn current_index(&self, generation: u64, backend: usize) -> Option<usize> {
        if generation == self.shared.generation {
            return Some(backend);
        }
        let addr = self.generation(generation).backends.get(backend)?.addr;
        self.shared.backends.iter().position(|b| b.addr == addr)
    }

    /// Records an answered request's latency for the run summary.
    pub fn record_latency(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Saturates at the histogram's top (1 h) instead of failing.
        self.latencies.saturating_record(micros.max(1));
        if self.shared.slo.is_some_and(|slo| latency <= slo) {
            // Live (one relaxed add) so /metrics can show the share.
            self.shared.stats.within_slo.fetch_add(1, Relaxed);
        }
    }
}

/// A random 64-bit prefix for this run's request ids, read once at start-up
/// from `/dev/urandom`; if that fails, the clock and the pid mixed by std's
/// randomly keyed hasher (still distinct per run).
pub fn id_prefix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_ok() {
        return u64::from_ne_bytes(bytes);
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(since.map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

impl<N: net::Net> Drop for ProxyCtx<N> {
    fn drop(&mut self) {
        if let Ok(mut all) = self.shared.latencies.lock() {
            // Same bounds on both sides, so adding cannot fail.
            let _ = all.add(&self.latencies);
        }
    }
}
