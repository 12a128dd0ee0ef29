//! `tail-budget`: an SLO-aware mix. Every [`PERIOD`] it chooses traffic
//! shares that minimise the expected mean latency while at most [`BUDGET`]
//! of requests are slower than a threshold `T`, and applies them with
//! smooth weighted round-robin; an overload guard redirects a pick that
//! in-flight load would slow down too much.
//!
//! # Per request (lock-free, no allocation)
//! - `pick`: a cold-start probe if a backend is unmeasured (one request at
//!   a time, as `lowest`), else SWRR over the measured backends
//!   (`swrr`), then the guard: if the pick's fitted `(base +
//!   slope·inflight) / base` exceeds [`GUARD_SLOWDOWN`], the least-slowed
//!   measured backend takes the request instead. Nothing measured and every
//!   probe in flight: round-robin.
//! - `on_send`: the global in-flight count per backend, held by the
//!   `Attempt` ticket (which also carries the in-flight count before the
//!   send, for the load fit); the send is logged (`dispatch`) so the
//!   recompute sees requests still unanswered, and `observe` consumes the
//!   ticket's exact entry.
//! - `observe`: the sample and its send time (`now - latency`) go into the
//!   backend's ring of recent answers (`window`); a success feeds the load
//!   fit (`fit`) with its ticket's in-flight count. A failure (5xx
//!   included) goes in flagged, with its penalty (`Outcome::penalised`) as its latency: it
//!   counts as tail whatever `T` is, and its penalty enters the mean, so a
//!   backend failing fast drops to its [`FLOOR`].
//!
//! # Every [`PERIOD`] (one thread, off the request path)
//! `Selector::tick`, which every worker calls between batches of events
//! (`Session::between_batches`, never inside a request's handling), notices
//! the period elapsed; the first caller to win a compare-exchange of the
//! recompute stamp `try_lock`s the scratch `Mutex` (it cannot be contended
//! but for a recompute longer than a period) and:
//! 1. takes each backend's sample set (`window`): the [`WINDOW`] requests
//!    most recently sent among those sent at least `H` ago (`H` = its
//!    longest answer seen), unanswered ones counted as tail. Ordered by
//!    send time, not completion, so a burst's slow answers arriving last
//!    do not fill the window; censored, so a backend whose slow answers
//!    are still out (or that hangs) does not look fast;
//! 2. `T` = the SLO if given, else [`T_FACTOR`] × the lowest backend p95;
//! 3. per backend mean and `P(L > T)`; backends the windows cannot tell
//!    apart are pooled into one estimate (`ties`); the LP (`lp`, exact)
//!    gives target shares with a [`FLOOR`] each (scaled by the backends'
//!    weights), so every backend keeps being measured, and each tied
//!    group's share is split among its members by weight;
//! 4. shares move [`DAMPING`] of the way to the target, or further if that
//!    is what it takes to bring the mix back within the budget (by the
//!    current estimates): damping smooths the mean, never the tail
//!    constraint. They become the SWRR weights. Unmeasured backends keep
//!    their share until measured (shares by weight at start; equal by
//!    default).

mod carry;
mod fit;
mod lp;
mod ties;
mod tuning;
mod window;

pub(super) mod dispatch;

#[cfg(test)]
pub(super) mod sim;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tie_tests;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use log::{Level, debug, log_enabled};

use self::dispatch::{SendLog, stamp};
use self::fit::LoadFit;
use self::lp::Arm;
use self::ties::Stats;
use self::window::{Censored, Samples};
use super::swrr::{SCALE, Swrr};
use super::{Attempt, Loads};
use super::{Backend, Outcome, Selector, estimates_line, labels, millis};

/// CSV `routing_mode` name.
pub(super) const NAME: &str = "tail-budget";

/// Log tag: `[TB] chosen: 127.0.0.1:8082`.
const TAG: &str = "TB";

use tuning::TAIL_QUANTILE;
pub use tuning::{BUDGET, DAMPING, FLOOR, GUARD_SLOWDOWN, PERIOD, T_FACTOR, WINDOW};

/// Relaxed everywhere: each atomic is a value on its own (the dispatch log
/// orders its own slots); the races are those of `lowest`, benign.
const ORDER: Ordering = Ordering::Relaxed;

/// The tail-budget selector; see the module doc.
#[derive(Debug)]
pub struct TailBudget {
    /// `tail-budget`, or `adaptive` (see [`TailBudget::named`]).
    name: &'static str,
    names: Vec<String>,
    /// Configured weights: each backend's [`FLOOR`] and starting share
    /// scale with its weight.
    weights: Vec<u32>,
    labels: Vec<String>,
    slo: Option<Duration>,
    epoch: Instant,
    slots: Box<[Slot]>,
    swrr: Swrr,
    /// Current damped shares, f64 bits, summing to 1.
    shares: Box<[AtomicU64]>,
    /// Last `T` in ms, f64 bits; NaN until the first recompute.
    threshold: AtomicU64,
    /// Stamp of the last recompute; 0 before the first.
    recomputed: AtomicU64,
    scratch: Mutex<Scratch>,
    /// Round-robin while nothing is measured.
    fallback_turn: AtomicUsize,
    /// Requests in flight per backend (the guard's load; one probe at a
    /// time).
    loads: Loads,
}

#[derive(Debug)]
struct Slot {
    answers: Samples,
    /// Each send's stamp, until its `observe`: the unanswered requests.
    sends: SendLog,
    load: LoadFit,
}

/// The recompute's buffers, allocated once.
#[derive(Debug)]
struct Scratch {
    /// Per backend: the LP's answered samples, sorted, ns; its censored.
    samples: Vec<Vec<u64>>,
    censored: Vec<Censored>,
    answers: Vec<(u64, u64)>,
    ages: Vec<u64>,
    members: Vec<usize>,
    /// Per member: window statistics, tie order and group leader.
    stats: Vec<Stats>,
    order: Vec<usize>,
    group: Vec<usize>,
    arms: Vec<Arm>,
    target: Vec<f64>,
}

impl TailBudget {
    /// The same selector reporting `name` (the `adaptive` policy is
    /// tail-budget routing plus learned limits the proxy enforces).
    pub fn named(mut self, name: &'static str) -> TailBudget {
        self.name = name;
        self
    }

    /// A selector over `backends`; `slo` fixes `T` (else it follows the
    /// best backend's p95); `now` is the start of the run.
    pub fn new(backends: &[Backend], slo: Option<Duration>, now: Instant) -> TailBudget {
        let n = backends.len();
        let weights: Vec<u32> = backends.iter().map(|b| b.weight.max(1)).collect();
        let total = f64::from(weights.iter().sum::<u32>()).max(1.0);
        let start = |i: usize| f64::from(weights[i]) / total;
        let swrr = Swrr::new(n, 0);
        for i in 0..n {
            swrr.set(i, units(start(i)));
        }
        TailBudget {
            name: NAME,
            names: backends.iter().map(|b| b.name.clone()).collect(),
            labels: labels(backends),
            slo,
            epoch: now,
            slots: (0..n)
                .map(|_| Slot {
                    answers: Samples::new(),
                    sends: SendLog::default(),
                    load: LoadFit::default(),
                })
                .collect(),
            swrr,
            shares: (0..n).map(|i| AtomicU64::new(start(i).to_bits())).collect(),
            threshold: AtomicU64::new(f64::NAN.to_bits()),
            recomputed: AtomicU64::new(0),
            scratch: Mutex::new(Scratch {
                samples: (0..n).map(|_| Vec::with_capacity(WINDOW)).collect(),
                censored: vec![Censored::default(); n],
                answers: Vec::with_capacity(window::RING + dispatch::SLOTS),
                ages: Vec::with_capacity(dispatch::SLOTS),
                members: Vec::with_capacity(n),
                stats: Vec::with_capacity(n),
                order: Vec::with_capacity(n),
                group: Vec::with_capacity(n),
                arms: Vec::with_capacity(n),
                target: Vec::with_capacity(n),
            }),
            fallback_turn: AtomicUsize::new(0),
            loads: Loads::new(n),
            weights,
        }
    }

    /// The current traffic shares (sum 1), for metrics.
    pub fn weights(&self) -> Vec<f64> {
        self.shares
            .iter()
            .map(|s| f64::from_bits(s.load(ORDER)))
            .collect()
    }

    /// The current threshold `T` in ms; `None` before the first recompute.
    pub fn threshold_ms(&self) -> Option<f64> {
        Some(f64::from_bits(self.threshold.load(ORDER))).filter(|t| t.is_finite())
    }

    /// Runs the recompute if a period has elapsed and this thread wins it.
    fn maybe_recompute(&self, now: u64) {
        let last = self.recomputed.load(ORDER);
        if now < last.saturating_add(nanos(PERIOD)) {
            return;
        }
        if self
            .recomputed
            .compare_exchange(last, now, ORDER, ORDER)
            .is_err()
        {
            return;
        }
        let mut scratch = match self.scratch.try_lock() {
            Ok(guard) => guard,
            // A panic mid-recompute left the buffers in some state; they
            // are all cleared before use.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        self.recompute(&mut scratch, now);
    }

    fn recompute(&self, s: &mut Scratch, now: u64) {
        let Scratch {
            samples,
            censored,
            answers,
            ages,
            members,
            stats,
            order,
            group,
            arms,
            target,
        } = s;
        // 1. The sample sets.
        let mut best_p95 = f64::INFINITY;
        for (i, ((slot, v), c)) in (self.slots.iter())
            .zip(samples.iter_mut())
            .zip(censored.iter_mut())
            .enumerate()
        {
            answers.clear();
            slot.answers.collect(answers);
            ages.clear();
            slot.sends.pending_ages(now, |age| ages.push(age));
            *c = window::select(answers, ages, self.loads.get(i), now, v);
            // Censored samples rank above every answer.
            let rank = (TAIL_QUANTILE * (v.len() + c.count) as f64).ceil() as usize;
            if let Some(&p95) = v.get(rank.max(1) - 1) {
                best_p95 = best_p95.min(p95 as f64);
            }
        }
        // 2. The threshold, ns: infinite if every backend's p95 is still
        // out (then only the censored count as tail).
        let t = match self.slo {
            Some(slo) => nanos(slo) as f64,
            None => T_FACTOR * best_p95,
        };
        if t.is_finite() {
            self.threshold.store((t / 1e6).to_bits(), ORDER);
        }
        // 3. The LP over the measured backends, ties pooled (`ties`).
        members.clear();
        stats.clear();
        for (i, (v, c)) in samples.iter().zip(censored.iter()).enumerate() {
            if let Some(s) = Stats::of(v, c, t) {
                members.push(i);
                stats.push(s);
            }
        }
        if members.is_empty() {
            return; // nothing measured yet
        }
        ties::pool(stats, order, group, arms);
        for (arm, &i) in arms.iter_mut().zip(members.iter()) {
            arm.weight = f64::from(self.weights.get(i).copied().unwrap_or(1));
        }
        target.clear();
        target.resize(arms.len(), 0.0);
        lp::solve(arms, BUDGET, FLOOR, target);
        ties::spread(group, arms, target);
        // 4. Damp; the measured backends share what the unmeasured leave.
        let share = |i: usize| f64::from_bits(self.shares[i].load(ORDER));
        let mass: f64 = members.iter().map(|&i| share(i)).sum();
        let mass = mass.max(f64::MIN_POSITIVE);
        let tail_now: f64 = (members.iter().zip(arms.iter()))
            .map(|(&i, a)| share(i) / mass * a.tail)
            .sum();
        let tail_goal: f64 = (target.iter().zip(arms.iter()))
            .map(|(w, a)| w * a.tail)
            .sum();
        // The smallest step that brings the mix's tail within the budget.
        let mut step = DAMPING;
        if tail_now > BUDGET && tail_now > tail_goal {
            step = step.max((tail_now - BUDGET) / (tail_now - tail_goal));
        }
        let step = step.min(1.0);
        for (&i, &goal) in members.iter().zip(target.iter()) {
            let cur = share(i);
            let next = cur + step * (mass * goal - cur);
            self.shares[i].store(next.to_bits(), ORDER);
        }
        let total: f64 = (0..self.slots.len()).map(share).sum();
        for i in 0..self.slots.len() {
            let w = if total > 0.0 { share(i) / total } else { 0.0 };
            self.shares[i].store(w.to_bits(), ORDER);
            // A measured backend never drops to weight 0 (its floor).
            let floor = u64::from(members.contains(&i));
            self.swrr.set(i, units(w).max(floor));
        }
        if log_enabled!(Level::Debug) {
            let shares: Vec<String> = (self.labels.iter().zip(self.weights()))
                .map(|(label, w)| format!("{label}={:.1}%", w * 100.0))
                .collect();
            debug!("[{TAG}] T={:.1}ms shares {}", t / 1e6, shares.join(" "));
            debug!("{}", estimates_line(TAG, &self.labels, &self.estimates()));
        }
    }

    /// `(slowdown, predicted ms)` of sending to `i` now.
    fn load_cost(&self, i: usize) -> (f64, f64) {
        let slot = &self.slots[i];
        let x = self.loads.get(i) as f64;
        match slot.load.line() {
            Some(line) => (line.slowdown(x), line.predict(x)),
            None => (1.0, slot.answers.mean_ms().unwrap_or(f64::INFINITY)),
        }
    }

    /// The overload guard: `chosen`, or the least-slowed measured backend
    /// if load would slow `chosen` by more than [`GUARD_SLOWDOWN`].
    fn guard(&self, chosen: usize, eligible: &dyn Fn(usize) -> bool) -> usize {
        let own = self.load_cost(chosen);
        if own.0 <= GUARD_SLOWDOWN {
            return chosen;
        }
        let mut best = (own, chosen);
        for (i, slot) in self.slots.iter().enumerate() {
            if i == chosen || !eligible(i) || !slot.answers.measured() {
                continue;
            }
            let cost = self.load_cost(i);
            let (a, b) = (cost, best.0);
            if a.0 < b.0 || (a.0 == b.0 && a.1 < b.1) {
                best = (cost, i);
            }
        }
        best.1
    }

    fn fallback(&self, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        super::rotate(&self.fallback_turn, self.slots.len(), eligible)
    }

    fn log_choice(&self, what: &str, i: usize) {
        if log_enabled!(Level::Debug) {
            debug!("[{TAG}] {what}: {}", self.names[i]);
        }
    }
}

impl Selector for TailBudget {
    fn name(&self) -> &'static str {
        self.name
    }

    fn gauges(&self) -> Vec<(&'static str, Vec<Option<f64>>)> {
        vec![("weight", self.weights().into_iter().map(Some).collect())]
    }

    fn tick(&self, now: Instant) {
        self.maybe_recompute(stamp(self.epoch, now));
    }

    fn pick(&self, _now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        for (i, slot) in self.slots.iter().enumerate() {
            if eligible(i) && !slot.answers.measured() && self.loads.get(i) == 0 {
                self.log_choice("probing unmeasured", i);
                return Some(i);
            }
        }
        let measured = |i: usize| eligible(i) && self.slots[i].answers.measured();
        let chosen = match self.swrr.pick(measured) {
            Some(i) => self.guard(i, eligible),
            None => self.fallback(eligible)?,
        };
        self.log_choice("chosen", chosen);
        Some(chosen)
    }

    fn observe(&self, attempt: Attempt, outcome: Outcome, now: Instant) {
        let backend = attempt.backend();
        debug_assert!(backend < self.slots.len(), "observe({backend})");
        let Some(slot) = self.slots.get(backend) else {
            return;
        };
        let (raw, ok) = match outcome {
            Outcome::Success { latency } => (latency, true),
            Outcome::Failure { elapsed } => (elapsed, false),
        };
        let now = stamp(self.epoch, now);
        let sent = now.saturating_sub(nanos(raw));
        // A failure goes in at its real send time, flagged: always tail,
        // its penalty (twice the worst other mean, at least
        // FAILURE_PENALTY) in the mean (see `window`).
        let worst = (!ok)
            .then(|| super::worst_other(self.slots.iter().map(|s| s.answers.mean_ms()), backend))
            .flatten();
        slot.answers
            .record(sent.max(1), outcome.penalised(worst), !ok);
        // Taken even for a failure, so it is not counted as pending; an
        // entry already overwritten holds nothing to take.
        let (at, sent_stamp) = attempt.logged;
        let _ = slot.sends.take(at, sent_stamp);
        if ok {
            slot.load.add(attempt.at_send[0], millis(raw));
        }
    }

    fn estimates(&self) -> Vec<Option<f64>> {
        self.slots.iter().map(|s| s.answers.mean_ms()).collect()
    }

    fn inherit(&self, old: &dyn Selector, map: &[Option<usize>], now: Instant) {
        carry::inherit(self, old, map, now);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn epoch(&self) -> Option<Instant> {
        Some(self.epoch)
    }

    fn on_send(&self, backend: usize, now: Instant) -> Attempt {
        let before = self.loads.get(backend);
        let mut attempt = Attempt::counted(backend, now, self.loads.take(backend));
        if let Some(slot) = self.slots.get(backend) {
            let sent = stamp(self.epoch, now);
            attempt.logged = (slot.sends.record(sent), sent);
        }
        attempt.at_send[0] = before as f64;
        attempt
    }
}

/// A share as SWRR units.
fn units(share: f64) -> u64 {
    (share.clamp(0.0, 1.0) * SCALE as f64).round() as u64
}

/// A duration in ns, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
