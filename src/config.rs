//! Validated settings for each mode. Everything here is checked before a
//! socket is opened, so bad input ends with one clear line, not a panic.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// Default listen backlog. Matches the default `net.core.somaxconn` (4096)
/// on current kernels; a larger value is silently capped by the kernel.
pub const DEFAULT_BACKLOG: u32 = 4096;

/// Settings shared by every mode: where to listen and how many workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub workers: usize,
    pub backlog: u32,
}

/// Settings for `tidegate echo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoConfig {
    pub server: ServerConfig,
    /// Print one line per closed connection.
    pub log_connections: bool,
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// An address flag that is not `ip:port` or a resolvable `host:port`.
    BadAddress {
        flag: &'static str,
        value: String,
        why: String,
    },
    /// `--workers 0`.
    ZeroWorkers,
    /// `--backlog 0` or larger than the kernel can take.
    BadBacklog(u32),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadAddress { flag, value, why } => {
                write!(
                    f,
                    "invalid {flag} address '{value}': {why} (expected ip:port or host:port)"
                )
            }
            ConfigError::ZeroWorkers => write!(f, "--workers must be at least 1"),
            ConfigError::BadBacklog(n) => {
                write!(f, "--backlog {n} is out of range (1..={})", i32::MAX)
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl ServerConfig {
    /// Builds a validated config. `workers: None` means one per CPU.
    pub fn new(listen: &str, workers: Option<usize>, backlog: u32) -> Result<Self, ConfigError> {
        let listen = resolve("--listen", listen)?;
        let workers = workers.unwrap_or_else(default_workers);
        if workers == 0 {
            return Err(ConfigError::ZeroWorkers);
        }
        if backlog == 0 || backlog > i32::MAX as u32 {
            return Err(ConfigError::BadBacklog(backlog));
        }
        Ok(ServerConfig {
            listen,
            workers,
            backlog,
        })
    }
}

/// One worker per CPU: workers never block, so more would only add
/// context switches.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Parses `ip:port`, or resolves `host:port` once at start-up (the first
/// address wins, as with nginx's `listen`).
pub fn resolve(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |why: String| ConfigError::BadAddress {
        flag,
        value: value.to_string(),
        why,
    };
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !value.contains(':') {
        return Err(bad("missing port".into()));
    }
    match value.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| bad("name has no addresses".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_fail_clearly() {
        assert_eq!(
            resolve("--listen", "127.0.0.1:80").map(|a| a.port()),
            Ok(80)
        );
        assert_eq!(resolve("--listen", "[::1]:81").map(|a| a.port()), Ok(81));
        assert_eq!(
            resolve("--listen", "localhost:82").map(|a| a.port()),
            Ok(82)
        );
        let err = resolve("--listen", "nonsense").map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err(
                "invalid --listen address 'nonsense': missing port (expected ip:port or host:port)"
                    .into()
            )
        );
        assert!(resolve("--listen", "127.0.0.1:99999").is_err());
    }

    #[test]
    fn zero_workers_and_backlog_are_rejected() {
        assert_eq!(
            ServerConfig::new("127.0.0.1:0", Some(0), 10),
            Err(ConfigError::ZeroWorkers)
        );
        assert_eq!(
            ServerConfig::new("127.0.0.1:0", Some(1), 0),
            Err(ConfigError::BadBacklog(0))
        );
        let ok = ServerConfig::new("127.0.0.1:0", None, DEFAULT_BACKLOG);
        assert!(ok.is_ok_and(|c| c.workers >= 1));
    }
}
