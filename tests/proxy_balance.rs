//! Proxy mode, the CSV request log and routing across workers.

mod util;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;

use tidegate::balance::Policy;
use util::TestResult;
use util::proxy::{self, Opts};

/// The seed's column names, which tools rely on.
const SEED_HEADER: &str = "timestamp,backend_url,latency_ms,status_code,routing_mode";

fn temp_csv(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tidegate-ptests-{}-{name}.csv", std::process::id()))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn is_iso8601_micros(t: &str) -> bool {
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    b.len() == 27
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && b[26] == b'Z'
}

#[test]
fn the_csv_log_has_one_row_per_answered_request() -> TestResult {
    let path = temp_csv("rows");
    let live = proxy::backend("0", "live")?;
    let bad = proxy::failing("garbage", "bad")?;
    let opts = Opts {
        csv: Some(path.clone()),
        workers: 2,
        ..Opts::default()
    };
    let p = proxy::start(&[live.local_addr(), bad.local_addr()], opts)?;
    let mut statuses = Vec::new();
    // Round-robin alternates: half 200, half 502 (each 502 closes).
    for _ in 0..10 {
        statuses.push(p.client()?.get("/")?.status);
    }
    statuses.push(p.client()?.exchange(b"GET / HTTP/1.1\r\n\r\n")?.status);
    let count = |s| statuses.iter().filter(|&&x| x == s).count();
    assert_eq!(
        (count(200), count(502), count(400)),
        (5, 5, 1),
        "{statuses:?}"
    );
    let rows_handle = p.handles.csv.clone().ok_or("no CSV row counter")?;
    let requests = p.stat(|s| &s.requests);
    p.stop();

    let text = std::fs::read_to_string(&path)?;
    let _ = std::fs::remove_file(&path);
    let mut lines = text.lines();
    let head = lines.next().ok_or("empty CSV")?;
    assert!(head.starts_with(SEED_HEADER), "{head}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), statuses.len());
    assert_eq!(rows.len() as u64, requests);
    assert_eq!(rows_handle.rows.load(Relaxed), requests);
    let mut by_status: HashMap<&str, usize> = HashMap::new();
    let live_url = format!("http://{}", live.local_addr());
    let bad_url = format!("http://{}", bad.local_addr());
    for row in &rows {
        assert!(row.len() >= 5, "{row:?}");
        assert!(is_iso8601_micros(row[0]), "{row:?}");
        let latency: f64 = row[2].parse()?;
        assert!((0.0..10_000.0).contains(&latency), "{row:?}");
        assert_eq!(row[4], "round-robin", "{row:?}");
        let want_url = match row[3] {
            "200" => live_url.as_str(),
            "502" => bad_url.as_str(),
            _ => "-",
        };
        assert_eq!(row[1], want_url, "{row:?}");
        *by_status.entry(row[3]).or_default() += 1;
    }
    assert_eq!(by_status.get("200"), Some(&5));
    assert_eq!(by_status.get("502"), Some(&5));
    assert_eq!(by_status.get("400"), Some(&1));
    Ok(())
}

/// Sends `clients` x `each` requests over concurrent keep-alive
/// connections and counts the responses by `X-Backend`.
fn spread(
    addr: std::net::SocketAddr,
    clients: usize,
    each: usize,
) -> Result<HashMap<String, usize>, String> {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            thread::spawn(move || -> Result<Vec<String>, String> {
                let mut c = util::client::Client::connect(addr).map_err(|e| e.to_string())?;
                (0..each)
                    .map(|_| {
                        let r = c.get("/").map_err(|e| e.to_string())?;
                        if r.status != 200 {
                            return Err(r.head);
                        }
                        Ok(r.header("x-backend").unwrap_or("?").to_string())
                    })
                    .collect()
            })
        })
        .collect();
    let mut counts = HashMap::new();
    for t in threads {
        for name in t.join().map_err(|_| "client panicked")?? {
            *counts.entry(name).or_default() += 1;
        }
    }
    Ok(counts)
}

/// The `worker` column (the seventh) of a CSV log: which workers answered.
fn workers_in(path: &std::path::Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    let mut seen: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(6).map(str::to_string))
        .collect();
    seen.sort();
    seen.dedup();
    Ok(seen)
}

#[test]
fn ewma_routes_with_two_workers_as_with_one() -> TestResult {
    for workers in [1, 2] {
        let fast = proxy::backend("2", "fast")?;
        let slow = proxy::backend("50", "slow")?;
        let path = temp_csv(&format!("ewma-{workers}"));
        let opts = Opts {
            policy: Policy::Ewma { alpha: 0.2 },
            workers,
            csv: Some(path.clone()),
            ..Opts::default()
        };
        let p = proxy::start(&[fast.local_addr(), slow.local_addr()], opts)?;
        let counts = spread(p.addr, 4, 20)?;
        let to_fast = counts.get("fast").copied().unwrap_or(0);
        assert_eq!(counts.values().sum::<usize>(), 80);
        assert!(to_fast * 4 >= 80 * 3, "--workers {workers}: {counts:?}");
        p.stop();
        // The client connections were spread over every worker.
        let answered_by = workers_in(&path)?;
        let _ = std::fs::remove_file(&path);
        assert_eq!(answered_by.len(), workers, "{answered_by:?}");
    }
    Ok(())
}

/// Tail-budget's shares move only in its periodic LP solve, which runs in
/// `Selector::tick` between the workers' event batches (never in `pick`):
/// without it the shares would stay at their equal start. With it the fast
/// backend takes most of the traffic, the slow one little more than its
/// floor.
#[test]
fn tail_budget_re_solves_its_shares_between_batches() -> TestResult {
    let fast = proxy::backend("2", "fast")?;
    let slow = proxy::backend("50", "slow")?;
    let opts = Opts {
        policy: Policy::TailBudget { slo: None },
        workers: 2,
        ..Opts::default()
    };
    let p = proxy::start(&[fast.local_addr(), slow.local_addr()], opts)?;
    let counts = spread(p.addr, 4, 100)?;
    let to_fast = counts.get("fast").copied().unwrap_or(0);
    assert_eq!(counts.values().sum::<usize>(), 400);
    assert!(to_fast * 4 >= 400 * 3, "{counts:?}");
    p.stop();
    Ok(())
}

/// The seed scenario at a tenth of its latencies. Fails today: A's run of
/// three 40 ms requests lifts its EWMA just above B's steady 20 ms, and
/// the lowest-estimate rule never picks A again, so A gets no sample that
/// could bring its estimate back down (balance::lowest has no
/// re-probing of a backend that lost).
#[test]
#[ignore = "EWMA starvation: after A's slow run its estimate never recovers (no re-probing in balance::lowest)"]
fn ewma_favours_the_seed_fast_backend_with_one_or_two_workers() -> TestResult {
    for workers in [1, 2] {
        let a = proxy::backend("1,2,2,40,40,40,1,2,2", "A")?;
        let b = proxy::backend("20", "B")?;
        let c = proxy::backend("25", "C")?;
        let opts = Opts {
            policy: Policy::Ewma { alpha: 0.2 },
            workers,
            ..Opts::default()
        };
        let addrs = [a.local_addr(), b.local_addr(), c.local_addr()];
        let p = proxy::start(&addrs, opts)?;
        let counts = spread(p.addr, 4, 15)?;
        let to_a = counts.get("A").copied().unwrap_or(0);
        assert!(to_a * 2 > 60, "--workers {workers}: {counts:?}");
    }
    Ok(())
}
