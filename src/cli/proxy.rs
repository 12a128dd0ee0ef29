//! `tidegate proxy`'s flags and how they become a [`ProxyConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tidegate::proxy::accesslog::{AccessLog, LogFormat, LogTarget};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use tidegate::balance;
use tidegate::config::file::{self, FileBackend, FileConfig};
use tidegate::config::policy::{self, PolicyParams};
use tidegate::config::{self, ConfigError, DEFAULT_BACKLOG, ProxyConfig, ServerConfig, Timeouts};
use toml::Spanned;

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Read the settings from this TOML file (see examples/tidegate.toml);
    /// flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (ip:port or host:port).
    #[arg(long, default_value = config::DEFAULT_PROXY_LISTEN, value_name = "ADDR")]
    pub listen: String,
    /// A backend (ip:port or host:port), optionally with `,maxconn=N` (at
    /// most N requests in flight to it, the rest queue) and `,weight=W`;
    /// repeat for more. A host name becomes one backend per address,
    /// re-resolved every --resolve-interval. With --config, replaces the
    /// file's backends.
    #[arg(long = "backend", value_name = "ADDR[,maxconn=N][,weight=W]")]
    pub backends: Vec<String>,
    /// A request waiting this long for a backend under its maxconn gets 503 with Retry-After.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub queue_timeout: String,
    /// Requests waiting for a backend at once (all workers); one more gets 503.
    #[arg(long, default_value_t = config::DEFAULT_MAX_QUEUE, value_name = "N")]
    pub max_queue: usize,
    /// How often backends given as host names are resolved again (min 100ms).
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub resolve_interval: String,
    /// Routing policy: adaptive (tail-budget plus learned per-backend
    /// limits), round-robin, sma, ewma, least-conn, p2c, peak-ewma, predictive or tail-budget.
    #[arg(long, default_value = "adaptive")]
    pub policy: String,
    /// SMA: how many recent latencies to average.
    #[arg(long, default_value_t = balance::DEFAULT_SMA_WINDOW)]
    pub sma_window: usize,
    /// EWMA: weight of the newest latency, in (0, 1].
    #[arg(long, default_value_t = balance::DEFAULT_EWMA_ALPHA)]
    pub ewma_alpha: f64,
    /// peak-ewma: decay time (tau) of the latency estimate.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub decay: String,
    /// peak-ewma: latency assumed for a backend after its one probe, until measured.
    #[arg(long, default_value = "30ms", value_name = "DURATION")]
    pub default_rtt: String,
    /// persistent (pooled keep-alive backend connections) or close (one per request).
    #[arg(long, default_value = "persistent")]
    pub backend_conn: String,
    /// Worker threads [default: number of CPUs].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Listen backlog (capped by net.core.somaxconn).
    #[arg(long, default_value_t = DEFAULT_BACKLOG, value_name = "N")]
    pub backlog: u32,
    /// Write one CSV row per request (timestamp,backend_url,latency_ms,status_code,routing_mode,...).
    #[arg(long, value_name = "FILE")]
    pub log_csv: Option<PathBuf>,
    /// One line per request to PATH (appended; reopened on SIGUSR1) or `stdout`.
    #[arg(long, value_name = "PATH|stdout")]
    pub access_log: Option<String>,
    /// The access log's format: json, combined or csv (the --log-csv columns).
    #[arg(long, default_value = "json", value_name = "FORMAT")]
    pub access_log_format: String,
    /// No response (or no progress) from a backend for this long: 504.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub backend_timeout: String,
    /// A backend connect taking longer fails over to another backend.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub connect_timeout: String,
    /// A request head not complete within this long: 408.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub header_timeout: String,
    /// Idle keep-alive client connections are closed after this long.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub idle_timeout: String,
    /// A client stalling mid-body, or not reading its response, this long is disconnected.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub client_timeout: String,
    /// A WebSocket/Upgrade tunnel with no traffic this long is closed.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub tunnel_timeout: String,
    /// On SIGINT/SIGTERM, in-flight requests get this long to finish (0: none).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub drain_timeout: String,
    /// Report the share of requests answered within this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub slo_ms: Option<u64>,
    /// Name in the Via field added to requests and responses ("off": none).
    #[arg(long, default_value = "tidegate", value_name = "NAME")]
    pub via: String,
    /// Field carrying the request id, kept or generated, sent both ways ("off": none).
    #[arg(long, default_value = "X-Request-Id", value_name = "HEADER")]
    pub request_id: String,
    /// Count 5xx answers towards the consecutive-failure ejection rule (they
    /// always count for the success-rate rule).
    #[arg(long)]
    pub eject_5xx: bool,
    /// Actively check each backend with GET PATH (down after 3 failures, up after 2 passes).
    #[arg(long, value_name = "PATH")]
    pub health_check: Option<String>,
    /// Interval between active health checks.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub health_interval: String,
    /// Eject a backend after this many consecutive failures (0: no outlier
    /// ejection at all, success-rate rule included).
    #[arg(long, default_value_t = tidegate::health::EJECT_AFTER, value_name = "N")]
    pub eject_after: u32,
    /// Serve the dashboard (/), /metrics, /stats, /readyz and the admin API on this address [default: off].
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Listen on this unix socket for a new process taking over (zero-downtime upgrade).
    #[arg(long, value_name = "PATH")]
    pub upgrade_socket: Option<PathBuf>,
    /// Take the listening sockets over from the process at --upgrade-socket, which then drains and exits.
    #[arg(long, requires = "upgrade_socket")]
    pub takeover: bool,
    /// Bind with SO_REUSEPORT, so several processes on this host can share the port.
    #[arg(long)]
    pub reuseport: bool,
    /// Require `Authorization: Bearer TOKEN` on every admin request; needed
    /// to bind --admin to an address other than loopback.
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
}

/// `--upgrade-socket PATH [--takeover]`.
#[derive(Debug, Clone)]
pub struct UpgradeOpts {
    pub path: PathBuf,
    pub takeover: bool,
}

impl ProxyArgs {
    /// `--access-log` with its format; `--log-csv FILE` is the csv alias.
    pub fn access_log(&self) -> Result<Option<AccessLog>, ConfigError> {
        let format: LogFormat =
            self.access_log_format
                .parse()
                .map_err(|why| ConfigError::BadValue {
                    flag: "--access-log-format",
                    value: self.access_log_format.clone(),
                    why,
                })?;
        match (&self.access_log, &self.log_csv) {
            (Some(_), Some(path)) => Err(ConfigError::BadValue {
                flag: "--log-csv",
                value: path.display().to_string(),
                why: "give either --log-csv or --access-log, not both".into(),
            }),
            (Some(target), None) => Ok(Some(AccessLog {
                target: LogTarget::parse(target),
                format,
            })),
            (None, Some(path)) => Ok(Some(AccessLog {
                target: LogTarget::File(path.clone()),
                format: LogFormat::Csv,
            })),
            (None, None) => Ok(None),
        }
    }

    /// The `--admin` address, if any.
    pub fn admin(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.admin.as_deref() {
            None | Some("off") => Ok(None),
            Some(a) => config::resolve("--admin", a).map(Some),
        }
    }

    /// `--upgrade-socket` and `--takeover`, if given.
    pub fn upgrade(&self) -> Option<UpgradeOpts> {
        self.upgrade_socket.as_ref().map(|path| UpgradeOpts {
            path: path.clone(),
            takeover: self.takeover,
        })
    }

    pub fn config(&self) -> Result<ProxyConfig, ConfigError> {
        let params = PolicyParams {
            sma_window: self.sma_window,
            ewma_alpha: self.ewma_alpha,
            decay: config::parse_duration("--decay", &self.decay)?,
            default_rtt: config::parse_duration("--default-rtt", &self.default_rtt)?,
            slo: self.slo_ms.map(Duration::from_millis),
        };
        let policy = policy::build_policy("--policy", &self.policy, &params)?;
        let mut server = ServerConfig::new(&self.listen, self.workers, self.backlog)?;
        server.reuseport = self.reuseport;
        Ok(ProxyConfig {
            server,
            listeners: Vec::new(),
            backends: config::resolve_backends(&self.backends)?,
            policy,
            backend_conn: self.backend_conn.parse()?,
            timeouts: Timeouts {
                connect: config::parse_timeout("--connect-timeout", &self.connect_timeout)?,
                backend: config::parse_timeout("--backend-timeout", &self.backend_timeout)?,
                header: config::parse_timeout("--header-timeout", &self.header_timeout)?,
                idle: config::parse_timeout("--idle-timeout", &self.idle_timeout)?,
                client: config::parse_timeout("--client-timeout", &self.client_timeout)?,
                tunnel: config::parse_timeout("--tunnel-timeout", &self.tunnel_timeout)?,
                drain: config::parse_timeout("--drain-timeout", &self.drain_timeout)?,
            },
            access_log: self.access_log()?,
            forward: config::forward_opts(&self.via, &self.request_id)?,
            slo: self.slo_ms.map(Duration::from_millis),
            eject_5xx: self.eject_5xx,
            eject_after: self.eject_after,
            health_check: match &self.health_check {
                Some(path) => {
                    let interval =
                        config::parse_duration("--health-interval", &self.health_interval)?;
                    if !path.starts_with('/') || interval.is_zero() {
                        return Err(ConfigError::BadValue {
                            flag: "--health-check",
                            value: path.clone(),
                            why: "expected an absolute path like /healthz and a non-zero --health-interval".into(),
                        });
                    }
                    Some((path.clone(), interval))
                }
                None => None,
            },
            admin: self.admin()?,
            admin_token: self.admin_token.clone(),
            resolve_interval: config::parse_resolve_interval(
                "--resolve-interval",
                &self.resolve_interval,
            )?,
            queue: config::QueueConfig {
                timeout: config::QueueConfig::parse_timeout(
                    "--queue-timeout",
                    &self.queue_timeout,
                )?,
                max: config::QueueConfig::check_max("--max-queue", self.max_queue)?,
            },
        })
    }

    /// The configuration: `--config FILE` with the flags given on the
    /// command line (`matches`) laid over it, or the flags alone. Each
    /// error is one line; a file's problems all come back at once.
    pub fn resolve(&self, matches: &ArgMatches) -> Result<ProxyConfig, Vec<String>> {
        let Some(path) = &self.config else {
            return self.config().map_err(|e| vec![e.to_string()]);
        };
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read --config {shown}: {e}")])?;
        let lines = |problems: Vec<file::Problem>| {
            problems.iter().map(|p| format!("{shown}: {p}")).collect()
        };
        let mut parsed = FileConfig::parse(&text).map_err(lines)?;
        // `--backend` options are checked here, as the file has no such text.
        for b in &self.backends {
            config::parse_backend_flag(b).map_err(|e| vec![e.to_string()])?;
        }
        self.overlay(matches, &mut parsed);
        parsed.validate(&text).map_err(lines)
    }

    /// Sets every flag given on the command line over the file's value.
    fn overlay(&self, m: &ArgMatches, f: &mut FileConfig) {
        let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
        let val = |v| Some(Spanned::new(0..0, v));
        let cli = &mut f.from_cli;
        let mut mark = |id: &str, key: &'static str, flag: &'static str| {
            let g = given(id);
            if g {
                cli.push((key, flag));
            }
            g
        };
        if mark("listen", "listen", "--listen") {
            f.listen = val(self.listen.clone());
        }
        if mark("workers", "workers", "--workers") {
            f.workers = self.workers.map(|w| Spanned::new(0..0, w));
        }
        if mark("backlog", "backlog", "--backlog") {
            f.backlog = Some(Spanned::new(0..0, self.backlog));
        }
        if mark("resolve_interval", "resolve_interval", "--resolve-interval") {
            f.resolve_interval = val(self.resolve_interval.clone());
        }
        if mark("queue_timeout", "queue_timeout", "--queue-timeout") {
            f.queue_timeout = val(self.queue_timeout.clone());
        }
        if mark("max_queue", "max_queue", "--max-queue") {
            f.max_queue = Some(Spanned::new(0..0, self.max_queue));
        }
        if mark("policy", "policy", "--policy") {
            f.policy = val(self.policy.clone());
        }
        if mark("sma_window", "sma_window", "--sma-window") {
            f.sma_window = Some(Spanned::new(0..0, self.sma_window));
        }
        if mark("ewma_alpha", "ewma_alpha", "--ewma-alpha") {
            f.ewma_alpha = Some(Spanned::new(0..0, self.ewma_alpha));
        }
        if mark("decay", "decay", "--decay") {
            f.decay = val(self.decay.clone());
        }
        if mark("default_rtt", "default_rtt", "--default-rtt") {
            f.default_rtt = val(self.default_rtt.clone());
        }
        if mark("slo_ms", "slo_ms", "--slo-ms") {
            f.slo_ms = self.slo_ms.map(|v| Spanned::new(0..0, v));
        }
        if mark("backend_conn", "backend_conn", "--backend-conn") {
            f.backend_conn = val(self.backend_conn.clone());
        }
        if mark("log_csv", "log_csv", "--log-csv") {
            f.log_csv = self
                .log_csv
                .as_ref()
                .map(|p| Spanned::new(0..0, p.to_string_lossy().into_owned()));
        }
        if mark("access_log", "access_log", "--access-log") {
            f.access_log = self.access_log.clone().map(|v| Spanned::new(0..0, v));
        }
        if mark(
            "access_log_format",
            "access_log_format",
            "--access-log-format",
        ) {
            f.access_log_format = val(self.access_log_format.clone());
        }
        if mark("via", "via", "--via") {
            f.via = val(self.via.clone());
        }
        if mark("request_id", "request_id", "--request-id") {
            f.request_id = val(self.request_id.clone());
        }
        let t = &mut f.timeouts;
        for (id, key, flag, slot, value) in [
            (
                "connect_timeout",
                "timeouts.connect",
                "--connect-timeout",
                &mut t.connect,
                &self.connect_timeout,
            ),
            (
                "backend_timeout",
                "timeouts.backend",
                "--backend-timeout",
                &mut t.backend,
                &self.backend_timeout,
            ),
            (
                "header_timeout",
                "timeouts.header",
                "--header-timeout",
                &mut t.header,
                &self.header_timeout,
            ),
            (
                "idle_timeout",
                "timeouts.idle",
                "--idle-timeout",
                &mut t.idle,
                &self.idle_timeout,
            ),
            (
                "client_timeout",
                "timeouts.client",
                "--client-timeout",
                &mut t.client,
                &self.client_timeout,
            ),
            (
                "tunnel_timeout",
                "timeouts.tunnel",
                "--tunnel-timeout",
                &mut t.tunnel,
                &self.tunnel_timeout,
            ),
            (
                "drain_timeout",
                "timeouts.drain",
                "--drain-timeout",
                &mut t.drain,
                &self.drain_timeout,
            ),
        ] {
            if mark(id, key, flag) {
                *slot = val(value.clone());
            }
        }
        let h = &mut f.health;
        if mark("health_check", "health.check", "--health-check") {
            h.check = self.health_check.clone().map(|v| Spanned::new(0..0, v));
        }
        if mark("health_interval", "health.interval", "--health-interval") {
            h.interval = val(self.health_interval.clone());
        }
        if mark("eject_after", "health.eject_after", "--eject-after") {
            h.eject_after = Some(Spanned::new(0..0, self.eject_after));
        }
        if mark("eject_5xx", "health.eject_5xx", "--eject-5xx") {
            h.eject_5xx = Some(Spanned::new(0..0, self.eject_5xx));
        }
        if mark("admin", "admin.address", "--admin") {
            f.admin.address = self.admin.clone().map(|v| Spanned::new(0..0, v));
        }
        if mark("backends", "backend.address", "--backend") {
            // Checked in `resolve`; a bad value is kept whole, so that it
            // still fails as an address.
            f.backends = (self.backends.iter())
                .map(|a| {
                    let flag = config::parse_backend_flag(a).unwrap_or(config::BackendFlag {
                        addr: a.clone(),
                        maxconn: None,
                        weight: None,
                    });
                    FileBackend {
                        address: Spanned::new(0..0, flag.addr),
                        name: None,
                        weight: flag.weight.map(|w| Spanned::new(0..0, w)),
                        backup: None,
                        maxconn: flag.maxconn.map(|m| Spanned::new(0..0, m)),
                        tls: None,
                        ca: None,
                        server_name: None,
                        insecure_skip_verify: None,
                    }
                })
                .collect();
        }
    }

    /// The proxy's flags with every default, as if given `tidegate proxy`
    /// alone (the demo starts from these, so defaults live in one place).
    pub fn defaults() -> Result<Self, ConfigError> {
        let bad = |e: clap::Error| ConfigError::BadValue {
            flag: "proxy",
            value: String::new(),
            why: e.to_string(),
        };
        let matches = Self::augment_args(clap::Command::new("proxy"))
            .try_get_matches_from(["proxy"])
            .map_err(bad)?;
        Self::from_arg_matches(&matches).map_err(bad)
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
