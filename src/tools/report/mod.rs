//! `tidegate report`: the seed's analysis (its sections 14 and 15) of one
//! or more CSV request logs written by `tidegate proxy --log-csv` (or by
//! the seed's own proxy), as markdown tables and an optional SVG chart.
//!
//! - `csv`: reading a log into rows; columns found by header name.
//! - `timestamp`: the ISO-8601 timestamps of both log flavours.
//! - `stats`: one run's numbers ([`RunStats`]), with pandas' quantiles.
//! - `table`: Tables 1-3 in markdown.
//! - `svg`: the hand-written chart.
//!
//! Everything but [`run`] is pure (no files), so tests can feed strings.
//! Bad input is a [`ReportError`], one line naming the file and line;
//! nothing here panics on input.

pub mod csv;
pub mod stats;
pub mod svg;
pub mod table;
pub mod timestamp;

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use csv::{Log, Row, parse_csv, parse_reader};
pub use stats::{Latency, RunStats, quantile, summarize};
pub use svg::render_svg;
pub use table::render_tables;

/// Longest field value quoted in an error message; the rest is cut so the
/// message stays one readable line.
const MAX_QUOTED: usize = 40;

/// What `tidegate report` was asked to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportArgs {
    /// The logs, one run (table row) each, in this order.
    pub files: Vec<PathBuf>,
    /// Also write the chart here.
    pub svg: Option<PathBuf>,
    /// Divide by this many seconds instead of each log's timestamp span
    /// (the seed divided by wrk's `-d120s`).
    pub duration: Option<f64>,
}

/// Why a report could not be made. `Display` is one line starting with
/// `report:`, naming the file and, for bad content, the line.
#[derive(Debug)]
pub enum ReportError {
    /// No input files.
    NoFiles,
    /// `--duration` is not a positive number of seconds.
    BadDuration(f64),
    /// The file could not be opened.
    Open { file: String, source: io::Error },
    /// Reading failed part-way.
    Read {
        file: String,
        line: usize,
        source: io::Error,
    },
    /// The header lacks a required column.
    MissingColumn { file: String, column: &'static str },
    /// A field that does not parse.
    BadField {
        file: String,
        line: usize,
        column: &'static str,
        value: String,
    },
    /// A line that is not a row at all (wrong field count, broken quoting,
    /// not UTF-8, no header).
    BadLine {
        file: String,
        line: usize,
        why: String,
    },
    /// Writing the tables or the SVG failed.
    Write { target: String, source: io::Error },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::NoFiles => write!(f, "report: no CSV files given"),
            ReportError::BadDuration(d) => {
                write!(
                    f,
                    "report: --duration must be a positive number of seconds, not {d}"
                )
            }
            ReportError::Open { file, source } => write!(f, "report: {file}: {source}"),
            ReportError::Read { file, line, source } => {
                write!(f, "report: {file}:{line}: {source}")
            }
            ReportError::MissingColumn { file, column } => {
                write!(f, "report: {file}:1: missing column '{column}'")
            }
            ReportError::BadField {
                file,
                line,
                column,
                value,
            } => {
                let mut shown: String = value.chars().take(MAX_QUOTED).collect();
                if shown.len() < value.len() {
                    shown.push('…');
                }
                write!(f, "report: {file}:{line}: bad {column} '{shown}'")
            }
            ReportError::BadLine { file, line, why } => write!(f, "report: {file}:{line}: {why}"),
            ReportError::Write { target, source } => {
                write!(f, "report: writing {target}: {source}")
            }
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReportError::Open { source, .. }
            | ReportError::Read { source, .. }
            | ReportError::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Reads every log, then writes Tables 1-3 to `out` and, with
/// `args.svg`, the chart to that file (saying so in a last line). Nothing
/// is written unless every file reads cleanly.
pub fn run(args: &ReportArgs, out: &mut impl Write) -> Result<(), ReportError> {
    if args.files.is_empty() {
        return Err(ReportError::NoFiles);
    }
    if let Some(d) = args.duration.filter(|d| !(d.is_finite() && *d > 0.0)) {
        return Err(ReportError::BadDuration(d));
    }
    let labels = labels(&args.files);
    let mut runs = Vec::with_capacity(args.files.len());
    for (path, label) in args.files.iter().zip(&labels) {
        let log = parse_csv(path)?;
        runs.push(summarize(label, &log, args.duration));
    }
    let stdout_err = |source| ReportError::Write {
        target: "the tables".into(),
        source,
    };
    out.write_all(render_tables(&runs).as_bytes())
        .map_err(stdout_err)?;
    if let Some(svg_path) = &args.svg {
        let target = svg_path.display().to_string();
        std::fs::write(svg_path, render_svg(&runs)).map_err(|source| ReportError::Write {
            target: target.clone(),
            source,
        })?;
        writeln!(out, "\nChart written to {target}.").map_err(stdout_err)?;
    }
    out.flush().map_err(stdout_err)
}

/// How each file is labelled: its file name, or the whole path as given
/// when two inputs share a file name (e.g. `p/rr.csv` and `np/rr.csv`).
pub fn labels(files: &[PathBuf]) -> Vec<String> {
    let name = |p: &Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    files
        .iter()
        .map(|p| {
            let shared = files.iter().filter(|q| name(q) == name(p)).count() > 1;
            if shared {
                p.display().to_string()
            } else {
                name(p)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_file_names_unless_ambiguous() {
        let files = ["logs/p/rr.csv", "logs/np/rr.csv", "logs/p/ewma.csv"].map(PathBuf::from);
        assert_eq!(
            labels(&files),
            ["logs/p/rr.csv", "logs/np/rr.csv", "ewma.csv"]
        );
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let err = ReportError::BadField {
            file: "f.csv".into(),
            line: 9,
            column: "latency_ms",
            value: "x".repeat(100),
        };
        let msg = err.to_string();
        assert!(msg.ends_with("x…'"), "{msg}");
        assert!(msg.len() < 80, "{msg}");
    }

    #[test]
    fn rejects_no_files_and_bad_durations() {
        let mut out = Vec::new();
        let args = ReportArgs::default();
        assert!(matches!(run(&args, &mut out), Err(ReportError::NoFiles)));
        for d in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let args = ReportArgs {
                files: vec!["x.csv".into()],
                duration: Some(d),
                ..ReportArgs::default()
            };
            assert!(matches!(
                run(&args, &mut out),
                Err(ReportError::BadDuration(_))
            ));
        }
        assert!(out.is_empty());
    }
}
