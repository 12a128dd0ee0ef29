//! The run summary printed when the proxy stops: requests, req/s, latency
//! percentiles from the merged HdrHistogram, errors by kind, distribution by
//! backend, and the share answered within `--slo-ms`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::Shared;
use super::csvlog::LogCounters;

/// Highest latency the histogram tracks exactly: 1 hour in µs (anything
/// above saturates). 3 significant figures keep p99 error under 0.1%.
const MAX_MICROS: u64 = 3_600_000_000;
const SIGFIGS: u8 = 3;

/// An empty latency histogram with the bounds every worker shares.
#[allow(clippy::expect_used)]
pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds (low >= 1, high >= 2 * low, sigfigs <= 5):
    // this cannot fail, and nothing from the network reaches it.
    Histogram::new_with_bounds(1, MAX_MICROS, SIGFIGS).expect("constant histogram bounds are valid")
}

/// When traffic flowed: the first request received and the last request
/// or answer seen. Each worker keeps its own (no shared write per
/// request) and merges it into [`super::ProxyStats::traffic`] when it
/// stops, as it does its latency histogram.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrafficSpan {
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

impl TrafficSpan {
    /// Traffic at `at` (a request received, or a response completed).
    pub fn saw(&mut self, at: Instant) {
        self.first = Some(self.first.map_or(at, |f| f.min(at)));
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    /// Widens this span to cover `other`.
    pub fn merge(&mut self, other: &TrafficSpan) {
        for at in [other.first, other.last].into_iter().flatten() {
            self.saw(at);
        }
    }

    /// From the first request to the last response; `None` before any.
    pub fn duration(&self) -> Option<Duration> {
        Some(self.last?.saturating_duration_since(self.first?))
    }
}

/// The rate the summary reports: `requests` over the time traffic flowed
/// (`span`), or over `elapsed` (the whole run) when there was too little
/// traffic to time (none, or one instant). Also returns the seconds used.
pub fn rate(requests: u64, span: Option<Duration>, elapsed: Duration) -> (f64, f64) {
    let secs = span
        .filter(|d| !d.is_zero())
        .unwrap_or(elapsed)
        .as_secs_f64()
        .max(1e-9);
    (requests as f64 / secs, secs)
}

/// The `--log-csv` line of the summary: rows written, and rows dropped by
/// failed writes (no silent loss: a dropped row is always reported).
pub fn render_csv(c: &LogCounters) -> String {
    let (rows, errors, dropped) = (
        c.rows.load(Relaxed),
        c.write_errors.load(Relaxed),
        c.dropped.load(Relaxed),
    );
    if errors == 0 {
        format!("tidegate proxy: {rows} CSV rows written\n")
    } else {
        format!(
            "tidegate proxy: {rows} CSV rows written, {dropped} CSV rows dropped ({errors} log write errors)\n"
        )
    }
}

/// Renders the summary lines (each starting with `tidegate proxy: `).
pub fn render(shared: &Shared, elapsed: Duration) -> String {
    let g = |c: &crate::runtime::shard::Counter| c.load(Relaxed);
    let st = &shared.stats;
    let requests = g(&st.requests);
    let span = st.traffic.lock().ok().and_then(|t| t.duration());
    let (per_s, over) = rate(requests, span, elapsed);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tidegate proxy: {requests} requests in {:.1} s ({per_s:.1} req/s over the {over:.1} s traffic flowed)",
        elapsed.as_secs_f64()
    );
    if let Ok(h) = shared.latencies.lock() {
        if h.is_empty() {
            let _ = writeln!(out, "tidegate proxy: latency: no answered requests");
        } else {
            let ms = |us: u64| us as f64 / 1000.0;
            let _ = writeln!(
                out,
                "tidegate proxy: latency ms: mean {:.1}, p50 {:.1}, p95 {:.1}, p99 {:.1}, max {:.1} ({} answered)",
                h.mean() / 1000.0,
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.95)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
                h.len()
            );
            if let Some(slo) = shared.slo {
                let share = 100.0 * g(&st.within_slo) as f64 / h.len() as f64;
                let _ = writeln!(
                    out,
                    "tidegate proxy: SLO share: {share:.2}% answered within {} ms",
                    slo.as_millis()
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "tidegate proxy: status: {} 2xx/3xx, {} 4xx, {} 5xx; {} retries",
        g(&st.status_1xx) + g(&st.ok) + g(&st.status_3xx),
        g(&st.status_4xx),
        g(&st.status_5xx),
        g(&st.retries)
    );
    let _ = writeln!(
        out,
        "tidegate proxy: backend faults: {} connect, {} reset, {} bad response, {} timeout, {} unavailable; \
         client faults: {} timeout, {} abort, {} bad body; {} tunnels",
        g(&st.connect_failures),
        g(&st.backend_resets),
        g(&st.bad_responses),
        g(&st.backend_timeouts),
        g(&st.unavailable),
        g(&st.client_timeouts),
        g(&st.client_aborts),
        g(&st.bad_bodies),
        g(&st.tunnels)
    );
    let snap = shared.metrics.snapshot();
    let answered: u64 = snap.iter().map(|b| b.requests()).sum();
    let parts: Vec<String> = snap
        .iter()
        .map(|b| {
            let pct = if answered == 0 {
                0.0
            } else {
                100.0 * b.requests() as f64 / answered as f64
            };
            format!("{} {pct:.1}% ({})", b.name, b.requests())
        })
        .collect();
    let _ = writeln!(out, "tidegate proxy: distribution: {}", parts.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn req_per_s_counts_only_the_time_traffic_flowed() {
        let t0 = Instant::now();
        let mut a = TrafficSpan::default();
        assert_eq!(a.duration(), None);
        a.saw(t0 + Duration::from_secs(10));
        a.saw(t0 + Duration::from_secs(12));
        let mut b = TrafficSpan::default();
        b.saw(t0 + Duration::from_secs(11));
        b.saw(t0 + Duration::from_secs(20));
        a.merge(&b);
        assert_eq!(a.duration(), Some(Duration::from_secs(10)));
        // 1,000 requests in 10 s of traffic within a 100 s run: 100 req/s.
        let (per_s, over) = rate(1_000, a.duration(), Duration::from_secs(100));
        assert_eq!((per_s.round(), over.round()), (100.0, 10.0));
        // No traffic to time: the whole run.
        let (per_s, _) = rate(0, None, Duration::from_secs(100));
        assert_eq!(per_s, 0.0);
        let mut one = TrafficSpan::default();
        one.saw(t0);
        let (per_s, over) = rate(1, one.duration(), Duration::from_secs(4));
        assert_eq!((per_s, over), (0.25, 4.0));
    }
}
