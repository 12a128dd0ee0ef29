//! One configured backend and the `--backend` flags' resolution.

use std::net::SocketAddr;

use super::{ConfigError, resolve};

/// One backend as configured: its name as given and its resolved address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddr {
    pub name: String,
    pub addr: SocketAddr,
    /// Relative share of traffic (1..=[`MAX_WEIGHT`]; 1 from the command
    /// line), honoured by round-robin, p2c sampling and tail-budget's floor.
    pub weight: u32,
    /// Used only when every primary (non-backup) backend is down or ejected.
    pub backup: bool,
}

impl BackendAddr {
    /// A primary backend of weight 1, as `--backend` gives.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        BackendAddr {
            name: name.into(),
            addr,
            weight: 1,
            backup: false,
        }
    }
}

/// Largest backend weight: HAProxy's limit (256), plenty for "3 times as
/// much"; keeps tail-budget's scaled floors and p2c's weight sums small.
pub const MAX_WEIGHT: u32 = 256;

/// Resolves every `--backend`; at least one is required.
pub fn resolve_backends(values: &[String]) -> Result<Vec<BackendAddr>, ConfigError> {
    if values.is_empty() {
        return Err(ConfigError::NoBackends);
    }
    values
        .iter()
        .map(|v| {
            let addr = resolve("--backend", v)?;
            Ok(BackendAddr::new(v.clone(), addr))
        })
        .collect()
}
