//! A tiny limiter for warnings that could otherwise flood the log (fd
//! exhaustion, and later backend failures).

use std::time::{Duration, Instant};

/// Lets one event through per interval and counts the ones it holds back.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(every: Duration) -> Self {
        RateLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` if the caller may log now, `n` being how many events were
    /// held back since the last one logged; `None` to stay quiet.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_with_a_count_of_the_rest() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(5));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(4)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(5)), Some(2));
        assert_eq!(r.allow(t0 + Duration::from_secs(6)), None);
    }
}
