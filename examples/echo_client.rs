//! Echo load client: a thin CLI over `tidegate::tools::loadgen`.
//!
//! Opens `--connections` connections to an echo server, all concurrently,
//! then has each send `--requests` messages of `--size` bytes one at a time,
//! verifying every echo; prints the seed report's summary table, throughput,
//! latency percentiles, failures by reason, and a final `RESULT key=value`
//! line for scripts.
//!
//! ```text
//! cargo run --release --example echo_client -- --target 127.0.0.1:8000 \
//!     --connections 2000 --requests 100 --size 64 [--sources 127.0.0.1,127.0.0.2]
//! ```
//!
//! Exit status: 0 if every connection succeeded, 1 if any failed (or the run
//! could not be set up), 2 for bad arguments, including more connections
//! than the open-file limit allows.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tidegate::tools::loadgen::{self, FailureKind, LoadConfig, LoadError, MAX_WAIT};

/// File descriptors needed besides one per connection: stdio, the CSV file,
/// one epoll instance per thread (added separately), and slack for whatever
/// the runtime opens.
const FD_OVERHEAD: u64 = 32;

/// Exit status for bad arguments, as clap uses.
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(about = "Event-driven echo load client (tidegate::tools::loadgen)")]
struct Args {
    /// Echo server address.
    #[arg(long)]
    target: SocketAddr,
    /// Connections to open, all at once.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Messages per connection (0: connect, hold, close).
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Client event-loop threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Comma-separated local addresses to bind, round-robin per connection.
    #[arg(long, value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// Seconds one connect may take.
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    connect_timeout: Duration,
    /// Seconds one message's complete echo may take.
    #[arg(long, default_value = "30", value_parser = parse_secs)]
    timeout: Duration,
    /// Seconds to keep all connections open and idle before the requests.
    #[arg(long, default_value = "0", value_parser = parse_secs)]
    hold: Duration,
    /// Connects in progress at once, per thread.
    #[arg(long, default_value_t = LoadConfig::default().max_connecting)]
    max_connecting: usize,
    /// Write one CSV row per connection to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    let d = Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))?;
    if d > MAX_WAIT {
        return Err(format!(
            "{s} s exceeds the maximum of {} s",
            MAX_WAIT.as_secs()
        ));
    }
    Ok(d)
}

/// Raises the soft open-file limit to the hard one, and checks that `needed`
/// descriptors fit, so a big run is refused up front rather than failing
/// halfway with EMFILE. Returns the limit in force.
fn ensure_fd_limit(needed: u64) -> Result<u64, String> {
    let nofile = rlimit::Resource::NOFILE;
    let (soft, hard) = nofile
        .get()
        .map_err(|e| format!("cannot read RLIMIT_NOFILE: {e}"))?;
    let mut limit = soft;
    if soft < hard {
        match nofile.set(hard, hard) {
            Ok(()) => limit = hard,
            Err(e) => eprintln!("warning: cannot raise RLIMIT_NOFILE from {soft} to {hard}: {e}"),
        }
    }
    if needed > limit {
        return Err(format!(
            "{needed} file descriptors needed but RLIMIT_NOFILE is {limit} (hard {hard}); \
             use fewer connections or raise the hard limit (ulimit -Hn)"
        ));
    }
    Ok(limit)
}

fn main() -> ExitCode {
    env_logger::init();
    let args = Args::parse();
    let cfg = LoadConfig {
        target: args.target,
        connections: args.connections,
        requests: args.requests,
        size: args.size,
        threads: args.threads,
        sources: args.sources,
        connect_timeout: args.connect_timeout,
        timeout: args.timeout,
        hold: args.hold,
        max_connecting: args.max_connecting,
    };
    if let Err(e) = cfg.validate() {
        eprintln!("echo_client: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let needed = cfg.connections as u64 + cfg.threads as u64 + FD_OVERHEAD;
    let nofile = match ensure_fd_limit(needed) {
        Ok(limit) => limit,
        Err(msg) => {
            eprintln!("echo_client: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    print_config(&cfg, nofile);

    let report = match loadgen::run(&cfg) {
        Ok(report) => report,
        Err(e @ LoadError::Config(_)) => {
            eprintln!("echo_client: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            eprintln!("echo_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{report}");
    let mut status = ExitCode::SUCCESS;
    if !report.is_success() {
        let counts: Vec<String> = FailureKind::ALL
            .iter()
            .map(|k| format!("{k}={}", report.failures.get(*k)))
            .collect();
        println!(
            "FAILED: {} of {} connections: {}",
            report.failed(),
            report.connections,
            counts.join(" ")
        );
        status = ExitCode::FAILURE;
    }
    if let Some(path) = &args.csv {
        let written = File::create(path).and_then(|f| report.write_csv(BufWriter::new(f)));
        match written {
            Ok(()) => println!("per-connection CSV written to {}", path.display()),
            Err(e) => {
                eprintln!("echo_client: cannot write {}: {e}", path.display());
                status = ExitCode::FAILURE;
            }
        }
    }
    println!("{}", report.result_line());
    let _ = std::io::stdout().flush();
    status
}

fn print_config(cfg: &LoadConfig, nofile: u64) {
    let sources = if cfg.sources.is_empty() {
        "kernel".to_string()
    } else {
        let list: Vec<String> = cfg.sources.iter().map(IpAddr::to_string).collect();
        list.join(",")
    };
    println!(
        "echo_client: target={} connections={} requests={} size={} threads={} sources={} \
         connect_timeout={}s timeout={}s hold={}s max_connecting={} nofile={}",
        cfg.target,
        cfg.connections,
        cfg.requests,
        cfg.size,
        cfg.threads,
        sources,
        cfg.connect_timeout.as_secs_f64(),
        cfg.timeout.as_secs_f64(),
        cfg.hold.as_secs_f64(),
        cfg.max_connecting,
        nofile,
    );
}
