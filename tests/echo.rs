//! Echo mode over real loopback sockets, against an in-process server.

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use util::{TestResult, connect, echo_server, pattern, round_trip, wait_until};

#[test]
fn backpressure_8_mib_written_without_reading_comes_back_in_order() -> TestResult {
    const TOTAL: usize = 8 * 1024 * 1024;
    let server = echo_server(2);
    let mut reader = connect(server.local_addr())?;
    let mut writer = reader.try_clone()?;
    let data = Arc::new(pattern(7, TOTAL));
    let written = Arc::new(AtomicUsize::new(0));
    let w = {
        let (data, written) = (Arc::clone(&data), Arc::clone(&written));
        thread::spawn(move || -> std::io::Result<()> {
            for chunk in data.chunks(64 * 1024) {
                writer.write_all(chunk)?;
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            writer.shutdown(Shutdown::Write)
        })
    };
    // Let the writer run ahead until every buffer on the path is full (or
    // it is done): the server must stop reading rather than buffer 8 MiB.
    let mut last = usize::MAX;
    wait_until(Duration::from_secs(10), || {
        thread::sleep(Duration::from_millis(200));
        let now = written.load(Ordering::Relaxed);
        let settled = now == last || now == TOTAL;
        last = now;
        settled
    });
    let mut back = Vec::with_capacity(TOTAL);
    reader.read_to_end(&mut back)?;
    w.join().map_err(|_| "writer panicked")??;
    assert_eq!(back.len(), TOTAL, "every byte echoed");
    assert!(back == *data, "bytes came back in order");
    let s = server.stop();
    assert_eq!(s.bytes, TOTAL as u64);
    Ok(())
}

#[test]
fn half_close_flushes_everything_then_closes() -> TestResult {
    let server = echo_server(1);
    let mut s = connect(server.local_addr())?;
    let data = pattern(3, 300_000);
    s.write_all(&data)?;
    s.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    s.read_to_end(&mut back)?; // ends only when the server sends its FIN
    assert!(back == data);
    assert!(wait_until(Duration::from_secs(5), || server.summary().open == 0));
    let sum = server.stop();
    assert_eq!(
        (sum.accepted, sum.closed, sum.bytes, sum.resets),
        (1, 1, 300_000, 0)
    );
    Ok(())
}

#[test]
fn many_short_lived_connections_are_all_served_and_closed() -> TestResult {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 250;
    let server = echo_server(2);
    let addr = server.local_addr();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || -> std::io::Result<()> {
                for i in 0..PER_THREAD {
                    let mut s = connect(addr)?;
                    let msg = pattern((t * PER_THREAD + i) as u64, 16);
                    assert_eq!(round_trip(&mut s, &msg)?, msg);
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "client panicked")??;
    }
    let n = (THREADS * PER_THREAD) as u64;
    assert!(wait_until(Duration::from_secs(10), || server
        .summary()
        .closed
        == n));
    let sum = server.stop();
    assert_eq!((sum.accepted, sum.open, sum.bytes), (n, 0, n * 16));
    Ok(())
}

#[test]
fn a_reset_connection_does_not_disturb_others() -> TestResult {
    let server = echo_server(1);
    let addr = server.local_addr();
    let mut good = connect(addr)?;
    assert_eq!(round_trip(&mut good, b"before")?, b"before");
    {
        // Unread data at close makes the kernel send RST instead of FIN.
        let bad = connect(addr)?;
        (&bad).write_all(&pattern(1, 100_000))?;
        thread::sleep(Duration::from_millis(50));
        socket2::SockRef::from(&bad).set_linger(Some(Duration::ZERO))?;
    }
    assert!(wait_until(Duration::from_secs(5), || server
        .summary()
        .closed
        == 1));
    assert_eq!(round_trip(&mut good, b"after")?, b"after");
    drop(good);
    let sum = server.stop();
    assert_eq!(sum.accepted, 2);
    Ok(())
}

#[test]
fn shutdown_closes_open_connections() -> TestResult {
    let server = echo_server(2);
    let mut conns = Vec::new();
    for i in 0..20 {
        let mut s = connect(server.local_addr())?;
        assert_eq!(round_trip(&mut s, &pattern(i, 8))?, pattern(i, 8));
        conns.push(s);
    }
    let sum = server.stop();
    assert_eq!((sum.accepted, sum.peak, sum.open), (20, 20, 0));
    for mut s in conns {
        let mut buf = [0u8; 8];
        // EOF (0) or a reset: either way the server let go.
        assert!(!matches!(s.read(&mut buf), Ok(n) if n > 0));
    }
    Ok(())
}

#[test]
fn a_peer_that_never_reads_is_throttled_not_buffered() -> TestResult {
    // Far more than all kernel socket buffers on the path (~20 MiB with
    // default tcp_rmem/tcp_wmem maxima): if the server kept reading into
    // memory, the writer would finish without anyone reading.
    const TOTAL: usize = 64 * 1024 * 1024;
    const STALL_BELOW: usize = 40 * 1024 * 1024;
    let server = echo_server(1);
    let mut reader = connect(server.local_addr())?;
    let mut writer = reader.try_clone()?;
    let written = Arc::new(AtomicUsize::new(0));
    let w = {
        let written = Arc::clone(&written);
        thread::spawn(move || -> std::io::Result<()> {
            let chunk = pattern(9, 64 * 1024);
            for _ in 0..TOTAL / chunk.len() {
                writer.write_all(&chunk)?;
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            writer.shutdown(Shutdown::Write)
        })
    };
    let mut last = usize::MAX;
    let stalled = wait_until(Duration::from_secs(15), || {
        thread::sleep(Duration::from_millis(300));
        let now = written.load(Ordering::Relaxed);
        let same = now == last;
        last = now;
        same
    });
    let at_stall = written.load(Ordering::Relaxed);
    assert!(
        stalled && at_stall < STALL_BELOW,
        "writer stalled at {at_stall} bytes"
    );
    let expected = pattern(9, 64 * 1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < TOTAL {
        reader.read_exact(&mut buf)?;
        assert!(buf == expected, "chunk at {got} intact");
        got += buf.len();
    }
    w.join().map_err(|_| "writer panicked")??;
    assert_eq!(
        reader.read(&mut buf)?,
        0,
        "server closes after the half-close"
    );
    assert_eq!(server.stop().bytes, TOTAL as u64);
    Ok(())
}
