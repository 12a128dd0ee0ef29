//! Carrying learned state over a reload.
//!
//! A reload (SIGHUP, `POST /api/reload`) builds a new selector for the new
//! backend list; the old one keeps serving the requests it picked until
//! they finish. The new one takes over, for every backend that stays (same
//! address), what the old one learned ([`Selector::inherit`]):
//! - SMA: the window's samples (the newest ones if the window shrank);
//!   EWMA: the average (a new `alpha` applies from the next sample);
//! - peak-EWMA: the estimate and its time stamp (a new decay applies from
//!   then on);
//! - predictive: the latency EWMA and variance, the time of the last
//!   answer, the regression and its R² window;
//! - tail-budget: the ring of answers and the load fit; the shares are
//!   re-solved by the LP for the new set at once (the kept backends start
//!   from their old shares, a new backend from an equal share);
//! - round-robin, least-conn, P2C: nothing (they learn nothing but the
//!   requests in flight).
//!
//! Not carried: requests in flight (they finish against the old selector,
//! which their tickets go back to, so the new one never sees those
//! answers and starts at 0 in flight), the dispatch logs of their sends,
//! and cold-start probes. A backend that
//! stays but was still unmeasured is probed again, as is every new one.
//! A policy change on reload starts fresh: `inherit` only takes state from
//! a selector of its own type.
//!
//! # Time stamps
//! Policies stamp events in ns since their epoch (`build`'s `now`).
//! [`rebuild`] builds the successor with the old epoch ([`Selector::epoch`])
//! so inherited stamps (tail-budget's send times, predictive's last
//! answer, peak-EWMA's last update) keep their meaning exactly. With a
//! later epoch (`build(.., now)` then `inherit`), a stamp from before it is
//! moved up to the epoch: peak-EWMA decays the estimate to the epoch first
//! (exact), the others lose that much age (tail-budget's older answers wait
//! up to one horizon `H` before the LP sees them again).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Backend, Policy, PolicyError, Selector, build};

/// `map[i] = Some(j)` when `new[i]` has the address of `old[j]` (a backend
/// that stays), `None` for a new one: the map [`Selector::inherit`] takes.
/// An address listed twice maps one to one, in order (as
/// `proxy::reload::map_backends`). Bounded: n x m comparisons.
pub fn carry_map(old: &[Backend], new: &[Backend]) -> Vec<Option<usize>> {
    let mut taken = vec![false; old.len()];
    new.iter()
        .map(|b| {
            let j = (0..old.len()).find(|&j| !taken[j] && old[j].addr == b.addr)?;
            taken[j] = true;
            Some(j)
        })
        .collect()
}

/// The selector replacing `old` on a reload: [`build`] with `old`'s epoch
/// (so inherited stamps keep their meaning; `now` if `old` keeps none or
/// its epoch is later), then [`Selector::inherit`] at `now`. `map` as
/// [`carry_map`] gives it.
pub fn rebuild(
    policy: &Policy,
    backends: &[Backend],
    old: &dyn Selector,
    map: &[Option<usize>],
    now: Instant,
) -> Result<Arc<dyn Selector>, PolicyError> {
    let epoch = old.epoch().map_or(now, |e| e.min(now));
    let new = build(policy, backends, epoch)?;
    new.inherit(old, map, now);
    Ok(new)
}

/// The kept backends: `(new index, old index)` for each `Some` entry of
/// `map` within `0..new_len` whose old index is below `old_len`.
pub(super) fn kept(
    map: &[Option<usize>],
    new_len: usize,
    old_len: usize,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    map.iter()
        .take(new_len)
        .enumerate()
        .filter_map(move |(i, j)| j.filter(|&j| j < old_len).map(|j| (i, j)))
}

/// A time `ns` nanoseconds after `from`, as nanoseconds after `to`: `Ok`
/// if it is not before `to`, else `Err(how long before)`. Saturates at
/// `u64::MAX`.
pub(super) fn shift(ns: u64, from: Instant, to: Instant) -> Result<u64, Duration> {
    let at = from.checked_add(Duration::from_nanos(ns)).unwrap_or(from);
    match at.checked_duration_since(to) {
        Some(d) => Ok(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        None => Err(to.saturating_duration_since(at)),
    }
}

/// A dispatch stamp (`tail_budget::dispatch::stamp`: ns + 1, never 0)
/// taken against epoch `from`, re-taken against `to`; 1 (`to` itself) if
/// it is before `to`.
pub(super) fn restamp(stamp: u64, from: Instant, to: Instant) -> u64 {
    let ns = Duration::from_nanos(stamp.saturating_sub(1));
    super::tail_budget::dispatch::stamp(to, from.checked_add(ns).unwrap_or(from))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::test_util::*;
    use super::*;

    #[test]
    fn the_map_matches_by_address() {
        let old = backends(3);
        let added = Backend::new(SocketAddr::from(([127, 0, 0, 1], 9000)));
        let mut renamed = old[0].clone();
        renamed.name = "api".into();
        let new = [old[2].clone(), added, renamed];
        assert_eq!(carry_map(&old, &new), [Some(2), None, Some(0)]);
        assert!(carry_map(&old, &[]).is_empty());
        assert_eq!(carry_map(&[], &old), [None, None, None]);
        let twice = [old[1].clone(), old[1].clone()];
        assert_eq!(carry_map(&twice, &old), [None, Some(0), None]);
        assert_eq!(carry_map(&twice, &twice), [Some(0), Some(1)]);
        assert_eq!(carry_map(&old[1..2], &twice), [Some(0), None]);
    }

    #[test]
    fn kept_skips_new_short_and_out_of_range_entries() {
        let map = [Some(2), None, Some(7), Some(0), Some(1)];
        let got: Vec<_> = kept(&map, 4, 3).collect();
        assert_eq!(got, [(0, 2), (3, 0)]);
        assert_eq!(kept(&[], 4, 3).count(), 0);
    }

    #[test]
    fn shift_moves_stamps_between_epochs() {
        let t0 = Instant::now();
        let t1 = at(t0, 100);
        let ms = 1_000_000;
        assert_eq!(shift(150 * ms, t0, t1), Ok(50 * ms));
        assert_eq!(shift(30 * ms, t0, t1), Err(Duration::from_millis(70)));
        assert_eq!(shift(30 * ms, t1, t0), Ok(130 * ms));
        assert_eq!(shift(0, t0, t0), Ok(0));
        assert_eq!(restamp(150 * ms + 1, t0, t1), 50 * ms + 1);
        assert_eq!(restamp(30 * ms + 1, t0, t1), 1);
    }
}
