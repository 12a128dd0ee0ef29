//! Backend selection: the [`Selector`] trait and one file per routing policy.
//!
//! One selector is built per run ([`build`]) and shared by every worker as an
//! `Arc<dyn Selector>`, so all workers' latencies feed the same estimates and
//! `--workers 2` routes like `--workers 1`. `pick`, `on_send` and `observe`
//! run once per request: they are lock-free (atomics only) and never
//! allocate. Time is passed in (`now`), never read here, so tests are
//! deterministic.
//!
//! # Protocol
//! `pick(now, eligible)` → `on_send(backend, now)`, which returns an
//! [`Attempt`] ticket → `observe(attempt, outcome, now)`, which consumes
//! it, at most once per attempt, failures included. `eligible` is the
//! caller's rule (health, drain, a retry's failed backend, limits), so one
//! `pick` suffices. A ticket dropped without `observe` (abandoned,
//! replaced by a retry, dropped in a reload) releases its in-flight count
//! at the drop, to the selector that issued it (see `attempt`). Periodic
//! work (tail-budget's LP) runs in `tick(now)`, between requests, never in
//! `pick`.
//!
//! # Failures
//! A failure is a connect error, reset, timeout, bad response *or a 5xx
//! answer* (`Outcome::Failure`). Every policy that learns from latency
//! records it as a penalised sample ([`Outcome::penalised`]): at least
//! [`FAILURE_PENALTY`], and at least [`FAILURE_FACTOR`] x the worst current
//! estimate of the other backends (capped at [`PENALTY_CAP`]), so a backend
//! failing fast never looks fast. Tail-budget also counts every failure as
//! a tail violation. Round-robin, least-conn and P2C learn nothing from
//! outcomes; outlier ejection (`health`) covers them.
//!
//! # Reload
//! A reload builds a new selector for the new backend list and hands it
//! what the old one learned about every backend that stays ([`rebuild`],
//! [`Selector::inherit`]; see `reload`).
//!
//! # Policies
//! - `round_robin`: `round-robin`, ignores outcomes.
//! - `sma`: `adaptive_sma`, mean of each backend's last N latencies.
//! - `ewma`: `adaptive_ewma`, `ewma = a*latency + (1-a)*ewma`.
//! - `least_conn`: `least-conn`, fewest requests in flight, ties rotate.
//! - `p2c`: `p2c`, two distinct random backends, fewer in flight wins.
//! - `peak_ewma`: `peak-ewma`, P2C on `peak-EWMA latency * (in flight + 1)`
//!   (Finagle / linkerd2), decaying with time constant `decay`.
//!
//! `limit` is not a policy: it learns each backend's concurrency limit
//! from window summaries (`limit::Gradient`, see `docs/adaptive.md`), for
//! the proxy to enforce.
//!
//! SMA and EWMA share `lowest::Lowest` (cold-start probes, lowest estimate
//! wins, ties rotate, logging) and differ only in their per-backend
//! `lowest::Estimator`. Every policy but round-robin counts requests in
//! flight globally with `attempt::Loads` (one cache-padded count per
//! backend, held by the tickets); a cold-start probe goes to an unmeasured
//! backend only while nothing is in flight there, so one probe at a time,
//! freed by its ticket (observed or dropped): no probe stamps, no timeout.
//! P2C and peak-EWMA share `p2c::draw` (two distinct random candidates).
//!
//! # Adding a policy
//! Add a file with a type implementing [`Selector`] (or, for another
//! "lowest estimate wins" rule, just an `lowest::Estimator`), a [`Policy`]
//! variant (in `policy`), its names in [`Policy::name`], `FromStr` and
//! [`POLICY_NAMES`], and an arm in [`build`]. If it learns, also `inherit`, `as_any` and
//! `epoch` (see `reload`) and a case in `inherit_tests`.

mod attempt;
mod ewma;
mod least_conn;
pub mod limit;
mod lowest;
mod p2c;
mod peak_ewma;
mod policy;
mod predictive;
mod reload;
mod round_robin;
mod sma;
mod swrr;
mod tail_budget;
mod tiered;

pub use peak_ewma::{DEFAULT_DECAY, DEFAULT_RTT};

#[cfg(test)]
mod failure_tests;
#[cfg(test)]
mod inherit_tests;
#[cfg(test)]
mod sim_tests;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

pub use attempt::Attempt;
pub(crate) use attempt::Loads;
pub use policy::{Policy, PolicyError};
pub use predictive::Predictive;
pub use reload::{carry_map, rebuild};
pub use tail_budget::TailBudget;

/// The latency sample SMA and EWMA record for a failed request, if it took
/// less. One second is far above any healthy latency in the seed scenario
/// (slowest 400 ms), so a failing backend loses to every working one, yet
/// it is a finite number: the backend can win again once its samples age
/// out (SMA) or decay (EWMA) below the others'.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// A failure's sample is at least twice the worst latency the policy
/// currently estimates for the other backends (Finagle and linkerd2 give
/// failures a penalty in the same spirit), so a backend that fails fast
/// always looks worse than the slowest working one, even when every
/// backend is slower than [`FAILURE_PENALTY`].
pub const FAILURE_FACTOR: u32 = 2;

/// ...capped here: the default `--backend-timeout`. A failure never
/// counts for more than a request that timed out, and when every backend
/// fails the penalties (each twice the others') cannot grow without bound.
pub const PENALTY_CAP: Duration = Duration::from_secs(30);

/// SMA window used by `"sma"`: the seed report averages the last 3.
pub const DEFAULT_SMA_WINDOW: usize = 3;

/// Largest SMA window accepted. `pick` averages the whole window of every
/// backend on each request; 64 keeps that to a few hundred loads, and
/// longer memories are what EWMA is for.
pub const MAX_SMA_WINDOW: usize = 64;

/// EWMA smoothing factor used by `"ewma"`: the seed report's a = 0.2.
pub const DEFAULT_EWMA_ALPHA: f64 = 0.2;

/// The `adaptive` policy's name (the default policy).
pub const ADAPTIVE: &str = "adaptive";

/// The names `FromStr` accepts, one per line so a policy adds one line;
/// listed in the unknown-name error (CSV aliases are left out).
pub const POLICY_NAMES: &[&str] = &[
    "round-robin",
    "sma",
    "ewma",
    "least-conn",
    "p2c",
    "peak-ewma",
    "predictive",
    "tail-budget",
    "adaptive",
];

/// One backend the proxy can send requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    /// As given on the command line, e.g. `127.0.0.1:8081`; used in logs.
    pub name: String,
    /// Relative share (at least 1): round-robin's weight, p2c's sampling
    /// weight, tail-budget's floor multiplier. Other policies ignore it.
    pub weight: u32,
    /// Picked (by [`Selector::pick_backup`]) only when no primary is usable.
    pub backup: bool,
}

impl Backend {
    /// A primary backend of weight 1 named by its address.
    pub fn new(addr: SocketAddr) -> Self {
        Backend {
            addr,
            name: addr.to_string(),
            weight: 1,
            backup: false,
        }
    }
}

/// Each backend's weight (at least 1), or `None` when all are equal, so
/// policies keep their unweighted (cheaper) path.
pub(crate) fn weights(backends: &[Backend]) -> Option<Vec<u32>> {
    let w: Vec<u32> = backends.iter().map(|b| b.weight.max(1)).collect();
    w.windows(2).any(|p| p[0] != p[1]).then_some(w)
}

/// How a request sent to a backend went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Response read in full; `latency` runs from the request's first byte
    /// written to the backend to the response's last byte read.
    Success { latency: Duration },
    /// Connect refused, reset or timed out after `elapsed`.
    Failure { elapsed: Duration },
}

impl Outcome {
    /// The latency sample to record: the latency itself, or for a failure
    /// `max(elapsed, FAILURE_PENALTY)`.
    pub fn sample(&self) -> Duration {
        self.penalised(None)
    }

    /// [`Outcome::sample`], and for a failure also at least
    /// [`FAILURE_FACTOR`] x `worst_ms` (the policy's worst current estimate
    /// among the other backends) up to [`PENALTY_CAP`].
    pub fn penalised(&self, worst_ms: Option<f64>) -> Duration {
        match *self {
            Outcome::Success { latency } => latency,
            Outcome::Failure { elapsed } => {
                let worst = worst_ms
                    .filter(|ms| ms.is_finite() && *ms > 0.0)
                    .map_or(Duration::ZERO, |ms| {
                        Duration::from_secs_f64((ms / 1000.0).min(PENALTY_CAP.as_secs_f64()))
                    });
                let scaled = worst.saturating_mul(FAILURE_FACTOR).min(PENALTY_CAP);
                elapsed.max(FAILURE_PENALTY).max(scaled)
            }
        }
    }

    /// Whether this outcome is a failure.
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Failure { .. })
    }
}

/// The largest of `estimates` except index `skip` (ms): the "worst
/// current estimate among the other backends" of [`Outcome::penalised`].
/// Called on failures only.
pub(crate) fn worst_other(
    estimates: impl Iterator<Item = Option<f64>>,
    skip: usize,
) -> Option<f64> {
    estimates
        .enumerate()
        .filter_map(|(i, e)| if i == skip { None } else { e })
        .filter(|e| e.is_finite())
        .reduce(f64::max)
}

/// A routing policy shared by all workers; see the module doc for the
/// calling protocol.
pub trait Selector: Send + Sync + fmt::Debug {
    /// The CSV `routing_mode` name (`round-robin`, `adaptive_sma`, ...).
    fn name(&self) -> &'static str;

    /// Chooses a backend index for a new request among those `eligible`
    /// accepts (the caller's health, drain, retry and limit rules; it must
    /// be pure: a policy may call it for any backend, any number of times).
    /// Returns `None` only if no backend is eligible. Claims nothing: the
    /// count starts at [`Selector::on_send`].
    fn pick(&self, now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize>;

    /// A request is being sent to `backend` (after `pick`): the ticket
    /// that counts it in flight until [`Selector::observe`] consumes it or
    /// it is dropped (answered, failed or abandoned alike). One selector
    /// serves all workers, so the count is global.
    fn on_send(&self, backend: usize, now: Instant) -> Attempt {
        Attempt::new(backend, now)
    }

    /// Reports how the request of `attempt` (a ticket from this
    /// selector's `on_send`) went, and ends it. At most once per attempt,
    /// failures included; an attempt that never gets one is dropped.
    fn observe(&self, attempt: Attempt, outcome: Outcome, now: Instant);

    /// The current per-backend estimate in ms (`None` = unmeasured), for
    /// logs and metrics. May allocate; not for the per-request path.
    fn estimates(&self) -> Vec<Option<f64>>;

    /// Periodic work kept off the request path (tail-budget's share
    /// recompute): every worker calls it between batches of events, often
    /// (a few times per millisecond under load); the policy rate-limits
    /// itself and lets one caller win each period. No `pick` waits for it.
    fn tick(&self, _now: Instant) {}

    /// Per-backend numbers a policy wants shown besides its estimates
    /// (tail-budget's traffic weights, predictive's R²), as (name, values).
    /// For metrics; may allocate.
    fn gauges(&self) -> Vec<(&'static str, Vec<Option<f64>>)> {
        Vec::new()
    }

    /// Chooses among the backup backends, for when no primary is usable
    /// (the caller decides that). `pick` never returns a backup. `None`:
    /// no eligible backup. Only the selector [`build`] wraps around primary
    /// and backup backends implements it.
    fn pick_backup(&self, _now: Instant, _eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        None
    }

    /// On a reload, takes over what `old` (the selector replaced) learned:
    /// `map[i] = Some(j)` when backend `i` here is `old`'s `j` (same
    /// address, [`carry_map`]), `None` for a new one (cold start). Copies
    /// estimates, windows, fits; NOT requests in flight: they finish
    /// against `old` (their tickets go back to the selector that
    /// picked them) and this one starts at 0. Another policy type (a
    /// policy change) or a missing/out-of-range entry carries nothing.
    /// Called once before taking traffic; see `reload` and [`rebuild`].
    fn inherit(&self, _old: &dyn Selector, _map: &[Option<usize>], _now: Instant) {}

    /// `self` as `Any`, for `inherit` to downcast its predecessor. The
    /// default (`()`) matches no selector: nothing is inherited from it.
    fn as_any(&self) -> &dyn std::any::Any {
        &()
    }

    /// What its time stamps count from (`build`'s `now`), if it keeps
    /// any: [`rebuild`] builds the successor on it.
    fn epoch(&self) -> Option<Instant> {
        None
    }
}

/// Builds the one selector all workers share. `now` is the start of the
/// run (probe and peak-EWMA timestamps count from it).
pub fn build(
    policy: &Policy,
    backends: &[Backend],
    now: Instant,
) -> Result<Arc<dyn Selector>, PolicyError> {
    policy.validate()?;
    if backends.iter().any(|b| b.backup) && backends.iter().any(|b| !b.backup) {
        return Ok(Arc::new(tiered::Tiered::new(policy, backends, now)?));
    }
    build_flat(policy, backends, now)
}

/// One selector over all of `backends`, backups or not.
fn build_flat(
    policy: &Policy,
    backends: &[Backend],
    now: Instant,
) -> Result<Arc<dyn Selector>, PolicyError> {
    Ok(match *policy {
        Policy::RoundRobin => Arc::new(round_robin::RoundRobin::new(backends)),
        Policy::Sma { window } => Arc::new(sma::new(backends, window, now)),
        Policy::Ewma { alpha } => Arc::new(ewma::new(backends, alpha, now)),
        Policy::LeastConn => Arc::new(least_conn::LeastConn::new(backends)),
        Policy::P2c => Arc::new(p2c::P2c::new(backends)),
        Policy::PeakEwma { decay, default_rtt } => {
            Arc::new(peak_ewma::PeakEwma::new(backends, decay, default_rtt, now))
        }
        Policy::Predictive => Arc::new(Predictive::new(backends, now)),
        Policy::TailBudget { slo } => Arc::new(TailBudget::new(backends, slo, now)),
        Policy::Adaptive { slo } => Arc::new(TailBudget::new(backends, slo, now).named(ADAPTIVE)),
    })
}

/// Takes the next turn of `turn` among the backends `0..n` that `ok`
/// accepts: a lock-free rotation (relaxed: the counter publishes nothing
/// but its own value). `None` when no backend is acceptable.
pub(crate) fn rotate(turn: &AtomicUsize, n: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
    let count = (0..n).filter(|&i| ok(i)).count();
    if count == 0 {
        return None;
    }
    let k = turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % count;
    (0..n).filter(|&i| ok(i)).nth(k)
}

/// Short labels for the estimates log line: the port when every backend's
/// port differs (`8081`), else the full name.
fn labels(backends: &[Backend]) -> Vec<String> {
    let ports_unique = backends
        .iter()
        .enumerate()
        .all(|(i, b)| backends[..i].iter().all(|o| o.addr.port() != b.addr.port()));
    backends
        .iter()
        .map(|b| {
            if ports_unique {
                b.addr.port().to_string()
            } else {
                b.name.clone()
            }
        })
        .collect()
}

/// `[EWMA] 8081=405.1ms 8082=211.8ms 8083=-`: the seed's estimates line.
fn estimates_line(tag: &str, labels: &[String], estimates: &[Option<f64>]) -> String {
    use fmt::Write;
    let mut line = format!("[{tag}]");
    for (label, est) in labels.iter().zip(estimates) {
        // Writing to a String cannot fail.
        let _ = match est {
            Some(ms) => write!(line, " {label}={ms:.1}ms"),
            None => write!(line, " {label}=-"),
        };
    }
    line
}

/// Milliseconds as f64, the unit of every estimate.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
pub(crate) mod test_util;

#[cfg(test)]
mod tests;
