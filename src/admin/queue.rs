//! The queue and the per-backend limits in `/metrics` and `/stats`, kept
//! apart from the other families: names in Prometheus base units.
//!
//! `/metrics`:
//! - `tidegate_queue_depth` (gauge): requests waiting now, all workers;
//! - `tidegate_queue_wait_seconds` (histogram): time waited by requests
//!   that left the queue (for a backend, or with a 503 on timeout);
//! - `tidegate_queue_admitted_total`, `tidegate_queue_timeouts_total`,
//!   `tidegate_queue_full_total` (counters);
//! - `tidegate_backend_limit{backend}` (gauge): the limit in force, for
//!   backends that have one;
//! - `tidegate_backend_limit_in_flight{backend}` (gauge): requests in
//!   flight counted against that limit.
//!
//! `/stats`: `"queued": n` and `"queue": {"queued", "admitted", "timeouts",
//! "full", "wait": {"count", "mean_ms", "p50_ms", "p99_ms"}, "wait_buckets_ms",
//! "backends": [{"name", "limit" | null, "in_flight"}]}` (`in_flight`: the
//! requests counted against the limit, 0 for a backend without one).

use std::fmt::Write as _;

use super::json::{num, string};
use crate::metrics::{family, label};
use crate::proxy::Shared;
use crate::proxy::board::{QueueSnapshot, WAIT_BUCKETS};
use crate::proxy::slots::UNLIMITED;

/// One backend's limit and the requests counted against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendLimit {
    pub name: String,
    /// The effective limit (configured or learned), if any.
    pub limit: Option<u32>,
    pub in_flight: u32,
}

/// The queue and the limits, read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueView {
    pub snap: QueueSnapshot,
    pub backends: Vec<BackendLimit>,
}

/// Reads the queue's counters and each backend's limit now.
pub fn read(shared: &Shared) -> QueueView {
    let backends = shared
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let slot = shared.slots.get(i);
            BackendLimit {
                name: b.name.clone(),
                limit: slot
                    .map(|s| s.limits.effective())
                    .filter(|&l| l != UNLIMITED),
                in_flight: slot.map_or(0, |s| s.in_flight()),
            }
        })
        .collect();
    QueueView {
        snap: shared.board.snapshot(),
        backends,
    }
}

/// The Prometheus families.
pub fn prom(out: &mut String, q: &QueueView) {
    let s = &q.snap;
    family(
        out,
        "tidegate_queue_depth",
        "gauge",
        "Requests waiting for a backend under its limit, all workers.",
    );
    let _ = writeln!(out, "tidegate_queue_depth {}", s.queued);
    family(
        out,
        "tidegate_queue_wait_seconds",
        "histogram",
        "Time requests waited in the queue (admitted or timed out).",
    );
    for (le, c) in WAIT_BUCKETS.iter().zip(&s.wait_cumulative) {
        let _ = writeln!(out, "tidegate_queue_wait_seconds_bucket{{le=\"{le}\"}} {c}");
    }
    let count = s.wait_cumulative.last().copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "tidegate_queue_wait_seconds_bucket{{le=\"+Inf\"}} {count}\n\
         tidegate_queue_wait_seconds_sum {}\ntidegate_queue_wait_seconds_count {count}",
        s.wait_sum_seconds
    );
    for (name, help, v) in [
        (
            "tidegate_queue_admitted_total",
            "Requests that left the queue for a backend.",
            s.admitted,
        ),
        (
            "tidegate_queue_timeouts_total",
            "Requests answered 503 after waiting --queue-timeout (or at shutdown).",
            s.timeouts,
        ),
        (
            "tidegate_queue_full_total",
            "Requests answered 503 because the queue was full (--max-queue).",
            s.full,
        ),
    ] {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    family(
        out,
        "tidegate_backend_limit",
        "gauge",
        "Requests a backend may have in flight at once (backends with a limit).",
    );
    for b in &q.backends {
        if let Some(l) = b.limit {
            let _ = writeln!(
                out,
                "tidegate_backend_limit{{backend=\"{}\"}} {l}",
                label(&b.name)
            );
        }
    }
    family(
        out,
        "tidegate_backend_limit_in_flight",
        "gauge",
        "Requests in flight counted against a backend's limit.",
    );
    for b in q.backends.iter().filter(|b| b.limit.is_some()) {
        let _ = writeln!(
            out,
            "tidegate_backend_limit_in_flight{{backend=\"{}\"}} {}",
            label(&b.name),
            b.in_flight
        );
    }
}

/// The `/stats` members (followed by a comma).
pub fn json(o: &mut String, q: &QueueView) {
    let s = &q.snap;
    let count = s.wait_cumulative.last().copied().unwrap_or(0);
    let mean = (count > 0).then(|| s.wait_sum_seconds * 1000.0 / count as f64);
    let _ = write!(
        o,
        "\"queued\":{},\"queue\":{{\"queued\":{},\"admitted\":{},\"timeouts\":{},\"full\":{},\
         \"wait\":{{\"count\":{count},\"mean_ms\":{},\"p50_ms\":{},\"p99_ms\":{}}},\
         \"wait_buckets_ms\":[{}],\"backends\":[",
        s.queued,
        s.queued,
        s.admitted,
        s.timeouts,
        s.full,
        num(mean),
        num(wait_quantile_ms(&s.wait_cumulative, 0.5)),
        num(wait_quantile_ms(&s.wait_cumulative, 0.99)),
        WAIT_BUCKETS
            .iter()
            .map(|b| num(Some(b * 1000.0)))
            .collect::<Vec<_>>()
            .join(",")
    );
    for (i, b) in q.backends.iter().enumerate() {
        let _ = write!(
            o,
            "{}{{\"name\":{},\"limit\":{},\"in_flight\":{}}}",
            if i == 0 { "" } else { "," },
            string(&b.name),
            b.limit
                .map_or_else(|| "null".to_string(), |l| l.to_string()),
            b.in_flight
        );
    }
    o.push_str("]},");
}

/// A quantile of the wait histogram (interpolated in its bucket; an
/// estimate, as bucket bounds are coarse).
fn wait_quantile_ms(cumulative: &[u64], q: f64) -> Option<f64> {
    quantile_ms_with(cumulative, q, &WAIT_BUCKETS)
}

/// A quantile (ms) of cumulative counts over `bounds` (seconds, +Inf
/// last), as `view::quantile_ms` does for the latency buckets.
fn quantile_ms_with(cumulative: &[u64], q: f64, bounds: &[f64]) -> Option<f64> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for (i, &c) in cumulative.iter().enumerate() {
        let upper = bounds.get(i).copied();
        if c as f64 >= rank {
            let Some(upper) = upper else {
                return Some(lower.0 * 1000.0);
            };
            let span = (c - lower.1).max(1) as f64;
            let within = (rank - lower.1 as f64) / span;
            return Some((lower.0 + (upper - lower.0) * within) * 1000.0);
        }
        lower = (upper.unwrap_or(lower.0), c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> QueueView {
        let mut snap = QueueSnapshot {
            queued: 3,
            timeouts: 2,
            full: 1,
            admitted: 5,
            wait_cumulative: vec![0; WAIT_BUCKETS.len() + 1],
            wait_sum_seconds: 0.35,
        };
        // 7 waits, all within 50..100 ms.
        for c in snap.wait_cumulative.iter_mut().skip(6) {
            *c = 7;
        }
        QueueView {
            snap,
            backends: vec![
                BackendLimit {
                    name: "a".into(),
                    limit: Some(2),
                    in_flight: 2,
                },
                BackendLimit {
                    name: "b".into(),
                    limit: None,
                    in_flight: 0,
                },
            ],
        }
    }

    #[test]
    fn prometheus_families_are_in_base_units() {
        let mut out = String::new();
        prom(&mut out, &view());
        for line in [
            "tidegate_queue_depth 3",
            "tidegate_queue_wait_seconds_bucket{le=\"0.05\"} 0",
            "tidegate_queue_wait_seconds_bucket{le=\"0.1\"} 7",
            "tidegate_queue_wait_seconds_count 7",
            "tidegate_queue_timeouts_total 2",
            "tidegate_queue_full_total 1",
            "tidegate_backend_limit{backend=\"a\"} 2",
            "tidegate_backend_limit_in_flight{backend=\"a\"} 2",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
        assert!(!out.contains("backend=\"b\""), "{out}");
    }

    #[test]
    fn stats_members_are_valid_json_pieces() {
        let mut o = String::from("{");
        json(&mut o, &view());
        o.pop();
        o.push('}');
        assert!(
            o.starts_with("{\"queued\":3,\"queue\":{\"queued\":3,\"admitted\":5"),
            "{o}"
        );
        assert!(o.contains("\"mean_ms\":50"), "{o}");
        assert!(
            o.contains("{\"name\":\"b\",\"limit\":null,\"in_flight\":0}"),
            "{o}"
        );
        let p50 = wait_quantile_ms(&view().snap.wait_cumulative, 0.5);
        assert!(p50.is_some_and(|p| (50.0..=100.0).contains(&p)), "{p50:?}");
    }
}
