//! `--access-log PATH|stdout --access-log-format json|combined|csv`, over
//! real sockets and the real binary: every request appears exactly once,
//! each json line parses and names what an operator needs, combined lines
//! follow nginx's format, stdout works, and `--log-csv` stays the csv alias.

mod util;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use util::Proc;
use util::admin::Traffic;
use util::client::Client;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tidegate-access-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Starts the real proxy in front of a built-in backend with `extra` flags.
fn proxy(backend: &str, extra: &[&str]) -> std::io::Result<Proc> {
    let mut args = vec![
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--policy",
        "round-robin",
        "--backend",
        backend,
    ];
    args.extend_from_slice(extra);
    Proc::spawn("", &args)
}

#[test]
fn every_request_is_one_json_line_with_its_fields() -> TestResult {
    let b = util::proxy::backend("0", "b")?;
    let backend = b.local_addr().to_string();
    let path = temp("all.json");
    let log = path.to_string_lossy().into_owned();
    let p = proxy(
        &backend,
        &["--access-log", &log, "--access-log-format", "json"],
    )?;
    let addr = p.addr()?;
    let traffic = Traffic::start(addr, 4, Duration::from_millis(700));
    std::thread::sleep(Duration::from_millis(400));
    // A client id is kept; a bad request is the client's fault.
    let mut c = Client::connect(addr)?;
    let r = c.exchange(b"GET /mine?q=\"x\" HTTP/1.1\r\nHost: a\r\nX-Request-Id: my-id-1\r\nUser-Agent: t/1\r\n\r\n")?;
    assert_eq!(r.status, 200);
    let mut bad = Client::connect(addr)?;
    assert_eq!(bad.exchange(b"GET / HTTP/1.1\r\n\r\n")?.status, 400);
    let sent = traffic.stop();
    p.signal("INT")?;
    let (code, _, _) = p.wait()?;
    assert_eq!(code, Some(0));

    let text = std::fs::read_to_string(&path)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len() as u64,
        sent + 2,
        "one line per request, no more"
    );
    let mut ids = HashSet::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)?;
        for key in [
            "time",
            "client",
            "method",
            "path",
            "protocol",
            "status",
            "bytes_in",
            "bytes_out",
            "duration_ms",
            "upstream",
            "attempts",
            "outcome",
            "side",
            "request_id",
            "policy",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
        assert_eq!(v["policy"], "round-robin");
        if v["status"] == 200 {
            assert_eq!(v["outcome"], "ok");
            assert!(v["side"].is_null());
            assert_eq!(v["upstream"].as_str(), Some(backend.as_str()));
            assert_eq!(v["attempts"], 1);
            assert!(v["bytes_out"].as_u64().unwrap_or(0) > 0);
            let id = v["request_id"].as_str().unwrap_or_default().to_string();
            assert!(ids.insert(id), "request ids are unique: {line}");
        }
    }
    let mine: Vec<&&str> = lines.iter().filter(|l| l.contains("\"my-id-1\"")).collect();
    assert_eq!(mine.len(), 1);
    let v: serde_json::Value = serde_json::from_str(mine[0])?;
    assert_eq!(v["path"], "/mine?q=\"x\"");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["protocol"], "HTTP/1.1");
    let bad: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["status"] == 400)
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["outcome"], "bad_request");
    assert_eq!(bad[0]["side"], "client");
    assert!(bad[0]["upstream"].is_null());
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[test]
fn combined_lines_follow_nginx() -> TestResult {
    let b = util::proxy::backend("0", "b")?;
    let backend = b.local_addr().to_string();
    let path = temp("combined.log");
    let log = path.to_string_lossy().into_owned();
    let p = proxy(
        &backend,
        &["--access-log", &log, "--access-log-format", "combined"],
    )?;
    let mut c = Client::connect(p.addr()?)?;
    for i in 0..3 {
        let req = format!(
            "GET /c{i} HTTP/1.1\r\nHost: a\r\nUser-Agent: agent/{i}\r\nReferer: http://r/\r\n\r\n"
        );
        assert_eq!(c.exchange(req.as_bytes())?.status, 200);
    }
    p.signal("INT")?;
    assert_eq!(p.wait()?.0, Some(0));
    let text = std::fs::read_to_string(&path)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        let tail = format!("] \"GET /c{i} HTTP/1.1\" 200 ");
        assert!(line.contains(&tail), "{line}");
        let end = format!(" \"http://r/\" \"agent/{i}\"");
        assert!(line.ends_with(&end), "{line}");
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[test]
fn stdout_carries_one_json_line_per_request() -> TestResult {
    let b = util::proxy::backend("0", "b")?;
    let p = proxy(&b.local_addr().to_string(), &["--access-log", "stdout"])?;
    let mut c = Client::connect(p.addr()?)?;
    for _ in 0..5 {
        assert_eq!(c.get("/")?.status, 200);
    }
    p.signal("INT")?;
    let (code, out, _) = p.wait()?;
    assert_eq!(code, Some(0));
    let json: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(json.len(), 5, "{out}");
    for line in json {
        let v: serde_json::Value = serde_json::from_str(line)?;
        assert_eq!(v["status"], 200);
    }
    Ok(())
}

#[test]
fn log_csv_is_the_csv_alias_and_not_combined_with_access_log() -> TestResult {
    let b = util::proxy::backend("0", "b")?;
    let backend = b.local_addr().to_string();
    let path = temp("alias.csv");
    let log = path.to_string_lossy().into_owned();
    let p = proxy(&backend, &["--log-csv", &log])?;
    let mut c = Client::connect(p.addr()?)?;
    assert_eq!(c.get("/")?.status, 200);
    p.signal("INT")?;
    assert_eq!(p.wait()?.0, Some(0));
    let text = std::fs::read_to_string(&path)?;
    assert!(text.starts_with("timestamp,backend_url,latency_ms,status_code,routing_mode"));
    assert_eq!(text.lines().count(), 2, "{text}");

    let (code, err) = util::run_bin(&[
        "proxy",
        "--backend",
        &backend,
        "--log-csv",
        &log,
        "--access-log",
        "stdout",
    ])?;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not both"), "{err}");
    let (code, err) = util::run_bin(&[
        "proxy",
        "--backend",
        &backend,
        "--access-log",
        "stdout",
        "--access-log-format",
        "xml",
    ])?;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--access-log-format"), "{err}");
    let _ = std::fs::remove_file(&path);
    Ok(())
}
