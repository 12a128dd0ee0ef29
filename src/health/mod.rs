//! Passive health: outlier ejection ([`eject`]) and the retry budget
//! ([`budget`]), shared by all workers (atomics only) with time passed in;
//! active checks in [`active`].
//!
//! # Ejection
//! Two rules (Envoy's outlier detectors, with this project's constants),
//! one ejection mechanism:
//! - **Consecutive failures**: `EJECT_AFTER` failed attempts in a row
//!   (connect errors, resets, timeouts, bad responses; 5xx with
//!   `--eject-5xx`) eject a backend. Catches a dead backend in a few
//!   requests.
//! - **Success rate**: a backend whose failures over the last `SR_WINDOW`
//!   (10 s), with at least `SR_MIN_REQUESTS` (20) answered or failed
//!   attempts, exceed `SR_MAX_FAILURE_RATE` (30%) *and* `SR_FACTOR` (2) x
//!   the other backends' pooled rate is ejected. Catches a backend that
//!   fails often but not in a row (`--fail status:503:0.5`), which the
//!   consecutive rule almost never sees (5 in a row at 50%: 3% of
//!   streaks). Here **a 5xx always counts as a failure**, with or without
//!   `--eject-5xx`, as in Envoy's success-rate detection: a backend that
//!   answers half its requests with 503 is an outlier whatever the flag
//!   says, and the factor-2 comparison keeps an application that returns
//!   5xx everywhere (all backends alike) from being ejected. The flag keeps
//!   its meaning for the consecutive rule, where 5 quick 5xx in a row
//!   would otherwise eject a backend for a handful of legitimate errors.
//!
//! Either rule ejects for `BASE` x times-ejected, capped at `CAP`. At
//! most half the backends are ejected at once; if every candidate is
//! ejected the caller fails open. When an ejection expires exactly one
//! request probes the backend: an answer below 500 brings it back (with
//! its streak and rate window cleared), a failure or 5xx ejects it again
//! (for longer). Answers to requests sent before the ejection change
//! nothing. `--eject-after 0` turns both rules off.
//!
//! # Retry budget
//! (Finagle/Envoy): retries may add at most `RETRY_RATIO` of the requests
//! seen in the last `WINDOW`, plus a small floor so a quiet proxy can
//! still retry, so a dying backend cannot double the load on the others.

pub mod active;
pub mod budget;
pub mod eject;

pub use budget::{MIN_RETRIES, RETRY_RATIO, RetryBudget, WINDOW};
pub use eject::{
    Admit, BASE, CAP, EJECT_AFTER, Ejector, SR_BUCKETS, SR_FACTOR, SR_MAX_FAILURE_RATE,
    SR_MIN_REQUESTS, SR_WINDOW,
};
