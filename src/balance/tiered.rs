//! Backup backends (`backup = true`): the policy runs twice, once over the
//! primaries and once over the backups, behind one [`Selector`] that speaks
//! global backend indices. `pick` chooses among primaries only;
//! `pick_backup` among backups, which the proxy calls only when no primary
//! is usable (`proxy::Shared::choose`). Each tier learns from its own
//! requests only, so a backup's estimates do not disturb the primaries'.

use std::sync::Arc;
use std::time::Instant;

use super::{Attempt, Backend, Outcome, Policy, PolicyError, Selector, build_flat};

#[derive(Debug)]
pub(super) struct Tiered {
    primary: Arc<dyn Selector>,
    backup: Arc<dyn Selector>,
    /// Global index -> (is a backup, index in its tier).
    place: Vec<(bool, usize)>,
    /// Index in the tier -> global index.
    primaries: Vec<usize>,
    backups: Vec<usize>,
}

impl Tiered {
    pub(super) fn new(
        policy: &Policy,
        backends: &[Backend],
        now: Instant,
    ) -> Result<Tiered, PolicyError> {
        let (mut primaries, mut backups) = (Vec::new(), Vec::new());
        let mut place = Vec::with_capacity(backends.len());
        for (i, b) in backends.iter().enumerate() {
            let tier = if b.backup {
                &mut backups
            } else {
                &mut primaries
            };
            place.push((b.backup, tier.len()));
            tier.push(i);
        }
        let pick =
            |idx: &[usize]| -> Vec<Backend> { idx.iter().map(|&i| backends[i].clone()).collect() };
        Ok(Tiered {
            primary: build_flat(policy, &pick(&primaries), now)?,
            backup: build_flat(policy, &pick(&backups), now)?,
            place,
            primaries,
            backups,
        })
    }

    /// The tier's selector and the backend's index in it.
    fn route(&self, backend: usize) -> Option<(&dyn Selector, usize)> {
        let &(backup, local) = self.place.get(backend)?;
        Some(if backup {
            (&*self.backup, local)
        } else {
            (&*self.primary, local)
        })
    }

    /// Per-backend values of both tiers in global order.
    fn merge<T: Clone>(&self, primary: &[T], backup: &[T], missing: T) -> Vec<T> {
        self.place
            .iter()
            .map(|&(b, local)| {
                let from = if b { backup } else { primary };
                from.get(local).cloned().unwrap_or_else(|| missing.clone())
            })
            .collect()
    }
}

impl Selector for Tiered {
    fn name(&self) -> &'static str {
        self.primary.name()
    }

    fn pick(&self, now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let global = &self.primaries;
        let local = self
            .primary
            .pick(now, &|l| global.get(l).is_some_and(|&g| eligible(g)))?;
        global.get(local).copied()
    }

    fn pick_backup(&self, now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let global = &self.backups;
        let local = self
            .backup
            .pick(now, &|l| global.get(l).is_some_and(|&g| eligible(g)))?;
        global.get(local).copied()
    }

    /// The tier's ticket, relabelled with the global index.
    fn on_send(&self, backend: usize, now: Instant) -> Attempt {
        match self.route(backend) {
            Some((s, local)) => s.on_send(local, now).relabel(backend),
            None => Attempt::new(backend, now),
        }
    }

    fn observe(&self, attempt: Attempt, outcome: Outcome, now: Instant) {
        let backend = attempt.backend();
        if let Some((s, local)) = self.route(backend) {
            s.observe(attempt.relabel(local), outcome, now);
        }
    }

    fn tick(&self, now: Instant) {
        self.primary.tick(now);
        self.backup.tick(now);
    }

    fn estimates(&self) -> Vec<Option<f64>> {
        self.merge(&self.primary.estimates(), &self.backup.estimates(), None)
    }

    fn gauges(&self) -> Vec<(&'static str, Vec<Option<f64>>)> {
        let backup = self.backup.gauges();
        (self.primary.gauges().into_iter())
            .map(|(name, values)| {
                let other = backup.iter().find(|(n, _)| *n == name);
                let other = other.map_or(&[][..], |(_, v)| v.as_slice());
                (name, self.merge(&values, other, None))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    fn tiers(backup: &[bool]) -> Vec<Backend> {
        let mut b = backends(backup.len());
        for (b, &up) in b.iter_mut().zip(backup) {
            b.backup = up;
        }
        b
    }

    #[test]
    fn pick_never_returns_a_backup_and_pick_backup_only_backups() {
        let t0 = Instant::now();
        let s = super::super::build(&Policy::RoundRobin, &tiers(&[false, true, false, true]), t0)
            .unwrap();
        let picks: Vec<_> = (0..6).map(|_| s.tick_pick(t0, &every).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2, 0, 2]);
        let backups: Vec<_> = (0..4).map(|_| s.pick_backup(t0, &every).unwrap()).collect();
        assert_eq!(backups, [1, 3, 1, 3]);
        // Excluding works in global indices, in either tier.
        assert!((0..5).all(|_| s.tick_pick(t0, &but(2)) == Some(0)));
        assert!((0..5).all(|_| s.pick_backup(t0, &but(1)) == Some(3)));
        assert_eq!(s.estimates().len(), 4);
    }

    #[test]
    fn each_tier_learns_from_its_own_backends() {
        let t0 = Instant::now();
        let s = super::super::build(
            &Policy::Ewma { alpha: 1.0 },
            &tiers(&[false, true, false]),
            t0,
        )
        .unwrap();
        s.answer(1, ok(7), t0);
        s.answer(2, ok(40), t0);
        assert_eq!(s.estimates(), [None, Some(7.0), Some(40.0)]);
        // A flat build when nothing (or everything) is a backup.
        let flat = super::super::build(&Policy::RoundRobin, &tiers(&[false, false]), t0).unwrap();
        assert_eq!(flat.pick_backup(t0, &every), None);
    }
}
