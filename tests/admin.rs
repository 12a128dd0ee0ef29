//! The admin endpoint: `/metrics` checked by Python's `prometheus_client`
//! parser against the requests sent, `/stats` as JSON, routing and
//! robustness, the `--admin` flag, and the dashboard in headless Chromium.
//!
//! The parser and the browser are external: without them these parts
//! print a SKIP line, unless `TIDEGATE_REQUIRE_EXTERNAL=1` (CI) makes
//! that a failure. `TIDEGATE_UPDATE_SCREENSHOT=1` also writes the
//! dashboard screenshot to `docs/dashboard.png` after a longer warm-up.

mod util;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tidegate::balance::Policy;
use tidegate::metrics::LATENCY_BUCKETS;
use util::admin::{self, AdminProxy, Sample, Traffic, sum};
use util::proxy::{self, Opts};
use util::{IO_TIMEOUT, Proc, TestResult, connect, wait_until};

/// Requests per backend in the counting test (round-robin over three).
const PER_BACKEND: u64 = 12;

/// Keys every `/stats` document has.
const STATS_KEYS: [&str; 18] = [
    "backends",
    "buckets_ms",
    "config",
    "connections",
    "csv_log",
    "csv_rows",
    "ejections",
    "failures",
    "history",
    "latency",
    "now_ms",
    "policy",
    "recent",
    "requests",
    "retries",
    "slo",
    "tls",
    "uptime_s",
];

/// Waits until the proxy's metrics have recorded `n` requests and none is
/// in flight (a client can see its response just before it is counted).
fn settled(p: &AdminProxy, n: u64) -> bool {
    wait_until(IO_TIMEOUT, || {
        let snap = p.handles.shared.metrics.snapshot();
        snap.iter().map(|b| b.requests()).sum::<u64>() == n && snap.iter().all(|b| b.in_flight == 0)
    })
}

/// Families declared with `# TYPE`, checked for `# HELP` and for the
/// counter naming convention.
fn check_declarations(text: &str) -> Result<BTreeSet<String>, String> {
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                return Err(format!("bad TYPE line {line:?}"));
            };
            if !text.contains(&format!("# HELP {name} ")) {
                return Err(format!("{name} has no HELP"));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(format!("counter {name} does not end in _total"));
            }
            typed.insert(name.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| typed.contains(*b))
                .unwrap_or(name);
            if !typed.contains(base) {
                return Err(format!("sample {name} before its TYPE"));
            }
        }
    }
    Ok(typed)
}

#[test]
fn metrics_count_exactly_the_requests_sent() -> TestResult {
    let a = proxy::backend("0", "a")?;
    let b = proxy::backend("2", "b")?;
    let c = proxy::failing("garbage", "c")?;
    let opts = Opts {
        workers: 2,
        ..Opts::default()
    };
    let names = ["a", "b", "c"];
    let addrs = [a.local_addr(), b.local_addr(), c.local_addr()];
    let p = admin::start(&[("a", addrs[0]), ("b", addrs[1]), ("c", addrs[2])], opts)?;
    let n = 3 * PER_BACKEND;
    // Round-robin: a and b answer 200, c's garbage becomes a 502 (which
    // closes the connection, so a new connection each).
    let mut ok = 0;
    for _ in 0..n {
        match p_get(&p)? {
            200 => ok += 1,
            502 => {}
            s => return Err(format!("unexpected status {s}").into()),
        }
    }
    assert_eq!(ok, 2 * PER_BACKEND);
    assert!(settled(&p, n), "metrics did not settle");

    let r = p.get("/metrics")?;
    assert_eq!(r.status, 200);
    let ctype = r.header("content-type").unwrap_or_default();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = r.body_str();
    let typed = check_declarations(&text)?;
    // Every answer (0 and 2 ms backends) is within the 200 ms --slo-ms.
    assert!(
        text.contains("tidegate_slo_share{slo_ms=\"200\"} 1\n"),
        "{text}"
    );
    for family in [
        "tidegate_requests_total",
        "tidegate_backend_in_flight",
        "tidegate_request_duration_seconds",
        "tidegate_ejections_total",
        "tidegate_retries_total",
        "tidegate_failures_total",
        "tidegate_client_requests_total",
        "tidegate_client_responses_total",
        "tidegate_worker_open_connections",
        "tidegate_accepted_connections_total",
        "tidegate_uptime_seconds",
        "tidegate_policy_info",
    ] {
        assert!(typed.contains(family), "{family} missing:\n{text}");
    }
    // Without --log-csv and with round-robin (no estimates) these are omitted.
    assert!(!text.contains("tidegate_csv_rows_written_total"));
    assert!(!text.contains("tidegate_backend_estimate_ms{"));

    if !admin::external(
        "python3 with prometheus_client",
        admin::have_prometheus_client(),
        "pip install prometheus_client",
    ) {
        return Ok(());
    }
    let s = admin::parse_prometheus(&text)?;
    let total = |name: &str, with: &[(&str, &str)]| sum(&s, name, with) as u64;
    assert_eq!(total("tidegate_requests_total", &[]), n);
    assert_eq!(total("tidegate_client_requests_total", &[]), n);
    assert_eq!(total("tidegate_client_responses_total", &[]), n);
    assert_eq!(
        total("tidegate_client_responses_total", &[("class", "5xx")]),
        PER_BACKEND
    );
    assert_eq!(total("tidegate_accepted_connections_total", &[]), n);
    assert_eq!(
        total("tidegate_failures_total", &[("kind", "bad_response")]),
        PER_BACKEND
    );
    assert_eq!(total("tidegate_failures_total", &[]), PER_BACKEND);
    assert_eq!(total("tidegate_retries_total", &[]), 0);
    assert_eq!(total("tidegate_ejections_total", &[]), 0);
    assert_eq!(
        total("tidegate_policy_info", &[("policy", "round-robin")]),
        1
    );
    let workers: Vec<&Sample> = s
        .iter()
        .filter(|x| x.name == "tidegate_worker_open_connections")
        .collect();
    assert_eq!(workers.len(), 2);
    assert!(sum(&s, "tidegate_uptime_seconds", &[]) > 0.0);
    // Per backend: what each backend says it did.
    for (name, handle) in names.iter().zip([&a, &b, &c]) {
        let own = handle.stats();
        let by = |class| {
            total(
                "tidegate_requests_total",
                &[("backend", name), ("class", class)],
            )
        };
        let answered = total(
            "tidegate_request_duration_seconds_count",
            &[("backend", name)],
        );
        if *name == "c" {
            assert_eq!((by("5xx"), own.garbage), (PER_BACKEND, PER_BACKEND));
            assert_eq!(answered, 0);
            assert_eq!(
                total("tidegate_backend_failures_total", &[("backend", name)]),
                PER_BACKEND
            );
        } else {
            assert_eq!((by("2xx"), own.ok), (PER_BACKEND, PER_BACKEND));
            assert_eq!(answered, PER_BACKEND);
        }
        assert_eq!(total("tidegate_backend_in_flight", &[("backend", name)]), 0);
        // The histogram: cumulative, ending in +Inf = _count.
        let buckets: Vec<u64> = s
            .iter()
            .filter(|x| {
                x.name == "tidegate_request_duration_seconds_bucket"
                    && x.labels.get("backend").is_some_and(|b| b == name)
            })
            .map(|x| x.value as u64)
            .collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        assert_eq!(buckets.last().copied(), Some(answered));
    }
    let kinds: BTreeSet<(&str, &str)> = s
        .iter()
        .map(|x| (x.family.as_str(), x.kind.as_str()))
        .collect();
    assert!(kinds.contains(&("tidegate_request_duration_seconds", "histogram")));
    assert!(kinds.contains(&("tidegate_requests", "counter")));

    // /stats: valid JSON with the documented keys and the same counts.
    let stats = p.body("/stats")?;
    let (keys, values) = admin::json_probe(
        &stats,
        &[
            "requests.total",
            "requests.5xx",
            "backends.0.requests",
            "backends.2.failures",
            "policy",
            "failures.bad_response",
        ],
    )?;
    let expected: BTreeSet<&str> = STATS_KEYS.into_iter().collect();
    let got: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(got, expected);
    let twelve = PER_BACKEND.to_string();
    assert_eq!(
        values,
        [
            n.to_string(),
            twelve.clone(),
            twelve.clone(),
            twelve.clone(),
            "\"round-robin\"".into(),
            twelve,
        ]
    );
    // The 200s (not the failures) are in the recent ring.
    assert_eq!(stats.matches("\"status\":200").count() as u64, ok);
    p.stop();
    Ok(())
}

/// One `GET /` through the proxy on a new connection; its status.
fn p_get(p: &AdminProxy) -> std::io::Result<u16> {
    Ok(util::client::Client::connect(p.addr)?.get("/")?.status)
}

#[test]
fn adaptive_policies_report_their_estimates() -> TestResult {
    let a = proxy::backend("1", "a")?;
    let opts = Opts {
        policy: Policy::Ewma { alpha: 0.3 },
        ..Opts::default()
    };
    let p = admin::start(&[("a", a.local_addr())], opts)?;
    for _ in 0..5 {
        assert_eq!(p_get(&p)?, 200);
    }
    assert!(settled(&p, 5));
    let text = p.body("/metrics")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("tidegate_backend_estimate_ms{"))
        .ok_or("no estimate")?;
    assert!(
        line.starts_with("tidegate_backend_estimate_ms{backend=\"a\",policy=\"adaptive_ewma\"} "),
        "{line}"
    );
    let ms: f64 = line.rsplit(' ').next().unwrap_or_default().parse()?;
    assert!(ms > 0.5 && ms < 1000.0, "{ms}");
    Ok(())
}

#[test]
fn routes_methods_and_bad_clients() -> TestResult {
    let a = proxy::backend("0", "a")?;
    let p = admin::start(&[("a", a.local_addr())], Opts::default())?;
    let health = p.get("/healthz")?;
    assert_eq!((health.status, health.body_str().trim()), (200, "ok"));
    assert_eq!(p.get("/nope")?.status, 404);
    let page = p.get("/")?;
    assert_eq!(page.status, 200);
    assert!(page.body_str().contains("id=\"trend\""));
    assert!(p.get("/stats?x=1")?.status == 200);
    let mut c = util::client::Client::connect(p.admin_addr)?;
    let post = c.exchange(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")?;
    assert_eq!(post.status, 405);
    let mut c = util::client::Client::connect(p.admin_addr)?;
    assert_eq!(c.exchange(b"\x16\x03\x01garbage\r\n\r\n")?.status, 400);

    // A silent client and one that never finishes its head hold their own
    // threads only: others are answered at once meanwhile.
    let mut silent = connect(p.admin_addr)?;
    let mut slow = connect(p.admin_addr)?;
    slow.write_all(b"GET /metrics HTTP/1.1\r\n")?;
    let t = Instant::now();
    assert_eq!(p.get("/healthz")?.status, 200);
    assert!(t.elapsed() < Duration::from_secs(2));
    // Both are closed by the deadline, not left open forever.
    let mut buf = [0u8; 64];
    let t = Instant::now();
    let _ = silent.read(&mut buf);
    let _ = slow.read(&mut buf);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // A huge head is refused, and the endpoint still serves.
    let mut big = connect(p.admin_addr)?;
    let _ = big.write_all(format!("GET /{} HTTP/1.1\r\n", "x".repeat(40_000)).as_bytes());
    let mut reply = Vec::new();
    let _ = big.read_to_end(&mut reply);
    assert!(reply.starts_with(b"HTTP/1.1 431"), "{reply:?}");
    assert_eq!(p.get("/healthz")?.status, 200);
    Ok(())
}

#[test]
fn the_admin_flag_serves_and_stops_with_the_proxy() -> TestResult {
    let a = proxy::backend("0", "a")?;
    let backend = a.local_addr().to_string();
    let mut proc = Proc::spawn(
        "",
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--backend",
            &backend,
            "--admin",
            "127.0.0.1:0",
        ],
    )?;
    proc.addr()?;
    let line = proc
        .drain_stderr()
        .iter()
        .find_map(|l| {
            l.split("admin endpoint on http://")
                .nth(1)
                .map(str::to_string)
        })
        .ok_or("no admin log line")?;
    let admin_addr: std::net::SocketAddr = line.split('/').next().unwrap_or_default().parse()?;
    let r = util::client::Client::connect(admin_addr)?.get("/healthz")?;
    assert_eq!(r.status, 200);
    proc.signal("TERM")?;
    let (code, _, _) = proc.wait()?;
    assert_eq!(code, Some(0));
    assert!(std::net::TcpStream::connect(admin_addr).is_err());

    // A taken admin port is one clear line, before anything starts.
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--backend", &backend])
        .args(["--admin", &port])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot serve the admin endpoint on {port}"))
            && err.contains("--admin")
            && err.contains("in use"),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_dashboard_shows_live_data_in_a_browser() -> TestResult {
    if !admin::external(
        "headless chromium",
        admin::have_chromium(),
        "apt-get install chromium",
    ) {
        return Ok(());
    }
    let update = std::env::var("TIDEGATE_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1");
    let names = ["alpha", "beta", "gamma"];
    let backends = [
        proxy::backend("8,12,30,10", names[0])?,
        proxy::backend("40,60,45,55", names[1])?,
        proxy::backend("90,120,100,150", names[2])?,
    ];
    let named: Vec<(&str, std::net::SocketAddr)> = names
        .iter()
        .zip(&backends)
        .map(|(n, b)| (*n, b.local_addr()))
        .collect();
    let p = admin::start(&named, Opts::default())?;
    // Warm up: a few seconds of history (longer for the README picture).
    let warm = Duration::from_secs(if update { 62 } else { 5 });
    let traffic = Traffic::start(p.addr, 6, warm + Duration::from_secs(120));
    std::thread::sleep(warm);
    let url = format!("http://{}/", p.admin_addr);
    let out = admin::headless(&url, &["--dump-dom"])?;
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let shot = std::env::temp_dir().join(format!("tidegate-dashboard-{}.png", std::process::id()));
    let shot_out = admin::headless(&url, &[&format!("--screenshot={}", shot.display())]);
    let sent = traffic.stop();
    assert!(sent > 0, "no traffic");

    assert!(
        dom.contains("id=\"policy\" class=\"badge\">round-robin<"),
        "policy missing:\n{dom}"
    );
    let latest = admin::section(&dom, "latest", "table").ok_or("no #latest table")?;
    let rows = latest.matches("<tr data-backend=").count();
    assert!(rows > 0, "no rows in #latest:\n{latest}");
    eprintln!("dashboard: {rows} rows in #latest after {sent} requests");
    let trend = admin::section(&dom, "trend", "svg").ok_or("no #trend chart")?;
    let dist = admin::section(&dom, "dist", "svg").ok_or("no #dist chart")?;
    for name in names {
        let line = admin::tags(trend, "path")
            .into_iter()
            .find(|t| t.get("data-backend").is_some_and(|b| b == name))
            .ok_or(format!("no trend line for {name}"))?;
        let d = line.get("d").cloned().unwrap_or_default();
        assert!(d.starts_with('M') && d.contains('L'), "{name}: {d:?}");
        let points = line.get("data-points").cloned().unwrap_or_default();
        let bar = admin::tags(dist, "rect")
            .into_iter()
            .find(|t| t.get("data-backend").is_some_and(|b| b == name))
            .ok_or(format!("no distribution bar for {name}"))?;
        let share: f64 = bar.get("data-share").ok_or("no share")?.parse()?;
        assert!(share > 10.0, "{name}: {share}% under round-robin");
        eprintln!("dashboard: {name}: {points} trend points, {share}% of requests");
        let table = admin::section(&dom, "backends", "table").ok_or("no #backends")?;
        let row = format!("<tr data-backend=\"{name}\" data-state=\"up\">");
        assert!(table.contains(&row), "{row} missing:\n{table}");
    }
    for unit in ["mean latency (ms)", "time (s)", "share of requests (%)"] {
        assert!(dom.contains(unit), "axis label {unit:?} missing");
    }

    let png = std::fs::read(&shot).map_err(|e| format!("no screenshot ({e}): {shot_out:?}"))?;
    let _ = std::fs::remove_file(&shot);
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{}",
        png.len()
    );
    if update {
        let dest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
        std::fs::create_dir_all(dest.parent().ok_or("no docs dir")?)?;
        std::fs::write(&dest, &png)?;
        eprintln!("wrote {}", dest.display());
    }
    p.stop();
    Ok(())
}
