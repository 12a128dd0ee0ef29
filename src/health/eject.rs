//! Outlier ejection: the consecutive-failure rule and the success-rate
//! rule (see the module doc of `health` for what counts as a failure).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Consecutive failures that eject a backend (Envoy's `consecutive_5xx`
/// default is 5: enough to ignore a blip, few enough to react in well under
/// a second at the seed's load).
pub const EJECT_AFTER: u32 = 5;

/// First ejection lasts this long, the n-th n times as long...
pub const BASE: Duration = Duration::from_secs(1);

/// ...but never longer than this, so a recovered backend is back within 30 s.
pub const CAP: Duration = Duration::from_secs(30);

/// The success-rate rule looks at this much recent history: Envoy's
/// default evaluation interval, long enough for [`SR_MIN_REQUESTS`] even
/// at a few requests a second, short enough that a backend that healed is
/// judged on its new behaviour within seconds.
pub const SR_WINDOW: Duration = Duration::from_secs(10);

/// The window is a ring of this many buckets (one second each): it slides
/// in steps of a tenth, and costs two atomics per bucket per backend.
pub const SR_BUCKETS: usize = 10;

/// Requests a backend needs in the window before its rate is judged
/// (Envoy's `success_rate_request_volume` is 100; 20 lets a backend that
/// the policy already starves still be judged, while 7+ failures out of 20
/// at a true 5% rate has odds below 1e-4).
pub const SR_MIN_REQUESTS: u64 = 20;

/// A failure rate at or below this is never an outlier (Envoy's
/// `failure_percentage_threshold` style floor): 30% is far above the
/// noise of a healthy backend, so a proxy-wide blip ejects nobody.
pub const SR_MAX_FAILURE_RATE: f64 = 0.3;

/// ...and the rate must also exceed this multiple of the other backends'
/// pooled rate: when everything fails alike (a bad deploy everywhere, an
/// overloaded proxy), the fault is not this backend's and ejecting it
/// would only shift load onto equally broken ones.
pub const SR_FACTOR: f64 = 2.0;

/// Whether a backend may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Healthy.
    Yes,
    /// Ejection expired: this request is the single probe.
    Probe,
    /// Ejected.
    No,
}

/// Why a backend goes out (for the log line).
#[derive(Debug, Clone, Copy)]
enum Why {
    Consecutive(u32),
    Rate {
        rate: f64,
        others: f64,
        requests: u64,
    },
    Probe,
}

/// One backend's requests and failures per one-second bucket: a
/// lock-free ring. A bucket is reset by whoever first writes to it in a
/// new second (a race may lose a count or two; the rule is statistical).
#[derive(Debug, Default)]
struct RateWindow {
    /// `1 + tick` of the second a bucket holds; 0 = never written.
    epoch: [AtomicU64; SR_BUCKETS],
    /// `requests << 32 | failures`: one `fetch_add` per answer.
    counts: [AtomicU64; SR_BUCKETS],
}

impl RateWindow {
    fn add(&self, tick: u64, failed: bool) {
        let i = (tick % SR_BUCKETS as u64) as usize;
        let (Some(epoch), Some(counts)) = (self.epoch.get(i), self.counts.get(i)) else {
            return;
        };
        let e = epoch.load(Relaxed);
        if e < tick + 1
            && epoch
                .compare_exchange(e, tick + 1, Relaxed, Relaxed)
                .is_ok()
        {
            counts.store(0, Relaxed);
        }
        counts.fetch_add((1 << 32) | u64::from(failed), Relaxed);
    }

    /// (requests, failures) over the buckets of the last [`SR_WINDOW`].
    fn totals(&self, tick: u64) -> (u64, u64) {
        let mut sum = (0, 0);
        for (epoch, counts) in self.epoch.iter().zip(&self.counts) {
            let e = epoch.load(Relaxed);
            if e != 0 && e <= tick + 1 && tick + 1 - e < SR_BUCKETS as u64 {
                let c = counts.load(Relaxed);
                sum.0 += c >> 32;
                sum.1 += c & u64::from(u32::MAX);
            }
        }
        sum
    }

    fn clear(&self) {
        for epoch in &self.epoch {
            epoch.store(0, Relaxed);
        }
    }
}

#[derive(Debug, Default)]
struct BackendHealth {
    consecutive: AtomicU32,
    times_ejected: AtomicU32,
    /// Nanoseconds since `base` until which the backend is out; 0 = in.
    ejected_until: AtomicU64,
    probing: AtomicBool,
    rate: RateWindow,
}

/// Ejection state of every backend.
#[derive(Debug)]
pub struct Ejector {
    base: Instant,
    backends: Vec<BackendHealth>,
    ejected: AtomicU32,
    /// Set by `--eject-5xx`: 5xx answers count towards the consecutive
    /// rule too (they always count for the success-rate rule).
    pub eject_5xx: bool,
    /// Consecutive failures that eject (`--eject-after`); 0 disables
    /// ejection altogether (both rules).
    after: u32,
    /// How many backends may be out at once (see [`Ejector::with_backups`]).
    max_out: u32,
}

fn nanos(base: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(base).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Ejector {
    /// `after`: consecutive failures that eject ([`EJECT_AFTER`] by
    /// default; 0 turns ejection off).
    pub fn new(backends: usize, now: Instant, eject_5xx: bool, after: u32) -> Self {
        Ejector {
            base: now,
            backends: (0..backends).map(|_| BackendHealth::default()).collect(),
            ejected: AtomicU32::new(0),
            eject_5xx,
            after,
            max_out: (backends / 2).max(1) as u32,
        }
    }

    /// Of the backends, `backups` are backups (`backup = true`). At most
    /// half the backends may be out at once, so that the rest do not fail
    /// open onto broken ones; with backups, every primary may be ejected
    /// (the backups take over: that is what they are for), plus half the
    /// backups.
    pub fn with_backups(mut self, backups: usize) -> Self {
        let n = self.backends.len();
        if backups > 0 && backups < n {
            self.max_out = u32::try_from(n - backups + backups / 2).unwrap_or(u32::MAX);
        }
        self
    }

    /// May `backend` take a request at `now`? `Probe` claims the single
    /// probe slot, so only one caller gets it per expiry.
    pub fn admit(&self, backend: usize, now: Instant) -> Admit {
        let Some(b) = self.backends.get(backend) else {
            return Admit::No;
        };
        let until = b.ejected_until.load(Relaxed);
        if until == 0 {
            return Admit::Yes;
        }
        if nanos(self.base, now) < until {
            return Admit::No;
        }
        match b.probing.compare_exchange(false, true, Relaxed, Relaxed) {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::No,
        }
    }

    /// Whether [`Ejector::admit`] would let a request through now, without
    /// claiming anything: for eligibility tests, which may run for every
    /// backend; `admit` then claims for the one chosen.
    pub fn admissible(&self, backend: usize, now: Instant) -> bool {
        let Some(b) = self.backends.get(backend) else {
            return false;
        };
        let until = b.ejected_until.load(Relaxed);
        until == 0 || (nanos(self.base, now) >= until && !b.probing.load(Relaxed))
    }

    /// Whether `backend` is currently ejected (for metrics).
    pub fn is_ejected(&self, backend: usize) -> bool {
        self.backends
            .get(backend)
            .is_some_and(|b| b.ejected_until.load(Relaxed) != 0)
    }

    /// Times `backend` was ejected so far (for metrics).
    pub fn times_ejected(&self, backend: usize) -> u64 {
        self.backends
            .get(backend)
            .map_or(0, |b| u64::from(b.times_ejected.load(Relaxed)))
    }

    /// Total ejections so far (for metrics).
    pub fn ejections(&self) -> u64 {
        self.backends
            .iter()
            .map(|b| u64::from(b.times_ejected.load(Relaxed)))
            .sum()
    }

    /// Frees the probe slot without a verdict (the client left, or a stale
    /// pooled connection failed: neither says anything about the backend).
    pub fn release(&self, backend: usize) {
        if let Some(b) = self.backends.get(backend) {
            b.probing.store(false, Relaxed);
        }
    }

    /// Records an attempt at `backend` that ended without an answer
    /// (`success == false`: connect error, reset, timeout, bad response)
    /// or with one that counts as good.
    pub fn record(&self, backend: usize, success: bool, now: Instant) {
        self.verdict(backend, !success, !success, now);
    }

    /// Records an answer with `status`: a 5xx is a failure for the
    /// success-rate rule always, and for the consecutive rule with
    /// `--eject-5xx`.
    pub fn record_answer(&self, backend: usize, status: u16, now: Instant) {
        let bad = status >= 500;
        self.verdict(backend, bad && self.eject_5xx, bad, now);
    }

    /// The one place a verdict lands. `streak`: counts towards the
    /// consecutive rule; `failed`: counts as a failure in the rate window
    /// and for a probe.
    fn verdict(&self, backend: usize, streak: bool, failed: bool, now: Instant) {
        let Some(b) = self.backends.get(backend) else {
            return;
        };
        let tick = self.tick(now);
        b.rate.add(tick, failed);
        let was_probe = b.probing.swap(false, Relaxed);
        let ejected = b.ejected_until.load(Relaxed) != 0;
        if ejected && was_probe {
            if failed {
                self.eject(b, backend, now, Why::Probe);
            } else {
                self.restore(b, backend);
            }
            return;
        }
        let fails = if streak {
            b.consecutive.fetch_add(1, Relaxed).saturating_add(1)
        } else {
            b.consecutive.store(0, Relaxed);
            0
        };
        // Answers to requests sent before the ejection change nothing:
        // only the probe brings a backend back.
        if ejected || self.after == 0 || self.backends.len() < 2 || !failed {
            return;
        }
        let why = if streak && fails >= self.after {
            Why::Consecutive(fails)
        } else if let Some(why) = self.outlier(backend, tick) {
            why
        } else {
            return;
        };
        // At most half the backends out at once (every primary when there
        // are backups); past that, fail open.
        let max = self.max_out;
        if self
            .ejected
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok()
        {
            self.eject(b, backend, now, why);
        }
    }

    /// The success-rate rule: `backend`'s failure rate over the window,
    /// with at least [`SR_MIN_REQUESTS`], above [`SR_MAX_FAILURE_RATE`]
    /// and above [`SR_FACTOR`] x the other backends' pooled rate (0 if
    /// they had no requests). Runs on failures only: 2 x [`SR_BUCKETS`]
    /// loads per backend.
    fn outlier(&self, backend: usize, tick: u64) -> Option<Why> {
        let mut own = (0, 0);
        let mut others = (0, 0);
        for (i, b) in self.backends.iter().enumerate() {
            let (r, f) = b.rate.totals(tick);
            let sum = if i == backend { &mut own } else { &mut others };
            sum.0 += r;
            sum.1 += f;
        }
        if own.0 < SR_MIN_REQUESTS {
            return None;
        }
        let rate = own.1 as f64 / own.0 as f64;
        let others = if others.0 == 0 {
            0.0
        } else {
            others.1 as f64 / others.0 as f64
        };
        (rate > SR_MAX_FAILURE_RATE && rate > SR_FACTOR * others).then_some(Why::Rate {
            rate,
            others,
            requests: own.0,
        })
    }

    fn tick(&self, now: Instant) -> u64 {
        let bucket = SR_WINDOW.as_nanos() / SR_BUCKETS as u128;
        let t = now.saturating_duration_since(self.base).as_nanos() / bucket.max(1);
        u64::try_from(t).unwrap_or(u64::MAX - 1)
    }

    fn eject(&self, b: &BackendHealth, backend: usize, now: Instant, why: Why) {
        let times = b.times_ejected.fetch_add(1, Relaxed).saturating_add(1);
        let length = BASE.saturating_mul(times).min(CAP);
        b.ejected_until
            .store(nanos(self.base, now + length), Relaxed);
        b.consecutive.store(0, Relaxed);
        match why {
            Why::Consecutive(n) => log::warn!(
                "backend {backend} ejected for {length:?} after {n} consecutive failures"
            ),
            Why::Rate {
                rate,
                others,
                requests,
            } => log::warn!(
                "backend {backend} ejected for {length:?}: {:.0}% of {requests} requests failed in {SR_WINDOW:?} (others {:.0}%)",
                rate * 100.0,
                others * 100.0
            ),
            Why::Probe => {
                log::warn!("backend {backend}: probe failed, ejected again for {length:?}")
            }
        }
    }

    /// A successful probe: the backend is back, with a clean slate (its
    /// old failures would otherwise eject it again on its next one).
    fn restore(&self, b: &BackendHealth, backend: usize) {
        b.consecutive.store(0, Relaxed);
        b.rate.clear();
        if b.ejected_until.swap(0, Relaxed) != 0 {
            self.ejected.fetch_sub(1, Relaxed);
            log::info!("backend {backend} is back after a successful probe");
        }
    }
}

#[cfg(test)]
mod tests;
