//! `tidegate report` end to end on the hand-made logs in `tests/data/report/`:
//! numbers worked out by hand, the exact markdown, the SVG's shape, and one
//! clear error line for each kind of bad input.

use std::path::PathBuf;

use tidegate::tools::report::{
    self, ReportArgs, ReportError, RunStats, parse_csv, render_svg, render_tables, summarize,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/report")
        .join(name)
}

fn stats(name: &str, duration: Option<f64>) -> Result<RunStats, ReportError> {
    Ok(summarize(name, &parse_csv(&data(name))?, duration))
}

fn assert_close(got: Option<f64>, want: f64, what: &str) {
    let got = got.unwrap_or(f64::NAN);
    assert!((got - want).abs() < 0.01, "{what}: got {got}, want {want}");
}

/// `ewma.csv`: 10 rows in tidegate's 7-column format, slightly out of order.
///
/// - timestamps: earliest 15:54:52.000 (row 2), latest 15:54:56.000 (row 9,
///   not the last row) -> duration 4 s, 10 / 4 = 2.50 req/s.
/// - latencies sorted: 0 10 20 30 40 50 60 70 80 400 (sum 760)
///   - mean = 760 / 10 = 76.00
///   - p50: h = 9 * 0.50 = 4.5  -> 40 + 0.5  * (50 - 40)  = 45.00
///   - p95: h = 9 * 0.95 = 8.55 -> 80 + 0.55 * (400 - 80) = 256.00
///   - p99: h = 9 * 0.99 = 8.91 -> 80 + 0.91 * (400 - 80) = 371.20
///   - max = 400.00
/// - errors: the 502 (connect_failed) and the 400 (bad_request) = 2;
///   4xx: the 400 and a relayed 404 (outcome ok) = 2.
/// - backends: 8081 x4 = 40%, 8082 x3 = 30%, 8083 x2 = 20%, `-` x1 = 10%.
#[test]
fn golden_numbers_ewma() -> TestResult {
    let s = stats("ewma.csv", None)?;
    assert_eq!(s.requests, 10);
    assert_eq!(s.mode, "adaptive_ewma");
    assert_close(s.duration_s, 4.0, "duration");
    assert_close(s.req_per_s, 2.5, "req/s");
    let l = s.latency.ok_or("no latency")?;
    assert_close(Some(l.mean), 76.0, "mean");
    assert_close(Some(l.p50), 45.0, "p50");
    assert_close(Some(l.p95), 256.0, "p95");
    assert_close(Some(l.p99), 371.2, "p99");
    assert_close(Some(l.max), 400.0, "max");
    assert_eq!((s.errors, s.client_errors), (2, 2));
    assert_close(s.share("http://127.0.0.1:8081"), 40.0, "8081");
    assert_close(s.share("http://127.0.0.1:8082"), 30.0, "8082");
    assert_close(s.share("http://127.0.0.1:8083"), 20.0, "8083");
    assert_close(s.share("-"), 10.0, "no backend");
    Ok(())
}

/// `rr.csv`: 6 rows, round-robin, every 0.4 s from 15:55:00.0 to 15:55:02.0
/// -> 2 s, 3.00 req/s.
/// - latencies sorted: 10 200 200 250 250 400 (sum 1310) -> mean 218.33
///   - p50: h = 2.5  -> 200 + 0.5  * 50  = 225.00
///   - p95: h = 4.75 -> 250 + 0.75 * 150 = 362.50
///   - p99: h = 4.95 -> 250 + 0.95 * 150 = 392.50
/// - 2 rows per backend: 33.33% each; no errors.
/// - With --duration 120 (the seed's method): 6 / 120 = 0.05 req/s.
#[test]
fn golden_numbers_rr() -> TestResult {
    let s = stats("rr.csv", None)?;
    assert_eq!((s.requests, s.mode.as_str()), (6, "round-robin"));
    assert_close(s.req_per_s, 3.0, "req/s");
    let l = s.latency.ok_or("no latency")?;
    assert_close(Some(l.mean), 218.33, "mean");
    assert_close(Some(l.p50), 225.0, "p50");
    assert_close(Some(l.p95), 362.5, "p95");
    assert_close(Some(l.p99), 392.5, "p99");
    assert_eq!((s.errors, s.client_errors), (0, 0));
    assert_close(s.share("http://127.0.0.1:8082"), 33.33, "8082");
    let fixed = stats("rr.csv", Some(120.0))?;
    assert_close(fixed.duration_s, 120.0, "--duration");
    assert_close(fixed.req_per_s, 0.05, "req/s over --duration");
    Ok(())
}

const GOLDEN_TABLES: &str = "\
### Table 1: Throughput

| file     | mode          | requests | duration (s) | req/s |
| :------- | :------------ | -------: | -----------: | ----: |
| ewma.csv | adaptive_ewma |       10 |         4.00 |  2.50 |
| rr.csv   | round-robin   |        6 |         2.00 |  3.00 |

req/s = requests / duration; the duration is --duration if given, else first to last timestamp.

### Table 2: Latency

| file     | mode          | mean (ms) | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | errors | 4xx |
| :------- | :------------ | --------: | -------: | -------: | -------: | -------: | -----: | --: |
| ewma.csv | adaptive_ewma |     76.00 |    45.00 |   256.00 |   371.20 |   400.00 |      2 |   2 |
| rr.csv   | round-robin   |    218.33 |   225.00 |   362.50 |   392.50 |   400.00 |      0 |   0 |

Percentiles interpolate linearly between ranks, as pandas' quantile() does. \
errors: status >= 500 or outcome not ok; 4xx: status 400-499.

### Table 3: Backend distribution (% of requests)

| file     | mode          | http://127.0.0.1:8081 | http://127.0.0.1:8082 | http://127.0.0.1:8083 | no backend |
| :------- | :------------ | --------------------: | --------------------: | --------------------: | ---------: |
| ewma.csv | adaptive_ewma |                 40.00 |                 30.00 |                 20.00 |      10.00 |
| rr.csv   | round-robin   |                 33.33 |                 33.33 |                 33.33 |       0.00 |
";

#[test]
fn two_files_render_the_golden_tables() -> TestResult {
    let args = ReportArgs {
        files: vec![data("ewma.csv"), data("rr.csv")],
        ..ReportArgs::default()
    };
    let mut out = Vec::new();
    report::run(&args, &mut out)?;
    assert_eq!(String::from_utf8(out)?, GOLDEN_TABLES);
    Ok(())
}

#[test]
fn svg_file_is_written_and_announced() -> TestResult {
    let svg_path = std::env::temp_dir().join(format!("tidegate-report-{}.svg", std::process::id()));
    let args = ReportArgs {
        files: vec![data("ewma.csv"), data("rr.csv")],
        svg: Some(svg_path.clone()),
        duration: Some(120.0),
    };
    let mut out = Vec::new();
    report::run(&args, &mut out)?;
    let text = String::from_utf8(out)?;
    assert!(
        text.contains("|       10 |       120.00 |  0.08 |"),
        "{text}"
    );
    assert!(text.ends_with(&format!("\nChart written to {}.\n", svg_path.display())));
    let svg = std::fs::read_to_string(&svg_path)?;
    std::fs::remove_file(&svg_path)?;
    assert!(svg.starts_with("<svg"));
    Ok(())
}

/// The seed's own log (its Figure 1): 5 columns, no zone, integer
/// latencies. 13 rows from 20:04:04.679379 to 20:04:04.685135 (5.756 ms);
/// latencies sorted 39 41 41 42 44 44 44 45 45 45 46 49 51 (sum 576):
/// mean 44.31, p95 at h = 11.4 -> 49 + 0.4 * 2 = 49.80.
#[test]
fn seed_format_parses() -> TestResult {
    let s = stats("seed_sma.csv", None)?;
    assert_eq!((s.requests, s.mode.as_str()), (13, "adaptive_sma"));
    assert_close(s.duration_s.map(|d| d * 1000.0), 5.756, "duration (ms)");
    let l = s.latency.ok_or("no latency")?;
    assert_close(Some(l.mean), 44.31, "mean");
    assert_close(Some(l.p95), 49.8, "p95");
    assert_close(s.share("http://localhost:8081"), 100.0, "share");
    assert_eq!(s.errors, 0, "no outcome column: only the status counts");
    // The same with millisecond timestamps.
    let ms = "timestamp,backend_url,latency_ms,status_code,routing_mode\n\
              2025-05-09T20:04:04.679,http://localhost:8081,42,200,adaptive_sma\n\
              2025-05-09T20:04:05.179,http://localhost:8081,51,500,adaptive_sma\n";
    let log = report::parse_reader("ms.csv", ms.as_bytes())?;
    let s = summarize("ms.csv", &log, None);
    assert_close(s.req_per_s, 4.0, "2 rows in 0.5 s");
    assert_eq!(s.errors, 1);
    Ok(())
}

fn error_of(files: &[&str]) -> String {
    let args = ReportArgs {
        files: files.iter().map(|f| data(f)).collect(),
        ..ReportArgs::default()
    };
    let mut out = Vec::new();
    let result = report::run(&args, &mut out);
    assert!(out.is_empty(), "nothing printed before an error");
    result.err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn bad_latency_names_file_and_line() {
    let want = format!(
        "report: {}:3: bad latency_ms 'abc'",
        data("bad_latency.csv").display()
    );
    assert_eq!(error_of(&["ewma.csv", "bad_latency.csv"]), want);
}

#[test]
fn missing_column_is_an_error() {
    let want = format!(
        "report: {}:1: missing column 'latency_ms'",
        data("missing_column.csv").display()
    );
    assert_eq!(error_of(&["missing_column.csv"]), want);
}

#[test]
fn missing_file_is_an_error() {
    let err = error_of(&["no_such_file.csv"]);
    assert!(err.starts_with("report: "), "{err}");
    assert!(err.contains("no_such_file.csv: "), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn header_only_file_is_a_row_of_dashes() -> TestResult {
    let s = stats("header_only.csv", None)?;
    assert_eq!((s.requests, s.latency, s.req_per_s), (0, None, None));
    let tables = render_tables(&[s]);
    assert!(tables.contains("| header_only.csv | -    |        0 |            - |     - |"));
    assert!(!tables.contains("NaN"));
    Ok(())
}

#[test]
fn svg_is_well_formed_and_complete() -> TestResult {
    let names = ["ewma.csv", "rr.csv", "header_only.csv", "seed_sma.csv"];
    let runs = names
        .iter()
        .map(|n| stats(n, None))
        .collect::<Result<Vec<_>, _>>()?;
    let svg = render_svg(&runs);
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    for name in names {
        assert!(svg.contains(name), "label {name}");
    }
    for backend in [
        "http://127.0.0.1:8081",
        "http://127.0.0.1:8082",
        "http://127.0.0.1:8083",
        "http://localhost:8081",
        "no backend",
    ] {
        assert!(svg.contains(backend), "backend {backend}");
    }
    for bad in ["NaN", "nan", "inf", "<script", "href"] {
        assert!(!svg.contains(bad), "{bad} in the SVG");
    }
    // Tags balance: every opened element is closed, in order.
    let mut open = Vec::new();
    for tag in svg.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or_default();
        let name = tag
            .trim_start_matches('/')
            .split([' ', '/'])
            .next()
            .unwrap_or_default();
        if tag.starts_with('/') {
            assert_eq!(open.pop(), Some(name), "closing {name}");
        } else if !tag.ends_with('/') {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "unclosed {open:?}");
    Ok(())
}

#[test]
fn svg_escapes_labels() {
    let mut run = summarize("a<b>&\"c\".csv", &report::Log::default(), None);
    run.backends.insert("http://x/?a=1&b=<2>".into(), 0);
    let svg = render_svg(&[run]);
    assert!(svg.contains("a&lt;b&gt;&amp;&quot;c&quot;.csv"));
    assert!(svg.contains("http://x/?a=1&amp;b=&lt;2&gt;"));
    assert!(!svg.contains("a<b"));
}
