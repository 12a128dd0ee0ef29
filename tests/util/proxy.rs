//! An in-process proxy on 127.0.0.1:0 in front of given backends, and
//! built-in backends to put behind it.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tidegate::proxy::accesslog::{AccessLog, LogFormat, LogTarget};

use tidegate::balance::Policy;
use tidegate::config::{BackendAddr, BackendConn, ProxyConfig, ServerConfig, Timeouts};
use tidegate::http::ForwardOpts;
use tidegate::proxy::ProxyStats;
use tidegate::runtime::stats::Summary;
use tidegate::server::{ProxyHandles, RunningServer, Server};
use tidegate::tools::backend::{self, BackendConfig, BackendHandle};

use super::client::Client;

/// How to run a test proxy; `Default` is one worker, round-robin,
/// persistent backend connections, and timeouts short enough that a
/// broken test fails fast but long enough for a loaded machine.
#[derive(Debug, Clone)]
pub struct Opts {
    pub policy: Policy,
    pub conn: BackendConn,
    pub timeouts: Timeouts,
    pub csv: Option<PathBuf>,
    pub workers: usize,
    /// `--health-check PATH` with its interval.
    pub health_check: Option<(String, Duration)>,
    /// `--via` / `--request-id` (default: on, as the binary).
    pub forward: ForwardOpts,
    /// `--admin-token` (admin tests only).
    pub admin_token: Option<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            policy: Policy::RoundRobin,
            conn: BackendConn::Persistent,
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                backend: Duration::from_secs(5),
                header: Duration::from_secs(5),
                idle: Duration::from_secs(10),
                drain: Duration::from_secs(2),
                ..Timeouts::default()
            },
            csv: None,
            workers: 1,
            health_check: None,
            forward: ForwardOpts::default(),
            admin_token: None,
        }
    }
}

/// A proxy running on background threads; stops when dropped.
pub struct TestProxy {
    pub addr: SocketAddr,
    /// The bound `[[listener]]` addresses (HTTPS ones among them), in order.
    pub listeners: Vec<SocketAddr>,
    pub handles: ProxyHandles,
    server: RunningServer,
}

/// Starts a proxy in front of `backends`.
pub fn start(backends: &[SocketAddr], opts: Opts) -> io::Result<TestProxy> {
    let backends = (backends.iter())
        .map(|&addr| BackendAddr::new(addr.to_string(), addr))
        .collect();
    start_backends(backends, opts)
}

/// Starts a proxy in front of `backends` as configured (weights, backups).
pub fn start_backends(backends: Vec<BackendAddr>, opts: Opts) -> io::Result<TestProxy> {
    start_config(config_backends(backends, opts)?)
}

/// Starts a proxy running `cfg` (listening where `cfg.server` says).
pub fn start_config(cfg: ProxyConfig) -> io::Result<TestProxy> {
    let (server, handles) = Server::proxy(&cfg).map_err(|e| io::Error::other(e.to_string()))?;
    let server = server.spawn()?;
    Ok(TestProxy {
        addr: server.local_addr(),
        listeners: server.listener_addrs().to_vec(),
        handles,
        server,
    })
}

/// The configuration [`start`] runs (also what a reload test applies).
pub fn config(backends: &[SocketAddr], opts: Opts) -> io::Result<ProxyConfig> {
    let backends = (backends.iter())
        .map(|&addr| BackendAddr::new(addr.to_string(), addr))
        .collect();
    config_backends(backends, opts)
}

/// The configuration for `backends` as given.
pub fn config_backends(backends: Vec<BackendAddr>, opts: Opts) -> io::Result<ProxyConfig> {
    let server = ServerConfig::new("127.0.0.1:0", Some(opts.workers), 1024)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(ProxyConfig {
        server,
        listeners: Vec::new(),
        backends,
        policy: opts.policy,
        backend_conn: opts.conn,
        timeouts: opts.timeouts,
        access_log: opts.csv.map(|path| AccessLog {
            target: LogTarget::File(path),
            format: LogFormat::Csv,
        }),
        slo: None,
        eject_5xx: false,
        health_check: opts.health_check,
        eject_after: tidegate::health::EJECT_AFTER,
        forward: opts.forward,
        admin: None,
        admin_token: None,
        resolve_interval: tidegate::config::DEFAULT_RESOLVE_INTERVAL,
    })
}

impl TestProxy {
    /// A new client connection to the proxy.
    pub fn client(&self) -> io::Result<Client> {
        Client::connect(self.addr)
    }

    /// One request counter, e.g. `p.stat(|s| &s.retries)`.
    pub fn stat(&self, counter: impl Fn(&ProxyStats) -> &AtomicU64) -> u64 {
        counter(&self.handles.shared.stats).load(Relaxed)
    }

    /// Stops the server (joining workers and the CSV writer).
    pub fn stop(self) -> Summary {
        self.server.stop()
    }
}

/// A built-in backend on 127.0.0.1:0 with a latency profile such as
/// `"0"` or `"10,20"`, named `name` (its `X-Backend`).
pub fn backend(profile: &str, name: &str) -> io::Result<BackendHandle> {
    let profile = profile
        .parse()
        .map_err(|e| io::Error::other(format!("{e}")))?;
    let mut cfg = BackendConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), profile);
    cfg.name = name.into();
    backend::spawn(cfg)
}

/// A built-in backend with `--fail mode` (refuse, hang, garbage, reset...).
pub fn failing(mode: &str, name: &str) -> io::Result<BackendHandle> {
    let mut cfg = BackendConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        backend::Profile::immediate(),
    );
    cfg.name = name.into();
    cfg.fail = Some(mode.parse().map_err(|e| io::Error::other(format!("{e}")))?);
    backend::spawn(cfg)
}
