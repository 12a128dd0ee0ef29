//! Running out of file descriptors: the server keeps serving what it has,
//! sheds the excess promptly, does not spin, warns, and recovers.

mod util;

use std::io::Read;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use util::{Proc, TestResult, connect, cpu_ticks, pattern, round_trip, wait_until};

/// The child's descriptor limit: enough for stdio, two polls, wakers, the
/// listener, the signal pipe and the reserve fd, plus a few dozen clients.
const FD_LIMIT: usize = 48;
/// More clients than the limit can ever hold.
const CLIENTS: usize = 80;

/// True if the server echoes on `s`; false if it closed or reset it.
fn served(s: &mut TcpStream, seed: u64) -> bool {
    let msg = pattern(seed, 32);
    matches!(round_trip(s, &msg), Ok(back) if back == msg)
}

#[test]
fn fd_exhaustion_sheds_excess_without_spinning_and_recovers() -> TestResult {
    let prefix = format!("ulimit -n {FD_LIMIT} &&");
    let mut p = Proc::spawn(
        &prefix,
        &["echo", "--listen", "127.0.0.1:0", "--workers", "1"],
    )?;
    let addr = p.addr()?;
    let pid = p.child.id();

    let mut kept = Vec::new();
    let mut shed = 0;
    for i in 0..CLIENTS {
        let mut s = connect(addr)?;
        if served(&mut s, i as u64) {
            kept.push(s);
        } else {
            shed += 1;
        }
    }
    assert!(
        kept.len() >= 20 && kept.len() < FD_LIMIT,
        "served {} of {CLIENTS}",
        kept.len()
    );
    assert_eq!(kept.len() + shed, CLIENTS);

    // Keep knocking while at the limit: CPU use must stay near zero (a spin
    // would burn ~100 ticks per second).
    let before = cpu_ticks(pid)?;
    for _ in 0..20 {
        if let Ok(mut s) = connect(addr) {
            let mut b = [0u8; 1];
            // Shed: EOF or reset, promptly rather than a hang in the backlog.
            let r = s.read(&mut b);
            assert!(!matches!(r, Ok(1)), "an excess connection got data");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let used = cpu_ticks(pid)? - before;
    assert!(
        used < 50,
        "server used {used} CPU ticks in ~1 s at the fd limit"
    );

    // Existing connections are unaffected.
    for (i, s) in kept.iter_mut().enumerate() {
        assert!(
            served(s, 1000 + i as u64),
            "kept connection {i} still echoes"
        );
    }
    // Freeing descriptors lets new connections in again.
    kept.truncate(kept.len() - 5);
    thread::sleep(Duration::from_millis(200));
    let recovered = wait_until(Duration::from_secs(5), || {
        connect(addr).is_ok_and(|mut s| served(&mut s, 7))
    });
    assert!(recovered, "new connections are served once fds are free");

    let warned = p
        .drain_stderr()
        .iter()
        .any(|l| l.contains("WARN") && l.contains("ulimit.md"));
    assert!(warned, "a warning points to ulimit.md: {:?}", p.stderr);
    drop(kept);
    p.signal("TERM")?;
    let (code, out, _) = p.wait()?;
    assert_eq!(code, Some(0));
    assert!(
        !out.contains(" 0 shed"),
        "summary counts shed connections: {out}"
    );
    Ok(())
}
