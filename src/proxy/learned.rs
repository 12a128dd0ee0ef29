//! Learned concurrency limits at run time (`--policy adaptive`): feeds the
//! pure limiters of `balance::limit` and applies what they learn to the
//! backends' [`Slots`].
//!
//! - Per answered request, the worker that ran it records the latency and
//!   the in-flight count it was sent at into its OWN window set (one
//!   [`Window`] per backend, behind a mutex on its own cache lines: only
//!   that worker and the tick ever lock it, so it is uncontended but for
//!   one moment per tick; no line is written by two workers per request).
//! - Every [`TICK`], the first worker between event batches to notice wins
//!   a compare-exchange of the tick stamp, takes every worker's windows,
//!   merges them per backend, calls [`Gradient::update`] once per backend
//!   and stores each limit in the backend's slot, where `try_acquire`
//!   enforces it for every worker. The request path never waits for this.
//!
//! A reload keeps the limiter of each backend that stays (same address),
//! as the slots do; a new backend starts unlimited and learns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use crate::balance::limit::{Gradient, GradientConfig, Phase, Window};
use crate::config::BackendAddr;

use super::slots::Slots;

/// How often the windows are folded into the limiters: the period the
/// limiter's constants are tuned for (`docs/adaptive.md`: 100 ms windows,
/// merged further until `MIN_SAMPLES` answers), short enough to react to an
/// overloaded backend within a few hundred ms.
pub const TICK: Duration = Duration::from_millis(100);

/// One worker's windows, on their own cache-line pair.
#[derive(Debug, Default)]
#[repr(align(128))]
struct WorkerWindows(Mutex<Vec<Window>>);

/// The limiters and the tick's scratch space, behind the tick's lock.
#[derive(Debug)]
struct Core {
    gradients: Vec<Gradient>,
    merged: Vec<Window>,
}

/// Every backend's learned limit, for one configuration generation.
#[derive(Debug)]
pub struct Learned {
    workers: Vec<WorkerWindows>,
    core: Mutex<Core>,
    /// Nanoseconds after `epoch` when the next tick is due.
    next_tick: AtomicU64,
    epoch: Instant,
    /// Each backend's address, for carrying limiters over a reload.
    addrs: Vec<std::net::SocketAddr>,
}

impl Learned {
    /// Limiters for `backends`, used by `workers` workers. With `prev` (a
    /// reload), a backend whose address was there keeps its limiter.
    pub fn new(
        backends: &[BackendAddr],
        workers: usize,
        prev: Option<&Learned>,
        now: Instant,
    ) -> Learned {
        let old = prev.and_then(|p| p.core.lock().ok().map(|c| (p, c.gradients.clone())));
        let gradients = backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let kept = old.as_ref().and_then(|(p, g)| {
                    let j = p.addrs.iter().position(|a| *a == b.addr)?;
                    g.get(j).cloned()
                });
                kept.unwrap_or_else(|| {
                    let cfg = GradientConfig {
                        seed: i as u64 + 1,
                        ..GradientConfig::default()
                    };
                    Gradient::new(cfg, now)
                })
            })
            .collect();
        let n = backends.len();
        Learned {
            workers: (0..workers.max(1))
                .map(|_| WorkerWindows(Mutex::new(vec![Window::new(); n])))
                .collect(),
            core: Mutex::new(Core {
                gradients,
                merged: vec![Window::new(); n],
            }),
            next_tick: AtomicU64::new(nanos(TICK)),
            epoch: now,
            addrs: backends.iter().map(|b| b.addr).collect(),
        }
    }

    /// Records one answered request of backend `b`, run by `worker`:
    /// `latency`, sent while `at_send` requests (itself included) were in
    /// flight to `b`. Never blocks for long: the lock is this worker's own.
    pub fn record(&self, worker: usize, b: usize, latency: Duration, at_send: u32) {
        let Some(w) = self.workers.get(worker) else {
            return;
        };
        let mut windows = match w.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(win) = windows.get_mut(b) {
            win.record(latency, at_send);
        }
    }

    /// Folds the windows into the limiters if a [`TICK`] has passed, and
    /// stores the limits in `slots`. Cheap when not due (one relaxed load);
    /// call it between event batches, never inside a request's event.
    pub fn tick(&self, now: Instant, slots: &Slots) {
        let t = nanos(now.saturating_duration_since(self.epoch));
        let due = self.next_tick.load(Ordering::Relaxed);
        if t < due
            || self
                .next_tick
                .compare_exchange(due, t + nanos(TICK), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mut core = match self.core.try_lock() {
            Ok(c) => c,
            // Another tick still running (it took longer than a TICK).
            Err(TryLockError::WouldBlock) => return,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let Core { gradients, merged } = &mut *core;
        for w in &self.workers {
            let mut windows = match w.0.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            for (m, win) in merged.iter_mut().zip(windows.iter_mut()) {
                m.merge(win);
                win.clear();
            }
        }
        // One probe at a time across the backends (see `update_with`).
        let mut probing = gradients.iter().any(Gradient::probing);
        for (b, (g, m)) in gradients.iter_mut().zip(merged.iter_mut()).enumerate() {
            let before = g.limit();
            g.update_with(m, now, !probing);
            probing |= g.probing();
            m.clear();
            let limit = g.limit();
            if limit != before {
                log::debug!(
                    "[adaptive] backend {} limit {} -> {} ({:?})",
                    self.addrs
                        .get(b)
                        .map_or_else(String::new, |a| a.to_string()),
                    show(before),
                    show(limit),
                    g.phase()
                );
            }
            if let Some(slot) = slots.get(b) {
                slot.limits.set_learned(limit);
            }
        }
    }

    /// Each backend's learned limit (`None`: unlimited) and phase, for
    /// `/stats` and `/metrics`. Locks the tick's lock briefly.
    pub fn snapshot(&self) -> Vec<(Option<u32>, Phase)> {
        match self.core.lock() {
            Ok(c) => c
                .gradients
                .iter()
                .map(|g| (g.learned(), g.phase()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// A limit for the log.
fn show(limit: Option<u32>) -> String {
    limit.map_or_else(|| "none".to_string(), |l| l.to_string())
}

/// `d` in nanoseconds, saturating (u64 nanoseconds last 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: u16) -> Vec<BackendAddr> {
        (0..n)
            .map(|i| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i));
                BackendAddr::new(addr.to_string(), addr)
            })
            .collect()
    }

    /// Drives `learned` like a capacity-`cap` backend (20 ms answers up to
    /// `cap` in flight, slower in proportion beyond) with `demand` requests
    /// always in flight through the slots, for `ticks` ticks.
    fn drive(learned: &Learned, slots: &Slots, cap: u32, demand: u32, ticks: u32, t0: Instant) {
        let mut now = t0;
        for _ in 0..ticks {
            now += TICK;
            let limit = slots.get(0).map_or(u32::MAX, |s| s.limits.effective());
            let inflight = demand.min(limit);
            let latency_ms = 20.0 * f64::from(inflight.max(cap)) / f64::from(cap);
            // Little's law: answers per tick at this concurrency.
            let answers = (f64::from(inflight) * 100.0 / latency_ms).round() as u32;
            for i in 0..answers {
                let worker = (i % 2) as usize;
                learned.record(
                    worker,
                    0,
                    Duration::from_secs_f64(latency_ms / 1e3),
                    inflight,
                );
            }
            learned.tick(now, slots);
        }
    }

    #[test]
    fn a_capacity_backend_gets_a_limit_near_its_capacity_in_its_slot() {
        let t0 = Instant::now();
        let b = backends(1);
        let slots = Slots::build(&b, None, true);
        let learned = Learned::new(&b, 2, None, t0);
        drive(&learned, &slots, 8, 40, 300, t0);
        let limit = slots.get(0).map(|s| s.limits.effective());
        assert!(
            limit.is_some_and(|l| (8..=12).contains(&l)),
            "limit {limit:?}, want about 8"
        );
    }

    #[test]
    fn a_flat_backend_stays_unlimited() {
        let t0 = Instant::now();
        let b = backends(1);
        let slots = Slots::build(&b, None, true);
        let learned = Learned::new(&b, 2, None, t0);
        // Capacity far above demand: latency flat at 20 ms.
        drive(&learned, &slots, 1000, 40, 300, t0);
        assert_eq!(learned.snapshot()[0].0, None);
    }

    #[test]
    fn a_reload_keeps_a_learned_limit_by_address() {
        let t0 = Instant::now();
        let b = backends(1);
        let slots = Slots::build(&b, None, true);
        let learned = Learned::new(&b, 2, None, t0);
        drive(&learned, &slots, 8, 40, 300, t0);
        let learned_limit = learned.snapshot()[0].0;
        assert!(learned_limit.is_some());
        let mut more = backends(2);
        more.reverse();
        let next = Learned::new(&more, 2, Some(&learned), t0);
        assert_eq!(next.snapshot()[1].0, learned_limit, "kept by address");
        assert_eq!(next.snapshot()[0].0, None, "a new backend starts unlimited");
    }

    #[test]
    fn a_tick_before_its_time_changes_nothing() {
        let t0 = Instant::now();
        let b = backends(1);
        let slots = Slots::build(&b, None, true);
        let learned = Learned::new(&b, 1, None, t0);
        learned.record(0, 0, Duration::from_millis(5), 1);
        learned.tick(t0 + TICK / 2, &slots);
        let pending = learned.workers[0]
            .0
            .lock()
            .map(|w| w[0].count())
            .unwrap_or(0);
        assert_eq!(pending, 1, "not folded before the tick is due");
        learned.tick(t0 + TICK, &slots);
        let pending = learned.workers[0]
            .0
            .lock()
            .map(|w| w[0].count())
            .unwrap_or(1);
        assert_eq!(pending, 0, "folded once due");
    }
}
