//! The gradient limiter: one backend's concurrency limit, learned from
//! the latency it shows at the concurrency it was given.
//!
//! Per evaluated window (at least [`MIN_SAMPLES`] samples), with `X` the
//! window's throughput and `no_load` the mean latency without queueing:
//!
//! ```text
//! latency significantly above no_load (see `above`):
//!     limit = min(limit, max(X * no_load, in_flight * MIN_GRADIENT))
//!     step = STEP_MIN
//! else, limited, and the limit was reached (in_flight >= limit):
//!     limit = limit + step                           step = 2 * step
//! ```
//!
//! `X * no_load` is the gradient rule of Netflix's Gradient limiter and
//! Envoy's adaptive-concurrency filter, `limit * no_load / latency`, with
//! the concurrency actually in use (Little's law: in flight = `X *
//! latency`). For a backend with `C` slots and `n > C` requests in flight,
//! `X = C / service` and the product is `C` whatever `n` was. Those
//! limiters add a headroom of `sqrt(limit)` on every update; here the
//! headroom is the growth `step`, applied only while latency is flat, so
//! the limit settles at the knee instead of `C + sqrt(C)` above it (each
//! slot above the knee queues inside the backend, where a request cannot
//! move to a backend that just became free).
//!
//! # Unlimited until shown otherwise
//! The limiter starts **unlimited**, and only a probe (below) can limit
//! it: a probe that finds that halving the concurrency lowers the latency
//! significantly. A backend whose latency does not grow with load (noisy,
//! bimodal, or just slow) is never limited. A limit that keeps being
//! reached while latency stays flat grows with a doubling step, back to
//! unlimited at [`GradientConfig::max_limit`].
//!
//! # Probes and the no-load latency
//! Now and then the concurrency is capped at half its current level for a
//! window ([`PROBE_FACTOR`]). If the mean latency falls significantly, it
//! depends on load: the no-load estimate takes the probe's mean, the limit
//! becomes (at most) the knee `X_before * no_load`, and another probe
//! follows at once, halving again: a binary search down to the knee, which
//! stops when halving no longer helps. If it does not fall, the probe's
//! mean is the no-load latency at this concurrency (higher than the
//! estimate if the backend slowed), and the next probe waits twice as long
//! ([`PROBE_INTERVAL`] .. [`PROBE_INTERVAL_MAX`], with jitter so that
//! backends do not probe together). Between probes the estimate also
//! follows a window significantly faster than it, and **rebases** on a
//! window sent at most [`REBASE_DROP`] of the previous window's
//! concurrency whose latency did not fall (after a cut for a slowdown, the
//! next window shows it).

use std::ops::Add;
use std::time::{Duration, Instant};

use super::Window;

mod tuning;

pub use tuning::{
    DEFAULT_MAX_LIMIT, FIRST_PROBE, GROWTH, HEADROOM, HOLD_AFTER_CUT, HOLD_MAX, MAX_PENDING_AGE,
    MIN_GRADIENT, MIN_PROBE_SAMPLES, MIN_SAMPLES, PROBE_FACTOR, PROBE_INTERVAL, PROBE_INTERVAL_MAX,
    PROBE_JITTER, PROBE_TIMEOUT, QUICK_PROBES, REBASE_DROP, SATURATED, STEP_MIN, TOLERANCE, Z,
};

/// Bounds of one limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradientConfig {
    /// The limit never goes below this (at least 1: a backend always gets
    /// a request to measure).
    pub min_limit: u32,
    /// At this limit or above the backend is unlimited.
    pub max_limit: u32,
    /// Seeds the probe jitter; give each backend its own (its index).
    pub seed: u64,
}

impl Default for GradientConfig {
    fn default() -> Self {
        GradientConfig {
            min_limit: 1,
            max_limit: DEFAULT_MAX_LIMIT,
            seed: 0,
        }
    }
}

/// What the limiter is doing, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No probe has measured the no-load latency yet: unlimited.
    Learning,
    /// Latency has not been shown to grow with load: unlimited.
    Unlimited,
    /// A learned limit applies.
    Limited,
    /// A probe caps the concurrency for a window.
    Probing,
}

/// What one evaluated window showed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Level {
    /// Mean latency and its standard error, µs.
    mean: f64,
    se: f64,
    /// Smallest latency, µs.
    min: f64,
    /// Throughput, requests per second.
    rate: f64,
    /// Mean requests in flight (Little: `rate * mean`).
    inflight: f64,
    /// Largest in-flight count at send.
    peak: f64,
}

impl Level {
    /// Is `self`'s mean above `other`'s by more than [`TOLERANCE`] and
    /// [`Z`] standard errors?
    fn above(&self, other: &Level) -> bool {
        let diff = self.mean - other.mean;
        diff > other.mean * TOLERANCE && diff > Z * self.se.hypot(other.se)
    }
}

/// A new no-load measurement folded into the estimate: taken as is when
/// the two differ significantly (the backend changed, or the estimate was
/// taken under load), else averaged with it, halving the noise of one
/// window (a lucky fast window would otherwise set a no-load latency
/// below the true one, and every cut after it too low).
fn fold(old: Option<Level>, new: Level) -> Level {
    match old {
        Some(old) if !old.above(&new) && !new.above(&old) => Level {
            mean: (old.mean + new.mean) / 2.0,
            se: old.se.hypot(new.se) / 2.0,
            min: old.min.min(new.min),
            ..new
        },
        _ => new,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Probe {
    /// The next probe starts at the first window evaluated after `next`.
    Idle { next: Instant },
    /// Concurrency capped at `cap` since `since`; `before` was the window
    /// just before.
    Running {
        cap: u32,
        since: Instant,
        before: Level,
    },
}

/// One backend's learned concurrency limit. See the module doc.
#[derive(Debug, Clone)]
pub struct Gradient {
    cfg: GradientConfig,
    /// The learned limit; at `cfg.max_limit` or above: unlimited.
    limit: f64,
    /// Next growth step while latency is flat and the limit is reached.
    step: f64,
    /// The last evaluation changed the limit: the next window still holds
    /// requests sent under the old one, so it may cut but not grow.
    settling: bool,
    /// Windows left without growth after a cut.
    hold: u32,
    /// The hold the next cut to the same whole limit starts (doubling).
    hold_len: u32,
    /// The whole limit the last cut set.
    last_cut: u32,
    /// The next window follows a probe: its throughput still shows the
    /// probe's cap, so it changes nothing.
    after_probe: bool,
    /// No-load latency: the window that measured it.
    no_load: Option<Level>,
    /// Samples merged and not yet evaluated, since `window_start`.
    pending: Window,
    window_start: Instant,
    /// The last normal (not probe) window evaluated.
    last: Option<Level>,
    probe: Probe,
    /// Current interval between probes.
    interval: Duration,
    /// Probes in a row that found no knee (the interval doubles only after
    /// [`QUICK_PROBES`] of them).
    misses: u32,
    /// xorshift state for the probe jitter.
    rng: u64,
    /// When the last probe started (the limiter's start before any).
    last_probe: Instant,
}

impl Gradient {
    /// A limiter that starts unlimited; its first probe comes after
    /// [`FIRST_PROBE`].
    pub fn new(cfg: GradientConfig, now: Instant) -> Self {
        let min_limit = cfg.min_limit.max(1);
        let cfg = GradientConfig {
            min_limit,
            max_limit: cfg.max_limit.max(min_limit),
            seed: cfg.seed,
        };
        Gradient {
            cfg,
            limit: f64::from(cfg.max_limit),
            step: STEP_MIN,
            settling: false,
            hold: 0,
            hold_len: HOLD_AFTER_CUT,
            last_cut: 0,
            after_probe: false,
            no_load: None,
            pending: Window::new(),
            window_start: now,
            last: None,
            probe: Probe::Idle {
                next: now + FIRST_PROBE,
            },
            interval: PROBE_INTERVAL,
            misses: 0,
            last_probe: now,
            // Any non-zero start works for xorshift; mix the seed so that
            // seeds 0, 1, 2 differ in their first draws.
            rng: cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// The concurrency to allow now: the learned limit, or a probe's cap
    /// below it; `None` when unlimited.
    pub fn limit(&self) -> Option<u32> {
        let learned = self.learned();
        match self.probe {
            Probe::Running { cap, .. } => Some(learned.map_or(cap, |l| l.min(cap))),
            Probe::Idle { .. } => learned,
        }
    }

    /// The learned limit without a probe's cap; `None` when unlimited.
    pub fn learned(&self) -> Option<u32> {
        let max = f64::from(self.cfg.max_limit);
        // `limit` is kept within [min_limit, max_limit]: the cast is exact
        // after the floor.
        (self.limit < max).then(|| (self.limit.floor() as u32).max(self.cfg.min_limit))
    }

    /// The no-load latency estimate.
    pub fn no_load(&self) -> Option<Duration> {
        self.no_load
            .map(|l| Duration::from_micros(l.mean.max(0.0) as u64))
    }

    /// What the limiter is doing.
    pub fn phase(&self) -> Phase {
        match (self.probe, self.no_load, self.learned()) {
            (Probe::Running { .. }, _, _) => Phase::Probing,
            (_, None, _) => Phase::Learning,
            (_, _, None) => Phase::Unlimited,
            (_, _, Some(_)) => Phase::Limited,
        }
    }

    /// Folds in one tick's merged window; evaluates once the pending
    /// samples reach [`MIN_SAMPLES`]. Never allocates.
    pub fn update(&mut self, w: &Window, now: Instant) {
        self.update_with(w, now, true);
    }

    /// Whether a probe caps this backend now.
    pub fn probing(&self) -> bool {
        matches!(self.probe, Probe::Running { .. })
    }

    /// [`Gradient::update`], with `may_probe` false when a probe must not
    /// start now (another backend of the fleet is probing: two probes at
    /// once push each one's load onto the other and distort both).
    pub fn update_with(&mut self, w: &Window, now: Instant, may_probe: bool) {
        if now.saturating_duration_since(self.window_start) > MAX_PENDING_AGE
            && self.pending.count() < MIN_SAMPLES
        {
            self.pending.clear();
            self.window_start = now;
        }
        self.pending.merge(w);
        let need = match self.probe {
            Probe::Running { .. } => MIN_PROBE_SAMPLES,
            Probe::Idle { .. } => MIN_SAMPLES,
        };
        if self.pending.count() < need {
            return;
        }
        let secs = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        let window = self.pending;
        self.pending.clear();
        self.window_start = now;
        let Some((mean, se)) = window.mean_se_us() else {
            return;
        };
        if secs <= 0.0 {
            return;
        }
        let seen = Level {
            mean: mean.max(1.0),
            se,
            min: window.min().map_or(0.0, |m| m.as_secs_f64() * 1e6),
            rate: f64::from(window.count()) / secs,
            inflight: window.sum_secs() / secs,
            peak: f64::from(window.max_inflight().max(1)),
        };
        match self.probe {
            Probe::Running { cap, since, before } => self.end_probe(cap, since, before, seen, now),
            Probe::Idle { .. } => {
                self.adjust(seen, now);
                if let Probe::Idle { next } = self.probe
                    && now >= next
                    && may_probe
                    && self.worth_probing(&seen, now)
                {
                    self.start_probe(seen, now);
                }
            }
        }
    }

    /// A normal window: the gradient step.
    fn adjust(&mut self, seen: Level, now: Instant) {
        if self.settling
            && !self.after_probe
            && self.no_load.is_some()
            && self.limit < f64::from(self.cfg.max_limit)
        {
            // The window right after a change mixes requests sent under
            // the old limit: its latency lags the change. Neither cut nor
            // rebase on it, and keep `last` (the window before the
            // change) for the next clean window to be compared with.
            self.settling = false;
            self.hold = self.hold.saturating_sub(1);
            return;
        }
        let last = self.last.replace(seen);
        let Some(mut no_load) = self.no_load else {
            return;
        };
        let max = f64::from(self.cfg.max_limit);
        if std::mem::take(&mut self.after_probe) || self.limit >= max {
            // Unlimited: only a probe limits (and measures the no-load
            // latency); a noisy window must not even schedule one.
            return;
        }
        if no_load.above(&seen) {
            // Significantly faster than the estimate: the backend sped up.
            // This window may mix old and new: take it for now, and probe
            // at once for a clean measurement.
            no_load = seen;
            self.interval = PROBE_INTERVAL;
            self.probe = Probe::Idle { next: now };
        } else if let Some(last) = last
            && seen.inflight <= last.inflight * REBASE_DROP
            && !last.above(&seen)
            && seen.above(&no_load)
        {
            // Less concurrency, no less latency: this is the no-load latency.
            no_load = seen;
        }
        self.no_load = Some(no_load);
        let before = self.limit;
        if seen.above(&no_load) {
            // Little's knee, unless the window was mostly idle and queued
            // in a burst: then the burst's own gradient (its peak
            // concurrency times no_load / latency) is the better guess.
            let little = seen.rate * no_load.mean / 1e6;
            let burst = seen.peak * no_load.mean / seen.mean;
            let knee = (little.max(burst) + HEADROOM).max(seen.peak * MIN_GRADIENT);
            self.limit = self.limit.min(knee).max(f64::from(self.cfg.min_limit));
            self.step = STEP_MIN;
            // `limit` is within [min_limit, max_limit]: a u32 after the floor.
            let whole = self.limit.floor() as u32;
            self.hold_len = if whole == self.last_cut {
                (self.hold_len * 2).min(HOLD_MAX)
            } else {
                HOLD_AFTER_CUT
            };
            self.last_cut = whole;
            self.hold = self.hold_len;
        } else if self.settling || self.hold > 0 {
            // Requests sent under the old limit (wait for one clean
            // window), or holding after a cut.
            self.hold = self.hold.saturating_sub(1);
        } else if seen.peak >= self.limit.floor() {
            self.limit = (self.limit + self.step).min(max);
            self.step = (self.step * 2.0)
                .min(max)
                .min((self.limit * GROWTH).max(STEP_MIN));
        } else {
            self.step = STEP_MIN;
        }
        self.settling = self.limit.floor() != before.floor();
    }

    /// Whether a probe of an unlimited backend could find anything: not
    /// while its latency is within noise of the no-load latency an
    /// earlier probe measured (it is not queueing: a probe would only
    /// divert its traffic for nothing, which on the seed scenario moved
    /// 3 % of requests to slower backends), except once per
    /// [`PROBE_INTERVAL_MAX`] in case the estimate itself is off. A
    /// limited backend probes on its schedule.
    fn worth_probing(&self, seen: &Level, now: Instant) -> bool {
        let unlimited = self.limit >= f64::from(self.cfg.max_limit);
        let Some(no_load) = self.no_load else {
            return true;
        };
        !unlimited
            || seen.above(&no_load)
            || now.saturating_duration_since(self.last_probe) >= PROBE_INTERVAL_MAX
    }

    fn start_probe(&mut self, seen: Level, now: Instant) {
        self.last_probe = now;
        let level = seen.peak.min(self.limit);
        let cap = (level * PROBE_FACTOR)
            .floor()
            .max(f64::from(self.cfg.min_limit));
        if cap >= level {
            // Nothing to halve (one request in flight): try again later.
            self.schedule(now);
            return;
        }
        self.probe = Probe::Running {
            // `cap` < `level` <= `max_limit`, a u32.
            cap: cap as u32,
            since: now,
            before: seen,
        };
    }

    /// A window during a probe: skipped while requests sent above the cap
    /// are still completing, else the probe's verdict.
    fn end_probe(&mut self, cap: u32, since: Instant, before: Level, seen: Level, now: Instant) {
        if seen.peak > f64::from(cap) {
            if now.saturating_duration_since(since) > PROBE_TIMEOUT {
                self.schedule(now);
            }
            return;
        }
        // The next normal window runs at the restored concurrency: compare
        // it with nothing measured under the cap, and grow from it only
        // once it is clean.
        self.last = None;
        self.after_probe = true;
        self.settling = true;
        self.step = STEP_MIN;
        let min_fell = before.min > seen.min * (1.0 + TOLERANCE);
        let saturated = seen.rate >= before.rate * SATURATED;
        if before.above(&seen) && (min_fell || saturated) {
            // Latency fell with concurrency, and the fastest request's too
            // or the throughput held: it depends on load. (The mean alone
            // is not enough: a window of a bimodal backend may miss its
            // slow mode, but then its throughput halves.) The knee
            // is at most the throughput before times the latency now.
            if self.no_load.is_none_or(|n| seen.mean < n.mean) {
                self.no_load = Some(fold(self.no_load, seen));
            }
            // Or, from the probe's own window, its cap times the gradient
            // (no-load over seen latency): `before.rate` may come from a
            // window disturbed by other backends (a queue that starved
            // it), and alone it can cut a limit far below the knee.
            let no_load = self.no_load.map_or(seen.mean, |n| n.mean.min(seen.mean));
            let gradient = f64::from(cap) * no_load / seen.mean;
            let knee = (before.rate * seen.mean / 1e6)
                .max(gradient)
                .add(HEADROOM)
                .max(f64::from(self.cfg.min_limit));
            self.limit = self.limit.min(knee);
            self.step = STEP_MIN;
            self.interval = PROBE_INTERVAL;
            self.misses = 0;
            // Search on: halve again at the next window.
            self.probe = Probe::Idle { next: now };
        } else {
            // Half the concurrency, the same latency: the no-load latency
            // (higher than the estimate if the backend slowed).
            self.no_load = Some(fold(self.no_load, seen));
            self.misses = self.misses.saturating_add(1);
            if self.misses > QUICK_PROBES {
                self.interval = (self.interval * 2).min(PROBE_INTERVAL_MAX);
            }
            self.schedule(now);
        }
    }

    /// The next probe after the current interval plus jitter.
    fn schedule(&mut self, now: Instant) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        let wait = self.interval.mul_f64(1.0 + PROBE_JITTER * unit);
        self.probe = Probe::Idle { next: now + wait };
    }
}
