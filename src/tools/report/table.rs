//! The three markdown tables of the seed's section 15.3 (throughput,
//! latency, backend distribution), one row per run, padded so the raw text
//! lines up too.

use std::fmt::Write as _;

use super::csv::NO_BACKEND;
use super::stats::{RunStats, all_backends};

/// Shown where a value does not exist (no rows, no duration).
const MISSING: &str = "-";

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Renders Tables 1-3 for `runs`, in the order given.
pub fn render_tables(runs: &[RunStats]) -> String {
    let mut out = String::new();
    out.push_str("### Table 1: Throughput\n\n");
    let rows = runs
        .iter()
        .map(|r| {
            let mut row = label_cells(r);
            row.push(r.requests.to_string());
            row.push(fixed(r.duration_s));
            row.push(fixed(r.req_per_s));
            row
        })
        .collect::<Vec<_>>();
    let head = ["file", "mode", "requests", "duration (s)", "req/s"];
    out.push_str(&markdown(&head.map(String::from), 2, &rows));
    out.push_str(
        "\nreq/s = requests / duration; the duration is --duration if given, \
         else first to last timestamp.\n\n",
    );

    out.push_str("### Table 2: Latency\n\n");
    let rows = runs
        .iter()
        .map(|r| {
            let mut row = label_cells(r);
            let l = r.latency;
            let ms = [
                l.map(|l| l.mean),
                l.map(|l| l.p50),
                l.map(|l| l.p95),
                l.map(|l| l.p99),
                l.map(|l| l.max),
            ];
            row.extend(ms.map(fixed));
            row.push(r.errors.to_string());
            row.push(r.client_errors.to_string());
            row
        })
        .collect::<Vec<_>>();
    let head = [
        "file",
        "mode",
        "mean (ms)",
        "p50 (ms)",
        "p95 (ms)",
        "p99 (ms)",
        "max (ms)",
        "errors",
        "4xx",
    ];
    out.push_str(&markdown(&head.map(String::from), 2, &rows));
    out.push_str(
        "\nPercentiles interpolate linearly between ranks, as pandas' quantile() does. \
         errors: status >= 500 or outcome not ok; 4xx: status 400-499.\n\n",
    );

    out.push_str("### Table 3: Backend distribution (% of requests)\n\n");
    let backends = all_backends(runs);
    let mut head = vec!["file".to_string(), "mode".to_string()];
    head.extend(backends.iter().map(|b| backend_label(b).to_string()));
    let rows = runs
        .iter()
        .map(|r| {
            let mut row = label_cells(r);
            row.extend(backends.iter().map(|b| fixed(r.share(b))));
            row
        })
        .collect::<Vec<_>>();
    out.push_str(&markdown(&head, 2, &rows));
    out
}

/// How a backend is named in headers and legends.
pub fn backend_label(backend: &str) -> &str {
    if backend == NO_BACKEND {
        "no backend"
    } else {
        backend
    }
}

fn label_cells(r: &RunStats) -> Vec<String> {
    vec![r.label.clone(), r.mode.clone()]
}

/// Two decimals (as the seed's tables), or [`MISSING`].
fn fixed(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.2}"),
        _ => MISSING.to_string(),
    }
}

/// A markdown table; the first `left` columns align left, the rest (the
/// numbers) right.
fn markdown(head: &[String], left: usize, rows: &[Vec<String>]) -> String {
    let align = |i: usize| if i < left { Align::Left } else { Align::Right };
    let escape = |s: &str| s.replace('|', "\\|");
    let head: Vec<String> = head.iter().map(|h| escape(h)).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape(c)).collect())
        .collect();
    // Each column is as wide as its widest cell, and at least 3 for `---`.
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .chain(head.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
                .max(3)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            let cell = cells.get(i).map_or("", String::as_str);
            let _ = match align(i) {
                Align::Left => write!(out, " {cell:<w$} |"),
                Align::Right => write!(out, " {cell:>w$} |"),
            };
        }
        out.push('\n');
    };
    line(&mut out, &head);
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat(w - 1);
        let _ = match align(i) {
            Align::Left => write!(out, " :{dashes} |"),
            Align::Right => write!(out, " {dashes}: |"),
        };
    }
    out.push('\n');
    for row in &rows {
        line(&mut out, row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_aligns_and_escapes() {
        let head = ["a".to_string(), "number".to_string()];
        let rows = vec![
            vec!["x|y".to_string(), "1.00".to_string()],
            vec!["long name".to_string(), "12.50".to_string()],
        ];
        assert_eq!(
            markdown(&head, 1, &rows),
            "| a         | number |\n\
             | :-------- | -----: |\n\
             | x\\|y      |   1.00 |\n\
             | long name |  12.50 |\n"
        );
    }

    #[test]
    fn missing_values_are_dashes() {
        assert_eq!(fixed(None), "-");
        assert_eq!(fixed(Some(f64::NAN)), "-");
        assert_eq!(fixed(Some(2.005)), "2.00");
    }
}
