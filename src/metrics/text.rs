//! The per-backend families of `/metrics` in the Prometheus text format
//! 0.0.4, and the format's small helpers.

use std::fmt::Write as _;

use super::{BackendSnapshot, LATENCY_BUCKETS};

/// Writes one Prometheus metric family header.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value for the Prometheus text format.
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the per-backend families in the Prometheus text format 0.0.4.
pub fn render_backends(out: &mut String, snap: &[BackendSnapshot]) {
    family(
        out,
        "tidegate_requests_total",
        "counter",
        "Requests answered, by backend and status class.",
    );
    for b in snap {
        for (i, n) in b.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "tidegate_requests_total{{backend=\"{}\",class=\"{}xx\"}} {n}",
                label(&b.name),
                i + 1
            );
        }
    }
    family(
        out,
        "tidegate_backend_in_flight",
        "gauge",
        "Requests in flight to each backend.",
    );
    for b in snap {
        let _ = writeln!(
            out,
            "tidegate_backend_in_flight{{backend=\"{}\"}} {}",
            label(&b.name),
            b.in_flight.max(0)
        );
    }
    family(
        out,
        "tidegate_backend_failures_total",
        "counter",
        "Requests that failed at a backend (connect, reset, timeout, bad response).",
    );
    for b in snap {
        let _ = writeln!(
            out,
            "tidegate_backend_failures_total{{backend=\"{}\"}} {}",
            label(&b.name),
            b.failures
        );
    }
    family(
        out,
        "tidegate_request_duration_seconds",
        "histogram",
        "Latency per backend, first request byte written to last response byte read.",
    );
    for b in snap {
        let name = label(&b.name);
        for (le, c) in LATENCY_BUCKETS.iter().zip(&b.cumulative) {
            let _ = writeln!(
                out,
                "tidegate_request_duration_seconds_bucket{{backend=\"{name}\",le=\"{le}\"}} {c}"
            );
        }
        let _ = writeln!(
            out,
            "tidegate_request_duration_seconds_bucket{{backend=\"{name}\",le=\"+Inf\"}} {}",
            b.count
        );
        let _ = writeln!(
            out,
            "tidegate_request_duration_seconds_sum{{backend=\"{name}\"}} {}",
            b.sum_seconds
        );
        let _ = writeln!(
            out,
            "tidegate_request_duration_seconds_count{{backend=\"{name}\"}} {}",
            b.count
        );
    }
}
