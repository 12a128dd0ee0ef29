//! tidegate: a TCP echo server and an HTTP/1.1 load balancer, built
//! directly on mio (epoll).
//!
//! # Layout
//! - `runtime/`: what moves bytes and knows nothing of HTTP: the acceptor,
//!   the worker event loop, the [`runtime::session::Session`] trait and
//!   token scheme, timers, buffers, `io` (the one place that looks at
//!   `io::ErrorKind`), fd limits, connection stats, the connection log.
//! - `server`: starts the acceptor and workers for a mode, runs, stops,
//!   summarises (the one module that knows both echo and proxy);
//!   `server::error` holds [`server::StartError`].
//! - `config`: validated settings per mode; the [`config::ConfigError`] enum;
//!   `config::file`, the proxy's TOML file (schema and the pure text ->
//!   `ProxyConfig` validation that `check-config` and a reload share;
//!   `config::file::check` collects the problems with their positions).
//! - `echo`: echo mode's session state machine.
//! - `proxy/`: proxy mode: the session state machine, the backend side of
//!   one exchange, the backend socket pool, the request log writer, the
//!   resolver thread of host-name backends.
//! - `http/`: pure HTTP/1.1 framing (request and response heads, body
//!   framing, chunked, hop-by-hop rules, the proxy fields `Via`,
//!   `X-Forwarded-*` and request ids, canned error responses). No sockets.
//! - `balance/`: the `Selector` trait and one file per routing policy,
//!   shared lock-free by all workers, `balance::policy` (the [`balance::Policy`]
//!   enum: names, parsing, validation), and `balance::limit`, the learned
//!   per-backend concurrency limiter fed window summaries. No clocks:
//!   time is passed in.
//! - `health/`: passive outlier ejection, the retry budget, and optional
//!   active checks (`active`).
//! - `metrics/`: lock-free per-backend counters, latency histograms, the
//!   per-worker sliding latency windows behind exact percentiles
//!   (`window`), and the recent-requests ring; Prometheus text rendering.
//! - `admin/`: `--admin ADDR`: `/metrics`, `/stats`, the dashboard,
//!   `/readyz` and the admin API (list, drain and enable backends, reload),
//!   on its own thread; reads the proxy's atomics and flips only the
//!   drained flags.
//! - `tools/`: the simulated backend (`tidegate backend`), the echo load
//!   client, and `tidegate report`.
//! - `tls/`: rustls under the HTTP session (`tls::stream`: plaintext over a
//!   non-blocking socket), listener certificates chosen by SNI, TLS to
//!   backends, handshake counters.
//! - `civil`: calendar arithmetic (days since 1970 to and from dates) for
//!   log timestamps, the report's parser and certificate validity. Pure.
//!
//! The binary (`main.rs`, with its clap definitions in `cli/`) parses the
//! command line and calls into these modules.
//!
//! # Error policy
//! Nothing read from the network can panic: socket errors become a
//! [`session::CloseReason`] and are counted; resets are never logged.
//! Malformed HTTP becomes an [`http::HttpError`] with its status (4xx to the
//! client, 502 for a backend). Every failure of a proxied request is a
//! [`proxy::fault::Fault`] owned by the client or the backend side; only a
//! backend's fault feeds routing, ejection and its failure metrics, and
//! backend trouble is logged at warn, rate-limited.
//! Start-up problems are typed ([`server::StartError`]) and reported as one
//! line by the binary. `debug_assert!` guards invariants on the data path.
// `deny`, not `forbid`, for one exception: `runtime::fdpass` allows
// `unsafe` for a single `OwnedFd::from_raw_fd` on descriptors received over
// SCM_RIGHTS (nix returns them as raw numbers); its module doc gives the
// invariant. Nowhere else may allow it.
#![deny(unsafe_code)]
#![warn(rust_2018_idioms, missing_debug_implementations)]

pub mod admin;
pub mod balance;
pub mod civil;
pub mod config;
pub mod echo;
pub mod health;
pub mod http;
pub mod metrics;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod tools;
