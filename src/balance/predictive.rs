//! `predictive`: each backend's latency is predicted by an online multiple
//! linear regression of what the proxy knows at dispatch, and the lowest
//! prediction wins.
//!
//! # Model
//! Per backend, recursive least squares with forgetting factor [`LAMBDA`]
//! (`rls`) over the features, at dispatch time:
//! 1. 1 (intercept);
//! 2. requests already in flight at that backend (global: the tickets of
//!    `on_send`);
//! 3. EWMA of its latency, ms (α = [`ALPHA`]);
//! 4. EWMA of the squared deviation from that EWMA, in [`VAR_UNIT_MS2`];
//! 5. seconds since its last answer (at most [`MAX_IDLE_S`]);
//! 6. request size: always 0 for now, as the `Selector` API carries no
//!    size; the slot is kept so the model does not change shape when it
//!    does (an unexcited feature is harmless, see `rls`).
//!
//! # Matching features to answers
//! `on_send` notes the features of the send in its `Attempt` ticket; the
//! `observe` consuming that ticket updates the model with those features
//! and the answer's latency (failures as their penalty sample). Exact: no
//! matching by time.
//!
//! # Routing
//! Unmeasured backends are probed one request at a time, as in `lowest`; otherwise the
//! lowest prediction for a request sent now wins (the EWMA until a model
//! has [`MIN_UPDATES`] updates; features clamped to the range the model
//! was fitted on, in-flight excepted, see `rls`). Every [`EXPLORE_EVERY`]th pick (2%) goes
//! round-robin to a measured backend instead, so every model keeps
//! learning; a deterministic counter, no random numbers.
//!
//! # Concurrency
//! `pick` reads each model's coefficients lock-free (a seqlock, `Coef`).
//! The per-backend `Mutex` guards only the 6×6 update and the R² window:
//! `observe` takes it with `try_lock` and, if another worker is updating
//! the same backend at that instant, skips this sample (one lost sample of
//! hundreds a second). Uncontended, it is held for about 200 flops.

mod rls;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Instant;

use log::{Level, debug, log_enabled};

use self::rls::{DIM, Rls, Scores, Snapshot};
use super::tail_budget::dispatch::stamp;
use super::{Attempt, Backend, Loads, Outcome, Selector, estimates_line, labels, millis};

/// CSV `routing_mode` name.
pub(super) const NAME: &str = "predictive";

/// Log tag: `[PRED] chosen: 127.0.0.1:8082`.
const TAG: &str = "PRED";

/// Forgetting factor: samples weigh 0.99^age, a memory of ~100 answers,
/// so a backend that changes is re-learnt within a second or two at
/// ordinary rates, while 100 samples still average out noise.
pub const LAMBDA: f64 = 0.99;

/// EWMA smoothing of the latency and variance features: the seed's
/// `adaptive_ewma` default, a memory of ~5 answers ("recent").
pub const ALPHA: f64 = 0.2;

/// One variance feature unit, ms²: (10 ms)², so typical variances are
/// 1-1000 units, the scale of the other features (keeps `P` well
/// conditioned).
pub const VAR_UNIT_MS2: f64 = 100.0;

/// Cap of the idle-time feature, s: a backend idle for a minute is as
/// "cold" as one idle for an hour, and the cap keeps the feature bounded.
pub const MAX_IDLE_S: f64 = 60.0;

/// One pick in 50 (2%) explores: every backend then gets at least ~2%/n
/// of the traffic, enough to keep its model and EWMA current at any
/// realistic rate, for a cost of 2% of requests routed off the best.
pub const EXPLORE_EVERY: usize = 50;

/// Updates before a model's prediction is used instead of the EWMA: twice
/// the feature count, past the prior's influence.
pub const MIN_UPDATES: u64 = 2 * DIM as u64;

/// Relaxed unless stated: each atomic is a value on its own.
const ORDER: Ordering = Ordering::Relaxed;

/// The predictive selector; see the module doc.
#[derive(Debug)]
pub struct Predictive {
    names: Vec<String>,
    labels: Vec<String>,
    epoch: Instant,
    slots: Box<[Slot]>,
    /// Picks so far, per thread shard (exploring every [`EXPLORE_EVERY`]th
    /// of each worker's picks needs no shared count).
    picks: Box<[crate::runtime::shard::Padded<AtomicUsize>]>,
    explore_turn: AtomicUsize,
    fallback_turn: AtomicUsize,
    /// Latest stamp seen, for `estimates` (which has no `now`).
    clock: AtomicU64,
    /// Requests in flight per backend (a feature; probes one at a time).
    loads: Loads,
}

#[derive(Debug)]
struct Slot {
    /// EWMA latency ms and EWMA squared deviation ms², f64 bits; NaN
    /// before the first answer.
    ewma: AtomicU64,
    var: AtomicU64,
    /// Stamp of the last answer; 0 for none yet.
    answered: AtomicU64,
    coef: Coef,
    fit: Mutex<Fit>,
}

#[derive(Debug)]
struct Fit {
    rls: Rls,
    scores: Scores,
}

/// A model's [`Snapshot`], published for lock-free reads: a seqlock whose
/// only writer holds the backend's `fit` lock.
#[derive(Debug)]
struct Coef {
    /// Odd while being written.
    version: AtomicU64,
    /// θ, then the range's lows, then its highs, as f64 bits.
    vals: [AtomicU64; 3 * DIM],
    /// The model has [`MIN_UPDATES`] updates.
    trusted: AtomicBool,
}

impl Coef {
    fn new() -> Self {
        Coef {
            version: AtomicU64::new(0),
            vals: std::array::from_fn(|_| AtomicU64::new(0)),
            trusted: AtomicBool::new(false),
        }
    }

    fn publish(&self, rls: &Rls) {
        let snap = rls.snapshot();
        let v = self.version.load(ORDER);
        self.version.store(v.wrapping_add(1), ORDER);
        fence(Ordering::Release);
        let all = snap.theta.iter().chain(&snap.lo).chain(&snap.hi);
        for (slot, x) in self.vals.iter().zip(all) {
            slot.store(x.to_bits(), ORDER);
        }
        self.trusted.store(rls.updates() >= MIN_UPDATES, ORDER);
        self.version.store(v.wrapping_add(2), Ordering::Release);
    }

    /// The snapshot if trusted; `None` also if a writer kept interfering
    /// (then the caller uses the EWMA once).
    fn read(&self) -> Option<Snapshot> {
        for _ in 0..4 {
            let v1 = self.version.load(Ordering::Acquire);
            if v1 % 2 == 1 {
                continue;
            }
            let get = |k: usize| f64::from_bits(self.vals[k].load(ORDER));
            let snap = Snapshot {
                theta: std::array::from_fn(get),
                lo: std::array::from_fn(|k| get(DIM + k)),
                hi: std::array::from_fn(|k| get(2 * DIM + k)),
            };
            let trusted = self.trusted.load(ORDER);
            fence(Ordering::Acquire);
            if self.version.load(ORDER) == v1 {
                return trusted.then_some(snap);
            }
        }
        None
    }
}

impl Predictive {
    /// A selector over `backends`; `now` is the start of the run.
    pub fn new(backends: &[Backend], now: Instant) -> Predictive {
        Predictive {
            names: backends.iter().map(|b| b.name.clone()).collect(),
            labels: labels(backends),
            epoch: now,
            slots: backends
                .iter()
                .map(|_| Slot {
                    ewma: AtomicU64::new(f64::NAN.to_bits()),
                    var: AtomicU64::new(0f64.to_bits()),
                    answered: AtomicU64::new(0),
                    coef: Coef::new(),
                    fit: Mutex::new(Fit {
                        rls: Rls::new(LAMBDA),
                        scores: Scores::default(),
                    }),
                })
                .collect(),
            picks: crate::runtime::shard::shards(|| AtomicUsize::new(0)),
            explore_turn: AtomicUsize::new(0),
            fallback_turn: AtomicUsize::new(0),
            clock: AtomicU64::new(1),
            loads: Loads::new(backends.len()),
        }
    }

    /// Rolling R² of each backend's predictions against its answers (the
    /// last 200); `None` until there are enough, or if the answers have no
    /// variance. For metrics: takes each backend's lock.
    pub fn r_squared(&self) -> Vec<Option<f64>> {
        self.slots
            .iter()
            .map(|s| lock(&s.fit).scores.r_squared())
            .collect()
    }

    /// Features of a request sent to `i` at `now` with `inflight` already
    /// there. The EWMA feature is NaN if `i` has no answer yet.
    fn features(&self, i: usize, now: u64, inflight: usize) -> [f64; DIM] {
        let s = &self.slots[i];
        let since = now.saturating_sub(s.answered.load(ORDER)) as f64 / 1e9;
        [
            1.0,
            inflight as f64,
            f64::from_bits(s.ewma.load(ORDER)),
            f64::from_bits(s.var.load(ORDER)) / VAR_UNIT_MS2,
            since.min(MAX_IDLE_S),
            0.0, // request size: not known to the Selector API
        ]
    }

    /// The latency predicted for a request sent to `i` at `now`, ms; NaN
    /// if `i` is unmeasured.
    fn predict(&self, i: usize, now: u64) -> f64 {
        let s = &self.slots[i];
        let x = self.features(i, now, self.loads.get(i));
        routing_prediction(s.coef.read().as_ref(), &x)
    }

    fn measured(&self, i: usize) -> bool {
        f64::from_bits(self.slots[i].ewma.load(ORDER)).is_finite()
    }

    /// Round-robin over the eligible backends, measured ones only if
    /// `measured_only`.
    fn rotate(
        &self,
        turn: &AtomicUsize,
        eligible: &dyn Fn(usize) -> bool,
        measured_only: bool,
    ) -> Option<usize> {
        super::rotate(turn, self.slots.len(), |i| {
            eligible(i) && (!measured_only || self.measured(i))
        })
    }

    fn log_choice(&self, what: &str, i: usize) {
        if log_enabled!(Level::Debug) {
            debug!("[{TAG}] {what}: {}", self.names[i]);
        }
    }
}

/// The model's prediction if trusted and finite, else the EWMA; at least 0.
fn routing_prediction(model: Option<&Snapshot>, x: &[f64; DIM]) -> f64 {
    match model.map(|m| m.predict(x)) {
        Some(p) if p.is_finite() => p.max(0.0),
        _ => x[2],
    }
}

/// The lock even if poisoned: the model is plain numbers, checked on use.
fn lock(m: &Mutex<Fit>) -> MutexGuard<'_, Fit> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Selector for Predictive {
    fn name(&self) -> &'static str {
        NAME
    }

    fn gauges(&self) -> Vec<(&'static str, Vec<Option<f64>>)> {
        vec![("r_squared", self.r_squared())]
    }

    fn pick(&self, now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let now = stamp(self.epoch, now);
        for i in 0..self.slots.len() {
            if eligible(i) && !self.measured(i) && self.loads.get(i) == 0 {
                self.log_choice("probing unmeasured", i);
                return Some(i);
            }
        }
        let mine = self.picks.get(crate::runtime::shard::current());
        let explore =
            mine.is_some_and(|p| p.0.fetch_add(1, ORDER) % EXPLORE_EVERY == EXPLORE_EVERY - 1);
        if explore && let Some(i) = self.rotate(&self.explore_turn, eligible, true) {
            self.log_choice("exploring", i);
            return Some(i);
        }
        let mut best: Option<(f64, usize)> = None;
        for i in (0..self.slots.len()).filter(|&i| eligible(i)) {
            let p = self.predict(i, now);
            if p.is_finite() && best.is_none_or(|(b, _)| p < b) {
                best = Some((p, i));
            }
        }
        let chosen = match best {
            Some((_, i)) => i,
            None => self.rotate(&self.fallback_turn, eligible, false)?,
        };
        self.log_choice("chosen", chosen);
        Some(chosen)
    }

    fn observe(&self, attempt: Attempt, outcome: Outcome, now: Instant) {
        let backend = attempt.backend();
        debug_assert!(backend < self.slots.len(), "observe({backend})");
        let Some(s) = self.slots.get(backend) else {
            return;
        };
        let now = stamp(self.epoch, now);
        // A failure: twice the worst other EWMA, at least FAILURE_PENALTY.
        let worst = outcome
            .failed()
            .then(|| {
                let ewmas = self
                    .slots
                    .iter()
                    .map(|s| Some(f64::from_bits(s.ewma.load(ORDER))).filter(|e| e.is_finite()));
                super::worst_other(ewmas, backend)
            })
            .flatten();
        let y = millis(outcome.penalised(worst));
        let sent = attempt.at_send;
        // The sample is taken: the ticket's count (the probe) is released.
        drop(attempt);
        // EWMA and EW variance (West): d = y - mean; mean += αd;
        // var = (1-α)(var + αd²). Two atomics: a concurrent answer may
        // pair with the other's mean, a benign race.
        let mut prev = f64::NAN;
        let _ = s.ewma.fetch_update(ORDER, ORDER, |bits| {
            prev = f64::from_bits(bits);
            let next = if prev.is_finite() {
                prev + ALPHA * (y - prev)
            } else {
                y
            };
            Some(next.to_bits())
        });
        if prev.is_finite() {
            let d = y - prev;
            let _ = s.var.fetch_update(ORDER, ORDER, |bits| {
                let next = (1.0 - ALPHA) * (f64::from_bits(bits) + ALPHA * d * d);
                Some(if next.is_finite() { next } else { 0.0 }.to_bits())
            });
        }
        s.answered.fetch_max(now, ORDER);
        self.clock.fetch_max(now, ORDER);
        // Learn only from sends that had an EWMA (not the probe).
        let f = sent;
        if !f[1].is_finite() {
            return;
        }
        let mut fit = match s.fit.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        // Feature 6 (request size) is not known to the Selector API: 0.
        let x = [1.0, f[0], f[1], f[2], f[3], 0.0];
        let before = routing_prediction(s.coef.read().as_ref(), &x);
        fit.scores.record(before, y);
        fit.rls.update(&x, y);
        s.coef.publish(&fit.rls);
    }

    fn estimates(&self) -> Vec<Option<f64>> {
        let now = self.clock.load(ORDER);
        let est: Vec<Option<f64>> = (0..self.slots.len())
            .map(|i| Some(self.predict(i, now)).filter(|p| p.is_finite()))
            .collect();
        if log_enabled!(Level::Trace) {
            log::trace!("{}", estimates_line(TAG, &self.labels, &est));
        }
        est
    }

    /// Each measured kept backend's EWMA, variance, last answer, model
    /// and R² window; not its in-flight count, sends or probe.
    fn inherit(&self, old: &dyn Selector, map: &[Option<usize>], _now: Instant) {
        let Some(old) = old.as_any().downcast_ref::<Self>() else {
            return;
        };
        let restamp = |t: u64| super::reload::restamp(t, old.epoch, self.epoch);
        for (i, j) in super::reload::kept(map, self.slots.len(), old.slots.len()) {
            if !old.measured(j) {
                continue; // probed again, as a new backend
            }
            let (s, from) = (&self.slots[i], &old.slots[j]);
            s.ewma.store(from.ewma.load(ORDER), ORDER);
            s.var.store(from.var.load(ORDER), ORDER);
            let answered = from.answered.load(ORDER);
            if answered != 0 {
                s.answered.store(restamp(answered), ORDER);
            }
            let (rls, scores) = {
                let f = lock(&from.fit);
                (f.rls.clone(), f.scores.clone())
            };
            let mut fit = lock(&s.fit);
            fit.rls = rls;
            fit.scores = scores;
            s.coef.publish(&fit.rls);
        }
        self.clock.fetch_max(restamp(old.clock.load(ORDER)), ORDER);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn epoch(&self) -> Option<Instant> {
        Some(self.epoch)
    }

    /// The ticket carries the send's features 2-5 for `observe`.
    fn on_send(&self, backend: usize, now: Instant) -> Attempt {
        if backend >= self.slots.len() {
            return Attempt::new(backend, now);
        }
        let before = self.loads.get(backend);
        let x = self.features(backend, stamp(self.epoch, now), before);
        let mut attempt = Attempt::counted(backend, now, self.loads.take(backend));
        attempt.at_send = [x[1], x[2], x[3], x[4]];
        attempt
    }
}
