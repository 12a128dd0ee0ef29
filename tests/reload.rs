//! Reload on SIGHUP (issue 9 §2), with the real binary and real signals:
//! under steady traffic, reloads that add and remove backends drop nothing,
//! an added backend takes traffic within a second, a removed one takes no
//! new request, an invalid file keeps the old configuration, and what needs
//! a restart is reported and left as it was.

mod util;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use util::Proc;
use util::admin::Traffic;
use util::scripted::{Reply, Scripted};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A backend on loopback counting what it answers.
fn counting(name: &'static str) -> std::io::Result<(Scripted, Arc<AtomicU64>)> {
    Scripted::counting(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), name)
}

fn config(path: &PathBuf, backends: &[SocketAddr], extra: &str) -> std::io::Result<()> {
    let mut text =
        format!("listen = \"127.0.0.1:0\"\nworkers = 2\npolicy = \"round-robin\"\n{extra}\n");
    for (i, b) in backends.iter().enumerate() {
        text.push_str(&format!(
            "\n[[backend]]\naddress = \"{b}\"\nname = \"b{i}\"\n"
        ));
    }
    std::fs::write(path, text)
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "tidegate-reload-{}-{name}.toml",
        std::process::id()
    ))
}

/// Waits (bounded) until `counter` moves past `from`.
fn moves(counter: &AtomicU64, from: u64, within: Duration) -> bool {
    util::wait_until(within, || counter.load(Relaxed) > from)
}

#[test]
fn reloads_add_and_remove_backends_without_dropping_a_request() -> TestResult {
    let (a, na) = counting("a")?;
    let (b, nb) = counting("b")?;
    let (c, nc) = counting("c")?;
    let path = temp("addremove");
    config(&path, &[a.addr, b.addr], "")?;
    let file = path.to_string_lossy().into_owned();
    let mut p = Proc::spawn("", &["proxy", "--config", &file])?;
    let addr = p.addr()?;
    let traffic = Traffic::start(addr, 4, Duration::from_secs(20));
    assert!(
        moves(&nb, 0, Duration::from_secs(3)),
        "b serves before any reload"
    );

    // Add c: it takes traffic within a second.
    config(&path, &[a.addr, b.addr, c.addr], "")?;
    p.signal("HUP")?;
    assert!(
        moves(&nc, 0, Duration::from_secs(1)),
        "an added backend takes traffic within 1 s"
    );

    // Remove a: once the reload is logged, a gets no new request.
    config(&path, &[b.addr, c.addr], "")?;
    p.signal("HUP")?;
    let logged = util::wait_until(Duration::from_secs(2), || {
        p.drain_stderr()
            .iter()
            .filter(|l| l.contains("reloaded"))
            .count()
            >= 2
    });
    assert!(logged, "{:?}", p.drain_stderr());
    std::thread::sleep(Duration::from_millis(100));
    let frozen = na.load(Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        na.load(Relaxed),
        frozen,
        "a removed backend takes no new request"
    );
    let (b_then, c_then) = (nb.load(Relaxed), nc.load(Relaxed));
    std::thread::sleep(Duration::from_millis(300));
    assert!(nb.load(Relaxed) > b_then && nc.load(Relaxed) > c_then);

    // An invalid file keeps the old configuration.
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n[[backend]]\nadress = \"x\"\n",
    )?;
    p.signal("HUP")?;
    let failed = util::wait_until(Duration::from_secs(2), || {
        p.drain_stderr().iter().any(|l| l.contains("reload failed"))
    });
    assert!(failed, "{:?}", p.drain_stderr());
    let (b_then, c_then) = (nb.load(Relaxed), nc.load(Relaxed));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        nb.load(Relaxed) > b_then && nc.load(Relaxed) > c_then,
        "still serving"
    );

    // The worker count needs a restart: reported, left as it was.
    config(&path, &[b.addr, c.addr], "")?;
    let text = std::fs::read_to_string(&path)?.replace("workers = 2", "workers = 1");
    std::fs::write(&path, text)?;
    p.signal("HUP")?;
    let noted = util::wait_until(Duration::from_secs(2), || {
        p.drain_stderr().iter().any(|l| l.contains("needs restart"))
    });
    assert!(noted, "{:?}", p.drain_stderr());

    let sent = traffic.stop();
    assert!(sent > 0);
    let failures = traffic_failures(addr);
    p.signal("INT")?;
    let (code, summary, err) = p.wait()?;
    assert_eq!(code, Some(0), "{err:?}");
    assert!(
        summary.contains(" 0 4xx, 0 5xx"),
        "no request failed: {summary}"
    );
    assert_eq!(failures, 0);
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// A final request on a fresh connection must still succeed.
fn traffic_failures(addr: SocketAddr) -> u64 {
    let Ok(mut c) = util::client::Client::connect(addr) else {
        return 1;
    };
    match c.get("/") {
        Ok(r) if r.status == 200 => 0,
        _ => 1,
    }
}

#[test]
fn a_removed_backend_finishes_its_requests_in_flight() -> TestResult {
    // b answers after 600 ms: a request in flight when b is removed still
    // gets b's answer.
    let slow = Scripted::start(|_| {
        std::thread::sleep(Duration::from_millis(600));
        Reply::Send(b"HTTP/1.1 200 OK\r\nX-Backend: slow\r\nContent-Length: 2\r\n\r\nok".to_vec())
    })?;
    let (fast, _) = counting("fast")?;
    let path = temp("inflight");
    config(&path, &[slow.addr], "")?;
    let file = path.to_string_lossy().into_owned();
    let p = Proc::spawn("", &["proxy", "--config", &file])?;
    let addr = p.addr()?;
    let t0 = Instant::now();
    let pending = std::thread::spawn(move || {
        let mut c = util::client::Client::connect(addr)?;
        c.get("/")
    });
    std::thread::sleep(Duration::from_millis(150));
    config(&path, &[fast.addr], "")?;
    p.signal("HUP")?;
    let r = pending.join().map_err(|_| "client thread panicked")??;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-backend"), Some("slow"));
    assert!(t0.elapsed() >= Duration::from_millis(550));
    let mut c = util::client::Client::connect(addr)?;
    assert_eq!(c.get("/")?.header("x-backend"), Some("fast"));
    p.signal("INT")?;
    assert_eq!(p.wait()?.0, Some(0));
    let _ = std::fs::remove_file(&path);
    Ok(())
}
