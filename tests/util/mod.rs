//! Shared test helpers: in-process servers on port 0, the real binary as a
//! child process, and small blocking-socket utilities with timeouts so that
//! a broken server fails a test instead of hanging it.
#![allow(dead_code)]

pub mod admin;
pub mod client;
pub mod json;
pub mod proxy;
pub mod scripted;
pub mod tls;
pub mod websocket;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tidegate::config::{EchoConfig, ServerConfig};
use tidegate::server::{RunningServer, Server};

/// Upper bound for any single blocking socket operation in tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Starts an in-process echo server on 127.0.0.1:0.
pub fn echo_server(workers: usize) -> RunningServer {
    let cfg = EchoConfig {
        server: ServerConfig::new("127.0.0.1:0", Some(workers), 4096).expect("valid test config"),
        log_connections: false,
    };
    Server::echo(&cfg)
        .expect("server starts")
        .spawn()
        .expect("server thread starts")
}

/// A blocking client socket with timeouts.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Deterministic, position-dependent bytes, so reordering or loss shows.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((i.wrapping_mul(31) ^ seed.wrapping_mul(131)) % 251) as u8)
        .collect()
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// The `tidegate` binary running as a child, with its stderr collected.
pub struct Proc {
    pub child: Child,
    pub addr: Option<SocketAddr>,
    stderr_lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

impl Proc {
    /// Runs `sh -c "<prefix> exec tidegate <args>"` so tests can set limits
    /// with `ulimit` first. Waits for the "accepting on ADDR" log line.
    pub fn spawn(prefix: &str, args: &[&str]) -> io::Result<Proc> {
        let bin = env!("CARGO_BIN_EXE_tidegate");
        let script = format!("{prefix} exec {bin} {}", args.join(" "));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr"))?;
        let stderr_lines = forward_lines(stderr);
        let mut p = Proc {
            child,
            addr: None,
            stderr_lines,
            stderr: Vec::new(),
        };
        let end = Instant::now() + IO_TIMEOUT;
        while p.addr.is_none() && Instant::now() < end {
            let Ok(line) = p.stderr_lines.recv_timeout(Duration::from_millis(100)) else {
                if p.child.try_wait()?.is_some() {
                    break;
                }
                continue;
            };
            if let Some(rest) = line.split("accepting on ").nth(1) {
                p.addr = rest.trim().parse().ok();
            }
            p.stderr.push(line);
        }
        Ok(p)
    }

    pub fn addr(&self) -> io::Result<SocketAddr> {
        self.addr
            .ok_or_else(|| io::Error::other(format!("server did not start: {:?}", self.stderr)))
    }

    /// Collects stderr lines logged so far.
    pub fn drain_stderr(&mut self) -> &[String] {
        while let Ok(line) = self.stderr_lines.try_recv() {
            self.stderr.push(line);
        }
        &self.stderr
    }

    /// Sends a signal by PID (only to the process this test started).
    pub fn signal(&self, sig: &str) -> io::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other("kill failed"))
        }
    }

    /// Waits (bounded) for exit; returns the exit code and stdout.
    pub fn wait(mut self) -> io::Result<(Option<i32>, String, Vec<String>)> {
        let end = Instant::now() + IO_TIMEOUT;
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                return Err(io::Error::other("server did not exit in time"));
            }
            thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        if let Some(mut so) = self.child.stdout.take() {
            so.read_to_string(&mut out)?;
        }
        // The forwarding thread ends at EOF; give it a moment to deliver.
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_millis(200)) {
            self.stderr.push(line);
        }
        Ok((status.code(), out, std::mem::take(&mut self.stderr)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn forward_lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs the `tidegate` binary to completion; returns (exit code, stderr).
pub fn run_bin(args: &[&str]) -> io::Result<(Option<i32>, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Sends `msg` and reads back exactly as many bytes.
pub fn round_trip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

/// CPU time (user + system) a process has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of those.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("bad stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| io::Error::other("bad stat"))
    };
    Ok(num(11)? + num(12)?)
}
