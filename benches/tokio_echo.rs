//! Benchmark-only tokio echo server: the canonical "task per connection"
//! baseline that `benches/compare_tokio.sh` and `benches/idle_memory.sh`
//! measure tidegate against. Never part of the product.
//!
//! Usage (after `cargo bench --no-run --bench tokio_echo`, run the built
//! executable directly):
//!
//! ```text
//! tokio_echo [--listen ADDR] [--flavor current_thread|multi_thread] [--threads N]
//! ```
//!
//! `cargo bench` appends `--bench` to harness=false targets; it is ignored.

use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    CurrentThread,
    MultiThread,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::CurrentThread => "current_thread",
            Flavor::MultiThread => "multi_thread",
        }
    }
}

#[derive(Debug)]
struct Opts {
    listen: String,
    flavor: Flavor,
    threads: usize,
}

const USAGE: &str =
    "usage: tokio_echo [--listen ADDR] [--flavor current_thread|multi_thread] [--threads N]";

fn parse_args<I: Iterator<Item = String>>(mut args: I) -> Result<Opts, String> {
    let mut opts = Opts {
        listen: "127.0.0.1:8001".to_string(),
        flavor: Flavor::MultiThread,
        threads: 2,
    };
    while let Some(arg) = args.next() {
        // Accept both `--opt value` and `--opt=value`.
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match key.as_str() {
            "--listen" => opts.listen = value("--listen")?,
            "--flavor" => {
                opts.flavor = match value("--flavor")?.as_str() {
                    "current_thread" => Flavor::CurrentThread,
                    "multi_thread" => Flavor::MultiThread,
                    other => return Err(format!("unknown flavor {other:?}")),
                }
            }
            "--threads" => {
                let v = value("--threads")?;
                opts.threads = match v.parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("--threads wants a positive number, got {v:?}")),
                };
            }
            // Added by `cargo bench` to harness=false targets.
            "--bench" => {}
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(opts)
}

async fn echo(mut sock: TcpStream) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = [0u8; 8192];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        sock.write_all(&buf[..n]).await?;
    }
    Ok(())
}

async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((sock, _peer)) => {
                tokio::spawn(async move {
                    // Per-connection errors (reset, broken pipe) end the task.
                    let _ = echo(sock).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: report, back off a little, keep going.
                // (tokio's `time` feature is not enabled for this crate, so
                // the pause is a blocking-pool sleep, which does not stall
                // the runtime's worker threads.)
                eprintln!("tokio_echo: accept: {e}");
                let _ = tokio::task::spawn_blocking(|| {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                })
                .await;
            }
        }
    }
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tokio_echo: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = match opts.flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(opts.threads);
            b
        }
    };
    let rt = match builder.enable_io().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio_echo: cannot build runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let listener = match TcpListener::bind(&opts.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tokio_echo: cannot listen on {}: {e}", opts.listen);
                return ExitCode::FAILURE;
            }
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| opts.listen.clone());
        let threads = match opts.flavor {
            Flavor::CurrentThread => 1,
            Flavor::MultiThread => opts.threads,
        };
        let plural = if threads == 1 { "" } else { "s" };
        println!(
            "tokio_echo listening on {addr} ({}, {threads} thread{plural})",
            opts.flavor.name()
        );
        serve(listener).await;
        ExitCode::SUCCESS
    })
}
