//! Tail-budget's constants, each with the reason for its value.

use std::time::Duration;

/// Samples the LP sees per backend: enough for a p95 (the 4th largest of
/// 64) and a tail fraction in 1.6% steps, short enough to follow a change
/// within a second at a few hundred req/s (the research model's setting).
pub const WINDOW: usize = 64;

/// How often the shares are recomputed: 10 times a second, a few
/// thousand flops each, so the shares follow the windows closely at no
/// per-request cost.
pub const PERIOD: Duration = Duration::from_millis(100);

/// Share of requests allowed above `T`: 4%, one point under the 5% a p95
/// target allows, kept as slack for estimation error and cold start.
pub const BUDGET: f64 = 0.04;

/// Least share of each measured backend: 1% keeps a few samples a second
/// flowing into every window, so a backend that improves is noticed.
pub const FLOOR: f64 = 0.01;

/// Fraction of the way the shares move towards the LP target per period:
/// 0.3 converges in about a second (0.7^10 = 3%) while one odd window
/// (a burst of slow answers) moves the mix by only 30% of its effect.
pub const DAMPING: f64 = 0.3;

/// Without an SLO, `T` is this times the lowest backend p95: 5% above the
/// best backend's own p95, so that backend's ordinary answers (and jitter
/// of a few percent) are never counted as tail.
pub const T_FACTOR: f64 = 1.05;

/// The guard redirects a pick whose fitted latency at its current load is
/// more than 1.5× that backend's unloaded latency (the research model's
/// 9c setting): queueing clearly dominates there, not noise.
pub const GUARD_SLOWDOWN: f64 = 1.5;

/// The percentile `T` is derived from: the p95 that the seed's targets
/// (and most latency SLOs) are stated in.
pub(super) const TAIL_QUANTILE: f64 = 0.95;
