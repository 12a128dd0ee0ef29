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
mod tests {
    use super::*;

    fn ms(p: &Profile) -> Vec<u128> {
        p.delays().iter().map(Duration::as_millis).collect()
    }

    #[test]
    fn presets_and_lists_parse() {
        let a: Profile = "A".parse().unwrap();
        assert_eq!(ms(&a), [10, 15, 20, 400, 400, 400, 10, 15, 20]);
        assert_eq!(a.preset(), Some("A"));
        assert_eq!(ms(&"b".parse().unwrap()), [200]);
        assert_eq!(ms(&"C".parse().unwrap()), [250]);
        let list: Profile = " 10, 15,20 ".parse().unwrap();
        assert_eq!(ms(&list), [10, 15, 20]);
        assert_eq!(list.preset(), None);
        assert_eq!("0".parse::<Profile>().unwrap(), Profile::immediate());
        assert_eq!(a.to_string(), "[10,15,20,400,400,400,10,15,20] ms");
    }

    #[test]
    fn bad_profiles_are_rejected_with_the_value() {
        for bad in ["", "D", "10,,20", "10,x", "-5", "1.5", "3600001"] {
            let e = bad.parse::<Profile>().unwrap_err().to_string();
            assert!(e.contains("invalid profile"), "{bad}: {e}");
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
    }

    #[test]
    fn the_cycle_wraps() {
        let p: Profile = "30,60".parse().unwrap();
        let got: Vec<u128> = (0..5).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(got, [30, 60, 30, 60, 30]);
    }

    #[test]
    fn fail_modes_parse() {
        assert_eq!("refuse".parse(), Ok(FailMode::Refuse));
        assert_eq!("HANG".parse(), Ok(FailMode::Hang));
        assert_eq!("garbage".parse(), Ok(FailMode::Garbage));
        assert_eq!("reset".parse(), Ok(FailMode::Reset));
        assert_eq!(
            "status:503:0.2".parse(),
            Ok(FailMode::Status {
                code: 503,
                rate: 0.2
            })
        );
        assert_eq!(
            "status:500".parse(),
            Ok(FailMode::Status {
                code: 500,
                rate: 1.0
            })
        );
        for bad in [
            "",
            "boom",
            "status",
            "status:99:0.1",
            "status:600:0.1",
            "status:503:1.5",
            "status:503:-0.1",
            "status:503:nan",
            "status:503:0.2:1",
        ] {
            let e = bad.parse::<FailMode>().unwrap_err().to_string();
            assert!(e.contains("invalid fail mode"), "{bad}: {e}");
        }
    }

    #[test]
    fn injector_is_exact_and_even() {
        let mode = "status:503:0.5".parse().ok();
        let mut inj = Injector::for_mode(mode).unwrap();
        let picks: Vec<bool> = (0..20).map(|_| inj.pick().is_some()).collect();
        assert_eq!(picks.iter().filter(|p| **p).count(), 10);
        assert!(picks.windows(2).all(|w| w[0] != w[1]), "alternates");
        let mut fifth = Injector::for_mode("status:502:0.2".parse().ok()).unwrap();
        let n = (0..1000).filter(|_| fifth.pick() == Some(502)).count();
        assert_eq!(n, 200);
        assert!(Injector::for_mode(Some(FailMode::Hang)).is_none());
    }
}
