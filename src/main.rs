//! The `tidegate` binary: parses the command line, sets up logging, and
//! hands over to the library. Errors end as one line on stderr.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use log::{info, warn};

use tidegate::config::{DEFAULT_BACKLOG, EchoConfig, ServerConfig};
use tidegate::limits;
use tidegate::server::{Server, StartError};

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
