//! `tidegate proxy` as a program: start-up errors, a backend that is down
//! at start, and SIGINT draining requests in flight.

mod util;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use tidegate::tools::backend::{self, BackendConfig};
use util::client::Client;
use util::{Proc, TestResult, run_bin as run, wait_until};

/// Timeouts that used to break every request (0: `--idle-timeout` closed
/// each connection with an empty reply, `--backend-timeout` answered 504,
/// `--connect-timeout` 502) or make no sense; each is one line naming its flag.
const ZERO_OR_ABSURD_TIMEOUTS: &[(&[&str], &str)] = &[
    (
        &["--backend", "127.0.0.1:1", "--idle-timeout", "0"],
        "invalid --idle-timeout '0': must be at least 1ms",
    ),
    (
        &["--backend", "127.0.0.1:1", "--backend-timeout", "0s"],
        "invalid --backend-timeout '0s': must be at least 1ms",
    ),
    (
        &["--backend", "127.0.0.1:1", "--connect-timeout", "0ms"],
        "invalid --connect-timeout '0ms': must be at least 1ms",
    ),
    (
        &["--backend", "127.0.0.1:1", "--header-timeout", "0"],
        "invalid --header-timeout '0': must be at least 1ms",
    ),
    (
        &["--backend", "127.0.0.1:1", "--client-timeout", "0"],
        "invalid --client-timeout '0': must be at least 1ms",
    ),
    (
        &["--backend", "127.0.0.1:1", "--tunnel-timeout", "0"],
        "invalid --tunnel-timeout '0': must be at least 1ms",
    ),
    (
        &["--backend", "127.0.0.1:1", "--idle-timeout", "500us"],
        "invalid --idle-timeout '500us': must be at least 1ms",
    ),
    (
        &["--backend", "127.0.0.1:1", "--backend-timeout", "25h"],
        "invalid --backend-timeout '25h': must be at most 24h",
    ),
    (
        &[
            "--backend",
            "127.0.0.1:1",
            "--tunnel-timeout",
            "99999999999999999999",
        ],
        "invalid --tunnel-timeout '99999999999999999999'",
    ),
    (
        &["--backend", "127.0.0.1:1", "--drain-timeout", "1000h"],
        "invalid --drain-timeout '1000h': must be at most 24h",
    ),
];

#[test]
fn bad_settings_end_with_one_clear_line() -> TestResult {
    let base = ["proxy", "--listen", "127.0.0.1:0"];
    let cases: &[(&[&str], &str)] = &[
        (&[], "no backends: give at least one --backend ip:port"),
        (
            &["--backend", "nonsense"],
            "invalid --backend address 'nonsense'",
        ),
        (
            &["--backend", "127.0.0.1:99999"],
            "invalid --backend address '127.0.0.1:99999'",
        ),
        (
            &["--backend", "127.0.0.1:1", "--policy", "fastest"],
            "invalid --policy 'fastest'",
        ),
        (
            &["--backend", "127.0.0.1:1", "--backend-conn", "sometimes"],
            "invalid --backend-conn 'sometimes'",
        ),
        (
            &["--backend", "127.0.0.1:1", "--backend-timeout", "soon"],
            "invalid --backend-timeout 'soon'",
        ),
        (
            &["--backend", "127.0.0.1:1", "--connect-timeout", "2 weeks"],
            "invalid --connect-timeout '2 weeks'",
        ),
        (
            &["--backend", "127.0.0.1:1", "--header-timeout=-1s"],
            "invalid --header-timeout '-1s'",
        ),
        (
            &["--backend", "127.0.0.1:1", "--idle-timeout", "1x"],
            "invalid --idle-timeout '1x'",
        ),
        (
            &["--backend", "127.0.0.1:1", "--drain-timeout", ""],
            "invalid --drain-timeout ''",
        ),
        (
            &["--backend", "127.0.0.1:1", "--workers", "0"],
            "--workers must be at least 1",
        ),
    ];
    for &(extra, want) in cases.iter().chain(ZERO_OR_ABSURD_TIMEOUTS) {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (code, err) = run(&args)?;
        assert_eq!(code, Some(1), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
        assert!(err.starts_with("tidegate: error: "), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    // The CSV file is created at start: an unwritable path fails at once.
    let (code, err) = run(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:1",
        "--log-csv",
        "/nonexistent-dir/x.csv",
    ])?;
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot write the request log /nonexistent-dir/x.csv"),
        "{err}"
    );
    Ok(())
}

/// A port nothing listens on (bound, read, released).
fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

#[test]
fn a_backend_down_at_start_is_not_an_error() -> TestResult {
    let addr = free_port()?;
    let p = Proc::spawn(
        "",
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--backend",
            &addr.to_string(),
        ],
    )?;
    let proxy = p.addr()?;
    let r = Client::connect(proxy)?.get("/")?;
    assert_eq!(r.status, 502, "{}", r.head);
    // The backend comes up on the same port: requests now succeed.
    let profile = "0".parse().map_err(|e| format!("{e}"))?;
    let mut cfg = BackendConfig::new(addr, profile);
    cfg.name = "late".into();
    let b = backend::spawn(cfg)?;
    let r = Client::connect(proxy)?.get("/")?;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-backend"), Some("late"));
    p.signal("INT")?;
    let (code, out, err) = p.wait()?;
    assert_eq!(code, Some(0), "{err:?}");
    assert!(out.contains("tidegate proxy: 2 requests in "), "{out}");
    assert!(out.contains("status: 1 2xx/3xx, 0 4xx, 1 5xx"), "{out}");
    assert_eq!(b.stats().requests, 1);
    Ok(())
}

#[test]
fn sigint_drains_requests_in_flight() -> TestResult {
    let profile = "300".parse().map_err(|e| format!("{e}"))?;
    let slow = backend::spawn(BackendConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        profile,
    ))?;
    let csv =
        std::env::temp_dir().join(format!("tidegate-ptests-{}-drain.csv", std::process::id()));
    // The log is appended to: start from no file.
    let _ = std::fs::remove_file(&csv);
    let csv_arg = csv.display().to_string();
    let backend_arg = slow.local_addr().to_string();
    let p = Proc::spawn(
        "",
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--backend",
            &backend_arg,
            "--log-csv",
            &csv_arg,
            "--drain-timeout",
            "5s",
        ],
    )?;
    let proxy = p.addr()?;
    const N: usize = 4;
    let mut clients = (0..N)
        .map(|_| Client::connect(proxy))
        .collect::<std::io::Result<Vec<_>>>()?;
    for c in &mut clients {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    }
    let all_in = wait_until(Duration::from_secs(5), || slow.stats().requests == N as u64);
    assert!(
        all_in,
        "requests did not reach the backend: {:?}",
        slow.stats()
    );
    let t0 = Instant::now();
    p.signal("INT")?;
    for c in &mut clients {
        let r = c.response(false)?;
        assert_eq!(r.status, 200, "{}", r.head);
        assert!(r.connection_has("close"), "{}", r.head);
        assert!(c.closed_within(Duration::from_secs(3))?);
    }
    // Our FIN ends the proxy's lingering close at once.
    drop(clients);
    let (code, out, err) = p.wait()?;
    let took = t0.elapsed();
    assert_eq!(code, Some(0), "{err:?}");
    assert!(took < Duration::from_secs(4), "drain took {took:?}");
    assert!(
        out.contains(&format!("tidegate proxy: {N} requests in ")),
        "{out}"
    );
    assert!(
        out.contains(&format!("status: {N} 2xx/3xx, 0 4xx, 0 5xx")),
        "{out}"
    );
    assert!(
        out.contains(&format!("({N} answered)")),
        "latency summary: {out}"
    );
    assert!(out.contains(&format!("{N} CSV rows written")), "{out}");
    let text = std::fs::read_to_string(&csv)?;
    let _ = std::fs::remove_file(&csv);
    assert_eq!(text.lines().count(), N + 1, "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(",200,")).count(),
        N,
        "{text}"
    );
    Ok(())
}

#[test]
fn a_zero_drain_timeout_means_no_drain() -> TestResult {
    // 0 is documented as "close in-flight requests at once", so it starts.
    let hang = util::proxy::failing("hang", "hang")?;
    let backend_arg = hang.local_addr().to_string();
    let p = Proc::spawn(
        "",
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--backend",
            &backend_arg,
            "--drain-timeout",
            "0",
        ],
    )?;
    let mut c = Client::connect(p.addr()?)?;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    assert!(wait_until(Duration::from_secs(5), || hang
        .stats()
        .connections
        == 1));
    let t0 = Instant::now();
    p.signal("INT")?;
    let (code, out, err) = p.wait()?;
    assert_eq!(code, Some(0), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(c.closed_within(Duration::from_secs(1))?);
    assert!(out.contains("1 requests"), "{out}");
    Ok(())
}

#[test]
fn the_drain_gives_up_after_the_drain_timeout() -> TestResult {
    let hang = util::proxy::failing("hang", "hang")?;
    let csv = std::env::temp_dir().join(format!(
        "tidegate-ptests-{}-drain-timeout.csv",
        std::process::id()
    ));
    let csv_arg = csv.display().to_string();
    let backend_arg = hang.local_addr().to_string();
    let p = Proc::spawn(
        "",
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--backend",
            &backend_arg,
            "--log-csv",
            &csv_arg,
            "--drain-timeout",
            "300ms",
        ],
    )?;
    let mut c = Client::connect(p.addr()?)?;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    assert!(wait_until(Duration::from_secs(5), || hang
        .stats()
        .connections
        == 1));
    let t0 = Instant::now();
    p.signal("INT")?;
    let (code, out, err) = p.wait()?;
    let took = t0.elapsed();
    assert_eq!(code, Some(0), "{err:?}");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The request was cut off: the client sees the close, and the log
    // still has its row.
    assert!(c.closed_within(Duration::from_secs(1))?);
    assert!(out.contains("1 requests"), "{out}");
    assert!(out.contains("1 CSV rows written"), "{out}");
    let text = std::fs::read_to_string(&csv)?;
    let _ = std::fs::remove_file(&csv);
    assert_eq!(text.lines().count(), 2, "{text}");
    Ok(())
}
