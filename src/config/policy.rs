//! The routing policy from its name and the parameters that apply to
//! some policies only; shared by the flags and the configuration file.

use std::time::Duration;

use super::ConfigError;
use crate::balance::{self, Policy};

/// The policy parameters that apply to some policies only (flags
/// `--sma-window`, `--ewma-alpha`, `--decay`, `--default-rtt`, `--slo-ms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyParams {
    pub sma_window: usize,
    pub ewma_alpha: f64,
    pub decay: Duration,
    pub default_rtt: Duration,
    pub slo: Option<Duration>,
}

impl Default for PolicyParams {
    fn default() -> Self {
        PolicyParams {
            sma_window: balance::DEFAULT_SMA_WINDOW,
            ewma_alpha: balance::DEFAULT_EWMA_ALPHA,
            decay: balance::DEFAULT_DECAY,
            default_rtt: balance::DEFAULT_RTT,
            slo: None,
        }
    }
}

/// The policy named `name` with `params`, validated; errors name `flag`.
pub fn build_policy(
    flag: &'static str,
    name: &str,
    params: &PolicyParams,
) -> Result<Policy, ConfigError> {
    let bad = |why: String| ConfigError::BadValue {
        flag,
        value: name.to_string(),
        why,
    };
    let policy = match name {
        "sma" | "adaptive_sma" => Policy::Sma {
            window: params.sma_window,
        },
        "ewma" | "adaptive_ewma" => Policy::Ewma {
            alpha: params.ewma_alpha,
        },
        "peak-ewma" => Policy::PeakEwma {
            decay: params.decay,
            default_rtt: params.default_rtt,
        },
        "tail-budget" => Policy::TailBudget { slo: params.slo },
        crate::balance::ADAPTIVE => Policy::Adaptive { slo: params.slo },
        other => other.parse::<Policy>().map_err(|e| bad(e.to_string()))?,
    };
    policy.validate().map_err(|e| bad(e.to_string()))?;
    Ok(policy)
}
