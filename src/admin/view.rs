//! One reading of everything the admin endpoint reports ([`View`]), and
//! the per-second [`History`] behind the dashboard's trend chart.
//!
//! Both `/metrics` and `/stats` render from a `View`, so the two never
//! disagree on what they read. Reading is loads of relaxed atomics plus a
//! short lock on the history; the data path is never blocked.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::{BackendSnapshot, LATENCY_BUCKETS, Recent};
use crate::proxy::csvlog::LogCounters;
use crate::proxy::live::Live;
use crate::proxy::{BackendState, Shared};
use crate::server::LiveStats;

/// Per-second samples kept: 61 samples make the 60 one-second intervals
/// of the dashboard's one-minute trend.
pub const HISTORY_SAMPLES: usize = 61;

/// What the admin endpoint reads: handles on the proxy's shared counters.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Selector, backends, request counters and per-backend metrics, as
    /// the proxy started (used when `config` is `None`).
    pub shared: Arc<Shared>,
    /// The running configuration, swapped on reload: views read its
    /// current generation.
    pub config: Option<Arc<Live>>,
    /// Accepted and open connections, per worker.
    pub live: LiveStats,
    /// The `--log-csv` writer's counters.
    pub csv: Option<Arc<LogCounters>>,
}

/// The `--log-csv` writer's counters, read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CsvStats {
    pub rows: u64,
    pub write_errors: u64,
    pub dropped: u64,
}

/// Client-side request counters (from `ProxyStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub total: u64,
    /// 1xx-3xx final responses.
    pub ok: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub retries: u64,
}

/// Failures by kind, in [`FAILURE_KINDS`] order.
pub type Failures = [u64; 8];

/// Label values of `tidegate_failures_total{kind}` and keys of the
/// `/stats` `failures` object, in [`Failures`] order.
/// Each names the side at fault: the first five are the backend's, the
/// last three the client's.
pub const FAILURE_KINDS: [&str; 8] = [
    "connect",
    "backend_reset",
    "bad_response",
    "backend_timeout",
    "backend_unavailable",
    "client_timeout",
    "client_abort",
    "client_bad_body",
];

/// Everything reported, read at one moment.
#[derive(Debug, Clone)]
pub struct View {
    pub policy: &'static str,
    pub uptime_s: f64,
    /// Wall clock of the reading, ms since the Unix epoch.
    pub now_ms: u64,
    pub requests: Requests,
    pub failures: Failures,
    /// Tunnels opened in all, and open now.
    pub tunnels: (u64, u64),
    /// TLS handshakes by version, and handshake failures by reason.
    pub tls_handshakes: Vec<(&'static str, u64)>,
    pub tls_errors: Vec<(&'static str, u64)>,
    /// The configuration generation (0 at start, +1 per applied reload),
    /// reloads applied and refused, and when the last one was applied (ms
    /// since the Unix epoch).
    pub config: ConfigView,
    pub backends: Vec<BackendView>,
    pub accepted: u64,
    pub open: usize,
    /// Open connections per worker.
    pub workers: Vec<usize>,
    pub csv: Option<CsvStats>,
    pub recent: Vec<Recent>,
    pub history: Vec<Sample>,
    /// With `--slo-ms`: the deadline and the share of answered requests
    /// within it.
    pub slo: Option<(f64, f64)>,
    /// The policy's extra per-backend numbers (see `Selector::gauges`).
    pub gauges: Vec<(&'static str, Vec<Option<f64>>)>,
}

/// The configuration generation and its reloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigView {
    pub generation: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    pub reloaded_at_ms: Option<u64>,
}

/// One backend's counters and the policy's view of it.
#[derive(Debug, Clone)]
pub struct BackendView {
    pub snap: BackendSnapshot,
    pub addr: String,
    /// The running policy's current estimate (ms), `None` if unmeasured.
    pub estimate_ms: Option<f64>,
    /// Times ejected by outlier detection, and whether it is out now.
    pub ejections: u64,
    pub ejected: bool,
    /// With `--health-check`: the checker's verdict.
    pub up: Option<bool>,
    /// Drained through the admin API.
    pub drained: bool,
    /// Up, down, ejected or drained (see [`Shared::backend_state`]).
    pub state: BackendState,
}

/// Cumulative per-backend counters at one second tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Wall clock, ms since the Unix epoch.
    pub at_ms: u64,
    /// Monotonic seconds since the admin endpoint started.
    pub mono_s: f64,
    pub backends: Vec<Tally>,
}

/// Cumulative counts of one backend in a [`Sample`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Requests with a status (answered or failed).
    pub requests: u64,
    /// Answered requests (latency samples).
    pub answered: u64,
    pub sum_seconds: f64,
}

/// The last [`HISTORY_SAMPLES`] one-second samples.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Appends a sample, dropping the oldest beyond the window.
    pub fn push(&mut self, s: Sample) {
        if self.samples.len() == HISTORY_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().cloned().collect()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(0)
}

impl Sources {
    /// The configuration generation in force now.
    pub fn current(&self) -> Arc<Shared> {
        self.config
            .as_ref()
            .map_or_else(|| Arc::clone(&self.shared), |live| live.current())
    }

    /// A sample for the history at this moment.
    pub fn sample(&self, started: Instant) -> Sample {
        Sample {
            at_ms: unix_ms(SystemTime::now()),
            mono_s: started.elapsed().as_secs_f64(),
            backends: self
                .current()
                .metrics
                .snapshot()
                .iter()
                .map(|b| Tally {
                    requests: b.requests(),
                    answered: b.count,
                    sum_seconds: b.sum_seconds,
                })
                .collect(),
        }
    }

    /// Reads everything now; `history` and `recent` only when asked for
    /// (`/stats`), as `/metrics` does not show them.
    pub fn view(&self, started: Instant, history: Option<&History>) -> View {
        let shared = &self.current();
        let s = &shared.stats;
        let g = |c: &AtomicU64| c.load(Relaxed);
        let estimates = shared.selector.estimates();
        let backends = shared
            .metrics
            .snapshot()
            .into_iter()
            .enumerate()
            .map(|(i, snap)| BackendView {
                snap,
                addr: shared
                    .backends
                    .get(i)
                    .map_or_else(String::new, |b| b.addr.to_string()),
                estimate_ms: estimates
                    .get(i)
                    .copied()
                    .flatten()
                    .filter(|e| e.is_finite()),
                ejections: shared.ejector.times_ejected(i),
                ejected: shared.ejector.is_ejected(i),
                up: shared.active.as_ref().map(|a| a.is_up(i)),
                drained: shared.drained.is_drained(i),
                state: shared.backend_state(i),
            })
            .collect::<Vec<BackendView>>();
        let answered: u64 = backends.iter().map(|b| b.snap.count).sum();
        let slo = shared.slo.map(|d| {
            let share = if answered == 0 {
                1.0
            } else {
                g(&s.within_slo) as f64 / answered as f64
            };
            (d.as_secs_f64() * 1000.0, share.min(1.0))
        });
        View {
            slo,
            gauges: shared.selector.gauges(),
            policy: shared.selector.name(),
            uptime_s: started.elapsed().as_secs_f64(),
            now_ms: unix_ms(SystemTime::now()),
            requests: Requests {
                total: g(&s.requests),
                ok: g(&s.ok),
                client_errors: g(&s.status_4xx),
                server_errors: g(&s.status_5xx),
                retries: g(&s.retries),
            },
            failures: [
                g(&s.connect_failures),
                g(&s.backend_resets),
                g(&s.bad_responses),
                g(&s.backend_timeouts),
                g(&s.unavailable),
                g(&s.client_timeouts),
                g(&s.client_aborts),
                g(&s.bad_bodies),
            ],
            tunnels: (g(&s.tunnels), g(&s.tunnels_open)),
            tls_handshakes: s.tls.handshakes().collect(),
            tls_errors: s.tls.errors().collect(),
            config: ConfigView {
                generation: shared.generation,
                reloads: self.config.as_ref().map_or(0, |l| g(&l.reloads)),
                reload_failures: self.config.as_ref().map_or(0, |l| g(&l.reload_failures)),
                reloaded_at_ms: self
                    .config
                    .as_ref()
                    .and_then(|l| l.reloaded_at())
                    .map(unix_ms),
            },
            backends,
            accepted: self.live.accept.accepted.load(Relaxed),
            open: self.live.accept.open.load(Relaxed),
            workers: self
                .live
                .workers
                .iter()
                .map(|w| w.open.load(Relaxed))
                .collect(),
            csv: self.csv.as_ref().map(|c| CsvStats {
                rows: g(&c.rows),
                write_errors: g(&c.write_errors),
                dropped: g(&c.dropped),
            }),
            recent: history.map_or_else(Vec::new, |_| shared.metrics.recent()),
            history: history.map_or_else(Vec::new, History::samples),
        }
    }
}

impl View {
    /// All backends' histograms added up (cumulative, +Inf last).
    pub fn overall_cumulative(&self) -> Vec<u64> {
        let mut total = vec![0; LATENCY_BUCKETS.len() + 1];
        for b in &self.backends {
            for (t, c) in total.iter_mut().zip(&b.snap.cumulative) {
                *t += c;
            }
        }
        total
    }
}

/// Quantile `q` of a cumulative histogram in ms, interpolated linearly
/// inside its bucket as Prometheus' `histogram_quantile` does; a quantile
/// in the +Inf bucket reports the largest finite bound. `None` without data.
pub fn quantile_ms(cumulative: &[u64], q: f64) -> Option<f64> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let i = cumulative.iter().position(|&c| c as f64 >= rank)?;
    let top = LATENCY_BUCKETS.len().saturating_sub(1);
    let Some(&upper) = LATENCY_BUCKETS.get(i) else {
        return LATENCY_BUCKETS.get(top).map(|s| s * 1000.0);
    };
    let (lower, below) = match i.checked_sub(1) {
        Some(j) => (
            LATENCY_BUCKETS.get(j).copied().unwrap_or(0.0),
            cumulative.get(j).copied().unwrap_or(0),
        ),
        None => (0.0, 0),
    };
    let in_bucket = cumulative
        .get(i)
        .copied()
        .unwrap_or(0)
        .saturating_sub(below);
    let frac = if in_bucket == 0 {
        1.0
    } else {
        ((rank - below as f64) / in_bucket as f64).clamp(0.0, 1.0)
    };
    Some((lower + (upper - lower) * frac) * 1000.0)
}

/// Mean in ms of `count` samples summing to `sum_seconds`; `None` if none.
pub fn mean_ms(sum_seconds: f64, count: u64) -> Option<f64> {
    (count > 0).then(|| sum_seconds * 1000.0 / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 10 samples in (5, 10] ms, 10 in (10, 25] ms.
        let mut c = vec![0u64; LATENCY_BUCKETS.len() + 1];
        for (i, v) in c.iter_mut().enumerate() {
            *v = match i {
                0..=2 => 0,
                3 => 10,
                _ => 20,
            };
        }
        assert_eq!(quantile_ms(&c, 0.5), Some(10.0));
        let p75 = quantile_ms(&c, 0.75).unwrap_or_default();
        assert!((p75 - 17.5).abs() < 1e-9, "{p75}");
        assert_eq!(quantile_ms(&[0; 14], 0.5), None);
        // Everything above 10 s: the largest finite bound.
        let mut inf = vec![0u64; LATENCY_BUCKETS.len() + 1];
        if let Some(last) = inf.last_mut() {
            *last = 3;
        }
        assert_eq!(quantile_ms(&inf, 0.95), Some(10_000.0));
    }

    #[test]
    fn history_keeps_the_last_minute() {
        let mut h = History::default();
        for i in 0..(HISTORY_SAMPLES as u64 + 5) {
            h.push(Sample {
                at_ms: i,
                mono_s: i as f64,
                backends: Vec::new(),
            });
        }
        let s = h.samples();
        assert_eq!(s.len(), HISTORY_SAMPLES);
        assert_eq!(s.first().map(|s| s.at_ms), Some(5));
    }
}
