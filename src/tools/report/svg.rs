//! One self-contained SVG chart of the runs (no scripts, no external fonts:
//! the generic `sans-serif` family): (1) latency percentiles p50/p95/p99 as
//! grouped bars per run, (2) the backend distribution as a 100% stacked
//! horizontal bar per run. Every bar carries a `<title>` tooltip with its
//! exact value; all text is XML-escaped.

use std::fmt::Write as _;

use super::csv::NO_BACKEND;
use super::stats::{RunStats, all_backends};
use super::table::backend_label;

/// Width of the whole chart in px: fits a laptop screen or a page.
const WIDTH: f64 = 960.0;
/// Space for the chart title at the top, in px.
const TITLE_H: f64 = 40.0;
/// Left edge of the latency plot: room for the tick labels and axis title.
const LAT_LEFT: f64 = 80.0;
/// Right margin of both plots, in px.
const RIGHT: f64 = 24.0;
/// Height of the latency plot area, in px.
const LAT_PLOT_H: f64 = 240.0;
/// Aim for about this many y ticks; `nice_step` rounds to 1-2-5 steps.
const TARGET_TICKS: f64 = 5.0;
/// Widest a latency bar gets, so a single run is not one huge block.
const MAX_BAR_W: f64 = 48.0;
/// Bars narrower than this get no value label (it would overlap).
const MIN_LABELLED_BAR_W: f64 = 30.0;
/// Left edge of the distribution plot: room for the run labels.
const DIST_LEFT: f64 = 200.0;
/// Height of one distribution bar and the gap to the next, in px.
const DIST_BAR_H: f64 = 24.0;
const DIST_GAP: f64 = 10.0;
/// Segments narrower than this get no percentage label.
const MIN_LABELLED_SEG_W: f64 = 44.0;
/// Average glyph width at 12 px sans-serif, to estimate what text fits.
const CHAR_W: f64 = 7.0;

/// Percentile series: name, fill. Light to dark as the tail grows.
const PERCENTILES: [(&str, &str); 3] = [("p50", "#9ecae1"), ("p95", "#4292c6"), ("p99", "#08519c")];
/// Backend fills with the text colour readable on them: the Okabe-Ito
/// palette, distinguishable with the common colour-vision deficiencies.
const BACKEND_COLOURS: [(&str, &str); 7] = [
    ("#0072B2", "#ffffff"),
    ("#E69F00", "#000000"),
    ("#009E73", "#ffffff"),
    ("#CC79A7", "#000000"),
    ("#56B4E9", "#000000"),
    ("#D55E00", "#ffffff"),
    ("#F0E442", "#000000"),
];
/// Fill for rows without a backend: grey, as it is not a server.
const NO_BACKEND_COLOUR: (&str, &str) = ("#999999", "#000000");
/// Grid lines and empty-run outlines.
const GRID: &str = "#dddddd";

/// Renders the chart for `runs`.
pub fn render_svg(runs: &[RunStats]) -> String {
    let backends = all_backends(runs);
    let mut svg = Svg::default();
    let runs_word = if runs.len() == 1 { "run" } else { "runs" };
    let title = format!(
        "tidegate report: {} {runs_word}, latency and backend distribution",
        runs.len()
    );
    svg.text(WIDTH / 2.0, 26.0, &title, "middle", TITLE);
    let lat_bottom = latency_panel(&mut svg, runs, TITLE_H);
    let height = distribution_panel(&mut svg, runs, &backends, lat_bottom + 30.0);
    // The root element goes last: only now is the height known.
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <title>tidegate report</title>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n",
        w = num(WIDTH),
        h = num(height),
    );
    out.push_str(&svg.body);
    out.push_str("</svg>\n");
    out
}

/// Panel 1, starting at `top`; returns its bottom edge.
fn latency_panel(svg: &mut Svg, runs: &[RunStats], top: f64) -> f64 {
    svg.text(
        LAT_LEFT,
        top + 16.0,
        "Latency percentiles per run",
        "start",
        BOLD,
    );
    // Legend, right-aligned on the panel title's line.
    for (i, (name, fill)) in PERCENTILES.iter().enumerate() {
        let x = WIDTH - RIGHT - 60.0 * (PERCENTILES.len() - i) as f64;
        svg.rect(x, top + 6.0, 12.0, 12.0, fill, None);
        svg.text(x + 16.0, top + 16.0, name, "start", "");
    }
    let (plot_top, plot_h) = (top + 34.0, LAT_PLOT_H);
    let bottom = plot_top + plot_h;
    let plot_w = WIDTH - LAT_LEFT - RIGHT;
    let max = runs
        .iter()
        .filter_map(|r| r.latency.map(|l| l.p99))
        .fold(0.0, f64::max);
    let step = nice_step(max);
    let top_value = ((max / step).ceil() * step).max(step);
    let y = |v: f64| bottom - (v / top_value).clamp(0.0, 1.0) * plot_h;
    let decimals = step_decimals(step);
    let ticks = (top_value / step).round() as usize;
    for k in 0..=ticks {
        let v = step * k as f64;
        svg.line(LAT_LEFT, y(v), LAT_LEFT + plot_w, y(v), GRID);
        let label = format!("{v:.decimals$}");
        svg.text(LAT_LEFT - 6.0, y(v) + 4.0, &label, "end", "");
    }
    svg.line(LAT_LEFT, plot_top, LAT_LEFT, bottom, "#000000");
    svg.line(LAT_LEFT, bottom, LAT_LEFT + plot_w, bottom, "#000000");
    let (cx, cy) = (20.0, plot_top + plot_h / 2.0);
    let rotate = format!("transform=\"rotate(-90 {} {})\"", num(cx), num(cy));
    svg.text(cx, cy, "latency (ms)", "middle", &rotate);

    let group_w = plot_w / runs.len().max(1) as f64;
    let bar_w = (group_w * 0.8 / 3.0).min(MAX_BAR_W);
    let max_chars = (group_w / CHAR_W).floor() as usize;
    for (i, run) in runs.iter().enumerate() {
        let centre = LAT_LEFT + group_w * (i as f64 + 0.5);
        svg.titled(centre, bottom + 16.0, &run.label, max_chars, "middle", "");
        svg.titled(centre, bottom + 30.0, &run.mode, max_chars, "middle", GREY);
        let Some(lat) = run.latency else {
            svg.text(centre, bottom - 8.0, "no requests", "middle", GREY);
            continue;
        };
        let values = [lat.p50, lat.p95, lat.p99];
        for (j, ((name, fill), v)) in PERCENTILES.iter().zip(values).enumerate() {
            let x = centre + bar_w * (j as f64 - 1.5);
            let tip = format!("{}: {name} {} ms", run.label, value_text(v));
            svg.rect(x, y(v), bar_w, bottom - y(v), fill, Some(&tip));
            if bar_w >= MIN_LABELLED_BAR_W {
                svg.text(x + bar_w / 2.0, y(v) - 3.0, &value_text(v), "middle", SMALL);
            }
        }
    }
    svg.text(
        LAT_LEFT + plot_w / 2.0,
        bottom + 48.0,
        "run (CSV file, routing mode)",
        "middle",
        "",
    );
    bottom + 48.0
}

/// Panel 2, starting at `top`; returns the chart's total height.
fn distribution_panel(svg: &mut Svg, runs: &[RunStats], backends: &[String], top: f64) -> f64 {
    let title = "Backend distribution per run (% of requests)";
    svg.text(LAT_LEFT, top + 16.0, title, "start", BOLD);
    let plot_top = top + 30.0;
    let plot_w = WIDTH - DIST_LEFT - RIGHT;
    let bottom = plot_top + runs.len() as f64 * (DIST_BAR_H + DIST_GAP);
    let x = |pct: f64| DIST_LEFT + pct.clamp(0.0, 100.0) / 100.0 * plot_w;
    for pct in [0.0, 20.0, 40.0, 60.0, 80.0, 100.0] {
        svg.line(x(pct), plot_top, x(pct), bottom, GRID);
        svg.text(x(pct), bottom + 16.0, &format!("{pct:.0}"), "middle", "");
    }
    let axis_y = bottom + 34.0;
    svg.text(
        DIST_LEFT + plot_w / 2.0,
        axis_y,
        "share of requests (%)",
        "middle",
        "",
    );
    let label_chars = ((DIST_LEFT - 12.0) / CHAR_W).floor() as usize;
    for (i, run) in runs.iter().enumerate() {
        let y = plot_top + DIST_GAP / 2.0 + i as f64 * (DIST_BAR_H + DIST_GAP);
        let mid = y + DIST_BAR_H / 2.0 + 4.0;
        // The file on the bar's upper half, its mode (smaller) below.
        svg.titled(
            DIST_LEFT - 8.0,
            mid - 5.0,
            &run.label,
            label_chars,
            "end",
            "",
        );
        svg.titled(
            DIST_LEFT - 8.0,
            mid + 8.0,
            &run.mode,
            label_chars,
            "end",
            GREY,
        );
        if run.requests == 0 {
            svg.rect(x(0.0), y, plot_w, DIST_BAR_H, "none", None);
            svg.text(x(50.0), mid, "no requests", "middle", GREY);
            continue;
        }
        let mut start = 0.0;
        for (k, backend) in backends.iter().enumerate() {
            let pct = run.share(backend).unwrap_or(0.0);
            if pct <= 0.0 {
                continue;
            }
            let (fill, ink) = colour(backends, k);
            let (x0, x1) = (x(start), x(start + pct));
            let tip = format!("{}: {} {pct:.2}%", run.label, backend_label(backend));
            svg.rect(x0, y, x1 - x0, DIST_BAR_H, fill, Some(&tip));
            if x1 - x0 >= MIN_LABELLED_SEG_W {
                let attrs = format!("fill=\"{ink}\"");
                svg.text(
                    (x0 + x1) / 2.0,
                    mid,
                    &format!("{pct:.1}%"),
                    "middle",
                    &attrs,
                );
            }
            start += pct;
        }
    }
    svg.line(DIST_LEFT, plot_top, DIST_LEFT, bottom, "#000000");
    svg.line(DIST_LEFT, bottom, DIST_LEFT + plot_w, bottom, "#000000");
    legend(svg, backends, axis_y + 16.0)
}

/// The backend legend, wrapping onto more lines as needed; returns the
/// chart's bottom edge.
fn legend(svg: &mut Svg, backends: &[String], top: f64) -> f64 {
    let (mut x, mut y) = (LAT_LEFT, top);
    for (k, backend) in backends.iter().enumerate() {
        let label = backend_label(backend);
        let w = 16.0 + label.chars().count() as f64 * CHAR_W + 20.0;
        if x + w > WIDTH - RIGHT && x > LAT_LEFT {
            (x, y) = (LAT_LEFT, y + 20.0);
        }
        svg.rect(x, y, 12.0, 12.0, colour(backends, k).0, None);
        svg.text(x + 16.0, y + 10.0, label, "start", "");
        x += w;
    }
    y + 28.0
}

/// Fill and text colour of `backends[k]`.
fn colour(backends: &[String], k: usize) -> (&'static str, &'static str) {
    match backends.get(k) {
        Some(b) if b == NO_BACKEND => NO_BACKEND_COLOUR,
        _ => BACKEND_COLOURS[k % BACKEND_COLOURS.len()],
    }
}

/// Attributes for the chart title, panel titles, small value labels and
/// secondary text.
const TITLE: &str = "font-size=\"18\" font-weight=\"bold\"";
const BOLD: &str = "font-size=\"14\" font-weight=\"bold\"";
const SMALL: &str = "font-size=\"10\"";
const GREY: &str = "fill=\"#666666\" font-size=\"11\"";

/// A 1-2-5 step giving about [`TARGET_TICKS`] ticks up to `max` (> 0, or 1).
fn nice_step(max: f64) -> f64 {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / TARGET_TICKS;
    let mag = 10f64.powf(raw.log10().floor());
    let step = match raw / mag {
        n if n <= 1.0 => 1.0,
        n if n <= 2.0 => 2.0,
        n if n <= 5.0 => 5.0,
        _ => 10.0,
    };
    step * mag
}

/// Decimals needed to print multiples of `step` exactly (0 for >= 1).
fn step_decimals(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    }
}

/// A latency for a bar label: fewer decimals for larger values.
fn value_text(v: f64) -> String {
    match v {
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

/// A coordinate: one decimal, and never NaN or infinite.
fn num(v: f64) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    format!("{v:.1}")
}

/// `s` escaped for XML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 at all.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to `max` characters, ending in an ellipsis if cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// The SVG elements written so far.
#[derive(Debug, Default)]
struct Svg {
    body: String,
}

impl Svg {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, tip: Option<&str>) {
        let stroke = if fill == "none" {
            format!(" stroke=\"{GRID}\"")
        } else {
            String::new()
        };
        let _ = write!(
            self.body,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\"{stroke}",
            num(x),
            num(y),
            num(w.max(0.0)),
            num(h.max(0.0)),
        );
        match tip {
            Some(tip) => {
                let _ = writeln!(self.body, "><title>{}</title></rect>", escape(tip));
            }
            None => self.body.push_str("/>\n"),
        }
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str) {
        let _ = writeln!(
            self.body,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{stroke}\"/>",
            num(x1),
            num(y1),
            num(x2),
            num(y2),
        );
    }

    /// Text at (x, y) anchored `start`, `middle` or `end`, with extra
    /// (trusted, already escaped) attributes.
    fn text(&mut self, x: f64, y: f64, s: &str, anchor: &str, attrs: &str) {
        let _ = writeln!(
            self.body,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" {attrs}>{}</text>",
            num(x),
            num(y),
            escape(s),
        );
    }

    /// Text cut to `max` characters, the full text as its tooltip.
    fn titled(&mut self, x: f64, y: f64, s: &str, max: usize, anchor: &str, attrs: &str) {
        let _ = writeln!(
            self.body,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" {attrs}><title>{}</title>{}</text>",
            num(x),
            num(y),
            escape(s),
            escape(&truncate(s, max)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_xml() {
        assert_eq!(
            escape("a<b>&\"c\"'d'\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;\u{fffd}"
        );
    }

    #[test]
    fn nice_steps_are_1_2_5() {
        assert_eq!(nice_step(400.0), 100.0);
        assert_eq!(nice_step(371.2), 100.0);
        assert_eq!(nice_step(90.0), 20.0);
        assert_eq!(nice_step(0.0), 0.2);
        assert_eq!(nice_step(f64::NAN), 0.2);
        assert_eq!(step_decimals(0.2), 1);
        assert_eq!(step_decimals(0.05), 2);
        assert_eq!(step_decimals(20.0), 0);
    }

    #[test]
    fn no_runs_still_make_a_valid_chart() {
        let svg = render_svg(&[]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn truncates_with_ellipsis() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("a_long_name.csv", 6), "a_lon…");
    }
}
