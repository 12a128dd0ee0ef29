//! Many concurrent connections against an in-process echo server, driven by
//! the same load client as `examples/echo_client.rs`: every byte verified.

mod util;

use std::time::Duration;

use tidegate::runtime::limits;
use tidegate::tools::loadgen::{self, LoadConfig};

use util::{TestResult, echo_server};

/// Runs `connections` x 100 x 64 B and checks that nothing was lost.
fn concurrent(connections: usize, workers: usize) -> TestResult {
    // Server and client live in this one process: two fds per connection.
    let fds = limits::raise_nofile()?;
    let needed = 2 * connections as u64 + limits::RESERVED_FDS;
    assert!(
        fds.soft >= needed,
        "this test needs RLIMIT_NOFILE >= {needed}, have {fds:?} (see ulimit.md)"
    );

    let server = echo_server(workers);
    let cfg = LoadConfig {
        target: server.local_addr(),
        connections,
        requests: 100,
        size: 64,
        threads: 2,
        connect_timeout: Duration::from_secs(20),
        timeout: Duration::from_secs(60),
        ..LoadConfig::default()
    };
    let report = loadgen::run(&cfg)?;
    assert_eq!(
        report.failed(),
        0,
        "failures: {:?} {:?}",
        report.failures,
        report.failure_samples
    );
    assert_eq!(report.total_requests(), connections as u64 * 100);
    assert_eq!(report.total_bytes(), connections as u64 * 100 * 64);
    assert!(
        report
            .conns
            .iter()
            .all(|c| c.requests == 100 && c.bytes == 6400)
    );

    assert!(util::wait_until(Duration::from_secs(10), || server
        .summary()
        .open
        == 0));
    let sum = server.stop();
    assert_eq!(sum.accepted, connections as u64);
    // The client opens every connection before sending: all were concurrent.
    assert_eq!(sum.peak, connections);
    assert_eq!(sum.bytes, connections as u64 * 6400);
    assert_eq!((sum.resets, sum.errors, sum.shed), (0, 0, 0));
    Ok(())
}

#[test]
fn one_hundred_concurrent_connections() -> TestResult {
    concurrent(100, 2)
}

#[test]
fn four_thousand_concurrent_connections() -> TestResult {
    concurrent(4000, 2)
}

#[test]
fn four_thousand_concurrent_connections_on_one_worker() -> TestResult {
    concurrent(4000, 1)
}
