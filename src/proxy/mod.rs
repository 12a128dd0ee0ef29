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
//! - `slots`: per-backend concurrency limits (`maxconn` and learned ones)
//!   and in-flight counts, held across all workers.
//! - `learned`: `--policy adaptive`'s learned limits: per-worker windows
//!   folded into `balance::limit` every 100 ms, stored in `slots`.
//! - `queue`: one worker's FIFO of requests waiting for a backend under its
//!   limit (pure); `board`: what the workers' queues share.

pub mod accesslog;
mod account;
pub mod board;
mod client;
pub mod csvlog;
pub mod drained;
mod exchange;
pub mod fault;
pub mod learned;
pub mod live;
pub mod net;
pub mod queue;
pub mod reload;
pub mod resolver;
pub mod session;
pub mod slots;
pub mod summary;
mod tunnel;
pub mod upstream;

#[cfg(test)]
mod choose_tests;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::balance::Selector;
use crate::config::{BackendAddr, BackendConn, Timeouts};
use crate::http::{ForwardOpts, IdGen};
use crate::runtime::ratelimit::RateLimit;
use crate::runtime::shard::Counter;

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
    /// Per-backend concurrency limits and in-flight counts (kept across
    /// reloads for backends that stay).
    pub slots: slots::Slots,
    /// What the workers' queues share (one for the process).
    pub board: Arc<board::Board>,
    /// `--queue-timeout`, `--max-queue`.
    pub queue: crate::config::QueueConfig,
    /// `adaptive`: the learned limits, folded in between event batches
    /// and stored in `slots`.
    pub learned: Option<Arc<learned::Learned>>,
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
    /// Picks a backend the way the policy wants among the usable ones: not
    /// drained, up (active checks), admitted by the ejector, and not
    /// `exclude` (the backend that just failed this request). Backup
    /// backends are tried only when every primary is down or ejected. A
    /// drained backend is never chosen, not even to fail open: `None` when
    /// every backend is drained (or, for a retry, every other one). If no
    /// backend is usable, fails open with the policy's choice among those
    /// merely open (not drained, not excluded) rather than refusing the
    /// request. One `pick` call (two with backups, three to fail open);
    /// only the chosen backend's ejection probe is claimed.
    pub fn choose(&self, now: std::time::Instant, exclude: Option<usize>) -> Option<usize> {
        let selector = &*self.selector;
        // Open: may take a request at all.
        let open = |b: usize| Some(b) != exclude && !self.drained.is_drained(b);
        // Healthy: open, up and not ejected. Pure: claims no probe (see
        // `claim`).
        let healthy = |b: usize| {
            open(b)
                && self.active.as_ref().is_none_or(|a| a.is_up(b))
                && self.ejector.admissible(b, now)
        };
        // Usable: healthy and under its concurrency limit.
        let usable = |b: usize| healthy(b) && self.slots.has_room(b);
        if let Some(b) = self.claim(now, &usable, |ok| selector.pick(now, ok)) {
            return Some(b);
        }
        // Every healthy primary is at its limit: choose one anyway; taking
        // its place fails and the request waits in the queue for the first
        // place freed (rather than failing over to a backup or an
        // unhealthy backend).
        if self.slots.any_limited()
            && let Some(b) = selector.pick(now, &healthy)
        {
            return Some(b);
        }
        // Cold path: no usable primary. Backups only if every primary is
        // really out (not merely excluded by this retry).
        let primaries_out = (0..self.backends.len())
            .filter(|&i| !self.backends[i].backup)
            .all(|i| self.is_out(i));
        if primaries_out
            && let Some(b) = self.claim(now, &usable, |ok| selector.pick_backup(now, ok))
        {
            return Some(b);
        }
        // Fail open, but never onto a drained backend.
        selector
            .pick(now, &open)
            .or_else(|| selector.pick_backup(now, &open))
    }

    /// `pick(usable)`, then the ejector's admission of the backend chosen:
    /// an expired ejection's single probe is claimed here, for that backend
    /// only. If another worker claimed it since `usable` said yes, picks
    /// once more among the backends not ejected at all (bounded: two picks).
    fn claim(
        &self,
        now: std::time::Instant,
        usable: &dyn Fn(usize) -> bool,
        pick: impl Fn(&dyn Fn(usize) -> bool) -> Option<usize>,
    ) -> Option<usize> {
        use crate::health::Admit;
        let b = pick(usable)?;
        if self.ejector.admit(b, now) != Admit::No {
            return Some(b);
        }
        pick(&|x| usable(x) && !self.ejector.is_ejected(x))
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

/// Request counters across all workers: one or two increments per
/// request, each on the worker's own shard ([`Counter`]), summed when read.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub requests: Counter,
    /// Final responses by status class: 1xx (a 101 that opens a tunnel),
    /// 2xx (`ok`), 3xx, 4xx, 5xx. One counter per class, so
    /// `tidegate_client_responses_total{class}` uses the same class labels
    /// as the per-backend `tidegate_requests_total{class}`.
    pub status_1xx: Counter,
    pub ok: Counter,
    pub status_3xx: Counter,
    pub status_4xx: Counter,
    pub status_5xx: Counter,
    pub retries: Counter,
    pub connect_failures: Counter,
    pub backend_resets: Counter,
    pub bad_responses: Counter,
    /// No progress from a backend within --backend-timeout.
    pub backend_timeouts: Counter,
    /// 503 + Retry-After answers diverted to another backend or answered.
    pub unavailable: Counter,
    /// No progress from a client within --client-timeout (or a head
    /// within --header-timeout).
    pub client_timeouts: Counter,
    pub client_aborts: Counter,
    /// Request bodies that broke their own framing.
    pub bad_bodies: Counter,
    /// Protocol switches (101) turned into tunnels.
    pub tunnels: Counter,
    /// Tunnels open now.
    pub tunnels_open: Counter,
    /// Answered requests within `--slo-ms`.
    pub within_slo: Counter,
    /// When traffic flowed, merged from each worker when it stops (one
    /// lock per worker, at exit; never on the data path).
    pub traffic: Mutex<summary::TrafficSpan>,
    /// TLS handshakes (by version) and handshake failures (by reason).
    pub tls: Arc<crate::tls::stats::TlsStats>,
}

impl ProxyStats {
    pub fn bump(counter: &Counter) {
        counter.fetch_add(1, Relaxed);
    }

    /// Decrements a gauge (read as never below zero).
    pub fn drop_gauge(gauge: &Counter) {
        gauge.fetch_sub(1, Relaxed);
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
    /// When this worker saw traffic, merged into `ProxyStats` on drop.
    pub span: summary::TrafficSpan,
    /// This worker's request id generator.
    pub ids: IdGen,
    /// Requests waiting for a backend under its limit, on this worker.
    pub queue: queue::Queue,
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
        let queue = queue::Queue::new(shared.queue.max, shared.queue.timeout);
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
            span: summary::TrafficSpan::default(),
            queue,
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
        self.queue.configure(next.queue.max, next.queue.timeout);
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

    /// A place on a backend was given back: it is offered to the oldest
    /// head among the workers' queues: this worker's (woken now through the
    /// timer heap), or another worker's, woken.
    pub fn released(
        &mut self,
        slot: slots::SlotGuard,
        timers: &mut crate::runtime::timers::Timers,
        now: std::time::Instant,
    ) {
        let counted = slot.counted();
        drop(slot);
        let board = &self.shared.board;
        if !counted || !board.anyone_waiting() {
            return;
        }
        let head = self.queue.head();
        let worker = usize::from(self.worker);
        match board.older_head(worker, head.map(|h| h.since)) {
            Some(other) => {
                board.wake(other);
            }
            None => {
                if let Some(h) = head {
                    timers.schedule(now, h.key);
                }
            }
        }
    }

    /// Publishes this worker's queue head to the other workers.
    pub fn publish_head(&self) {
        let since = self.queue.head().map(|h| h.since);
        self.shared.board.set_head(usize::from(self.worker), since);
    }

    /// Offers the head of this worker's queue a try now (after a wake-up
    /// from another worker, and periodically as a backstop).
    pub fn kick_queue(
        &mut self,
        timers: &mut crate::runtime::timers::Timers,
        now: std::time::Instant,
    ) {
        if let Some(head) = self.queue.head() {
            timers.schedule(now, head.key);
        }
    }

    /// Records an answered request's latency, completed at `now`, for the
    /// run summary.
    pub fn record_latency(&mut self, latency: Duration, now: Instant) {
        self.span.saw(now);
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
        if let Ok(mut span) = self.shared.stats.traffic.lock() {
            span.merge(&self.span);
        }
    }
}
