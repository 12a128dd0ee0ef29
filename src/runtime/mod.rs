//! The runtime: everything that moves bytes and knows nothing of HTTP or
//! routing. The acceptor deals connections to workers; each worker runs a
//! mio Poll over a slab of [`session::Session`]s.
//!
//! - `acceptor`: the listener, accept-until-WouldBlock, fd exhaustion
//!   (reserve descriptor, backoff), round-robin hand-off, signals.
//! - `worker`: one thread's Poll + Slab event loop, generic over a session.
//! - `session`: the [`session::Session`] trait, the token scheme, [`session::Step`].
//! - `buffer`: [`buffer::Outbuf`], write-through output with a queue for what the socket refuses.
//! - `timers`: the per-worker deadline heap sessions use for timeouts.
//! - `io`: non-blocking read/write/accept outcomes: the one place that looks
//!   at `io::ErrorKind`.
//! - `limits`: raising RLIMIT_NOFILE at start.
//! - `close`: [`close::CloseReason`], why a connection ended.
//! - `stats`: connection counters shared between threads; the run summary.
//! - `shard`: per-thread shards for counters written on every request,
//!   summed when read.
//! - `connlog`: `--log-connections`, written by its own thread.
//! - `ratelimit`: keeps repeated warnings from flooding the log.
//! - `upgrade`: `--upgrade-socket` / `--takeover`: handing the listeners to
//!   a new process (zero-downtime binary upgrade), on its own thread.
//! - `fdpass`: SCM_RIGHTS over a unix socket (the crate's one `unsafe`).
//! - `reload`: [`reload::Reloader`], the one reload path of SIGHUP and
//!   `POST /api/reload`.

pub mod acceptor;
pub mod buffer;
pub mod close;
pub mod connlog;
pub mod fdpass;
pub mod io;
pub mod limits;
pub mod ratelimit;
pub mod reload;
pub mod session;
pub mod shard;
pub mod stats;
pub mod timers;
pub mod upgrade;
pub mod worker;
