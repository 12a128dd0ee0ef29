//! One run's numbers, computed from its [`Log`] the way the seed's pandas
//! analysis did (section 14): counts of rows, the mean and linear-
//! interpolated quantiles of `latency_ms` over all rows, and the share of
//! rows per `backend_url`.

use std::collections::BTreeMap;

use super::csv::{Log, NO_BACKEND};

/// Microseconds per second.
const US_PER_SEC: f64 = 1e6;
/// The mode of a log without rows: the tables' mark for "no value".
const NO_MODE: &str = "-";

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Everything the tables and the chart show about one run (one file).
#[derive(Debug, Clone, PartialEq)]
pub struct RunStats {
    /// How the run is labelled in tables and the chart (its file name).
    pub label: String,
    /// The most common `routing_mode` (ties: the alphabetically first);
    /// `-` for an empty log.
    pub mode: String,
    /// Rows in the log.
    pub requests: usize,
    /// Seconds the rate is computed over: `--duration` if given, else
    /// first to last timestamp; `None` if that span is zero (< 2 rows).
    pub duration_s: Option<f64>,
    /// `requests / duration_s`.
    pub req_per_s: Option<f64>,
    /// `None` for an empty log.
    pub latency: Option<Latency>,
    /// Rows with status >= 500 or an `outcome` other than `ok`.
    pub errors: usize,
    /// Rows with a 4xx status (whatever their outcome).
    pub client_errors: usize,
    /// Rows per `backend_url` (`-` for none), sorted by URL.
    pub backends: BTreeMap<String, usize>,
}

impl RunStats {
    /// Percentage of this run's rows that went to `backend` (0 if none
    /// did); `None` for an empty log.
    pub fn share(&self, backend: &str) -> Option<f64> {
        if self.requests == 0 {
            return None;
        }
        let n = self.backends.get(backend).copied().unwrap_or(0);
        Some(n as f64 * 100.0 / self.requests as f64)
    }
}

/// Summarises `log` as the run called `label`. `duration_s`, if given
/// (the seed divided by wrk's 120 s), replaces the timestamp span; a value
/// that is not a positive number is ignored ([`super::run`] rejects it).
pub fn summarize(label: &str, log: &Log, duration_s: Option<f64>) -> RunStats {
    let rows = &log.rows;
    let span = match (
        rows.iter().map(|r| r.timestamp_us).min(),
        rows.iter().map(|r| r.timestamp_us).max(),
    ) {
        (Some(first), Some(last)) if last > first => Some((last - first) as f64 / US_PER_SEC),
        _ => None,
    };
    let duration_s = duration_s.filter(|d| d.is_finite() && *d > 0.0).or(span);
    let req_per_s = duration_s.map(|d| rows.len() as f64 / d);

    let mut latencies: Vec<f64> = rows.iter().map(|r| r.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    let latency = latency_summary(&latencies);

    let mut backends = BTreeMap::new();
    let mut modes: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut errors, mut client_errors) = (0, 0);
    for row in rows {
        *backends.entry(log.backend(row).to_string()).or_insert(0) += 1;
        *modes.entry(log.mode(row)).or_insert(0) += 1;
        errors += usize::from(row.status >= 500 || !row.outcome_ok);
        client_errors += usize::from((400..500).contains(&row.status));
    }
    // max_by_key keeps the last of equal counts; iterating in reverse
    // alphabetical order makes that the alphabetically first.
    let mode = modes
        .iter()
        .rev()
        .max_by_key(|(_, n)| **n)
        .map_or(NO_MODE, |(m, _)| m)
        .to_string();
    RunStats {
        label: label.to_string(),
        mode,
        requests: rows.len(),
        duration_s,
        req_per_s,
        latency,
        errors,
        client_errors,
        backends,
    }
}

/// Every backend of `runs` (the union), sorted by URL, with
/// [`NO_BACKEND`] last: the columns of Table 3 and the chart's legend.
pub fn all_backends(runs: &[RunStats]) -> Vec<String> {
    let mut all: Vec<String> = runs
        .iter()
        .flat_map(|r| r.backends.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .cloned()
        .collect();
    if let Some(i) = all.iter().position(|b| b == NO_BACKEND) {
        let none = all.remove(i);
        all.push(none);
    }
    all
}

/// The mean, p50, p95, p99 and max of ascending `sorted`; `None` if empty.
pub fn latency_summary(sorted: &[f64]) -> Option<Latency> {
    let max = *sorted.last()?;
    Some(Latency {
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        p50: quantile(sorted, 0.50)?,
        p95: quantile(sorted, 0.95)?,
        p99: quantile(sorted, 0.99)?,
        max,
    })
}

/// The `q`-quantile (0 <= q <= 1) of ascending `sorted`, as pandas'
/// `Series.quantile(q)` computes it by default (numpy's `linear` method):
/// the value at fractional rank `h = (n - 1) q`, linearly interpolated
/// between the neighbours `x[floor(h)]` and `x[floor(h) + 1]`. numpy's
/// interpolation formula is copied too (from the upper neighbour when the
/// fraction is >= 0.5) so results agree to the last bit.
/// `None` if `sorted` is empty or `q` is outside [0, 1].
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor();
    let t = h - lo;
    let i = lo as usize;
    let a = *sorted.get(i)?;
    let Some(&b) = sorted.get(i + 1) else {
        return Some(a);
    };
    let diff = b - a;
    Some(if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::report::csv::parse_reader;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn quantiles_match_pandas() {
        // pd.Series([1, 2, 3, 4]).quantile(q) for q = .5, .95, .99, 0, 1.
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!(close(quantile(&x, 0.5).unwrap(), 2.5));
        assert!(close(quantile(&x, 0.95).unwrap(), 3.85));
        assert!(close(quantile(&x, 0.99).unwrap(), 3.97));
        assert_eq!(quantile(&x, 0.0), Some(1.0));
        assert_eq!(quantile(&x, 1.0), Some(4.0));
        // pd.Series([10, 20, 30, 40, 50, 60, 70, 80, 90, 400]).quantile(.95)
        // = 90 + 0.55 * 310 = 260.5.
        let y = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 400.0];
        assert!(close(quantile(&y, 0.95).unwrap(), 260.5));
        // Bit for bit what numpy 2 prints for np.percentile(x, 95), (99)
        // and for the golden ewma.csv latencies.
        assert_eq!(quantile(&x, 0.95), Some(3.8499999999999996));
        assert_eq!(quantile(&x, 0.99), Some(3.9699999999999998));
        let z = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 400.0];
        assert_eq!(quantile(&z, 0.95), Some(255.99999999999966));
        assert_eq!(quantile(&z, 0.99), Some(371.20000000000005));
        assert_eq!(quantile(&[7.0], 0.95), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&x, 1.5), None);
        assert_eq!(quantile(&x, f64::NAN), None);
    }

    #[test]
    fn empty_log_has_no_stats() {
        let log = Log::default();
        let s = summarize("e.csv", &log, None);
        assert_eq!((s.requests, s.duration_s, s.req_per_s), (0, None, None));
        assert_eq!((s.latency, s.mode.as_str()), (None, "-"));
        assert_eq!(s.share("http://a"), None);
        let s = summarize("e.csv", &log, Some(120.0));
        assert_eq!(s.req_per_s, Some(0.0));
    }

    #[test]
    fn counts_errors_modes_and_shares() {
        let text = "timestamp,backend_url,latency_ms,status_code,routing_mode,outcome\n\
            2026-11-22T15:54:52Z,http://b,1,200,x,ok\n\
            2026-11-22T15:54:53Z,http://a,1,502,y,connect_failed\n\
            2026-11-22T15:54:54Z,-,0,400,y,bad_request\n\
            2026-11-22T15:54:55Z,http://b,1,404,x,ok\n\
            2026-11-22T15:54:51Z,http://b,1,200,x,client_abort\n";
        let log = parse_reader("t.csv", text.as_bytes()).unwrap();
        let s = summarize("t.csv", &log, None);
        assert_eq!(s.requests, 5);
        assert_eq!(s.duration_s, Some(4.0), "min to max, not first to last row");
        assert_eq!(s.req_per_s, Some(1.25));
        assert_eq!((s.errors, s.client_errors), (3, 2));
        assert_eq!(s.mode, "x");
        assert_eq!(s.share("http://b"), Some(60.0));
        assert_eq!(s.share("-"), Some(20.0));
        assert_eq!(s.share("http://c"), Some(0.0));
        assert_eq!(summarize("t", &log, Some(10.0)).req_per_s, Some(0.5));
    }

    #[test]
    fn mode_ties_go_to_the_alphabetically_first() {
        let text = "timestamp,backend_url,latency_ms,status_code,routing_mode\n\
            2026-11-22T15:54:52Z,a,1,200,zeta\n\
            2026-11-22T15:54:52Z,a,1,200,alpha\n";
        let log = parse_reader("t.csv", text.as_bytes()).unwrap();
        let s = summarize("t", &log, None);
        assert_eq!(s.mode, "alpha");
        assert_eq!(s.duration_s, None, "zero span: no rate");
    }
}
