//! Tail-budget on a reload (see `balance::reload`): each kept backend's
//! answers and load fit are carried, then the LP solves the shares of the
//! new set at once instead of waiting for the next [`PERIOD`](super::PERIOD).
//!
//! Before that solve, shares follow the module's rule for unmeasured
//! backends: each new (or still unmeasured) backend holds the equal share
//! `1/n` every backend starts with, and the measured kept backends share
//! the rest in proportion to their old shares. The solve then moves the
//! measured ones towards the LP target as any periodic one does (and
//! leaves them so if no send is old enough to be in a window yet).

use std::sync::TryLockError;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::Selector;
use super::super::reload::{kept, restamp};
use super::dispatch::stamp;
use super::{TailBudget, units};

/// Relaxed: as in the rest of the policy, each atomic stands alone, and
/// the new selector takes no traffic yet.
const ORDER: Ordering = Ordering::Relaxed;

/// [`Selector::inherit`] for [`TailBudget`].
pub(super) fn inherit(new: &TailBudget, old: &dyn Selector, map: &[Option<usize>], now: Instant) {
    let Some(old) = old.as_any().downcast_ref::<TailBudget>() else {
        return;
    };
    let n = new.slots.len();
    if n == 0 {
        return;
    }
    // 1. Answers and fits of the measured kept backends.
    let mut carried: Vec<(usize, f64)> = Vec::with_capacity(n);
    for (i, j) in kept(map, n, old.slots.len()) {
        let (slot, from) = (&new.slots[i], &old.slots[j]);
        if !from.answers.measured() {
            continue; // probed again, as a new backend
        }
        slot.answers
            .take_over(&from.answers, |t| restamp(t, old.epoch, new.epoch));
        slot.load.take_over(&from.load);
        carried.push((i, f64::from_bits(old.shares[j].load(ORDER))));
    }
    if carried.is_empty() {
        return;
    }
    // 2. Starting shares: 1/n for the unmeasured, the rest by old share.
    let equal = 1.0 / n as f64;
    let rest = equal * carried.len() as f64;
    let old_mass: f64 = carried.iter().map(|&(_, w)| w).sum();
    for &(i, w) in &carried {
        let share = if old_mass > 0.0 {
            rest * w / old_mass
        } else {
            equal
        };
        new.shares[i].store(share.to_bits(), ORDER);
    }
    for (i, share) in new.weights().into_iter().enumerate() {
        let floor = u64::from(new.slots[i].answers.measured());
        new.swrr.set(i, units(share).max(floor));
    }
    new.threshold.store(old.threshold.load(ORDER), ORDER);
    // 3. The LP for the new set, now, as the periodic solve would.
    let t = stamp(new.epoch, now);
    new.recomputed.store(t, ORDER);
    let mut scratch = match new.scratch.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        // Taking no traffic yet, nobody else recomputes: left to the
        // next period if that ever changes.
        Err(TryLockError::WouldBlock) => return,
    };
    new.recompute(&mut scratch, t);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::super::test_util::*;
    use super::*;

    /// Sends to `b` at `t`, answered `ms` later.
    fn exchange(s: &TailBudget, b: usize, ms: u64, t: Instant) {
        let ticket = s.on_send(b, t);
        let done = t + Duration::from_millis(ms);
        s.observe(ticket, ok(ms), done);
    }

    #[test]
    fn the_lp_is_solved_for_the_new_set_at_once() {
        let t0 = Instant::now();
        let old = TailBudget::new(&backends(3), None, t0);
        for k in 0..80 {
            let t = at(t0, 400 * k);
            old.tick_pick(t, &every);
            for (b, ms) in [(0, 10), (1, 100), (2, 300)] {
                exchange(&old, b, ms, t);
            }
        }
        // T follows the fast backend: the other two both sit at the floor.
        let w = old.weights();
        assert!(w[0] > 0.9 && (w[1] - w[2]).abs() < 1e-6, "{w:?}");
        assert_eq!(old.threshold_ms(), Some(10.5));
        // The fast backend goes: the new set is [old 2, old 1].
        let now = at(t0, 400 * 80);
        let new = TailBudget::new(&backends(2), None, t0);
        new.inherit(&old, &[Some(2), Some(1)], now);
        // Carried 50/50, then solved at once for T = 1.05 x 100 ms: the
        // 100 ms backend takes nearly all, without waiting for a period.
        assert_eq!(new.threshold_ms(), Some(105.0));
        let w = new.weights();
        assert!(w[1] > 0.9 && w[0] >= 0.0099, "{w:?}");
        let picks = (0..100)
            .filter(|_| new.tick_pick(now, &every) == Some(1))
            .count();
        assert!(picks >= 90, "{picks}");
    }
}
