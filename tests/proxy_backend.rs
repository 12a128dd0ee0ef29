//! Proxy mode, backend side: fail-over on refused and reset connections,
//! 502/504 answers, the request counters, and backend connection pooling
//! (`persistent` vs `close`).

mod util;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tidegate::config::BackendConn;
use util::TestResult;
use util::proxy::{self, Opts};
use util::scripted::{Reply, Scripted, header};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn a_refused_connect_is_retried_on_another_backend() -> TestResult {
    let dead = proxy::failing("refuse", "dead")?;
    let live = proxy::backend("0", "live")?;
    let p = proxy::start(&[dead.local_addr(), live.local_addr()], Opts::default())?;
    let mut c = p.client()?;
    for _ in 0..6 {
        let r = c.get("/")?;
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(r.header("x-backend"), Some("live"));
    }
    // A POST's body is not sent before the connect succeeds: it is retried too.
    let r = c.exchange(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")?;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-request-body-bytes"), Some("5"));
    let (fails, retries) = (p.stat(|s| &s.connect_failures), p.stat(|s| &s.retries));
    assert!(
        fails >= 3,
        "round-robin sent at least every other request to the dead backend: {fails}"
    );
    assert_eq!(fails, retries);
    assert_eq!(p.stat(|s| &s.ok), 7);
    assert_eq!(p.stat(|s| &s.status_5xx), 0);
    assert_eq!(live.stats().requests, 7);
    Ok(())
}

#[test]
fn all_backends_refusing_gives_502() -> TestResult {
    let one = proxy::failing("refuse", "one")?;
    let two = proxy::failing("refuse", "two")?;
    let p = proxy::start(&[one.local_addr(), two.local_addr()], Opts::default())?;
    let mut c = p.client()?;
    let r = c.get("/")?;
    assert_eq!(r.status, 502, "{}", r.head);
    assert!(r.connection_has("close"));
    assert!(c.closed_within(Duration::from_secs(3))?);
    // The first backend failed, the retry on the second failed: one answer.
    assert_eq!(p.stat(|s| &s.connect_failures), 2);
    assert_eq!(p.stat(|s| &s.retries), 1);
    assert_eq!(p.stat(|s| &s.status_5xx), 1);
    assert_eq!(p.stat(|s| &s.requests), 1);
    Ok(())
}

#[test]
fn a_silent_backend_gives_504_after_the_backend_timeout() -> TestResult {
    let hang = proxy::failing("hang", "hang")?;
    let mut opts = Opts::default();
    opts.timeouts.backend = Duration::from_millis(300);
    let p = proxy::start(&[hang.local_addr()], opts)?;
    let mut c = p.client()?;
    let t0 = Instant::now();
    let r = c.get("/")?;
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.head);
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(p.stat(|s| &s.backend_timeouts), 1);
    assert_eq!(p.stat(|s| &s.status_5xx), 1);
    assert_eq!(
        p.stat(|s| &s.retries),
        0,
        "a request the backend may have run is not retried"
    );
    Ok(())
}

#[test]
fn a_garbage_answer_gives_502() -> TestResult {
    let bad = proxy::failing("garbage", "bad")?;
    let p = proxy::start(&[bad.local_addr()], Opts::default())?;
    let r = p.client()?.get("/")?;
    assert_eq!(r.status, 502, "{}", r.head);
    assert_eq!(p.stat(|s| &s.bad_responses), 1);
    assert_eq!(p.stat(|s| &s.status_5xx), 1);
    assert_eq!(bad.stats().garbage, 1);
    Ok(())
}

#[test]
fn a_reset_before_any_answer_is_retried_on_a_healthy_backend() -> TestResult {
    let reset = proxy::failing("reset", "reset")?;
    let live = proxy::backend("0", "live")?;
    let p = proxy::start(&[reset.local_addr(), live.local_addr()], Opts::default())?;
    let mut c = p.client()?;
    for _ in 0..4 {
        let r = c.get("/")?;
        assert_eq!(
            (r.status, r.header("x-backend")),
            (200, Some("live")),
            "{}",
            r.head
        );
    }
    let resets = p.stat(|s| &s.backend_resets);
    assert!(resets >= 2, "{resets}");
    assert_eq!(resets, reset.stats().resets);
    assert_eq!(p.stat(|s| &s.retries), resets);
    assert_eq!(p.stat(|s| &s.ok), 4);
    Ok(())
}

/// Once any byte of a request body has been handed to a backend the body
/// is gone (it is streamed, not buffered), so the proxy does not fail over:
/// a POST whose backend resets gets 502, and no other backend sees it.
#[test]
fn a_post_whose_body_was_sent_is_not_retried() -> TestResult {
    let reset = proxy::failing("reset", "reset")?;
    let live = proxy::backend("0", "live")?;
    let p = proxy::start(&[reset.local_addr(), live.local_addr()], Opts::default())?;
    let mut c = p.client()?;
    let r = c.exchange(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")?;
    assert_eq!(r.status, 502, "{}", r.head);
    assert!(c.closed_within(Duration::from_secs(3))?);
    assert_eq!(reset.stats().resets, 1);
    assert_eq!(live.stats().requests, 0, "the POST was replayed");
    assert_eq!(p.stat(|s| &s.retries), 0);
    assert_eq!(p.stat(|s| &s.backend_resets), 1);
    assert_eq!(p.stat(|s| &s.status_5xx), 1);
    Ok(())
}

#[test]
fn persistent_mode_reuses_one_backend_connection() -> TestResult {
    let b = proxy::backend("0", "A")?;
    let p = proxy::start(&[b.local_addr()], Opts::default())?;
    let mut c = p.client()?;
    for _ in 0..10 {
        assert_eq!(c.get("/")?.status, 200);
    }
    // New client connections take the pooled backend connection too.
    for _ in 0..5 {
        let r = p
            .client()?
            .exchange(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
        assert_eq!(r.status, 200);
    }
    let stats = b.stats();
    assert_eq!((stats.requests, stats.connections), (15, 1));
    Ok(())
}

#[test]
fn close_mode_opens_a_connection_per_request_and_says_close() -> TestResult {
    let s = Scripted::always(OK)?;
    let opts = Opts {
        conn: BackendConn::Close,
        ..Opts::default()
    };
    let p = proxy::start(&[s.addr], opts)?;
    let mut c = p.client()?;
    for _ in 0..5 {
        let r = c.get("/")?;
        assert_eq!(r.status, 200);
        // The client side stays persistent.
        assert!(!r.connection_has("close"), "{}", r.head);
    }
    let mut conns = Vec::new();
    for _ in 0..5 {
        let seen = s.next().ok_or("backend saw too few requests")?;
        let lower = seen.head.to_ascii_lowercase();
        assert_eq!(header(&lower, "connection"), Some("close"), "{}", seen.head);
        conns.push(seen.conn);
    }
    assert_eq!(conns, [0, 1, 2, 3, 4]);
    assert_eq!(s.connections.load(Relaxed), 5);
    Ok(())
}

#[test]
fn a_backend_closing_its_pooled_connections_is_not_an_error() -> TestResult {
    // Answers without `Connection: close`, then closes anyway: the pooled
    // connection goes stale, possibly while the proxy is reusing it.
    let s = Scripted::start(|_| Reply::SendClose(OK.to_vec()))?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    for i in 0..20 {
        let r = c.get(&format!("/{i}"))?;
        assert_eq!(r.status, 200, "request {i}: {}", r.head);
    }
    assert_eq!(p.stat(|s| &s.ok), 20);
    assert_eq!(p.stat(|s| &s.status_5xx), 0);
    Ok(())
}

#[test]
fn a_backend_saying_close_is_not_reused() -> TestResult {
    let s = Scripted::start(|_| {
        Reply::SendClose(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        )
    })?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    for _ in 0..5 {
        let r = c.get("/")?;
        assert_eq!(r.status, 200);
        // Hop-by-hop: the backend's close is not the client's.
        assert!(!r.connection_has("close"), "{}", r.head);
    }
    assert_eq!(s.connections.load(Relaxed), 5);
    assert_eq!(
        p.stat(|s| &s.retries),
        0,
        "no request went to a closed connection"
    );
    Ok(())
}

#[test]
fn a_client_leaving_mid_request_is_counted_and_harmless() -> TestResult {
    let b = proxy::backend("200,0", "A")?;
    let p = proxy::start(&[b.local_addr()], Opts::default())?;
    let mut gone = p.client()?;
    gone.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")?;
    assert!(util::wait_until(Duration::from_secs(3), || b
        .stats()
        .requests
        == 1));
    // A reset, not a FIN: after a complete request a FIN is a half-close,
    // which still gets its response.
    socket2::SockRef::from(&gone.stream).set_linger(Some(Duration::ZERO))?;
    drop(gone);
    assert!(util::wait_until(Duration::from_secs(3), || p
        .stat(|s| &s.client_aborts)
        == 1));
    // The half-used backend connection was not pooled: the next request
    // gets a fresh one and its own response.
    let r = p.client()?.get("/")?;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(b.stats().connections, 2);
    Ok(())
}

#[test]
fn many_concurrent_clients_over_two_workers_all_succeed() -> TestResult {
    let one = proxy::backend("0,1,2", "one")?;
    let two = proxy::backend("1", "two")?;
    let opts = Opts {
        workers: 2,
        ..Opts::default()
    };
    let p = proxy::start(&[one.local_addr(), two.local_addr()], opts)?;
    let addr = p.addr;
    let threads: Vec<_> = (0..40)
        .map(|i| {
            std::thread::spawn(move || -> Result<(), String> {
                let mut c = util::client::Client::connect(addr).map_err(|e| e.to_string())?;
                for j in 0..10 {
                    let body = format!("{i}-{j}");
                    let req = format!(
                        "POST /{body} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let r = c.exchange(req.as_bytes()).map_err(|e| e.to_string())?;
                    let want = body.len().to_string();
                    if r.status != 200 || r.header("x-request-body-bytes") != Some(&want) {
                        return Err(r.head);
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "client panicked")??;
    }
    assert_eq!(p.stat(|s| &s.ok), 400);
    assert_eq!(one.stats().requests + two.stats().requests, 400);
    // Pooled: far fewer backend connections than requests.
    assert!(one.stats().connections + two.stats().connections <= 80);
    Ok(())
}

/// The per-backend metrics balance whatever the failure path: every attempt
/// that raised a backend's in-flight gauge lowers it again, and answered
/// requests are counted by status class against the backend that answered.
#[test]
fn metrics_balance_across_failure_paths() -> TestResult {
    let live = proxy::backend("0", "live")?;
    let dead = proxy::failing("refuse", "dead")?;
    let silent = proxy::failing("hang", "silent")?;
    let garbage = proxy::failing("garbage", "garbage")?;
    let mut opts = Opts {
        policy: tidegate::balance::Policy::RoundRobin,
        ..Opts::default()
    };
    opts.timeouts.backend = Duration::from_millis(200);
    let addrs = [
        live.local_addr(),
        dead.local_addr(),
        silent.local_addr(),
        garbage.local_addr(),
    ];
    let p = proxy::start(&addrs, opts)?;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        // The proxy closes after a 502/504, so use a fresh client each time.
        let mut c = p.client()?;
        statuses.push(c.get("/")?.status);
    }
    let snap = p.handles.shared.metrics.snapshot();
    assert!(snap.iter().all(|b| b.in_flight == 0), "{snap:?}");
    let answered: u64 = snap.iter().map(|b| b.requests()).sum();
    assert_eq!(answered, statuses.len() as u64, "{statuses:?} {snap:?}");
    let ok = statuses.iter().filter(|&&s| s == 200).count() as u64;
    assert_eq!(
        snap[0].by_class[1], ok,
        "the live backend answered every 200"
    );
    assert!(
        snap[1].failures > 0 && snap[1].requests() == 0,
        "refused attempts were retried: {:?}",
        snap[1]
    );
    assert!(
        snap[2].by_class[4] > 0 && snap[3].by_class[4] > 0,
        "504 and 502 counted: {snap:?}"
    );
    assert_eq!(
        snap[0].count, ok,
        "only answers enter the latency histogram"
    );
    Ok(())
}
