//! One reading of everything the admin endpoint reports ([`View`]), and
//! the per-second [`History`] behind the dashboard's trend chart.
//!
//! Both `/metrics` and `/stats` render from a `View`, so the two never
//! disagree on what they read. Reading is loads of relaxed atomics, a
//! short lock on the history, and a short lock on each worker's latency
//! window cell (see [`crate::metrics::window`]): a worker may wait for the
//! reader for the few microseconds one histogram merge takes, once a
//! second at most, and never for another worker.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use super::process::ProcessView;
use crate::metrics::window;
use crate::metrics::{BackendSnapshot, Recent};
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
    /// 1xx, 2xx and 3xx final responses.
    pub informational: u64,
    pub ok: u64,
    pub redirects: u64,
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
    /// Descriptors and start time of the process.
    pub process: ProcessView,
    /// The queue and the per-backend limits (see `admin::queue`).
    pub queue: super::queue::QueueView,
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
        // The request counters: per-worker shards, summed here.
        let gs = |c: &crate::runtime::shard::Counter| c.load(Relaxed);
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
                gs(&s.within_slo) as f64 / answered as f64
            };
            (d.as_secs_f64() * 1000.0, share.min(1.0))
        });
        View {
            process: ProcessView::read(),
            queue: super::queue::read(shared),
            slo,
            gauges: shared.selector.gauges(),
            policy: shared.selector.name(),
            uptime_s: started.elapsed().as_secs_f64(),
            now_ms: unix_ms(SystemTime::now()),
            requests: Requests {
                total: gs(&s.requests),
                informational: gs(&s.status_1xx),
                ok: gs(&s.ok),
                redirects: gs(&s.status_3xx),
                client_errors: gs(&s.status_4xx),
                server_errors: gs(&s.status_5xx),
                retries: gs(&s.retries),
            },
            failures: [
                gs(&s.connect_failures),
                gs(&s.backend_resets),
                gs(&s.bad_responses),
                gs(&s.backend_timeouts),
                gs(&s.unavailable),
                gs(&s.client_timeouts),
                gs(&s.client_aborts),
                gs(&s.bad_bodies),
            ],
            tunnels: (gs(&s.tunnels), gs(&s.tunnels_open)),
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
    /// All backends' latency windows merged (µs): exact percentiles of
    /// every answered request in the window.
    pub fn overall_window(&self) -> Histogram<u64> {
        let mut all = window::new_histogram();
        for b in &self.backends {
            // Same bounds on both sides, so adding cannot fail.
            let _ = all.add(&b.snap.window);
        }
        all
    }
}

/// Mean in ms of `count` samples summing to `sum_seconds`; `None` if none.
pub fn mean_ms(sum_seconds: f64, count: u64) -> Option<f64> {
    (count > 0).then(|| sum_seconds * 1000.0 / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

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
