//! `GET /stats`: a [`View`] as JSON, serialised by hand (no serde).
//!
//! Shape (times in ms since the Unix epoch, latencies in ms; `null` where
//! there is no data yet):
//! ```text
//! { "policy", "uptime_s", "now_ms",
//!   "config": {"generation", "reloads", "reload_failures", "reloaded_at_ms" | null},
//!   "requests": {"total", "ok", "4xx", "5xx"}, "retries",
//!   "failures": {"connect", "backend_reset", "bad_response", "backend_timeout",
//!                "backend_unavailable", "client_timeout", "client_abort", "client_bad_body"},
//!   "ejections",
//!   "latency": {"count", "mean_ms", "p50_ms", "p95_ms", "p99_ms"},
//!   "connections": {"accepted", "open", "workers": [open per worker]},
//!   "csv_rows": n | null,
//!   "csv_log": {"rows", "write_errors", "dropped"} | null,
//!   "buckets_ms": [bucket upper bounds],
//!   "backends": [{"name", "addr", "requests", "by_class": {"1xx".."5xx"},
//!     "in_flight", "failures", "ejections", "ejected", "up", "drained",
//!     "state": "up"|"down"|"ejected"|"drained", "answered", "sum_ms",
//!     "mean_ms", "p95_ms", "estimate_ms", "gauges": {name: value|null},
//!     "buckets": [cumulative, +Inf last]}],
//!   "history": [{"t", "dt_s", "backends": [{"requests", "answered", "mean_ms"}]}],
//!   "recent": [{"t", "backend", "status", "latency_ms"}] }
//! ```
//! `history` has one entry per second of the last minute (deltas between
//! samples); `recent` is the latest answered requests, oldest first.

use std::fmt::Write as _;

use super::view::{FAILURE_KINDS, Sample, View, mean_ms, quantile_ms};
use crate::metrics::LATENCY_BUCKETS;

/// The `Content-Type` of `/stats`.
pub const CONTENT_TYPE: &str = "application/json";

/// Renders the whole document.
pub fn render(v: &View) -> String {
    let mut o = String::with_capacity(64 * 1024);
    o.push('{');
    let _ = write!(
        o,
        "\"policy\":{},\"uptime_s\":{},\"now_ms\":{},",
        string(v.policy),
        num(Some(v.uptime_s)),
        v.now_ms
    );
    let c = &v.config;
    let _ = write!(
        o,
        "\"config\":{{\"generation\":{},\"reloads\":{},\"reload_failures\":{},\"reloaded_at_ms\":{}}},",
        c.generation,
        c.reloads,
        c.reload_failures,
        c.reloaded_at_ms
            .map_or("null".to_string(), |ms| ms.to_string())
    );
    let r = &v.requests;
    let _ = write!(
        o,
        "\"requests\":{{\"total\":{},\"ok\":{},\"4xx\":{},\"5xx\":{}}},\"retries\":{},",
        r.total, r.ok, r.client_errors, r.server_errors, r.retries
    );
    o.push_str("\"failures\":{");
    for (i, (kind, n)) in FAILURE_KINDS.iter().zip(v.failures).enumerate() {
        let _ = write!(o, "{}\"{kind}\":{n}", sep(i));
    }
    let pairs = |p: &[(&str, u64)]| {
        let items = p.iter().map(|(k, n)| format!("{}:{n}", string(k)));
        items.collect::<Vec<_>>().join(",")
    };
    let _ = write!(
        o,
        "}},\"tls\":{{\"handshakes\":{{{}}},\"handshake_errors\":{{{}}}",
        pairs(&v.tls_handshakes),
        pairs(&v.tls_errors)
    );
    let ejections: u64 = v.backends.iter().map(|b| b.ejections).sum();
    let _ = write!(o, "}},\"ejections\":{ejections},");
    match v.slo {
        Some((ms, share)) => {
            let _ = write!(o, "\"slo\":{{\"ms\":{ms},\"share\":{share}}},");
        }
        None => o.push_str("\"slo\":null,"),
    }
    latency(&mut o, v);
    let _ = write!(
        o,
        "\"connections\":{{\"accepted\":{},\"open\":{},\"workers\":{}}},\"csv_rows\":{},",
        v.accepted,
        v.open,
        list(v.workers.iter().map(|n| n.to_string())),
        v.csv
            .map_or_else(|| "null".to_string(), |c| c.rows.to_string())
    );
    match v.csv {
        Some(c) => {
            let _ = write!(
                o,
                "\"csv_log\":{{\"rows\":{},\"write_errors\":{},\"dropped\":{}}},",
                c.rows, c.write_errors, c.dropped
            );
        }
        None => o.push_str("\"csv_log\":null,"),
    }
    let _ = write!(
        o,
        "\"buckets_ms\":{},",
        list(LATENCY_BUCKETS.iter().map(|s| num(Some(s * 1000.0))))
    );
    backends(&mut o, v);
    history(&mut o, &v.history);
    recent(&mut o, v);
    o.push('}');
    o
}

fn latency(o: &mut String, v: &View) {
    let all = v.overall_cumulative();
    let count = all.last().copied().unwrap_or(0);
    let sum: f64 = v.backends.iter().map(|b| b.snap.sum_seconds).sum();
    let _ = write!(
        o,
        "\"latency\":{{\"count\":{count},\"mean_ms\":{},\"p50_ms\":{},\"p95_ms\":{},\"p99_ms\":{}}},",
        num(mean_ms(sum, count)),
        num(quantile_ms(&all, 0.5)),
        num(quantile_ms(&all, 0.95)),
        num(quantile_ms(&all, 0.99)),
    );
}

fn backends(o: &mut String, v: &View) {
    o.push_str("\"backends\":[");
    for (i, b) in v.backends.iter().enumerate() {
        let s = &b.snap;
        let classes: Vec<String> = s
            .by_class
            .iter()
            .enumerate()
            .map(|(c, n)| format!("\"{}xx\":{n}", c + 1))
            .collect();
        let _ = write!(
            o,
            "{}{{\"name\":{},\"addr\":{},\"requests\":{},\"by_class\":{{{}}},\"in_flight\":{},\
             \"failures\":{},\"ejections\":{},\"ejected\":{},\"up\":{},\"drained\":{},\"state\":\"{}\",\"within_slo\":{},\"answered\":{},\"sum_ms\":{},\"mean_ms\":{},\
             \"p95_ms\":{},\"estimate_ms\":{},\"gauges\":{{{}}},\"buckets\":{}}}",
            sep(i),
            string(&s.name),
            string(&b.addr),
            s.requests(),
            classes.join(","),
            s.in_flight.max(0),
            s.failures,
            b.ejections,
            b.ejected,
            b.up.map_or("null", |u| if u { "true" } else { "false" }),
            b.drained,
            b.state.as_str(),
            s.within_slo,
            s.count,
            num(Some(s.sum_seconds * 1000.0)),
            num(mean_ms(s.sum_seconds, s.count)),
            num(quantile_ms(&s.cumulative, 0.95)),
            num(b.estimate_ms),
            v.gauges
                .iter()
                .map(|(name, vals)| format!(
                    "{}:{}",
                    string(name),
                    num(vals.get(i).copied().flatten())
                ))
                .collect::<Vec<_>>()
                .join(","),
            list(s.cumulative.iter().map(|c| c.to_string())),
        );
    }
    o.push_str("],");
}

/// Per-second deltas between consecutive samples.
fn history(o: &mut String, samples: &[Sample]) {
    o.push_str("\"history\":[");
    for (i, pair) in samples.windows(2).enumerate() {
        let [a, b] = pair else { continue };
        let _ = write!(
            o,
            "{}{{\"t\":{},\"dt_s\":{},\"backends\":[",
            sep(i),
            b.at_ms,
            num(Some(b.mono_s - a.mono_s))
        );
        for (j, (x, y)) in a.backends.iter().zip(&b.backends).enumerate() {
            let answered = y.answered.saturating_sub(x.answered);
            let _ = write!(
                o,
                "{}{{\"requests\":{},\"answered\":{answered},\"mean_ms\":{}}}",
                sep(j),
                y.requests.saturating_sub(x.requests),
                num(mean_ms(y.sum_seconds - x.sum_seconds, answered))
            );
        }
        o.push_str("]}");
    }
    o.push_str("],");
}

fn recent(o: &mut String, v: &View) {
    o.push_str("\"recent\":[");
    for (i, r) in v.recent.iter().enumerate() {
        let _ = write!(
            o,
            "{}{{\"t\":{},\"backend\":{},\"status\":{},\"latency_ms\":{}}}",
            sep(i),
            r.at_micros / 1000,
            r.backend,
            r.status,
            num(Some(r.latency_ms))
        );
    }
    o.push(']');
}

fn sep(i: usize) -> &'static str {
    if i == 0 { "" } else { "," }
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(","))
}

/// A JSON number with up to 3 decimals, or `null` (also for NaN and ±inf,
/// which JSON cannot express).
pub fn num(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => {
            let s = format!("{x:.3}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            if s == "-0" { "0".into() } else { s.into() }
        }
        _ => "null".into(),
    }
}

/// A JSON string literal.
pub fn string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", u32::from(c));
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_strings_are_valid_json() {
        assert_eq!(num(Some(1.5)), "1.5");
        assert_eq!(num(Some(2.0)), "2");
        assert_eq!(num(Some(0.0001)), "0");
        assert_eq!(num(Some(-0.0001)), "0");
        assert_eq!(num(Some(f64::INFINITY)), "null");
        assert_eq!(num(None), "null");
        assert_eq!(string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
