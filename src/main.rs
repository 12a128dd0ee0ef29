//! The `tidegate` binary: parses the command line, sets up logging, and
//! hands over to the library. Errors end as one line on stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

mod cli;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use log::{info, warn};

use cli::proxy::{ProxyArgs, UpgradeOpts};
use signal_hook::consts::{SIGINT, SIGTERM};
use tidegate::admin::{self, AdminListener};
use tidegate::config::{self, ConfigError, DEFAULT_BACKLOG, EchoConfig, ProxyConfig, ServerConfig};
use tidegate::runtime::{limits, upgrade};
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
    /// Validate a proxy configuration file without starting anything.
    CheckConfig(CheckConfigArgs),
}

#[derive(Debug, Args)]
struct CheckConfigArgs {
    /// The TOML file, as `tidegate proxy --config FILE` would read it.
    #[arg(value_name = "FILE")]
    file: PathBuf,
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
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        Command::Echo(args) => echo(args),
        Command::Proxy(args) => {
            let upgrade = args.upgrade();
            let sub = matches.subcommand_matches("proxy");
            let mut cfg = match sub.map(|m| args.resolve(m)) {
                Some(Ok(cfg)) => cfg,
                Some(Err(lines)) => return fail(&lines),
                None => return fail(&["no proxy arguments".to_string()]),
            };
            cfg.server.reuseport |= args.reuseport;
            // SIGHUP and POST /api/reload re-read --config, with the same
            // command-line flags laid over it.
            let reread: Option<Reread> = match (&args.config, sub) {
                (Some(_), Some(m)) => {
                    let (m, reuseport) = (m.clone(), args.reuseport);
                    Some(Box::new(move || {
                        let mut cfg = args.resolve(&m).map_err(|lines| lines.join("; "))?;
                        cfg.server.reuseport |= reuseport;
                        Ok(cfg)
                    }))
                }
                _ => None,
            };
            proxy(&cfg, upgrade, reread)
        }
        Command::CheckConfig(args) => return check_config(&args.file),
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

/// Each line on stderr as `tidegate: error: LINE`; exit status 1.
fn fail(lines: &[String]) -> ExitCode {
    for line in lines {
        eprintln!("tidegate: error: {line}");
    }
    ExitCode::FAILURE
}

/// `tidegate check-config FILE`: a one-line summary and 0, or one line
/// per problem on stderr and 1. Binds nothing, starts nothing.
fn check_config(path: &std::path::Path) -> ExitCode {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return fail(&[format!("{shown}: cannot read: {e}")]),
    };
    match config::file::load(&text) {
        Ok(cfg) => {
            println!("{shown}: OK: {}", config::file::summary(&cfg));
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems {
                eprintln!("{shown}: {p}");
            }
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
    server.handle_signals()?;
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

/// Reads the configuration again, for a reload.
type Reread = Box<dyn Fn() -> Result<ProxyConfig, String> + Send + Sync>;

fn proxy(
    cfg: &ProxyConfig,
    upgrade: Option<UpgradeOpts>,
    reread: Option<Reread>,
) -> Result<(), StartError> {
    // A takeover first: the listeners are the old process's, not bound here.
    let mut inherited = match &upgrade {
        Some(u) if u.takeover => Some(upgrade::take_over(&u.path)?),
        _ => None,
    };
    // Bound (or inherited) first, so a taken admin port fails before the
    // proxy starts.
    let admin = match (cfg.admin, inherited.as_mut().and_then(|i| i.admin.take())) {
        (Some(_), Some(fd)) => Some(AdminListener::from_std(fd, cfg.admin_token.clone())?),
        (Some(addr), None) => Some(AdminListener::bind(addr, cfg.admin_token.clone())?),
        (None, _) => None,
    };
    let admin_fd = match (&admin, &upgrade) {
        (Some(a), Some(_)) => Some((
            a.try_clone_fd().map_err(|source| StartError::Io {
                what: "duplicating the admin listener for upgrades".into(),
                source,
            })?,
            a.local_addr(),
        )),
        _ => None,
    };
    let (listener, extra, handshake) = match inherited {
        Some(i) => (Some(i.listener), i.extra, Some(i.handshake)),
        None => (None, Vec::new(), None),
    };
    let (mut server, handles) = Server::proxy_inheriting(cfg, listener, extra)?;
    if let Some(reread) = reread {
        let live = std::sync::Arc::clone(&handles.live);
        server.reloader().set(std::sync::Arc::new(move || {
            // A file that does not load (a bad certificate among others)
            // is a failed reload too: counted, the running one kept.
            let cfg = reread().inspect_err(|_| {
                live.reload_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })?;
            live.reload(cfg).map(|plan| plan.describe())
        }));
    }
    let (shared, csv, live) = (handles.shared, handles.csv, handles.live);
    server.handle_signals()?;
    if let Some(u) = &upgrade {
        let start = match handshake {
            Some(h) => {
                info!("took the listeners over from pid {}", h.pid.unwrap_or(0));
                upgrade::Start::TakenOver(h, u.path.clone())
            }
            None => upgrade::Start::Bound(upgrade::bind(&u.path)?),
        };
        server.serve_upgrades(start, admin_fd)?;
    }
    let admin = match admin {
        // POST /api/reload takes the SIGHUP path.
        Some(listener) => Some(listener.serve(
            admin::Sources {
                shared: shared.clone(),
                config: Some(std::sync::Arc::clone(&live)),
                live: server.live_stats(),
                csv: csv.clone(),
            },
            server.reloader(),
        )?),
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
    // The configuration in force at the end (after any reloads); request
    // counters are the process's whatever the generation.
    print!(
        "{}",
        tidegate::proxy::summary::render(&live.current(), elapsed)
    );
    if let Some(csv) = csv {
        print!("{}", tidegate::proxy::summary::render_csv(&csv));
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
    let mut proxy_args = ProxyArgs::defaults()?;
    proxy_args.backends = handles.iter().map(|h| h.local_addr().to_string()).collect();
    proxy_args.policy = args.policy.clone();
    proxy_args.workers = args.workers;
    proxy_args.log_csv = args.log_csv.clone();
    proxy_args.admin = Some(args.admin.clone());
    let cfg = proxy_args.config()?;
    let admin = cfg.admin;
    println!(
        "tidegate demo: backends A (10,15,20,400,400,400,10,15,20 ms) on 8081, B (200 ms) on 8082, C (250 ms) on 8083"
    );
    println!(
        "tidegate demo: proxy on http://127.0.0.1:9090/ with policy {}; try:",
        cfg.policy.name()
    );
    println!("    wrk -t4 -c100 -d30s http://127.0.0.1:9090/");
    if let Some(addr) = &admin {
        println!("tidegate demo: dashboard on http://{addr}/ (metrics: /metrics)");
    }
    println!("tidegate demo: Ctrl-C stops everything.");
    let result = proxy(&cfg, None, None);
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
