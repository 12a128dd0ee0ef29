//! Per-backend concurrency limits, held across all workers.
//!
//! Each backend has one [`Slot`]: its limit ([`Limits`]: the configured
//! `maxconn` and a learned limit, the effective one being the smaller) and
//! the count of requests in flight to it from every worker. A request takes
//! a place with [`Slots::try_acquire`] (a compare-and-swap against the
//! limit, so the limit holds whatever the number of workers) and gives it
//! back when its [`SlotGuard`] is dropped.
//!
//! A backend with no limit is not counted at all: its guard holds nothing,
//! so without `maxconn` (and before a limit is learned) a request costs one
//! relaxed load here, no write to a line shared by the workers. A limit
//! that appears later (a learned one) starts counting from the next
//! request; the requests already in flight are not counted, which lets a
//! few more through once, and nothing worse.
//!
//! Slots live across configuration generations: a reload hands each
//! backend that stays (same address) its slot, so requests in flight before
//! the reload still count against the limit after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::BackendAddr;

/// "No limit" in the atomics (a limit is at most `MAX_MAXCONN`, far below).
pub const UNLIMITED: u32 = u32::MAX;

/// Compare-and-swap rounds per acquire before giving up (and queueing): each
/// failed round means another worker just took or gave back a place, so a
/// few rounds see the count settle; more would spin under contention.
const CAS_ROUNDS: usize = 8;

/// Where a backend's limit comes from: the operator (`maxconn`) and, later,
/// a limiter that learns it from latency. The effective limit is the
/// smaller of the two.
#[derive(Debug)]
pub struct Limits {
    /// `maxconn`, or [`UNLIMITED`].
    configured: AtomicU32,
    /// The learned limit, or [`UNLIMITED`] until one is learned.
    learned: AtomicU32,
}

impl Limits {
    fn new(configured: Option<u32>) -> Self {
        Limits {
            configured: AtomicU32::new(configured.unwrap_or(UNLIMITED)),
            learned: AtomicU32::new(UNLIMITED),
        }
    }

    /// The limit in force: the smaller of the configured and learned ones.
    pub fn effective(&self) -> u32 {
        let c = self.configured.load(Ordering::Relaxed);
        c.min(self.learned.load(Ordering::Relaxed))
    }

    /// The configured `maxconn`, if any.
    pub fn configured(&self) -> Option<u32> {
        Some(self.configured.load(Ordering::Relaxed)).filter(|&c| c != UNLIMITED)
    }

    /// Sets the learned limit (`None`: none learned). For the adaptive
    /// limiter; at least 1, so a backend is never shut out entirely.
    pub fn set_learned(&self, limit: Option<u32>) {
        let v = limit.map_or(UNLIMITED, |l| l.max(1));
        self.learned.store(v, Ordering::Relaxed);
    }
}

/// One backend's limit and in-flight count, on its own cache line pair
/// (128 bytes: adjacent-line prefetch pairs lines on x86), so workers
/// taking places on one backend do not slow those on another.
#[derive(Debug)]
#[repr(align(128))]
pub struct Slot {
    pub limits: Limits,
    /// Requests in flight to this backend, counted while it has a limit.
    in_flight: AtomicU32,
}

impl Slot {
    fn new(configured: Option<u32>) -> Self {
        Slot {
            limits: Limits::new(configured),
            in_flight: AtomicU32::new(0),
        }
    }

    /// Requests in flight counted against the limit.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether a place looks free now (no guarantee: another worker may
    /// take it first; [`Slots::try_acquire`] decides).
    pub fn has_room(&self) -> bool {
        let limit = self.limits.effective();
        limit == UNLIMITED || self.in_flight() < limit
    }
}

/// A place taken on a backend; dropping it gives the place back.
#[derive(Debug)]
pub struct SlotGuard {
    /// `None` when the backend had no limit (nothing was counted).
    slot: Option<Arc<Slot>>,
    /// Requests in flight to the backend once this one was counted (itself
    /// included); 0 when not counted.
    at_send: u32,
}

impl SlotGuard {
    /// Whether giving this place back may let a queued request in.
    pub fn counted(&self) -> bool {
        self.slot.is_some()
    }

    /// The in-flight count this request was sent at, itself included
    /// (what the learned limiter sets latency against); 0 if uncounted.
    pub fn at_send(&self) -> u32 {
        self.at_send
    }

    /// A place that counts nothing.
    fn uncounted() -> SlotGuard {
        SlotGuard {
            slot: None,
            at_send: 0,
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // SeqCst, paired with the queue's counter (see `board`): either
            // a worker queueing sees this place free, or this release sees
            // its queued request and wakes it.
            let _ = slot
                .in_flight
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }
}

/// Every backend's slot, indexed like the generation's backends.
#[derive(Debug, Default)]
pub struct Slots {
    slots: Vec<Arc<Slot>>,
    /// Count every request, limited or not (`--policy adaptive`: the
    /// learned limiter needs each backend's in-flight count, and a limit it
    /// learns must hold from the first request on).
    count_all: bool,
}

impl Slots {
    /// Slots for `backends`; with `prev` (a reload), a backend whose
    /// address was there keeps its slot (and in-flight count), with its
    /// new `maxconn`.
    pub fn build(
        backends: &[BackendAddr],
        prev: Option<(&Slots, &[BackendAddr])>,
        count_all: bool,
    ) -> Slots {
        let slots = backends
            .iter()
            .map(|b| {
                let kept = prev.and_then(|(slots, addrs)| {
                    let i = addrs.iter().position(|a| a.addr == b.addr)?;
                    slots.slots.get(i).cloned()
                });
                match kept {
                    Some(slot) => {
                        let c = b.maxconn.unwrap_or(UNLIMITED);
                        slot.limits.configured.store(c, Ordering::Relaxed);
                        if !count_all {
                            // No limiter any more (a policy change).
                            slot.limits.set_learned(None);
                        }
                        slot
                    }
                    None => Arc::new(Slot::new(b.maxconn)),
                }
            })
            .collect();
        Slots { slots, count_all }
    }

    /// Backend `b`'s slot.
    pub fn get(&self, b: usize) -> Option<&Arc<Slot>> {
        self.slots.get(b)
    }

    /// Whether backend `b` looks under its limit (an unknown index: yes,
    /// the caller's own checks reject it).
    pub fn has_room(&self, b: usize) -> bool {
        self.slots.get(b).is_none_or(|s| s.has_room())
    }

    /// Whether any backend has a limit (configured or learned).
    pub fn any_limited(&self) -> bool {
        self.slots.iter().any(|s| s.limits.effective() != UNLIMITED)
    }

    /// Takes a place on backend `b`: `None` if it is at its limit. A
    /// backend with no limit always gives an uncounted place.
    pub fn try_acquire(&self, b: usize) -> Option<SlotGuard> {
        let Some(slot) = self.slots.get(b) else {
            return Some(SlotGuard::uncounted());
        };
        let limit = slot.limits.effective();
        if limit == UNLIMITED {
            if !self.count_all {
                return Some(SlotGuard::uncounted());
            }
            let n = slot.in_flight.fetch_add(1, Ordering::SeqCst);
            return Some(SlotGuard {
                slot: Some(Arc::clone(slot)),
                at_send: n.saturating_add(1),
            });
        }
        let mut n = slot.in_flight.load(Ordering::SeqCst);
        for _ in 0..CAS_ROUNDS {
            if n >= limit {
                return None;
            }
            match slot
                .in_flight
                .compare_exchange_weak(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    return Some(SlotGuard {
                        slot: Some(Arc::clone(slot)),
                        at_send: n + 1,
                    });
                }
                Err(now) => n = now,
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn backend(port: u16, maxconn: Option<u32>) -> BackendAddr {
        let mut b = BackendAddr::new(format!("b{port}"), SocketAddr::from(([127, 0, 0, 1], port)));
        b.maxconn = maxconn;
        b
    }

    #[test]
    fn a_limit_is_never_exceeded_and_places_come_back() {
        let slots = Slots::build(&[backend(1, Some(2)), backend(2, None)], None, false);
        let a = slots.try_acquire(0);
        let b = slots.try_acquire(0);
        assert!(a.as_ref().is_some_and(SlotGuard::counted) && b.is_some());
        assert!(slots.try_acquire(0).is_none());
        assert!(!slots.has_room(0));
        drop(a);
        assert!(slots.has_room(0));
        assert!(slots.try_acquire(0).is_some());
        // No limit: always a place, never counted.
        let free: Vec<_> = (0..100).filter_map(|_| slots.try_acquire(1)).collect();
        assert_eq!(free.len(), 100);
        assert!(free.iter().all(|g| !g.counted()));
        assert_eq!(slots.get(1).map(|s| s.in_flight()), Some(0));
    }

    #[test]
    fn the_effective_limit_is_the_smaller_one() {
        let slots = Slots::build(&[backend(1, Some(10)), backend(2, None)], None, false);
        let (a, b) = (&slots.slots[0].limits, &slots.slots[1].limits);
        assert_eq!((a.effective(), a.configured()), (10, Some(10)));
        assert_eq!((b.effective(), b.configured()), (UNLIMITED, None));
        assert!(slots.any_limited());
        a.set_learned(Some(4));
        b.set_learned(Some(0));
        assert_eq!((a.effective(), b.effective()), (4, 1));
        a.set_learned(None);
        assert_eq!(a.effective(), 10);
    }

    #[test]
    fn a_reload_keeps_the_count_of_a_backend_that_stays() {
        let old_cfg = [backend(1, Some(1)), backend(2, Some(1))];
        let old = Slots::build(&old_cfg, None, false);
        let held = old.try_acquire(1);
        assert!(held.is_some());
        let new_cfg = [backend(2, Some(3)), backend(3, None)];
        let new = Slots::build(&new_cfg, Some((&old, &old_cfg)), false);
        assert_eq!(new.get(0).map(|s| s.in_flight()), Some(1));
        assert_eq!(new.get(0).map(|s| s.limits.effective()), Some(3));
        drop(held);
        assert_eq!(new.get(0).map(|s| s.in_flight()), Some(0));
    }

    #[test]
    fn threads_racing_for_places_never_exceed_the_limit() {
        let slots = Arc::new(Slots::build(&[backend(1, Some(3))], None, false));
        let peak = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (slots, peak) = (Arc::clone(&slots), Arc::clone(&peak));
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if let Some(g) = slots.try_acquire(0) {
                            let n = slots.get(0).map_or(0, |s| s.in_flight());
                            peak.fetch_max(n, Ordering::Relaxed);
                            drop(g);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(slots.get(0).map(|s| s.in_flight()), Some(0));
    }
}
