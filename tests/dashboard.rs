//! The dashboard in headless Chromium: live data from real traffic, and
//! the backends table fitting at 1000 and 1400 px with backends down and
//! drained.
//!
//! Without Chromium these print a SKIP line, unless
//! `TIDEGATE_REQUIRE_EXTERNAL=1` (CI) makes that a failure. The README's
//! screenshots are of `tidegate demo` under load, taken by
//! `docs/screenshot.sh`.

mod util;

use std::net::TcpListener;
use std::time::Duration;

use util::TestResult;
use util::admin::{self, Traffic};
use util::proxy::{self, Opts};
use util::wait_until;

#[test]
fn the_dashboard_shows_live_data_in_a_browser() -> TestResult {
    if !admin::external(
        "headless chromium",
        admin::have_chromium(),
        "apt-get install chromium",
    ) {
        return Ok(());
    }
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
    // Warm up: a few seconds of history. (The README's pictures are of
    // `tidegate demo` under load: docs/screenshot.sh.)
    let warm = Duration::from_secs(5);
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
    p.stop();
    Ok(())
}

#[test]
fn the_backends_table_fits_at_1000_and_1400_px_with_backends_down_and_drained() -> TestResult {
    if !admin::external(
        "headless chromium",
        admin::have_chromium(),
        "apt-get install chromium",
    ) {
        return Ok(());
    }
    let alpha = proxy::backend("5", "alpha")?;
    let beta = proxy::backend("5", "beta")?;
    // A port nothing listens on: its health checks fail, so it is down.
    let dead = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let long = "beta-with-a-rather-long-name.example.internal";
    let opts = Opts {
        health_check: Some(("/".into(), Duration::from_millis(100))),
        ..Opts::default()
    };
    let p = admin::start(
        &[
            ("alpha", alpha.local_addr()),
            (long, beta.local_addr()),
            ("gamma", dead),
        ],
        opts,
    )?;
    let r = p.call("POST", &format!("/api/backends/{long}/drain"), "")?;
    assert_eq!(r.status, 200, "{}", r.body_str());
    let traffic = Traffic::start(p.addr, 2, Duration::from_secs(60));
    let down = wait_until(Duration::from_secs(10), || {
        traffic.sent.load(std::sync::atomic::Ordering::Relaxed) > 20
            && p.body("/stats")
                .is_ok_and(|s| s.contains("\"state\":\"down\""))
    });
    assert!(down, "gamma never went down: {}", p.body("/stats")?);
    let url = format!("http://{}/", p.admin_addr);
    for width in [1000, 1400] {
        let size = format!("--window-size={width},900");
        let out = admin::headless(&url, &["--dump-dom", &size])?;
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        let table = admin::section(&dom, "backends", "table").ok_or("no #backends")?;
        assert!(
            dom.contains("id=\"backends\" data-fits=\"true\""),
            "the backends table overflows at {width} px:\n{table}"
        );
        for state in ["up", "drained", "down"] {
            assert!(
                table.contains(&format!("data-state=\"{state}\"")),
                "{state} at {width} px:\n{table}"
            );
        }
        // gamma and beta never answered: "no sample", not a number.
        let gamma = table
            .split("<tr ")
            .find(|r| r.starts_with("data-backend=\"gamma\""))
            .ok_or("no gamma row")?;
        assert!(gamma.contains(">no sample<"), "{gamma}");
        assert!(!gamma.contains("1,000 ms"), "{gamma}");
        // No limit (none configured, none learned): shown as "—".
        assert!(gamma.contains(">—<"), "{gamma}");
    }
    assert!(traffic.stop() > 0, "no traffic");
    p.stop();
    Ok(())
}
