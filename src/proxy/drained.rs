//! Backends an operator took out of rotation (`POST
//! /api/backends/{b}/drain`), as HAProxy's `set server state drain`: a
//! drained backend is never chosen for a new request, the requests it has
//! in flight finish, and its pooled idle connections are closed rather
//! than reused.
//!
//! One atomic flag per backend. The data path only reads them (once per
//! choice and once per pool check-in); they are written by the admin
//! thread, so their cache lines stay shared and never bounce.

use std::sync::atomic::{AtomicBool, Ordering};

/// Which backends are drained.
#[derive(Debug)]
pub struct Drained {
    flags: Box<[AtomicBool]>,
}

impl Drained {
    /// `backends` backends, none drained.
    pub fn new(backends: usize) -> Self {
        Drained {
            flags: (0..backends).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// How many backends there are.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Whether `backend` is drained (an unknown index is not).
    pub fn is_drained(&self, backend: usize) -> bool {
        self.flags
            .get(backend)
            .is_some_and(|f| f.load(Ordering::Acquire))
    }

    /// Drains (`true`) or re-enables (`false`) `backend`; returns the
    /// previous state, or `None` for an unknown index. Once this returns,
    /// no worker chooses a drained backend for a new request.
    pub fn set(&self, backend: usize, drained: bool) -> Option<bool> {
        self.flags
            .get(backend)
            .map(|f| f.swap(drained, Ordering::AcqRel))
    }

    /// Whether any backend is drained.
    pub fn any(&self) -> bool {
        self.flags.iter().any(|f| f.load(Ordering::Acquire))
    }

    /// The flags for a new backend list (a configuration reload), where
    /// `map[new] = Some(old)` for a backend that stays: a kept backend
    /// stays drained, an added one starts in rotation.
    pub fn remapped(&self, map: &[Option<usize>]) -> Drained {
        Drained {
            flags: map
                .iter()
                .map(|old| AtomicBool::new(old.is_some_and(|o| self.is_drained(o))))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_reports_the_previous_state() {
        let d = Drained::new(2);
        assert!(!d.any());
        assert_eq!(d.set(1, true), Some(false));
        assert!(d.is_drained(1) && !d.is_drained(0) && d.any());
        assert_eq!(d.set(1, true), Some(true));
        assert_eq!(d.set(1, false), Some(true));
        assert!(!d.is_drained(1));
        assert_eq!(d.set(2, true), None);
        assert!(!d.is_drained(2));
    }

    #[test]
    fn a_reload_keeps_the_drain_of_backends_that_stay() {
        let d = Drained::new(3);
        d.set(0, true);
        d.set(2, true);
        // New list: old 2, a new backend, old 1 (old 0 removed).
        let next = d.remapped(&[Some(2), None, Some(1)]);
        assert_eq!(next.len(), 3);
        assert!(next.is_drained(0) && !next.is_drained(1) && !next.is_drained(2));
    }
}
