//! `tidegate proxy` as an operator sees it: the CSV log when the disk
//! fails, appending across runs, SIGUSR1 (reopen logs for logrotate) and
//! SIGHUP (no reload, but no death either). Real processes, real sockets.

mod util;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use util::client::Client;
use util::{Proc, TestResult, wait_until};

/// A fresh path in the temp dir for this test's CSV log.
fn csv_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tidegate-ops-{}-{name}.csv", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// `tidegate proxy` with one worker in front of `backend`, plus `extra`.
fn proxy(prefix: &str, backend: SocketAddr, extra: &[&str]) -> std::io::Result<Proc> {
    let backend = backend.to_string();
    let mut args = vec![
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--policy",
        "round-robin",
        "--backend",
        &backend,
    ];
    args.extend_from_slice(extra);
    Proc::spawn(prefix, &args)
}

/// The admin address from the proxy's start-up log.
fn admin_addr(p: &mut Proc) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let line = p
        .drain_stderr()
        .iter()
        .find_map(|l| {
            l.split("admin endpoint on http://")
                .nth(1)
                .map(str::to_string)
        })
        .ok_or("no admin log line")?;
    Ok(line.split('/').next().unwrap_or_default().parse()?)
}

/// The value of the sample line starting with `prefix` in `/metrics`.
fn metric(admin: SocketAddr, prefix: &str) -> Option<u64> {
    let r = Client::connect(admin).ok()?.get("/metrics").ok()?;
    r.body_str()
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn get_ok(proxy: SocketAddr, n: usize) -> TestResult {
    for i in 0..n {
        let r = Client::connect(proxy)?.get(&format!("/{i}"))?;
        assert_eq!(r.status, 200, "{}", r.head);
    }
    Ok(())
}

#[test]
fn a_failing_log_is_counted_and_reported_and_the_proxy_keeps_serving() -> TestResult {
    let b = util::proxy::backend("0", "b")?;
    let csv = csv_path("full");
    let csv_arg = csv.display().to_string();
    // RLIMIT_FSIZE of 512 bytes: the header and a few rows fit, then every
    // write fails with EFBIG (the proxy ignores SIGXFSZ, which would
    // otherwise kill it).
    let mut p = proxy(
        "ulimit -f 1;",
        b.local_addr(),
        &["--log-csv", &csv_arg, "--admin", "127.0.0.1:0"],
    )?;
    let addr = p.addr()?;
    let admin = admin_addr(&mut p)?;
    const N: usize = 30;
    get_ok(addr, N)?;
    let errors = "tidegate_log_write_errors_total{log=\"csv\"} ";
    let dropped = "tidegate_log_rows_dropped_total{log=\"csv\"} ";
    assert!(
        wait_until(Duration::from_secs(5), || metric(admin, errors)
            .is_some_and(|n| n >= 1)),
        "{:?}",
        metric(admin, errors)
    );
    let written = metric(admin, "tidegate_csv_rows_written_total ").ok_or("no rows metric")?;
    let lost = metric(admin, dropped).ok_or("no dropped metric")?;
    assert!(
        written >= 1 && lost >= 1,
        "written {written}, dropped {lost}"
    );
    // Still serving after the failures.
    get_ok(addr, 1)?;
    assert!(
        p.drain_stderr()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("cannot write the request log")),
        "{:?}",
        p.stderr
    );
    p.signal("INT")?;
    let (code, out, err) = p.wait()?;
    assert_eq!(code, Some(0), "{err:?}");
    let summary = out
        .lines()
        .find(|l| l.contains("CSV rows written"))
        .ok_or_else(|| format!("no CSV line in {out}"))?;
    // "{w} CSV rows written, {d} CSV rows dropped ({e} log write errors)"
    let nums: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(summary.contains("CSV rows dropped"), "{summary}");
    assert_eq!(nums.len(), 3, "{summary}");
    assert_eq!(nums[0] + nums[1], N as u64 + 1, "{summary}");
    assert!(nums[1] >= 1 && nums[2] >= 1, "{summary}");
    let size = std::fs::metadata(&csv)?.len();
    assert!(size <= 512, "{size}");
    let _ = std::fs::remove_file(&csv);
    Ok(())
}

#[test]
fn a_second_run_appends_to_the_log() -> TestResult {
    let b = util::proxy::backend("0", "b")?;
    let csv = csv_path("append");
    let csv_arg = csv.display().to_string();
    for run in 1..=2 {
        let p = proxy("", b.local_addr(), &["--log-csv", &csv_arg])?;
        get_ok(p.addr()?, 2)?;
        p.signal("INT")?;
        let (code, out, err) = p.wait()?;
        assert_eq!(code, Some(0), "{err:?}");
        assert!(out.contains("2 CSV rows written"), "{out}");
        assert_eq!(lines(&csv), 1 + 2 * run, "run {run}");
    }
    let text = std::fs::read_to_string(&csv)?;
    let _ = std::fs::remove_file(&csv);
    assert!(text.starts_with("timestamp,backend_url,"), "{text}");
    assert_eq!(text.matches("timestamp,").count(), 1, "{text}");
    Ok(())
}

#[test]
fn sigusr1_reopens_the_log_after_it_was_moved() -> TestResult {
    let b = util::proxy::backend("0", "b")?;
    let csv = csv_path("rotate");
    let old = csv.with_extension("csv.1");
    let _ = std::fs::remove_file(&old);
    let csv_arg = csv.display().to_string();
    let p = proxy("", b.local_addr(), &["--log-csv", &csv_arg])?;
    let addr = p.addr()?;
    get_ok(addr, 2)?;
    assert!(wait_until(Duration::from_secs(5), || lines(&csv) == 3));
    // What logrotate does: move the file, then signal.
    std::fs::rename(&csv, &old)?;
    p.signal("USR1")?;
    assert!(
        wait_until(Duration::from_secs(5), || csv.exists()),
        "the log was not reopened"
    );
    get_ok(addr, 3)?;
    p.signal("INT")?;
    let (code, out, err) = p.wait()?;
    assert_eq!(code, Some(0), "{err:?}");
    assert!(out.contains("5 CSV rows written"), "{out}");
    assert!(err.iter().any(|l| l.contains("SIGUSR1")), "{err:?}");
    let (old_text, new_text) = (
        std::fs::read_to_string(&old)?,
        std::fs::read_to_string(&csv)?,
    );
    let _ = (std::fs::remove_file(&old), std::fs::remove_file(&csv));
    assert_eq!(old_text.lines().count(), 1 + 2, "{old_text}");
    assert_eq!(new_text.lines().count(), 1 + 3, "{new_text}");
    assert!(new_text.starts_with("timestamp,"), "{new_text}");
    for i in 0..2 {
        assert!(old_text.contains(",200,"), "row {i}: {old_text}");
    }
    Ok(())
}

#[test]
fn sighup_is_logged_and_the_proxy_keeps_running() -> TestResult {
    let b = util::proxy::backend("0", "b")?;
    let mut p = proxy("", b.local_addr(), &[])?;
    let addr = p.addr()?;
    get_ok(addr, 1)?;
    p.signal("HUP")?;
    assert!(wait_until(Duration::from_secs(5), || p
        .drain_stderr()
        .iter()
        .any(|l| l.contains("SIGHUP") && l.contains("not supported"))));
    assert!(p.child.try_wait()?.is_none(), "the proxy died on SIGHUP");
    get_ok(addr, 2)?;
    p.signal("INT")?;
    let (code, out, err) = p.wait()?;
    assert_eq!(code, Some(0), "{err:?}");
    assert!(out.contains("tidegate proxy: 3 requests in "), "{out}");
    Ok(())
}
