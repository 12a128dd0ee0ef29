//! The load client over real loopback sockets, against tiny
//! thread-per-connection servers started inside each test.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::{CSV_HEADER, FailureKind, LoadConfig, LoadError, run};

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Echo,
    /// Echoes with the first byte of every chunk flipped.
    FlipByte,
    /// Reads and discards, never answers.
    Silent,
    /// Echoes one message of this size, then closes.
    CloseAfterFirst(usize),
}

#[derive(Default)]
struct Stats {
    open: AtomicUsize,
    max_open: AtomicUsize,
    accepted: AtomicUsize,
    peers: Mutex<HashSet<IpAddr>>,
}

struct Server {
    addr: SocketAddr,
    stats: Arc<Stats>,
}

fn listener(backlog: i32) -> TcpListener {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(backlog).unwrap();
    socket.into()
}

fn serve(behaviour: Behaviour) -> Server {
    let listener = listener(1024);
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(Stats::default());
    let shared = Arc::clone(&stats);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            if let Ok(peer) = stream.peer_addr() {
                shared.peers.lock().unwrap().insert(peer.ip());
            }
            let stats = Arc::clone(&shared);
            thread::spawn(move || handle(stream, behaviour, &stats));
        }
    });
    Server { addr, stats }
}

fn handle(mut stream: TcpStream, behaviour: Behaviour, stats: &Stats) {
    let now = stats.open.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max_open.fetch_max(now, Ordering::SeqCst);
    let mut buf = [0u8; 4096];
    match behaviour {
        Behaviour::Echo | Behaviour::FlipByte | Behaviour::Silent => loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Behaviour::FlipByte = behaviour {
                buf[0] ^= 0xFF;
            }
            if !matches!(behaviour, Behaviour::Silent) && stream.write_all(&buf[..n]).is_err() {
                break;
            }
        },
        Behaviour::CloseAfterFirst(size) => {
            let mut msg = vec![0; size];
            if stream.read_exact(&mut msg).is_ok() {
                let _ = stream.write_all(&msg);
            }
        }
    }
    stats.open.fetch_sub(1, Ordering::SeqCst);
}

fn config(target: SocketAddr, connections: usize, requests: usize) -> LoadConfig {
    LoadConfig {
        target,
        connections,
        requests,
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
        ..LoadConfig::default()
    }
}

/// An address on which nothing listens (bound, then released).
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn all_connections_succeed_with_exact_counts() {
    let server = serve(Behaviour::Echo);
    let report = run(&config(server.addr, 200, 20)).unwrap();
    assert!(report.is_success(), "{report}");
    assert_eq!(report.ok(), 200);
    assert_eq!(report.failed(), 0);
    assert_eq!(report.conns.len(), 200);
    for (i, c) in report.conns.iter().enumerate() {
        assert_eq!(c.id, i);
        assert_eq!(c.requests, 20);
        assert_eq!(c.bytes, 20 * 64);
        assert_eq!(c.failure, None);
        assert!(c.avg_response > Duration::ZERO);
        assert!(c.total_duration >= c.avg_response * 20);
    }
    assert_eq!(report.total_requests(), 4000);
    assert_eq!(report.total_bytes(), 4000 * 64);
    assert_eq!(report.histogram.len(), 4000);
    assert_eq!(server.stats.accepted.load(Ordering::SeqCst), 200);
    let row = report.summary_row();
    assert_eq!(row[..6], ["200", "Success", "20", "1280", "4000", "256000"]);
    assert!(report.msgs_per_sec() > 0.0);
}

#[test]
fn flipped_byte_is_a_mismatch() {
    let server = serve(Behaviour::FlipByte);
    let report = run(&config(server.addr, 20, 5)).unwrap();
    assert_eq!(report.failures.mismatch, 20, "{report}");
    assert_eq!(report.failed(), 20);
    assert_eq!(report.total_requests(), 0);
    assert!(!report.is_success());
    assert_eq!(report.summary_row()[1], "Fail");
}

#[test]
fn nothing_listening_is_refused() {
    let report = run(&config(closed_port(), 10, 5)).unwrap();
    assert_eq!(report.failures.refused, 10, "{report}");
    assert_eq!(report.failed(), 10);
    assert!(report.conns.iter().all(|c| c.connect_time.is_zero()));
}

#[test]
fn silent_server_times_out() {
    let server = serve(Behaviour::Silent);
    let cfg = LoadConfig {
        timeout: Duration::from_millis(200),
        ..config(server.addr, 10, 3)
    };
    let report = run(&cfg).unwrap();
    assert_eq!(report.failures.timeout, 10, "{report}");
    assert_eq!(report.total_requests(), 0);
    assert!(
        report.elapsed < Duration::from_secs(4),
        "{:?}",
        report.elapsed
    );
}

#[test]
fn full_backlog_times_out_the_connect() {
    // Backlog 1 and no accept(): two connections complete, then the kernel
    // drops further SYNs, and those connects time out.
    let listener = listener(1);
    let cfg = LoadConfig {
        connect_timeout: Duration::from_millis(300),
        timeout: Duration::from_millis(300),
        ..config(listener.local_addr().unwrap(), 6, 1)
    };
    let report = run(&cfg).unwrap();
    assert_eq!(report.failures.timeout, 6, "{report}");
    assert!(report.conns.iter().any(|c| c.connect_time.is_zero()));
    drop(listener);
}

#[test]
fn close_after_first_message_is_a_reset() {
    let server = serve(Behaviour::CloseAfterFirst(64));
    let report = run(&config(server.addr, 10, 5)).unwrap();
    assert_eq!(report.failures.reset, 10, "{report}");
    for c in &report.conns {
        assert_eq!((c.requests, c.bytes), (1, 64));
    }
}

#[test]
fn hold_keeps_every_connection_open_at_once() {
    let server = serve(Behaviour::Echo);
    let cfg = LoadConfig {
        hold: Duration::from_millis(300),
        ..config(server.addr, 50, 1)
    };
    let report = run(&cfg).unwrap();
    assert!(report.is_success(), "{report}");
    assert_eq!(server.stats.max_open.load(Ordering::SeqCst), 50);
    assert!(report.elapsed >= Duration::from_millis(300));
}

#[test]
fn zero_requests_connects_and_closes() {
    let server = serve(Behaviour::Echo);
    let report = run(&config(server.addr, 20, 0)).unwrap();
    assert!(report.is_success(), "{report}");
    assert_eq!(report.total_requests(), 0);
    // Nothing waited for the server, so its accept loop may lag the run.
    let accepted = || server.stats.accepted.load(Ordering::SeqCst);
    for _ in 0..200 {
        if accepted() == 20 {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(accepted(), 20);
}

#[test]
fn large_messages_survive_partial_writes() {
    let server = serve(Behaviour::Echo);
    let cfg = LoadConfig {
        size: 1 << 20,
        ..config(server.addr, 3, 3)
    };
    let report = run(&cfg).unwrap();
    assert!(report.is_success(), "{report}");
    assert_eq!(report.total_bytes(), 9 << 20);
}

#[test]
fn sources_are_used_round_robin() {
    let server = serve(Behaviour::Echo);
    let sources: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
    let cfg = LoadConfig {
        sources: sources.clone(),
        ..config(server.addr, 10, 2)
    };
    let report = run(&cfg).unwrap();
    assert!(report.is_success(), "{report}");
    let peers = server.stats.peers.lock().unwrap().clone();
    assert_eq!(peers, sources.into_iter().collect());
}

#[test]
fn bad_configs_are_rejected() {
    let ok = config(closed_port(), 1, 1);
    let cases = [
        LoadConfig {
            size: 0,
            ..ok.clone()
        },
        LoadConfig {
            connections: 0,
            ..ok.clone()
        },
        LoadConfig {
            threads: 0,
            ..ok.clone()
        },
        LoadConfig {
            timeout: Duration::ZERO,
            ..ok.clone()
        },
        LoadConfig {
            sources: vec!["::1".parse().unwrap()],
            ..ok.clone()
        },
    ];
    for cfg in cases {
        assert!(matches!(run(&cfg), Err(LoadError::Config(_))), "{cfg:?}");
    }
}

#[test]
fn renderings_have_the_documented_shape() {
    let server = serve(Behaviour::Echo);
    let report = run(&config(server.addr, 5, 2)).unwrap();
    let mut csv = Vec::new();
    report.write_csv(&mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0], CSV_HEADER);
    assert!(lines[1].starts_with("0,2,128,"), "{}", lines[1]);
    let table = report.summary_table();
    assert_eq!(table.lines().count(), 2);
    assert!(table.starts_with("Connections"));
    let result = report.result_line();
    assert!(result.starts_with("RESULT connections=5 ok=5 failed=0 requests=10 bytes=640 "));
    for kind in FailureKind::ALL {
        assert!(result.contains(&format!(" {kind}=0")), "{result}");
    }
}
