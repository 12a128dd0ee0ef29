//! Validation bookkeeping for the file: a [`Problem`] and where it is
//! (line and column, the key at an offset), and [`Check`], the state that
//! collects problems while [`FileConfig::validate`](super::FileConfig::validate)
//! runs, naming each key, or the flag that set it.

use std::fmt;
use std::ops::Range;

use toml::Spanned;

use crate::config::ConfigError;

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based (line, column) where toml or the value's span gives one.
    pub at: Option<(usize, usize)>,
    /// What is wrong, naming the key (or the flag that set it).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, col)) => write!(f, "line {line}, column {col}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// (line, column), both 1-based, of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The dotted key whose value sits at `offset`, read from the text: the
/// key before `=` on that line, under the nearest `[table]` above it.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let whole = text.get(start..)?.lines().next().unwrap_or("").trim();
    if whole.starts_with('[') {
        // A table's own error (a missing key): name the table.
        return Some(
            whole
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let line = text.get(start..offset)?;
    let key = line.split_once('=')?.0.trim();
    let table = text.get(..start)?.lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim())
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// Renames the flag an error names.
pub(super) fn rename(e: ConfigError, key: &'static str) -> ConfigError {
    match e {
        ConfigError::BadValue { value, why, .. } => ConfigError::BadValue {
            flag: key,
            value,
            why,
        },
        other => other,
    }
}

/// Validation state: the text (for positions) and the problems so far.
pub(super) struct Check<'a> {
    pub(super) text: &'a str,
    pub(super) from_cli: &'a [(&'static str, &'static str)],
    pub(super) problems: Vec<Problem>,
}

impl Check<'_> {
    /// How to name `key`: its flag if the command line set it.
    pub(super) fn name(&self, key: &'static str) -> &'static str {
        self.from_cli
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(key, |(_, flag)| flag)
    }

    /// Records a problem; always `None`, to return.
    pub(super) fn push<T>(
        &mut self,
        key: &'static str,
        span: Range<usize>,
        message: String,
    ) -> Option<T> {
        let from_cli = self.from_cli.iter().any(|(k, _)| *k == key);
        let at = (!from_cli && span != (0..0)).then(|| line_col(self.text, span.start));
        self.problems.push(Problem { at, message });
        None
    }

    /// Records "KEY 'VALUE'...: why" style problems for simple checks.
    pub(super) fn fail<T>(
        &mut self,
        key: &'static str,
        span: Range<usize>,
        why: &str,
    ) -> Option<T> {
        let name = self.name(key);
        let value = self.text.get(span.clone()).unwrap_or("").trim().to_string();
        let message = if value.is_empty() {
            format!("invalid {name}: {why}")
        } else {
            format!("invalid {name} {value}: {why}")
        };
        self.push(key, span, message)
    }

    /// `parse(name, value)`, or the problem it reports.
    pub(super) fn get<T>(
        &mut self,
        key: &'static str,
        v: &Spanned<String>,
        parse: impl FnOnce(&'static str, &str) -> Result<T, ConfigError>,
    ) -> Option<T> {
        match parse(self.name(key), v.get_ref()) {
            Ok(t) => Some(t),
            // A key is not a flag: "invalid backend.address 'x'", not
            // "invalid backend.address address 'x'".
            Err(ConfigError::BadAddress { flag, value, why }) if !flag.starts_with("--") => {
                let message =
                    format!("invalid {flag} '{value}': {why} (expected ip:port or host:port)");
                self.push(key, v.span(), message)
            }
            Err(e) => self.push(key, v.span(), e.to_string()),
        }
    }
}
