//! `--queue-timeout` and `--max-queue` (`queue_timeout`, `max_queue` in the
//! file): the queue of requests that found no backend under its `maxconn`.

use std::time::Duration;

use super::{ConfigError, MAX_TIMEOUT, parse_duration};

/// Default `--queue-timeout`: HAProxy's common `timeout queue` of a few
/// seconds; a request waiting longer is better told to retry (503 with
/// `Retry-After`) than kept past what most clients wait.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `--max-queue`: requests waiting at once, process-wide. 10,000
/// is far above any healthy backlog (at 1,000 req/s served it is 10 s of
/// work, twice the queue timeout), while bounding the memory held by
/// waiting heads (~16 KiB each at most: 160 MiB).
pub const DEFAULT_MAX_QUEUE: usize = 10_000;

/// Largest `--max-queue`: ten times the default, a bound on the memory
/// waiting requests may pin.
pub const MAX_MAX_QUEUE: usize = 100_000;

/// How requests wait for a backend under its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// A request waiting this long is answered 503 with `Retry-After`.
    pub timeout: Duration,
    /// Requests waiting at once (all workers); one more is answered 503.
    pub max: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            timeout: DEFAULT_QUEUE_TIMEOUT,
            max: DEFAULT_MAX_QUEUE,
        }
    }
}

impl QueueConfig {
    /// Parses `--queue-timeout`: a duration in 1ms..=24h.
    pub fn parse_timeout(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
        let d = parse_duration(flag, value)?;
        if d < Duration::from_millis(1) || d > MAX_TIMEOUT {
            return Err(ConfigError::BadValue {
                flag,
                value: value.to_string(),
                why: "must be between 1ms and 24h".into(),
            });
        }
        Ok(d)
    }

    /// Checks `--max-queue`: 0..=[`MAX_MAX_QUEUE`] (0: no queue, a request
    /// finding every backend at its limit is answered 503 at once).
    pub fn check_max(flag: &'static str, n: usize) -> Result<usize, ConfigError> {
        if n > MAX_MAX_QUEUE {
            return Err(ConfigError::BadValue {
                flag,
                value: n.to_string(),
                why: format!("out of range (0..={MAX_MAX_QUEUE})"),
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_settings_are_checked() {
        let t = |v| QueueConfig::parse_timeout("--queue-timeout", v).map_err(|e| e.to_string());
        assert_eq!(t("5s"), Ok(DEFAULT_QUEUE_TIMEOUT));
        assert_eq!(t("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(
            t("0s"),
            Err("invalid --queue-timeout '0s': must be between 1ms and 24h".into())
        );
        assert!(t("25h").is_err() && t("soon").is_err());
        assert_eq!(QueueConfig::check_max("--max-queue", 0), Ok(0));
        assert!(QueueConfig::check_max("--max-queue", MAX_MAX_QUEUE + 1).is_err());
    }
}
