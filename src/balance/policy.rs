//! [`Policy`], which selector to build and with what parameters: its
//! names, parsing from [`POLICY_NAMES`] and validation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{
    ADAPTIVE, DEFAULT_DECAY, DEFAULT_EWMA_ALPHA, DEFAULT_RTT, DEFAULT_SMA_WINDOW, MAX_SMA_WINDOW,
    POLICY_NAMES, ewma, least_conn, p2c, peak_ewma, predictive, round_robin, sma, tail_budget,
};

/// Which selector to build, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    RoundRobin,
    /// Mean of the last `window` samples (1..=[`MAX_SMA_WINDOW`]).
    Sma {
        window: usize,
    },
    /// `ewma = alpha*sample + (1-alpha)*ewma`, `alpha` in (0, 1].
    Ewma {
        alpha: f64,
    },
    /// Fewest requests in flight; ties rotate.
    LeastConn,
    /// Power of two choices on requests in flight.
    P2c,
    /// P2C on peak-EWMA latency * (in flight + 1). `decay` (tau, > 0) is
    /// the time constant of `exp(-dt/tau)`; `default_rtt` (> 0) stands for
    /// a backend's latency after its one probe, until its first sample.
    PeakEwma {
        decay: Duration,
        default_rtt: Duration,
    },
    /// Lowest latency predicted by per-backend recursive least squares.
    Predictive,
    /// Traffic shares minimising the mean under a tail budget, applied by
    /// smooth weighted round-robin, with an overload guard. `slo` fixes the
    /// tail threshold (`--slo-ms`); without it the threshold follows the
    /// backends' own p95.
    TailBudget {
        slo: Option<Duration>,
    },
    /// The default: tail-budget's shares among the backends under their
    /// learned concurrency limits (`limit`, enforced by the proxy), the
    /// rest waiting in the proxy's queue. `slo` as for tail-budget.
    Adaptive {
        slo: Option<Duration>,
    },
}

impl Policy {
    /// The CSV `routing_mode` name; the built selector's [`Selector::name`](super::Selector::name).
    pub fn name(&self) -> &'static str {
        match self {
            Policy::RoundRobin => round_robin::NAME,
            Policy::Sma { .. } => sma::NAME,
            Policy::Ewma { .. } => ewma::NAME,
            Policy::LeastConn => least_conn::NAME,
            Policy::P2c => p2c::NAME,
            Policy::PeakEwma { .. } => peak_ewma::NAME,
            Policy::Predictive => predictive::NAME,
            Policy::TailBudget { .. } => tail_budget::NAME,
            Policy::Adaptive { .. } => ADAPTIVE,
        }
    }

    /// Whether the proxy learns each backend's concurrency limit for this
    /// policy (`adaptive`).
    pub fn learns_limits(&self) -> bool {
        matches!(self, Policy::Adaptive { .. })
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), PolicyError> {
        match *self {
            Policy::RoundRobin => Ok(()),
            Policy::Sma { window } if !(1..=MAX_SMA_WINDOW).contains(&window) => {
                Err(PolicyError::BadWindow(window))
            }
            Policy::Sma { .. } => Ok(()),
            Policy::Ewma { alpha } if !(alpha > 0.0 && alpha <= 1.0) => {
                Err(PolicyError::BadAlpha(alpha))
            }
            Policy::Ewma { .. } => Ok(()),
            Policy::LeastConn | Policy::P2c => Ok(()),
            Policy::PeakEwma { decay, .. } if decay.is_zero() => Err(PolicyError::BadDecay(decay)),
            Policy::PeakEwma { default_rtt, .. } if default_rtt.is_zero() => {
                Err(PolicyError::BadDefaultRtt(default_rtt))
            }
            Policy::PeakEwma { .. }
            | Policy::Predictive
            | Policy::TailBudget { .. }
            | Policy::Adaptive { .. } => Ok(()),
        }
    }
}

/// Parses the [`POLICY_NAMES`] with default parameters: the seed's window
/// 3 and alpha 0.2; peak-EWMA's [`DEFAULT_DECAY`] and [`DEFAULT_RTT`]. The
/// CSV names `adaptive_sma` and `adaptive_ewma` are accepted too, so a
/// `routing_mode` column parses back.
impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round-robin" => Ok(Policy::RoundRobin),
            "sma" | "adaptive_sma" => Ok(Policy::Sma {
                window: DEFAULT_SMA_WINDOW,
            }),
            "ewma" | "adaptive_ewma" => Ok(Policy::Ewma {
                alpha: DEFAULT_EWMA_ALPHA,
            }),
            "least-conn" => Ok(Policy::LeastConn),
            "p2c" => Ok(Policy::P2c),
            "peak-ewma" => Ok(Policy::PeakEwma {
                decay: DEFAULT_DECAY,
                default_rtt: DEFAULT_RTT,
            }),
            "predictive" => Ok(Policy::Predictive),
            "tail-budget" => Ok(Policy::TailBudget { slo: None }),
            ADAPTIVE => Ok(Policy::Adaptive { slo: None }),
            _ => Err(PolicyError::Unknown(s.to_string())),
        }
    }
}

/// A policy that cannot be built.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyError {
    /// A name `FromStr` does not know.
    Unknown(String),
    /// SMA window outside 1..=[`MAX_SMA_WINDOW`].
    BadWindow(usize),
    /// EWMA alpha outside (0, 1].
    BadAlpha(f64),
    /// Peak-EWMA decay time of zero.
    BadDecay(Duration),
    /// Peak-EWMA default RTT of zero.
    BadDefaultRtt(Duration),
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Unknown(name) => {
                write!(f, "unknown routing policy '{name}' (expected ")?;
                let last = POLICY_NAMES.len().saturating_sub(1);
                for (i, known) in POLICY_NAMES.iter().enumerate() {
                    let sep = match i {
                        0 => "",
                        _ if i == last => " or ",
                        _ => ", ",
                    };
                    write!(f, "{sep}{known}")?;
                }
                write!(f, ")")
            }
            PolicyError::BadWindow(w) => {
                write!(f, "SMA window {w} is out of range (1..={MAX_SMA_WINDOW})")
            }
            PolicyError::BadAlpha(a) => write!(f, "EWMA alpha {a} is out of range (0, 1]"),
            PolicyError::BadDecay(d) => write!(f, "peak-EWMA decay {d:?} must be above zero"),
            PolicyError::BadDefaultRtt(d) => {
                write!(f, "peak-EWMA default RTT {d:?} must be above zero")
            }
        }
    }
}

impl std::error::Error for PolicyError {}
