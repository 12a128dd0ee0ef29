//! The gradient limiter's constants, each with the reason for its value
//! (see also `docs/adaptive.md`).

use std::time::Duration;

/// Windows are evaluated once they hold this many samples (the pending
/// window keeps merging ticks until then): fewer make the standard error
/// of a mean itself too uncertain to test against. 16 also covers more
/// than one cycle of the seed's profile A (9 requests).
pub const MIN_SAMPLES: u32 = 16;

/// A probe's windows need only this many: the probe halves the
/// backend's throughput while it lasts, and the test against [`Z`]
/// standard errors already allows for the smaller sample. 8 consecutive
/// requests of profile A hold at most its three 400 ms ones.
pub const MIN_PROBE_SAMPLES: u32 = MIN_SAMPLES / 2;

/// A pending window still short of [`MIN_SAMPLES`] after this long is
/// dropped: its oldest samples describe a backend that may have changed,
/// and a backend that quiet needs no limit.
pub const MAX_PENDING_AGE: Duration = Duration::from_secs(10);

/// A latency change smaller than this fraction is never acted on. Latency
/// measured at the proxy carries loopback, scheduling and parsing jitter
/// of a few percent of a 20 ms service time; below 10 % growth cannot be
/// told from it even with many samples.
pub const TOLERANCE: f64 = 0.1;

/// ...nor one smaller than this many standard errors of the difference of
/// the two means. The test runs on every window, ten times a second: at 3
/// a normal mean exceeds it by chance about once in 740 windows (once in
/// ~75 s), where 2 would cut a jittery backend's limit every few seconds.
/// This is what keeps a backend with noisy latency from looking like one
/// that queues, while a deterministic one (standard error 0) is judged by
/// [`TOLERANCE`] alone. The price: with 16-20 samples a window, a knee
/// is seen one slot later on a jittery backend (C + 2 instead of C + 1).
pub const Z: f64 = 3.0;

/// The limit falls to at most half the concurrency in use per window
/// (Envoy's and Gradient2's floor on the gradient): one window measured
/// during a hiccup (a GC pause, a page-cache miss) cannot crush the limit.
pub const MIN_GRADIENT: f64 = 0.5;

/// First growth step after a cut, in requests. Half a slot: the effective
/// (whole) limit rises one slot every other window, so a backend at its
/// knee spends about one window in three above it, looking for more
/// capacity, instead of every other window.
pub const STEP_MIN: f64 = 0.5;

/// A growth step is at most this fraction of the limit: the doubling
/// step finds a far-away demand in a few windows, and near a knee it
/// cannot jump more than a quarter past it in one window (C = 4: one
/// slot) before the latency shows.
pub const GROWTH: f64 = 0.25;

/// Added to a cut's knee `X * no_load`: rounds it to the nearest whole
/// slot instead of down (the limit in force is the whole part), so a
/// no-load estimate a few percent low does not cost a slot (3.9 -> 4,
/// not 3). This is the gradient rule's "+ headroom", half a slot.
pub const HEADROOM: f64 = 0.5;

/// After a cut, the limit holds this many windows before it grows again.
/// At a knee the limit saw-tooths (grow past it, see the latency rise,
/// cut back); each tooth puts a window or two one slot above the knee,
/// where one request waits inside the backend. Holding 5 windows (half a
/// second at a 100 ms tick) after a cut to a new level lets a capacity
/// that grew be found within a second.
pub const HOLD_AFTER_CUT: u32 = 5;

/// Each cut back to the same whole limit as the previous cut doubles the
/// hold, up to this many windows (30 s at a 100 ms tick): once the knee is
/// known, the limit looks above it twice a minute, so requests waiting
/// inside the backend become rare enough not to set the p99 (at a 5-window
/// hold a third of the time is spent one slot above the knee), and a
/// capacity that grew is still found within 30 s.
pub const HOLD_MAX: u32 = 300;

/// A probe caps the concurrency at this fraction of the current one: a
/// halving lowers a queueing backend's latency by up to half (far above
/// [`TOLERANCE`]) and is a binary search step toward the knee.
pub const PROBE_FACTOR: f64 = 0.5;

/// A probe whose throughput stays above this fraction of the window
/// before it found a saturated backend: halving the concurrency of a
/// backend whose latency does not depend on load halves its throughput
/// (0.5); a saturated one keeps it (1.0); 0.75 splits the difference.
pub const SATURATED: f64 = 0.75;

/// The first probe waits this long after the limiter starts: every
/// client's first request arrives at once, and the windows of that burst
/// (up to the seed's 400 ms responses) show no steady state to compare.
pub const FIRST_PROBE: Duration = Duration::from_millis(500);

/// First interval between probes, and the one restored whenever a probe or
/// a cut shows that latency depends on load. A probe halves one backend's
/// concurrency for one or two windows (100-300 ms), so at 2 s it costs
/// under 10 % of that backend's time, and only while probes keep finding
/// something.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Probes that may find no knee before the interval starts doubling: one
/// probe can miss a knee (a window disturbed by the other backends' limits
/// changing at the same time, measured here as a backend left unlimited
/// for 6 s at 2x its capacity), so the first few come every
/// [`PROBE_INTERVAL`]; a flat backend pays 2 more short probes, once.
pub const QUICK_PROBES: u32 = 2;

/// Longest interval between probes (each flat probe doubles it): a
/// backend whose latency never depended on load is capped for one window
/// a minute, and a capacity that appears is still found within a minute.
pub const PROBE_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// Each interval is stretched by up to this fraction (deterministically
/// from [`GradientConfig::seed`](super::GradientConfig::seed)) so backends probe at different times:
/// a probe moves load to the other backends, and all probing at once
/// would cap them all.
pub const PROBE_JITTER: f64 = 0.25;

/// A probe that has not seen a window sent under its cap (in flight at
/// most the cap) after this long ends with nothing learned: the backend
/// drains too slowly to measure. Ten times a 200 ms response.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A window whose mean concurrency is at most this fraction of the
/// previous window's, with a latency that did not fall, shows latency
/// that does not depend on load (see the module doc). A quarter less
/// concurrency lowers a queueing backend's latency by a quarter, well
/// beyond [`TOLERANCE`].
pub const REBASE_DROP: f64 = 0.75;

/// Limits this high mean "unlimited": far more than a worker keeps
/// connections to one backend, and the default `--max-queue`.
pub const DEFAULT_MAX_LIMIT: u32 = 10_000;
