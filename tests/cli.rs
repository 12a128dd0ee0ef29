//! The `tidegate` binary: start-up errors, signals, the run summary and
//! the per-connection log.

mod util;

use std::io::Write;
use std::net::{Shutdown, TcpListener};

use util::{Proc, TestResult, connect, pattern, round_trip, run_bin as run};

#[test]
fn port_in_use_is_one_clear_line_naming_the_port() -> TestResult {
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let (code, err) = run(&["echo", "--listen", &addr])?;
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!(
            "port {} is already in use",
            taken.local_addr()?.port()
        )),
        "{err}"
    );
    Ok(())
}

#[test]
fn unparsable_address_is_rejected() -> TestResult {
    for bad in ["nonsense", "127.0.0.1", "127.0.0.1:http", "300.1.1.1:80"] {
        let (code, err) = run(&["echo", "--listen", bad])?;
        assert_eq!(code, Some(1), "{bad}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("invalid --listen address '{bad}'")),
            "{err}"
        );
    }
    Ok(())
}

#[test]
fn zero_workers_is_rejected() -> TestResult {
    let (code, err) = run(&["echo", "--listen", "127.0.0.1:0", "--workers", "0"])?;
    assert_eq!(code, Some(1));
    assert_eq!(err.trim(), "tidegate: error: --workers must be at least 1");
    let (code, _) = run(&["echo", "--workers", "many"])?;
    assert_eq!(code, Some(2), "clap's usage error");
    Ok(())
}

#[test]
fn sigint_stops_with_a_one_line_summary_and_connection_log() -> TestResult {
    let p = Proc::spawn(
        "",
        &[
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--log-connections",
        ],
    )?;
    let addr = p.addr()?;
    // Three clean connections with known sizes, and one left open.
    for (i, len) in [10usize, 200, 3000].into_iter().enumerate() {
        let mut s = connect(addr)?;
        let msg = pattern(i as u64, len);
        assert_eq!(round_trip(&mut s, &msg)?, msg);
        s.shutdown(Shutdown::Write)?;
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut rest)?;
        assert!(rest.is_empty());
    }
    let mut open = connect(addr)?;
    open.write_all(b"hold")?;
    assert!(util::wait_until(std::time::Duration::from_secs(5), || {
        let mut b = [0u8; 4];
        std::io::Read::read_exact(&mut open, &mut b).is_ok()
    }));
    p.signal("INT")?;
    let (code, out, err) = p.wait()?;
    assert_eq!(code, Some(0), "stderr: {err:?}");
    let closed: Vec<&str> = out.lines().filter(|l| l.starts_with("closed ")).collect();
    assert_eq!(closed.len(), 4, "{out}");
    for bytes in ["bytes=10 ", "bytes=200 ", "bytes=3000 "] {
        assert!(
            closed
                .iter()
                .any(|l| l.contains(bytes) && l.contains("reason=done")),
            "{out}"
        );
    }
    assert!(
        closed
            .iter()
            .any(|l| l.contains("bytes=4 ") && l.contains("reason=shutdown")),
        "{out}"
    );
    assert!(
        closed
            .iter()
            .all(|l| l.contains("peer=127.0.0.1:") && l.contains(" fd="))
    );
    let summary: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("tidegate echo: "))
        .collect();
    assert_eq!(summary.len(), 1, "{out}");
    assert!(
        summary[0].contains("served 4 connections, peak "),
        "{}",
        summary[0]
    );
    assert!(summary[0].contains("3214 bytes"), "{}", summary[0]);
    assert!(err.iter().any(|l| l.contains("RLIMIT_NOFILE")), "{err:?}");
    Ok(())
}

#[test]
fn sigterm_also_stops_cleanly() -> TestResult {
    let p = Proc::spawn("", &["echo", "--listen", "127.0.0.1:0", "--workers", "1"])?;
    let mut s = connect(p.addr()?)?;
    assert_eq!(round_trip(&mut s, b"x")?, b"x");
    p.signal("TERM")?;
    let (code, out, _) = p.wait()?;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("served 1 connections, peak 1 concurrent, 1 bytes"),
        "{out}"
    );
    Ok(())
}
