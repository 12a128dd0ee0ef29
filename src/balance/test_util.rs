//! Helpers for the balance tests: backends, outcomes, eligibility
//! predicates, and tickets held for tests written as send/done pairs.

use super::*;

/// Backends `127.0.0.1:8081`, `:8082`, ... as the seed names them.
pub(crate) fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend::new(SocketAddr::from(([127, 0, 0, 1], 8081 + i as u16))))
        .collect()
}

pub(crate) fn ok(ms: u64) -> Outcome {
    Outcome::Success {
        latency: Duration::from_millis(ms),
    }
}

pub(crate) fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// Every backend is eligible.
pub(crate) fn every(_: usize) -> bool {
    true
}

/// Every backend but `x` is eligible (a retry away from `x`).
pub(crate) fn but(x: usize) -> impl Fn(usize) -> bool {
    move |i| i != x
}

/// `observe` with a ticket [`Hold`] kept for `backend`, else one of its
/// own sent when the outcome's time says (`now` minus its latency).
pub(crate) trait Answer {
    fn answer(&self, backend: usize, outcome: Outcome, now: Instant);
}

/// Tickets held for tests written against a send/done pair: `hold`
/// keeps the ticket of `on_send`, `release` drops the oldest for that
/// backend (only the count matters to them); `answer` observes it.
pub(crate) trait Hold {
    fn hold(&self, backend: usize, now: Instant);
    fn release(&self, backend: usize, now: Instant);
}

type Stash = std::collections::HashMap<(usize, usize), Vec<Attempt>>;
static HELD: std::sync::Mutex<Option<Stash>> = std::sync::Mutex::new(None);

impl<S: Selector + ?Sized> Hold for S {
    fn hold(&self, backend: usize, now: Instant) {
        let key = (self as *const S as *const () as usize, backend);
        let ticket = self.on_send(backend, now);
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        held.get_or_insert_with(Stash::new)
            .entry(key)
            .or_default()
            .push(ticket);
    }

    fn release(&self, backend: usize, _now: Instant) {
        let key = (self as *const S as *const () as usize, backend);
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = (held.get_or_insert_with(Stash::new).get_mut(&key))
            .and_then(|v| (!v.is_empty()).then(|| v.remove(0)));
        drop(held);
        drop(ticket);
    }
}

/// `tick` then `pick`: what a worker ticking between requests does.
/// (`sent_pick`: what a proxy sending each pick does.)
pub(crate) trait TickPick {
    fn tick_pick(&self, now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize>;
    /// `tick_pick`, and a pick of an unmeasured backend (a probe) stays
    /// in flight ([`Hold`]) until `answer`ed; others are answered at
    /// once (their tickets dropped).
    fn sent_pick(&self, now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize>;
}

impl<S: Selector + ?Sized> TickPick for S {
    fn tick_pick(&self, now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.tick(now);
        self.pick(now, eligible)
    }

    fn sent_pick(&self, now: Instant, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let b = self.tick_pick(now, eligible)?;
        if self.estimates().get(b).is_some_and(Option::is_none) {
            self.hold(b, now);
        }
        Some(b)
    }
}

impl<S: Selector + ?Sized> Answer for S {
    fn answer(&self, backend: usize, outcome: Outcome, now: Instant) {
        let took = match outcome {
            Outcome::Success { latency } => latency,
            Outcome::Failure { elapsed } => elapsed,
        };
        let key = (self as *const S as *const () as usize, backend);
        let held = {
            let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
            (held.get_or_insert_with(Stash::new).get_mut(&key))
                .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
        };
        let sent = now.checked_sub(took).unwrap_or(now);
        let ticket = held.unwrap_or_else(|| self.on_send(backend, sent));
        self.observe(ticket, outcome, now);
    }
}
