//! `GET /metrics`: a [`View`] in the Prometheus text format 0.0.4.
//!
//! Every family has `# HELP` and `# TYPE`; counters end in `_total`;
//! values are finite. The per-backend families (requests by class,
//! in-flight, failures, latency histogram) come from
//! [`crate::metrics::render_backends`]; the rest are written here.

use std::fmt::Write as _;

use super::view::{FAILURE_KINDS, View};
use crate::metrics::{family, label, render_backends};

/// The `Content-Type` Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the whole exposition.
pub fn render(v: &View) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let snaps: Vec<_> = v.backends.iter().map(|b| b.snap.clone()).collect();
    render_backends(&mut out, &snaps);
    policy(&mut out, v);
    requests(&mut out, v);
    connections(&mut out, v);
    out
}

/// Writes a family with a single unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn policy(out: &mut String, v: &View) {
    let policy = label(v.policy);
    family(
        out,
        "tidegate_policy_info",
        "gauge",
        "The routing policy in use (always 1).",
    );
    let _ = writeln!(out, "tidegate_policy_info{{policy=\"{policy}\"}} 1");
    family(
        out,
        "tidegate_backend_estimate_ms",
        "gauge",
        "The routing policy's current latency estimate per backend, in ms (unmeasured backends omitted).",
    );
    for b in &v.backends {
        if let Some(ms) = b.estimate_ms {
            let _ = writeln!(
                out,
                "tidegate_backend_estimate_ms{{backend=\"{}\",policy=\"{policy}\"}} {ms}",
                label(&b.snap.name)
            );
        }
    }
    let gauges = v
        .gauges
        .iter()
        .filter(|(_, vals)| vals.iter().any(Option::is_some));
    let mut declared = false;
    for (name, vals) in gauges {
        if !declared {
            family(
                out,
                "tidegate_policy_gauge",
                "gauge",
                "Per-backend numbers of the running policy (tail-budget weight, predictive r_squared).",
            );
            declared = true;
        }
        for (b, val) in v.backends.iter().zip(vals) {
            if let Some(x) = val.filter(|x| x.is_finite()) {
                let _ = writeln!(
                    out,
                    "tidegate_policy_gauge{{backend=\"{}\",policy=\"{policy}\",name=\"{name}\"}} {x}",
                    label(&b.snap.name)
                );
            }
        }
    }
    family(
        out,
        "tidegate_ejections_total",
        "counter",
        "Times a backend was ejected by outlier detection (5 consecutive failures).",
    );
    for b in &v.backends {
        let _ = writeln!(
            out,
            "tidegate_ejections_total{{backend=\"{}\"}} {}",
            label(&b.snap.name),
            b.ejections
        );
    }
    family(
        out,
        "tidegate_backend_ejected",
        "gauge",
        "1 while a backend is ejected.",
    );
    for b in &v.backends {
        let _ = writeln!(
            out,
            "tidegate_backend_ejected{{backend=\"{}\"}} {}",
            label(&b.snap.name),
            u8::from(b.ejected)
        );
    }
    family(
        out,
        "tidegate_backend_drained",
        "gauge",
        "1 while a backend is drained through the admin API (takes no new requests).",
    );
    for b in &v.backends {
        let _ = writeln!(
            out,
            "tidegate_backend_drained{{backend=\"{}\"}} {}",
            label(&b.snap.name),
            u8::from(b.drained)
        );
    }
    if v.backends.iter().any(|b| b.up.is_some()) {
        family(
            out,
            "tidegate_backend_up",
            "gauge",
            "1 while active health checks (--health-check) pass.",
        );
        for b in &v.backends {
            if let Some(up) = b.up {
                let _ = writeln!(
                    out,
                    "tidegate_backend_up{{backend=\"{}\"}} {}",
                    label(&b.snap.name),
                    u8::from(up)
                );
            }
        }
    }
    if let Some((slo_ms, share)) = v.slo {
        family(
            out,
            "tidegate_slo_share",
            "gauge",
            "Share of answered requests within --slo-ms.",
        );
        let _ = writeln!(out, "tidegate_slo_share{{slo_ms=\"{slo_ms}\"}} {share}");
        family(
            out,
            "tidegate_backend_slo_share",
            "gauge",
            "Share of each backend's answered requests within --slo-ms.",
        );
        for b in v.backends.iter().filter(|b| b.snap.count > 0) {
            let share = b.snap.within_slo as f64 / b.snap.count as f64;
            let _ = writeln!(
                out,
                "tidegate_backend_slo_share{{backend=\"{}\",slo_ms=\"{slo_ms}\"}} {share}",
                label(&b.snap.name)
            );
        }
    }
}

fn requests(out: &mut String, v: &View) {
    let r = &v.requests;
    single(
        out,
        "tidegate_client_requests_total",
        "counter",
        "Requests received from clients (bad requests included).",
        r.total,
    );
    family(
        out,
        "tidegate_client_responses_total",
        "counter",
        "Final responses sent to clients, by outcome class.",
    );
    for (class, n) in [
        ("ok", r.ok),
        ("4xx", r.client_errors),
        ("5xx", r.server_errors),
    ] {
        let _ = writeln!(
            out,
            "tidegate_client_responses_total{{class=\"{class}\"}} {n}"
        );
    }
    single(
        out,
        "tidegate_retries_total",
        "counter",
        "Requests retried on another backend after a failed attempt.",
        r.retries,
    );
    family(
        out,
        "tidegate_failures_total",
        "counter",
        "Failed exchanges by kind and by the side at fault (backend or client).",
    );
    for (kind, n) in FAILURE_KINDS.iter().zip(v.failures) {
        let side = if kind.starts_with("client") {
            "client"
        } else {
            "backend"
        };
        let _ = writeln!(
            out,
            "tidegate_failures_total{{kind=\"{kind}\",side=\"{side}\"}} {n}"
        );
    }
    single(
        out,
        "tidegate_tunnels_total",
        "counter",
        "Connections switched to a byte tunnel by a 101 (WebSocket).",
        v.tunnels.0,
    );
    single(
        out,
        "tidegate_tunnels_open",
        "gauge",
        "Tunnels open now.",
        v.tunnels.1,
    );
    family(
        out,
        "tidegate_tls_handshakes_total",
        "counter",
        "Completed TLS handshakes on HTTPS listeners, by protocol version.",
    );
    for (version, n) in &v.tls_handshakes {
        let _ = writeln!(
            out,
            "tidegate_tls_handshakes_total{{version=\"{version}\"}} {n}"
        );
    }
    family(
        out,
        "tidegate_tls_handshake_errors_total",
        "counter",
        "Failed TLS handshakes by reason (not_tls: plaintext to an HTTPS port; unknown_sni: no certificate for the name and no default).",
    );
    for (reason, n) in &v.tls_errors {
        let _ = writeln!(
            out,
            "tidegate_tls_handshake_errors_total{{reason=\"{reason}\"}} {n}"
        );
    }
    let c = &v.config;
    single(
        out,
        "tidegate_config_generation",
        "gauge",
        "Configuration generation in force (0 at start, +1 per applied reload).",
        c.generation,
    );
    family(
        out,
        "tidegate_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP, POST /api/reload, DNS changes) by result.",
    );
    let _ = writeln!(out, "tidegate_reloads_total{{result=\"ok\"}} {}", c.reloads);
    let _ = writeln!(
        out,
        "tidegate_reloads_total{{result=\"failed\"}} {}",
        c.reload_failures
    );
    if let Some(ms) = c.reloaded_at_ms {
        single(
            out,
            "tidegate_last_reload_timestamp_seconds",
            "gauge",
            "When the last reload was applied (Unix time).",
            ms as f64 / 1000.0,
        );
    }
}

fn connections(out: &mut String, v: &View) {
    single(
        out,
        "tidegate_accepted_connections_total",
        "counter",
        "Client connections accepted.",
        v.accepted,
    );
    single(
        out,
        "tidegate_open_connections",
        "gauge",
        "Client connections open now.",
        v.open,
    );
    family(
        out,
        "tidegate_worker_open_connections",
        "gauge",
        "Client connections open now, per worker thread.",
    );
    for (i, n) in v.workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "tidegate_worker_open_connections{{worker=\"{i}\"}} {n}"
        );
    }
    if let Some(csv) = v.csv {
        single(
            out,
            "tidegate_csv_rows_written_total",
            "counter",
            "Rows written to the --log-csv request log.",
            csv.rows,
        );
        family(
            out,
            "tidegate_log_write_errors_total",
            "counter",
            "Failed writes (and failed reopens) of a log file; the rows of a failed write are dropped.",
        );
        let _ = writeln!(
            out,
            "tidegate_log_write_errors_total{{log=\"csv\"}} {}",
            csv.write_errors
        );
        family(
            out,
            "tidegate_log_rows_dropped_total",
            "counter",
            "Log rows lost to failed writes.",
        );
        let _ = writeln!(
            out,
            "tidegate_log_rows_dropped_total{{log=\"csv\"}} {}",
            csv.dropped
        );
    }
    single(
        out,
        "tidegate_uptime_seconds",
        "gauge",
        "Seconds since the proxy started.",
        format_args!("{:.3}", v.uptime_s),
    );
}
