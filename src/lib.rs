//! tidegate: a TCP echo server and an HTTP/1.1 load balancer, built
//! directly on mio (epoll).
//!
//! # Layout
//! - `config`: validated settings per mode; the [`config::ConfigError`] enum.
//! - `limits`: raising RLIMIT_NOFILE at start.
//! - `server`: start the acceptor and workers, run, stop, summarise.
//! - `acceptor`: the listener, accept-until-WouldBlock, fd exhaustion
//!   (reserve descriptor, backoff), round-robin hand-off, signals.
//! - `worker`: one thread's Poll + Slab event loop, generic over a session.
//! - `session`: the [`session::Session`] trait, the token scheme, [`session::Step`].
//! - `buffer`: [`buffer::Outbuf`], write-through output with a queue for what the socket refuses.
//! - `echo`: echo mode's session state machine.
//! - `timers`: the per-worker deadline heap sessions use for timeouts.
//! - `io`: non-blocking read/write/accept outcomes: the one place that looks
//!   at `io::ErrorKind`.
//! - `stats`: counters shared between threads; the run summary.
//! - `connlog`: `--log-connections`, written by its own thread.
//! - `health`: passive outlier ejection and the retry budget (atomics, time passed in).
//! - `health_check`: optional active checks (`--health-check`), rise 2 / fall 3.
//! - `metrics`: lock-free per-backend counters, latency histograms and the
//!   recent-requests ring; Prometheus text rendering.
//! - `admin`: `--admin ADDR`: `/metrics` (Prometheus), `/stats` (JSON) and
//!   the live dashboard, on its own thread; reads the proxy's atomics only.
//! - `ratelimit`: keeps repeated warnings from flooding the log.
//! - `proxy`: proxy mode: `session` (client side), `exchange` (backend side
//!   of one request, fail-over), `upstream` (backend sockets, keep-alive
//!   pool), `csvlog` (`--log-csv` writer thread).
//! - `http`: pure HTTP/1.1 framing (request and response heads, body
//!   framing, chunked, hop-by-hop rules, canned error responses). No sockets.
//! - `balance`: the `Selector` trait and one file per routing policy
//!   (round-robin, SMA, EWMA, least-conn, P2C, peak-EWMA, predictive,
//!   tail-budget), shared lock-free by all workers. No clocks.
//! - `backend`: the simulated backend server (`tidegate backend`): profiles,
//!   capacity queue, fault modes, its own single-threaded event loop.
//! - `loadgen`: the event-driven echo load client behind `examples/echo_client.rs`
//!   (config + `run`, `conn` state machine, `worker` event loop, `payload`, `report`).
//! - `report`: `tidegate report`: CSV request logs to the seed's Tables 1-3 (markdown) and an SVG chart.
//!
//! # Error policy
//! Nothing read from the network can panic: socket errors become a
//! [`session::CloseReason`] and are counted; resets are never logged.
//! Malformed HTTP becomes an [`http::HttpError`] with its status (4xx to the
//! client, 502 for a backend); backend trouble is counted and logged at warn,
//! rate-limited.
//! Start-up problems are typed ([`server::StartError`]) and reported as one
//! line by the binary. `debug_assert!` guards invariants on the data path.
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms, missing_debug_implementations)]

pub mod acceptor;
pub mod admin;
pub mod backend;
pub mod balance;
pub mod buffer;
pub mod config;
pub mod connlog;
pub mod echo;
pub mod health;
pub mod health_check;
pub mod http;
pub mod io;
pub mod limits;
pub mod loadgen;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod report;
pub mod server;
pub mod session;
pub mod stats;
pub mod timers;
pub mod worker;
