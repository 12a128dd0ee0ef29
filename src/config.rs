//! Validated settings for each mode. Everything here is checked before a
//! socket is opened, so bad input ends with one clear line, not a panic.
//!
//! `file`: the proxy's TOML configuration file (`--config`, `check-config`):
//! its schema and the pure text -> [`ProxyConfig`] validation.

mod backend;
pub mod file;
pub mod policy;
mod queue;

pub use backend::{
    BackendAddr, BackendFlag, DEFAULT_RESOLVE_INTERVAL, MAX_MAXCONN, MAX_WEIGHT,
    MIN_RESOLVE_INTERVAL, check_maxconn, expand, lookup, parse_backend_flag,
    parse_resolve_interval, resolve_all, resolve_backends,
};
pub use queue::{DEFAULT_MAX_QUEUE, DEFAULT_QUEUE_TIMEOUT, MAX_MAX_QUEUE, QueueConfig};

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use crate::http::{self, ForwardOpts, Proto};

/// `tidegate proxy`'s default listen address (the seed's proxy port).
pub const DEFAULT_PROXY_LISTEN: &str = "127.0.0.1:9090";

/// Default interval between active health checks: a dead backend is
/// noticed within 3 checks (6 s) at a negligible 0.5 request/s each.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// Default listen backlog. Matches the default `net.core.somaxconn` (4096)
/// on current kernels; a larger value is silently capped by the kernel.
pub const DEFAULT_BACKLOG: u32 = 4096;

/// Settings shared by every mode: where to listen and how many workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub workers: usize,
    pub backlog: u32,
    /// `--reuseport`: bind with SO_REUSEPORT, so that several processes on
    /// one host can listen on the same port.
    pub reuseport: bool,
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
    /// A duration flag that is not like `30s`, `250ms` or `2m`.
    BadDuration { flag: &'static str, value: String },
    /// `proxy` without any `--backend`.
    NoBackends,
    /// A value outside its allowed set or range (policy, alpha, window...).
    BadValue {
        flag: &'static str,
        value: String,
        why: String,
    },
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
            ConfigError::BadDuration { flag, value } => {
                write!(
                    f,
                    "invalid {flag} '{value}': expected a duration like 30s, 250ms or 2m"
                )
            }
            ConfigError::NoBackends => {
                write!(f, "no backends: give at least one --backend ip:port")
            }
            ConfigError::BadValue { flag, value, why } => {
                write!(f, "invalid {flag} '{value}': {why}")
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
            reuseport: false,
        })
    }
}

/// How the proxy talks to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendConn {
    /// Each worker keeps idle keep-alive connections per backend and reuses
    /// them (the seed's persistent proxy).
    Persistent,
    /// A fresh connection per request, sent with `Connection: close` (the
    /// seed's non-persistent proxy).
    Close,
}

impl FromStr for BackendConn {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "persistent" => Ok(BackendConn::Persistent),
            "close" => Ok(BackendConn::Close),
            _ => Err(ConfigError::BadValue {
                flag: "--backend-conn",
                value: s.to_string(),
                why: "expected persistent or close".into(),
            }),
        }
    }
}

/// Shortest accepted timeout. Zero would expire at once: `--idle-timeout 0`
/// closed every connection before its first request, `--backend-timeout 0`
/// answered everything 504 and `--connect-timeout 0` everything 502. The
/// workers' timers have millisecond resolution (epoll), so 1 ms is the
/// smallest value that means what it says.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// Longest accepted timeout: 24 hours. A longer one is almost certainly a
/// unit mistake (`--idle-timeout 60000` meant as ms is 16 hours), nothing in
/// HTTP waits a day, and the bound keeps every deadline far from
/// `Instant`'s range.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Timeouts of proxy mode, each named after its flag. Every one must be
/// within [`MIN_TIMEOUT`]..=[`MAX_TIMEOUT`], except `drain`, where 0 means
/// "close in-flight requests at once" (see [`Timeouts::validate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `--connect-timeout`: a backend connect that takes longer fails over.
    pub connect: Duration,
    /// `--backend-timeout`: no response head (or no progress) from a
    /// backend for this long gives 504.
    pub backend: Duration,
    /// `--header-timeout`: a request head not complete this long after its
    /// first byte gives 408.
    pub header: Duration,
    /// `--idle-timeout`: an idle keep-alive client connection is closed.
    pub idle: Duration,
    /// `--client-timeout`: a client that stops sending in the middle of a
    /// request body, or stops reading its response, for this long is
    /// disconnected (nginx's `client_body_timeout` / `send_timeout`).
    pub client: Duration,
    /// `--tunnel-timeout`: a WebSocket/Upgrade tunnel with no traffic either
    /// way for this long is closed (HAProxy's `timeout tunnel`).
    pub tunnel: Duration,
    /// `--drain-timeout`: on shutdown, in-flight requests get this long
    /// (0: none; they are closed at once).
    pub drain: Duration,
}

impl Default for Timeouts {
    /// The proxy's defaults, as in the issue (nginx uses 60 s for most of
    /// these; 2 s connect suits a LAN where a slow connect means a dead host).
    /// Client 30 s: long enough for a slow mobile upload to make progress,
    /// short enough that a stalled client does not pin a backend connection
    /// for minutes. Tunnel 1 h: WebSocket clients usually ping every 30-60 s,
    /// so an hour of silence means the peer is gone.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            backend: Duration::from_secs(30),
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            client: Duration::from_secs(30),
            tunnel: Duration::from_secs(3600),
            drain: Duration::from_secs(10),
        }
    }
}

impl Timeouts {
    /// Each timeout with its flag, in the order of `--help`.
    pub fn flags(&self) -> [(&'static str, Duration); 7] {
        [
            ("--backend-timeout", self.backend),
            ("--connect-timeout", self.connect),
            ("--header-timeout", self.header),
            ("--idle-timeout", self.idle),
            ("--client-timeout", self.client),
            ("--tunnel-timeout", self.tunnel),
            ("--drain-timeout", self.drain),
        ]
    }

    /// Checks every timeout against [`MIN_TIMEOUT`]..=[`MAX_TIMEOUT`]
    /// (`--drain-timeout` may be 0).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, d) in self.flags() {
            check_timeout(flag, &format!("{d:?}"), d)?;
        }
        Ok(())
    }
}

/// Parses a timeout flag and checks its range (see [`Timeouts`]).
pub fn parse_timeout(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(flag, value)?;
    check_timeout(flag, value, d)?;
    Ok(d)
}

/// [`MIN_TIMEOUT`]..=[`MAX_TIMEOUT`], or 0 for the drain timeout (no
/// drain), whether named as a flag or as the file's key.
fn check_timeout(flag: &'static str, value: &str, d: Duration) -> Result<(), ConfigError> {
    let zero_ok = flag == "--drain-timeout" || flag == "timeouts.drain";
    let why = if d.is_zero() && zero_ok {
        return Ok(());
    } else if d < MIN_TIMEOUT {
        "must be at least 1ms (0 would expire at once)"
    } else if d > MAX_TIMEOUT {
        "must be at most 24h"
    } else {
        return Ok(());
    };
    Err(ConfigError::BadValue {
        flag,
        value: value.to_string(),
        why: why.into(),
    })
}

/// One `[[listener]]` of the configuration file: an address beside
/// `listen`, plaintext or HTTPS (`tls`). Needs a restart to add or move;
/// its certificates reload.
#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: Option<crate::tls::certs::ListenerTls>,
}

/// Settings for `tidegate proxy`.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub server: ServerConfig,
    /// `[[listener]]` tables: more listeners, HTTPS ones among them
    /// (file only; `server.listen` is always the plaintext one).
    pub listeners: Vec<Listener>,
    pub backends: Vec<BackendAddr>,
    pub policy: crate::balance::Policy,
    pub backend_conn: BackendConn,
    pub timeouts: Timeouts,
    /// `--access-log PATH|stdout` with `--access-log-format` (`--log-csv`
    /// is the csv format's alias; both at once is an error).
    pub access_log: Option<crate::proxy::accesslog::AccessLog>,
    /// `--slo-ms`: report the share of requests answered within it.
    pub slo: Option<Duration>,
    /// `--eject-5xx`: 5xx answers count as failures for outlier ejection.
    pub eject_5xx: bool,
    /// `--eject-after`: consecutive failures that eject a backend (0: never).
    pub eject_after: u32,
    /// `--health-check PATH` and `--health-interval`: active checks.
    pub health_check: Option<(String, Duration)>,
    /// `--via`, `--request-id`: the proxy fields added to forwarded heads.
    pub forward: ForwardOpts,
    /// `--admin ADDR` / `[admin] address`: the admin listener, if any.
    pub admin: Option<SocketAddr>,
    /// `[admin] token`: the bearer token the admin API requires (carried
    /// here; the admin API enforces it).
    pub admin_token: Option<String>,
    /// `--resolve-interval` / `resolve_interval`: how often backends given
    /// as host names are resolved again (see `proxy::resolver`).
    pub resolve_interval: Duration,
    /// `--queue-timeout`, `--max-queue`: the queue of requests waiting for
    /// a backend under its `maxconn`.
    pub queue: QueueConfig,
}

#[cfg(test)]
impl ProxyConfig {
    /// The defaults every unit test starts from: round-robin over
    /// `backends`, persistent connections, default timeouts, nothing else on.
    pub(crate) fn for_tests(
        listen: SocketAddr,
        workers: usize,
        backends: Vec<BackendAddr>,
    ) -> Self {
        ProxyConfig {
            server: ServerConfig {
                listen,
                workers,
                backlog: 1024,
                reuseport: false,
            },
            listeners: Vec::new(),
            backends,
            policy: crate::balance::Policy::RoundRobin,
            backend_conn: BackendConn::Persistent,
            timeouts: Timeouts::default(),
            access_log: None,
            slo: None,
            eject_5xx: false,
            eject_after: 5,
            health_check: None,
            forward: ForwardOpts::default(),
            admin: None,
            admin_token: None,
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            queue: QueueConfig::default(),
        }
    }
}

/// The proxy fields from `--via NAME|off` and `--request-id HEADER|off`
/// (`X-Forwarded-Proto` is `http` until there is a TLS listener).
pub fn forward_opts(via: &str, request_id: &str) -> Result<ForwardOpts, ConfigError> {
    Ok(ForwardOpts {
        via: forward_field("--via", via, false)?,
        proto: Proto::Http,
        request_id: forward_field("--request-id", request_id, true)?,
    })
}

/// One of the proxy fields' settings: `off` (none), or a token (`is_field`:
/// a field name, which some names such as `Host` cannot be).
pub fn forward_field(
    flag: &'static str,
    value: &str,
    is_field: bool,
) -> Result<Option<String>, ConfigError> {
    if value == "off" {
        return Ok(None);
    }
    http::check_token(value, is_field)
        .map(|()| Some(value.to_string()))
        .map_err(|why| ConfigError::BadValue {
            flag,
            value: value.to_string(),
            why: why.into(),
        })
}

/// Parses `30s`, `250ms`, `2m`, `1h`, or a bare number of seconds
/// (fractions allowed: `0.5s`).
pub fn parse_duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::BadDuration {
        flag,
        value: value.to_string(),
    };
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "us" => 0.000_001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|_| bad())
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
mod tests;
