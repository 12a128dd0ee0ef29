//! Zero-downtime binary upgrade with real processes and signals:
//! `--upgrade-socket PATH [--takeover]`, and `--reuseport`.

mod util;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use util::client::Client;
use util::{IO_TIMEOUT, Proc, TestResult, run_bin, wait_until};

fn sock_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tidegate-up-{}-{name}.sock", std::process::id()))
}

/// A port that was free a moment ago, so that every process of a test can
/// be started with the same command line.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn proxy_args<'a>(listen: &'a str, backend: &'a str, path: &'a str) -> Vec<&'a str> {
    vec![
        "proxy",
        "--listen",
        listen,
        "--backend",
        backend,
        "--workers",
        "1",
        "--drain-timeout",
        "5s",
        "--upgrade-socket",
        path,
    ]
}

/// Waits for a log line containing `needle`.
fn wait_log(p: &mut Proc, needle: &str) -> bool {
    wait_until(IO_TIMEOUT, || {
        p.drain_stderr().iter().any(|l| l.contains(needle))
    })
}

/// Clients sending `GET /` until stopped: half on a new connection per
/// request, half on keep-alive connections (reconnecting after an answer
/// with `Connection: close`, as a client must). Anything else is a failure:
/// a refused or reset connection, no answer, or a status other than 200.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|i| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let errors = errors.clone();
                let keep_alive = i % 2 == 1;
                thread::spawn(move || {
                    let fail = |what: String| {
                        failed.fetch_add(1, Relaxed);
                        if let Ok(mut e) = errors.lock() {
                            e.push(what);
                        }
                    };
                    let mut conn: Option<Client> = None;
                    // Bounded by the test: stopped within a minute at most.
                    let end = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Relaxed) && Instant::now() < end {
                        let mut c = match conn.take() {
                            Some(c) => c,
                            None => match Client::connect(addr) {
                                Ok(c) => c,
                                Err(e) => {
                                    fail(format!("connect: {e}"));
                                    thread::sleep(Duration::from_millis(10));
                                    continue;
                                }
                            },
                        };
                        match c.get("/") {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Relaxed);
                                if keep_alive && !r.connection_has("close") {
                                    conn = Some(c);
                                }
                            }
                            Ok(r) => fail(format!("status {}", r.status)),
                            Err(e) => fail(format!("request: {e}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            errors,
            threads,
        }
    }

    /// Waits until `n` more requests succeeded.
    fn progress(&self, n: u64) -> bool {
        let from = self.ok.load(Relaxed);
        wait_until(IO_TIMEOUT, || self.ok.load(Relaxed) >= from + n)
    }

    fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        (self.ok.load(Relaxed), self.failed.load(Relaxed), errors)
    }
}

/// Takes over from `old` with the same command line; asserts that `old`
/// exits 0 with its summary and that the new process is ready for the
/// next upgrade.
fn take_over(old: Proc, args: &[&str], load: &Load) -> Result<Proc, Box<dyn std::error::Error>> {
    let mut cmd = args.to_vec();
    cmd.push("--takeover");
    let mut new = Proc::spawn("", &cmd)?;
    let addr = new.addr()?;
    assert!(
        wait_log(&mut new, "upgrade socket listening on"),
        "{:?}",
        new.stderr
    );
    assert!(
        new.stderr
            .iter()
            .any(|l| l.contains("took the listeners over from pid")),
        "{:?}",
        new.stderr
    );
    let (code, out, err) = old.wait()?;
    assert_eq!(code, Some(0), "old process: {err:?}");
    assert!(out.contains("tidegate proxy:"), "old summary: {out}");
    assert!(
        err.iter()
            .any(|l| l.contains("stops accepting, drains and exits")),
        "{err:?}"
    );
    assert_eq!(new.addr, Some(addr));
    // The new process serves: requests keep succeeding with the old gone.
    assert!(load.progress(50), "no progress after the takeover");
    Ok(new)
}

#[test]
fn takeover_under_load_refuses_nothing_and_can_repeat() -> TestResult {
    let backend = util::proxy::backend("0", "a")?;
    let backend_addr = backend.local_addr().to_string();
    let listen = format!("127.0.0.1:{}", free_port()?);
    let path = sock_path("chain");
    let path_s = path.to_string_lossy().into_owned();
    let args = proxy_args(&listen, &backend_addr, &path_s);

    let a = Proc::spawn("", &args)?;
    let addr = a.addr()?;
    let load = Load::start(addr, 6);
    assert!(load.progress(100), "no traffic through A");
    // B takes over from A, then C from B, with the same command.
    let b = take_over(a, &args, &load)?;
    let c = take_over(b, &args, &load)?;
    let (ok, failed, errors) = load.stop();
    assert_eq!(failed, 0, "{ok} ok, failures: {errors:?}");
    assert!(ok > 200, "{ok}");
    c.signal("TERM")?;
    let (code, out, err) = c.wait()?;
    assert_eq!(code, Some(0), "{err:?}");
    assert!(out.contains("tidegate proxy:"), "{out}");
    // A normal stop removes the process's own socket file.
    assert!(!path.exists(), "{} left behind", path.display());
    Ok(())
}

#[test]
fn takeover_without_a_process_is_a_clear_start_up_error() -> TestResult {
    let path = sock_path("nobody");
    let _ = std::fs::remove_file(&path);
    let path_s = path.to_string_lossy().into_owned();
    let mut args = proxy_args("127.0.0.1:0", "127.0.0.1:1", &path_s);
    args.push("--takeover");
    let started = Instant::now();
    let (code, stderr) = run_bin(&args)?;
    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "tidegate: error: --takeover: no tidegate process is listening on upgrade socket {path_s}"
        )),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // --takeover alone is a usage error.
    let (code, stderr) = run_bin(&["proxy", "--backend", "127.0.0.1:1", "--takeover"])?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--upgrade-socket"), "{stderr}");
    Ok(())
}

#[test]
fn a_second_process_without_takeover_leaves_the_first_alone() -> TestResult {
    let path = sock_path("inuse");
    let path_s = path.to_string_lossy().into_owned();
    let a = Proc::spawn("", &proxy_args("127.0.0.1:0", "127.0.0.1:1", &path_s))?;
    a.addr()?;
    let (code, stderr) = run_bin(&proxy_args("127.0.0.1:0", "127.0.0.1:1", &path_s))?;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("belongs to a running process: add --takeover"),
        "{stderr}"
    );
    // A is untouched: still listening on its upgrade socket.
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
    a.signal("TERM")?;
    let (code, _, err) = a.wait()?;
    assert_eq!(code, Some(0), "{err:?}");
    Ok(())
}

fn reuseport_proxy(listen: &str, backend: &str, extra: &[&str]) -> std::io::Result<Proc> {
    let mut args = vec![
        "proxy",
        "--listen",
        listen,
        "--backend",
        backend,
        "--workers",
        "1",
    ];
    args.extend_from_slice(extra);
    Proc::spawn("", &args)
}

#[test]
fn reuseport_lets_two_processes_share_a_port() -> TestResult {
    let backend = util::proxy::backend("0", "a")?;
    let backend_addr = backend.local_addr().to_string();
    let listen = format!("127.0.0.1:{}", free_port()?);
    let one = reuseport_proxy(&listen, &backend_addr, &["--reuseport"])?;
    let two = reuseport_proxy(&listen, &backend_addr, &["--reuseport"])?;
    assert_eq!(one.addr()?, two.addr()?);
    // Without it, the port is taken.
    let (code, stderr) = run_bin(&["proxy", "--listen", &listen, "--backend", &backend_addr])?;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    // The kernel spreads new connections over both.
    let addr: SocketAddr = listen.parse()?;
    for _ in 0..40 {
        let r = Client::connect(addr)?.get("/")?;
        assert_eq!(r.status, 200);
    }
    let mut counts = Vec::new();
    for p in [one, two] {
        p.signal("TERM")?;
        let (code, out, err) = p.wait()?;
        assert_eq!(code, Some(0), "{err:?}");
        counts.push(requests_in(&out));
    }
    assert_eq!(counts.iter().sum::<u64>(), 40, "{counts:?}");
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    Ok(())
}

/// The request count in a proxy's printed summary.
fn requests_in(summary: &str) -> u64 {
    summary
        .lines()
        .flat_map(|l| l.split([',', ' ']))
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[1] == "requests")
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0)
}
