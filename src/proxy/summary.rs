//! The run summary printed when the proxy stops: requests, req/s, latency
//! percentiles from the merged HdrHistogram, errors by kind, distribution by
//! backend, and the share answered within `--slo-ms`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

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
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tidegate proxy: {requests} requests in {secs:.1} s ({:.1} req/s)",
        requests as f64 / secs
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
        g(&st.ok),
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
