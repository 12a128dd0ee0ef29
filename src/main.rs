//! The `tidegate` binary: parses the command line, sets up logging, and
//! hands over to the library. Errors end as one line on stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use log::{info, warn};

use signal_hook::consts::{SIGINT, SIGTERM};
use tidegate::admin::{self, AdminListener};
use tidegate::balance::{self, Policy};
use tidegate::config::{
    self, ConfigError, DEFAULT_BACKLOG, EchoConfig, ProxyConfig, ServerConfig, Timeouts,
};
use tidegate::runtime::limits;
use tidegate::server::{Server, StartError};
use tidegate::tools::backend::{self, BackendConfig, Profile, StopSignal};
use tidegate::tools::report::{self, ReportArgs};

#[derive(Debug, Parser)]
#[command(
    name = "tidegate",
    version,
    about = "A TCP echo server and HTTP/1.1 load balancer on epoll"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Echo every byte back: the connection-scaling server.
    Echo(EchoArgs),
    /// HTTP/1.1 reverse proxy balancing over --backend servers.
    Proxy(Box<ProxyArgs>),
    /// A simulated backend with a latency profile (the seed's backend_server).
    Backend(BackendArgs),
    /// Backends A, B, C on 8081-8083 and the proxy on 9090 (tail-budget policy), ready for wrk.
    Demo(DemoArgs),
    /// The seed's analysis of --log-csv files: req/s, latency percentiles, distribution.
    Report(ReportCmd),
}

#[derive(Debug, Args)]
struct ReportCmd {
    /// CSV request logs written by `tidegate proxy --log-csv`; one table row each.
    #[arg(required = true, value_name = "FILE.csv")]
    files: Vec<PathBuf>,
    /// Also draw latency percentiles and backend distribution per run as SVG.
    #[arg(long, value_name = "OUT.svg")]
    svg: Option<PathBuf>,
    /// Divide by this test duration in seconds (as the seed did with wrk's 120 s)
    /// instead of the span of the timestamps.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
}

#[derive(Debug, Args)]
struct BackendArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081", value_name = "ADDR")]
    listen: String,
    /// Latency profile: A, B, C, or milliseconds like 10,15,20 (0: answer at once).
    #[arg(long, default_value = "A")]
    profile: String,
    /// Server name in bodies and X-Backend [default: the profile letter or the port].
    #[arg(long)]
    name: Option<String>,
    /// Serve at most N requests at once, queueing the rest.
    #[arg(long, value_name = "N")]
    capacity: Option<usize>,
    /// With --capacity: service time per request in ms.
    #[arg(long, value_name = "MS")]
    service_ms: Option<u64>,
    /// Fault mode: refuse, hang, garbage, reset, or status:CODE:RATE.
    #[arg(long, value_name = "MODE")]
    fail: Option<String>,
    /// Slow phase: FACTORx@AFTER+FOR, e.g. 10x@10s+10s (10 times slower from
    /// 10 s after start, for 10 s).
    #[arg(long, value_name = "SPEC")]
    slow: Option<String>,
    /// Listen backlog.
    #[arg(long, default_value_t = DEFAULT_BACKLOG, value_name = "N")]
    backlog: u32,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Proxy worker threads [default: number of CPUs].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Routing policy of the demo proxy.
    #[arg(long, default_value = "tail-budget")]
    policy: String,
    /// Write the proxy's CSV request log here.
    #[arg(long, value_name = "FILE")]
    log_csv: Option<PathBuf>,
    /// Serve the dashboard, /metrics and /stats here ("off": none).
    #[arg(long, default_value = "127.0.0.1:9091", value_name = "ADDR")]
    admin: String,
}

#[derive(Debug, Args)]
struct ProxyArgs {
    /// Address to listen on (ip:port or host:port).
    #[arg(long, default_value = "127.0.0.1:9090", value_name = "ADDR")]
    listen: String,
    /// A backend (ip:port or host:port, resolved at start); repeat for more.
    #[arg(long = "backend", value_name = "ADDR")]
    backends: Vec<String>,
    /// Routing policy: round-robin, sma, ewma, least-conn, p2c, peak-ewma, predictive or tail-budget.
    #[arg(long, default_value = "tail-budget")]
    policy: String,
    /// SMA: how many recent latencies to average.
    #[arg(long, default_value_t = balance::DEFAULT_SMA_WINDOW)]
    sma_window: usize,
    /// EWMA: weight of the newest latency, in (0, 1].
    #[arg(long, default_value_t = balance::DEFAULT_EWMA_ALPHA)]
    ewma_alpha: f64,
    /// peak-ewma: decay time (tau) of the latency estimate.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    decay: String,
    /// peak-ewma: latency assumed for a backend after its one probe, until measured.
    #[arg(long, default_value = "30ms", value_name = "DURATION")]
    default_rtt: String,
    /// persistent (pooled keep-alive backend connections) or close (one per request).
    #[arg(long, default_value = "persistent")]
    backend_conn: String,
    /// Worker threads [default: number of CPUs].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Listen backlog (capped by net.core.somaxconn).
    #[arg(long, default_value_t = DEFAULT_BACKLOG, value_name = "N")]
    backlog: u32,
    /// Write one CSV row per request (timestamp,backend_url,latency_ms,status_code,routing_mode,...).
    #[arg(long, value_name = "FILE")]
    log_csv: Option<PathBuf>,
    /// No response (or no progress) from a backend for this long: 504.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    backend_timeout: String,
    /// A backend connect taking longer fails over to another backend.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    connect_timeout: String,
    /// A request head not complete within this long: 408.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    header_timeout: String,
    /// Idle keep-alive client connections are closed after this long.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    idle_timeout: String,
    /// On SIGINT/SIGTERM, in-flight requests get this long to finish.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    drain_timeout: String,
    /// Report the share of requests answered within this many milliseconds.
    #[arg(long, value_name = "MS")]
    slo_ms: Option<u64>,
    /// Count 5xx answers as failures for outlier ejection.
    #[arg(long)]
    eject_5xx: bool,
    /// Actively check each backend with GET PATH (down after 3 failures, up after 2 passes).
    #[arg(long, value_name = "PATH")]
    health_check: Option<String>,
    /// Interval between active health checks.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    health_interval: String,
    /// Eject a backend after this many consecutive failures (0: never).
    #[arg(long, default_value_t = tidegate::health::EJECT_AFTER, value_name = "N")]
    eject_after: u32,
    /// Serve the dashboard (/), /metrics and /stats on this address [default: off].
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Name in the Via field added to requests and responses ("off": none).
    #[arg(long, default_value = "tidegate", value_name = "NAME")]
    via: String,
    /// Field carrying the request id, kept or generated, sent both ways ("off": none).
    #[arg(long, default_value = "X-Request-Id", value_name = "HEADER")]
    request_id: String,
}

impl ProxyArgs {
    /// The `--admin` address, if any.
    fn admin(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.admin.as_deref() {
            None | Some("off") => Ok(None),
            Some(a) => config::resolve("--admin", a).map(Some),
        }
    }

    fn config(&self) -> Result<ProxyConfig, ConfigError> {
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
                connect: config::parse_duration("--connect-timeout", &self.connect_timeout)?,
                backend: config::parse_duration("--backend-timeout", &self.backend_timeout)?,
                header: config::parse_duration("--header-timeout", &self.header_timeout)?,
                idle: config::parse_duration("--idle-timeout", &self.idle_timeout)?,
                drain: config::parse_duration("--drain-timeout", &self.drain_timeout)?,
            },
            log_csv: self.log_csv.clone(),
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
            forward: config::forward_opts(&self.via, &self.request_id)?,
        })
    }
}

#[derive(Debug, Args)]
struct EchoArgs {
    /// Address to listen on (ip:port or host:port).
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR")]
    listen: String,
    /// Worker threads [default: number of CPUs].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Listen backlog (capped by net.core.somaxconn).
    #[arg(long, default_value_t = DEFAULT_BACKLOG, value_name = "N")]
    backlog: u32,
    /// Print one line per closed connection: peer, fd, bytes, requests.
    #[arg(long)]
    log_connections: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        Command::Echo(args) => echo(args),
        Command::Proxy(args) => args
            .config()
            .and_then(|cfg| Ok((cfg, args.admin()?)))
            .map_err(StartError::from)
            .and_then(|(cfg, admin)| proxy(&cfg, admin)),
        Command::Backend(args) => backend_cmd(&args),
        Command::Demo(args) => demo(&args),
        Command::Report(args) => {
            let args = ReportArgs {
                files: args.files,
                svg: args.svg,
                duration: args.duration,
            };
            return match report::run(&args, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tidegate: error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidegate: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn echo(args: EchoArgs) -> Result<(), StartError> {
    let cfg = EchoConfig {
        server: ServerConfig::new(&args.listen, args.workers, args.backlog)?,
        log_connections: args.log_connections,
    };
    let mut server = Server::echo(&cfg)?;
    server.stop_on_signals()?;
    raise_fd_limit(1);
    info!(
        "tidegate echo on {} with {} workers (backlog {})",
        server.local_addr(),
        cfg.server.workers,
        cfg.server.backlog
    );
    let summary = server.run();
    println!("tidegate echo: {summary}");
    Ok(())
}

fn proxy(cfg: &ProxyConfig, admin: Option<SocketAddr>) -> Result<(), StartError> {
    // Bound first, so a taken admin port fails before the proxy starts.
    let admin = admin.map(AdminListener::bind).transpose()?;
    let (mut server, handles) = Server::proxy(cfg)?;
    let (shared, rows) = (handles.shared, handles.csv_rows);
    server.stop_on_signals()?;
    let admin = match admin {
        Some(listener) => Some(listener.serve(admin::Sources {
            shared: shared.clone(),
            live: server.live_stats(),
            csv_rows: rows.clone(),
        })?),
        None => None,
    };
    raise_fd_limit(2);
    let names: Vec<&str> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
    info!(
        "tidegate proxy on {} with {} workers: policy {}, backends {}, backend connections {:?}",
        server.local_addr(),
        cfg.server.workers,
        shared.selector.name(),
        names.join(" "),
        cfg.backend_conn
    );
    let started = Instant::now();
    let summary = server.run();
    // The run time excludes stopping the admin endpoint.
    let elapsed = started.elapsed();
    if let Some(admin) = admin {
        admin.stop();
    }
    println!("tidegate proxy: {summary}");
    print!("{}", tidegate::proxy::summary::render(&shared, elapsed));
    if let Some(rows) = rows {
        println!("tidegate proxy: {} CSV rows written", rows.load(Relaxed));
    }
    Ok(())
}

fn backend_cmd(args: &BackendArgs) -> Result<(), StartError> {
    let bad = |flag: &'static str, value: &str, why: String| {
        StartError::Config(ConfigError::BadValue {
            flag,
            value: value.to_string(),
            why,
        })
    };
    let listen = config::resolve("--listen", &args.listen)?;
    let profile: Profile = args
        .profile
        .parse()
        .map_err(|e: backend::ParseError| bad("--profile", &args.profile, e.to_string()))?;
    let mut cfg = BackendConfig::new(listen, profile);
    if let Some(name) = &args.name {
        cfg.name = name.clone();
    }
    cfg.capacity = args.capacity;
    cfg.service_ms = args.service_ms;
    cfg.backlog = args.backlog;
    if let Some(fail) = &args.fail {
        cfg.fail = Some(
            fail.parse()
                .map_err(|e: backend::ParseError| bad("--fail", fail, e.to_string()))?,
        );
    }
    if let Some(slow) = &args.slow {
        cfg.slow = Some(
            slow.parse()
                .map_err(|e: backend::ParseError| bad("--slow", slow, e.to_string()))?,
        );
    }
    cfg.validate()
        .map_err(|e| bad("backend", &args.listen, e.to_string()))?;
    let stop = StopSignal::new();
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, stop.flag()).map_err(|e| StartError::Io {
            what: "installing signal handlers".into(),
            source: e,
        })?;
    }
    raise_fd_limit(1);
    let stats = backend::run(&cfg, &stop).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => StartError::AddrInUse(listen),
        _ => StartError::Io {
            what: format!("backend on {listen}"),
            source: e,
        },
    })?;
    println!("tidegate backend: {stats}");
    Ok(())
}

/// The seed's setup in one process: three simulated backends and the proxy.
fn demo(args: &DemoArgs) -> Result<(), StartError> {
    let mut handles = Vec::new();
    for (port, letter) in [(8081u16, "A"), (8082, "B"), (8083, "C")] {
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let profile: Profile = letter.parse().map_err(|e: backend::ParseError| {
            StartError::Config(ConfigError::BadValue {
                flag: "--profile",
                value: letter.into(),
                why: e.to_string(),
            })
        })?;
        let handle =
            backend::spawn(BackendConfig::new(listen, profile)).map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrInUse => StartError::AddrInUse(listen),
                _ => StartError::Io {
                    what: format!("starting backend {letter} on {listen}"),
                    source: e,
                },
            })?;
        handles.push(handle);
    }
    let proxy_args = ProxyArgs {
        listen: "127.0.0.1:9090".into(),
        backends: handles.iter().map(|h| h.local_addr().to_string()).collect(),
        policy: args.policy.clone(),
        sma_window: balance::DEFAULT_SMA_WINDOW,
        ewma_alpha: balance::DEFAULT_EWMA_ALPHA,
        decay: "10s".into(),
        default_rtt: "30ms".into(),
        backend_conn: "persistent".into(),
        workers: args.workers,
        backlog: DEFAULT_BACKLOG,
        log_csv: args.log_csv.clone(),
        backend_timeout: "30s".into(),
        connect_timeout: "2s".into(),
        header_timeout: "10s".into(),
        idle_timeout: "60s".into(),
        drain_timeout: "10s".into(),
        slo_ms: None,
        eject_5xx: false,
        eject_after: tidegate::health::EJECT_AFTER,
        health_check: None,
        health_interval: "2s".into(),
        admin: Some(args.admin.clone()),
        via: "tidegate".into(),
        request_id: "X-Request-Id".into(),
    };
    let cfg = proxy_args.config()?;
    let admin = proxy_args.admin()?;
    println!(
        "tidegate demo: backends A (10,15,20,400,400,400,10,15,20 ms) on 8081, B (200 ms) on 8082, C (250 ms) on 8083"
    );
    println!(
        "tidegate demo: proxy on http://127.0.0.1:9090/ with policy {}; try:",
        cfg.policy.name()
    );
    println!("    wrk -t4 -c100 -d30s http://127.0.0.1:9090/");
    if let Some(addr) = admin {
        println!("tidegate demo: dashboard on http://{addr}/ (metrics: /metrics)");
    }
    println!("tidegate demo: Ctrl-C stops everything.");
    let result = proxy(&cfg, admin);
    for h in handles {
        let name = h.name().to_string();
        match h.stop() {
            Ok(stats) => println!("tidegate demo: backend {name}: {stats}"),
            Err(e) => warn!("backend {name}: {e}"),
        }
    }
    result
}

/// Raises RLIMIT_NOFILE and says how many connections it allows, each
/// costing `fds_per_conn` descriptors.
fn raise_fd_limit(fds_per_conn: u64) {
    match limits::raise_nofile() {
        Ok(l) => info!(
            "RLIMIT_NOFILE soft {} -> {} (hard {}): room for about {} connections (see ulimit.md)",
            l.before,
            l.soft,
            l.hard,
            l.connections(fds_per_conn)
        ),
        Err(e) => warn!("cannot read or raise RLIMIT_NOFILE: {e}"),
    }
}
