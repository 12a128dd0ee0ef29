//! `tidegate proxy`'s flags and how they become a [`ProxyConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use tidegate::balance::{self, Policy};
use tidegate::config::{self, ConfigError, DEFAULT_BACKLOG, ProxyConfig, ServerConfig, Timeouts};

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address to listen on (ip:port or host:port).
    #[arg(long, default_value = "127.0.0.1:9090", value_name = "ADDR")]
    pub listen: String,
    /// A backend (ip:port or host:port, resolved at start); repeat for more.
    #[arg(long = "backend", value_name = "ADDR")]
    pub backends: Vec<String>,
    /// Routing policy: round-robin, sma, ewma, least-conn, p2c, peak-ewma, predictive or tail-budget.
    #[arg(long, default_value = "tail-budget")]
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
    /// Require `Authorization: Bearer TOKEN` on every admin request; needed
    /// to bind --admin to an address other than loopback.
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
}

impl ProxyArgs {
    /// The `--admin` address, if any, with its `--admin-token`.
    pub fn admin(&self) -> Result<Option<(SocketAddr, Option<String>)>, ConfigError> {
        let addr = match self.admin.as_deref() {
            None | Some("off") => None,
            Some(a) => Some(config::resolve("--admin", a)?),
        };
        match (addr, &self.admin_token) {
            (None, Some(_)) => Err(ConfigError::BadValue {
                flag: "--admin-token",
                value: "(hidden)".into(),
                why: "there is no admin endpoint to protect: add --admin ADDR".into(),
            }),
            (None, None) => Ok(None),
            (Some(addr), token) => {
                tidegate::admin::check_access(addr, token.as_deref())?;
                Ok(Some((addr, token.clone())))
            }
        }
    }

    pub fn config(&self) -> Result<ProxyConfig, ConfigError> {
        let policy = match self.policy.as_str() {
            "sma" | "adaptive_sma" => Policy::Sma {
                window: self.sma_window,
            },
            "ewma" | "adaptive_ewma" => Policy::Ewma {
                alpha: self.ewma_alpha,
            },
            "peak-ewma" => Policy::PeakEwma {
                decay: config::parse_duration("--decay", &self.decay)?,
                default_rtt: config::parse_duration("--default-rtt", &self.default_rtt)?,
            },
            "tail-budget" => Policy::TailBudget {
                slo: self.slo_ms.map(Duration::from_millis),
            },
            other => other.parse::<Policy>().map_err(|e| ConfigError::BadValue {
                flag: "--policy",
                value: other.to_string(),
                why: e.to_string(),
            })?,
        };
        policy.validate().map_err(|e| ConfigError::BadValue {
            flag: "--policy",
            value: self.policy.clone(),
            why: e.to_string(),
        })?;
        Ok(ProxyConfig {
            server: ServerConfig::new(&self.listen, self.workers, self.backlog)?,
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
            log_csv: self.log_csv.clone(),
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
        })
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
mod tests {
    use super::*;

    #[test]
    fn the_demo_defaults_are_the_flag_defaults() -> Result<(), ConfigError> {
        let mut args = ProxyArgs::defaults()?;
        assert_eq!(args.listen, "127.0.0.1:9090");
        assert_eq!(
            (args.client_timeout.as_str(), args.tunnel_timeout.as_str()),
            ("30s", "1h")
        );
        args.backends = vec!["127.0.0.1:8081".into()];
        let cfg = args.config()?;
        assert_eq!(cfg.timeouts, Timeouts::default());
        Ok(())
    }
}
