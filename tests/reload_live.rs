//! Reload through the library (`ProxyHandles::live.reload`), over real
//! sockets under steady traffic: added backends take traffic, removed ones
//! take no new request but finish what is in flight, counters carry over,
//! what needs a restart is left as it was, and no request fails.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use util::admin::Traffic;
use util::proxy::{self, Opts};
use util::scripted::{Reply, Scripted};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A backend on loopback counting what it answers.
fn counting(name: &'static str) -> std::io::Result<(Scripted, Arc<AtomicU64>)> {
    Scripted::counting(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), name)
}

fn opts() -> Opts {
    Opts {
        workers: 2,
        ..Opts::default()
    }
}

#[test]
fn ten_reloads_under_traffic_drop_nothing() -> TestResult {
    let (a, na) = counting("a")?;
    let (b, nb) = counting("b")?;
    let (c, nc) = counting("c")?;
    let p = proxy::start(&[a.addr, b.addr], opts())?;
    let traffic = Traffic::start(p.addr, 4, Duration::from_secs(20));
    assert!(util::wait_until(Duration::from_secs(3), || nb
        .load(Relaxed)
        > 0));
    for i in 0..10 {
        let with_c = i % 2 == 0;
        let list = if with_c {
            vec![a.addr, b.addr, c.addr]
        } else {
            vec![a.addr, b.addr]
        };
        let plan = p.handles.live.reload(proxy::config(&list, opts())?)?;
        if with_c {
            assert_eq!(plan.added.len(), 1, "{plan:?}");
            let from = nc.load(Relaxed);
            assert!(
                util::wait_until(Duration::from_secs(1), || nc.load(Relaxed) > from),
                "an added backend takes traffic within 1 s"
            );
        } else {
            assert_eq!(plan.removed.len(), 1, "{plan:?}");
            // Requests already sent to c may finish; then nothing new.
            std::thread::sleep(Duration::from_millis(100));
            let frozen = nc.load(Relaxed);
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                nc.load(Relaxed),
                frozen,
                "a removed backend takes no new request"
            );
        }
    }
    let sent = traffic.stop();
    assert!(sent > 100, "traffic flowed: {sent}");
    assert!(na.load(Relaxed) > 0 && nb.load(Relaxed) > 0);
    let stats = &p.handles.shared.stats;
    assert_eq!(stats.status_5xx.load(Relaxed), 0, "no request failed");
    assert_eq!(stats.status_4xx.load(Relaxed), 0);
    assert_eq!(p.handles.live.generation(), 10);
    assert_eq!(p.handles.live.reloads.load(Relaxed), 10);
    // The kept backends' counters carried over every reload.
    let current = p.handles.live.current();
    let served: u64 = current
        .metrics
        .snapshot()
        .iter()
        .take(2)
        .map(|s| s.requests())
        .sum();
    assert_eq!(served, na.load(Relaxed) + nb.load(Relaxed));
    Ok(())
}

#[test]
fn a_removed_backend_finishes_its_requests_in_flight() -> TestResult {
    let slow = Scripted::start(|_| {
        std::thread::sleep(Duration::from_millis(500));
        Reply::Send(b"HTTP/1.1 200 OK\r\nX-Backend: slow\r\nContent-Length: 2\r\n\r\nok".to_vec())
    })?;
    let (fast, _) = counting("fast")?;
    let p = proxy::start(&[slow.addr], opts())?;
    let addr = p.addr;
    let t0 = Instant::now();
    let pending = std::thread::spawn(move || util::client::Client::connect(addr)?.get("/"));
    std::thread::sleep(Duration::from_millis(150));
    p.handles
        .live
        .reload(proxy::config(&[fast.addr], opts())?)?;
    let r = pending.join().map_err(|_| "client thread panicked")??;
    assert_eq!((r.status, r.header("x-backend")), (200, Some("slow")));
    assert!(t0.elapsed() >= Duration::from_millis(450));
    let r = p.client()?.get("/")?;
    assert_eq!(r.header("x-backend"), Some("fast"));
    Ok(())
}

#[test]
fn what_needs_a_restart_is_left_and_a_bad_config_changes_nothing() -> TestResult {
    let (a, _) = counting("a")?;
    let p = proxy::start(&[a.addr], opts())?;
    let mut cfg = proxy::config(&[a.addr], opts())?;
    cfg.server.workers = 1;
    let plan = p.handles.live.reload(cfg)?;
    assert_eq!(plan.needs_restart, vec!["workers"]);
    assert_eq!(p.handles.live.config().server.workers, 2);
    let bad = proxy::config(&[], opts())?;
    assert!(p.handles.live.reload(bad).is_err());
    assert_eq!(p.handles.live.reload_failures.load(Relaxed), 1);
    assert_eq!(p.handles.live.generation(), 1);
    assert_eq!(p.client()?.get("/")?.status, 200);
    Ok(())
}

#[test]
fn the_policy_keeps_what_it_learned_about_backends_that_stay() -> TestResult {
    let (a, _) = counting("a")?;
    let (b, _) = counting("b")?;
    let (c, _) = counting("c")?;
    let o = Opts {
        policy: tidegate::balance::Policy::Ewma { alpha: 0.2 },
        ..opts()
    };
    let p = proxy::start(&[a.addr, b.addr], o.clone())?;
    let mut client = p.client()?;
    for _ in 0..20 {
        assert_eq!(client.get("/")?.status, 200);
    }
    let before = p.handles.live.current().selector.estimates();
    assert!(before.iter().all(Option::is_some), "{before:?}");
    // c comes first in the new list: kept backends move to new indices.
    p.handles
        .live
        .reload(proxy::config(&[c.addr, b.addr, a.addr], o)?)?;
    let after = p.handles.live.current().selector.estimates();
    assert_eq!(after, vec![None, before[1], before[0]]);
    Ok(())
}
