//! What a backend does, as parsed from the command line: its latency cycle
//! ([`Profile`]) and how it misbehaves ([`FailMode`]), plus the
//! deterministic picker ([`Injector`]) behind `status:CODE:RATE`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Longest delay a profile or `--service-ms` may ask for: one hour. Far more
/// than any benchmark needs, and small enough that `Instant + delay` can
/// never overflow.
pub const MAX_DELAY_MS: u64 = 3_600_000;

/// The report's server A: mostly fast, with a run of three slow requests.
const PRESET_A: &[u64] = &[10, 15, 20, 400, 400, 400, 10, 15, 20];
/// The report's server B: a steady 200 ms.
const PRESET_B: &[u64] = &[200];
/// The report's server C: a steady 250 ms.
const PRESET_C: &[u64] = &[250];

/// `status:CODE:RATE` rates are kept in parts per million so the picker is
/// exact integer arithmetic (no floating-point drift over long runs).
const PPM: u32 = 1_000_000;

/// A value that could not be parsed, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl ParseError {
    fn new(what: &'static str, value: &str, expected: &'static str) -> Self {
        ParseError {
            what,
            value: value.to_string(),
            expected,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} '{}': expected {}",
            self.what, self.value, self.expected
        )
    }
}

impl std::error::Error for ParseError {}

/// A latency cycle: request `n` to the server waits `delays[n % len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    delays: Vec<Duration>,
    /// `Some("A")` for the report's presets; names the server by default.
    preset: Option<&'static str>,
}

impl Profile {
    /// A cycle of the given delays. `None` if empty or a delay is longer
    /// than [`MAX_DELAY_MS`].
    pub fn new(delays: Vec<Duration>) -> Option<Self> {
        let max = Duration::from_millis(MAX_DELAY_MS);
        if delays.is_empty() || delays.iter().any(|d| *d > max) {
            return None;
        }
        Some(Profile {
            delays,
            preset: None,
        })
    }

    /// A server that answers at once (`"0"`): for overhead benchmarks.
    pub fn immediate() -> Self {
        Profile {
            delays: vec![Duration::ZERO],
            preset: None,
        }
    }

    /// The delays, in cycle order (never empty).
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// `"A"`, `"B"` or `"C"` when built from a preset.
    pub fn preset(&self) -> Option<&'static str> {
        self.preset
    }

    /// The delay of request number `n` (counting from 0).
    pub fn delay(&self, n: u64) -> Duration {
        let len = self.delays.len() as u64;
        // `len >= 1` by construction; the fallback is never taken.
        usize::try_from(n % len.max(1))
            .ok()
            .and_then(|i| self.delays.get(i))
            .copied()
            .unwrap_or_default()
    }

    fn preset_ms(name: &'static str, ms: &[u64]) -> Self {
        Profile {
            delays: ms.iter().map(|&m| Duration::from_millis(m)).collect(),
            preset: Some(name),
        }
    }
}

impl FromStr for Profile {
    type Err = ParseError;

    /// `A`, `B`, `C` (any case), or milliseconds such as `10,15,20` or `0`.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || {
            ParseError::new(
                "profile",
                s,
                "A, B, C or comma-separated milliseconds such as 10,15,20 (each at most 3600000)",
            )
        };
        let t = s.trim();
        match t.to_ascii_uppercase().as_str() {
            "A" => return Ok(Profile::preset_ms("A", PRESET_A)),
            "B" => return Ok(Profile::preset_ms("B", PRESET_B)),
            "C" => return Ok(Profile::preset_ms("C", PRESET_C)),
            _ => {}
        }
        let delays = t
            .split(',')
            .map(|item| item.trim().parse::<u64>().map(Duration::from_millis))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad())?;
        Profile::new(delays).ok_or_else(bad)
    }
}

impl fmt::Display for Profile {
    /// `[10,15,20] ms`, as in the start-up log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms: Vec<String> = self
            .delays
            .iter()
            .map(|d| d.as_millis().to_string())
            .collect();
        write!(f, "[{}] ms", ms.join(","))
    }
}

/// How a backend misbehaves on purpose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailMode {
    /// Bind the port but never listen: connections are refused.
    Refuse,
    /// Accept and read, never answer; close only when the client does.
    Hang,
    /// Answer each request with bytes that are not HTTP, then close.
    Garbage,
    /// After a request head, close with RST before any response byte.
    Reset,
    /// Answer a fraction `rate` (0..=1) of requests with status `code`.
    Status { code: u16, rate: f64 },
}

impl FromStr for FailMode {
    type Err = ParseError;

    /// `refuse`, `hang`, `garbage`, `reset`, `status:CODE:RATE` or
    /// `status:CODE` (rate 1).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || {
            ParseError::new(
                "fail mode",
                s,
                "refuse, hang, garbage, reset or status:CODE:RATE \
                 (CODE 200-599, RATE 0-1, e.g. status:503:0.2)",
            )
        };
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "refuse" => return Ok(FailMode::Refuse),
            "hang" => return Ok(FailMode::Hang),
            "garbage" => return Ok(FailMode::Garbage),
            "reset" => return Ok(FailMode::Reset),
            _ => {}
        }
        let mut parts = t.split(':');
        if parts.next() != Some("status") {
            return Err(bad());
        }
        let code = parts
            .next()
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (200..=599).contains(c))
            .ok_or_else(bad)?;
        let rate = match parts.next() {
            None => 1.0,
            Some(r) => r
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(bad)?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(FailMode::Status { code, rate })
    }
}

impl fmt::Display for FailMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailMode::Refuse => f.write_str("refuse"),
            FailMode::Hang => f.write_str("hang"),
            FailMode::Garbage => f.write_str("garbage"),
            FailMode::Reset => f.write_str("reset"),
            FailMode::Status { code, rate } => write!(f, "status:{code}:{rate}"),
        }
    }
}

/// A temporary slowdown (`--slow 10x@10s+10s`): from `after` (counted from
/// the backend's start) for `for_`, every delay is `factor` times the
/// profile's. A zero delay (profile `0`) counts as 1 ms, so it becomes
/// `factor` ms. In capacity mode the service time is scaled the same way
/// (queue waits then grow by themselves). Delays stay capped at
/// [`MAX_DELAY_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowPhase {
    /// Start of the phase, from the backend's start.
    pub after: Duration,
    /// Length of the phase.
    pub for_: Duration,
    /// Multiplier of every delay during the phase (at least 1).
    pub factor: u32,
}

impl SlowPhase {
    /// Is the phase on at `elapsed` since the backend started? The window
    /// is half-open: `[after, after + for_)`.
    pub fn active(&self, elapsed: Duration) -> bool {
        elapsed >= self.after && elapsed - self.after < self.for_
    }

    /// The delay to use for a request admitted at `elapsed` whose profile
    /// (or service) delay is `delay`.
    pub fn apply(&self, delay: Duration, elapsed: Duration) -> Duration {
        if !self.active(elapsed) || self.factor <= 1 {
            return delay;
        }
        let base = if delay.is_zero() {
            Duration::from_millis(1)
        } else {
            delay
        };
        base.saturating_mul(self.factor)
            .min(Duration::from_millis(MAX_DELAY_MS))
    }
}

/// `500ms`, `10s`, `2m`, or bare seconds (`10`).
fn parse_span(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1_000)
    };
    let n: u64 = num.trim().parse().ok()?;
    let ms = n.checked_mul(unit_ms)?;
    // One day at most: far beyond any benchmark, and no overflow anywhere.
    (ms <= 86_400_000).then(|| Duration::from_millis(ms))
}

fn fmt_span(f: &mut fmt::Formatter<'_>, d: Duration) -> fmt::Result {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        write!(f, "{}s", ms / 1000)
    } else {
        write!(f, "{ms}ms")
    }
}

impl FromStr for SlowPhase {
    type Err = ParseError;

    /// `FACTORx@AFTER+FOR`, e.g. `10x@10s+10s` (10 times slower from 10 s
    /// after start, for 10 s). Times take `ms`, `s` or `m`; bare numbers are
    /// seconds. FACTOR is 1 to 10000.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || {
            ParseError::new(
                "slow phase",
                s,
                "FACTORx@AFTER+FOR such as 10x@10s+10s (FACTOR 1-10000; times in ms, s or m, up to a day)",
            )
        };
        let t = s.trim().to_ascii_lowercase();
        let (factor, rest) = t.split_once('@').ok_or_else(bad)?;
        let factor: u32 = factor
            .trim()
            .strip_suffix('x')
            .and_then(|f| f.trim().parse().ok())
            .filter(|f| (1..=10_000).contains(f))
            .ok_or_else(bad)?;
        let (after, for_) = rest.split_once('+').ok_or_else(bad)?;
        let after = parse_span(after).ok_or_else(bad)?;
        let for_ = parse_span(for_).ok_or_else(bad)?;
        Ok(SlowPhase {
            after,
            for_,
            factor,
        })
    }
}

impl fmt::Display for SlowPhase {
    /// `10x@10s+10s`: parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x@", self.factor)?;
        fmt_span(f, self.after)?;
        f.write_str("+")?;
        fmt_span(f, self.for_)
    }
}

/// Picks which requests get the injected status: request `n` is picked when
/// `floor(n * rate)` steps up, so exactly `rate` of every run of requests
/// is picked, spread evenly (rate 0.5: every second request).
#[derive(Debug, Clone)]
pub struct Injector {
    code: u16,
    rate_ppm: u32,
    acc: u32,
}

impl Injector {
    /// The injector for a fail mode; `None` unless it is `Status`.
    pub fn for_mode(mode: Option<FailMode>) -> Option<Self> {
        match mode {
            Some(FailMode::Status { code, rate }) => Some(Injector {
                code,
                // In 0..=PPM because `rate` was checked to be in 0..=1.
                rate_ppm: (rate.clamp(0.0, 1.0) * f64::from(PPM)).round() as u32,
                acc: 0,
            }),
            _ => None,
        }
    }

    /// The status for the next request: the injected code or `None` (200).
    pub fn pick(&mut self) -> Option<u16> {
        self.acc += self.rate_ppm;
        if self.acc >= PPM {
            self.acc -= PPM;
            Some(self.code)
        } else {
            None
        }
    }
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
