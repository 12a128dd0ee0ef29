//! Passive health: a killed backend is ejected after consecutive failures
//! (so requests stop paying for connect attempts to it) and comes back
//! through a single probe once it is restarted.

mod util;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use tidegate::balance::Policy;
use tidegate::health;
use tidegate::tools::backend::{self, BackendConfig};
use util::TestResult;
use util::proxy::{self, Opts};

#[test]
fn a_killed_backend_is_ejected_and_a_restarted_one_comes_back() -> TestResult {
    let steady = proxy::backend("0", "steady")?;
    let flaky = proxy::backend("0", "flaky")?;
    let flaky_addr = flaky.local_addr();
    let opts = Opts {
        policy: Policy::RoundRobin,
        ..Opts::default()
    };
    let p = proxy::start(&[steady.local_addr(), flaky_addr], opts)?;
    let mut c = p.client()?;
    for _ in 0..4 {
        assert_eq!(c.get("/")?.status, 200);
    }
    drop(flaky); // killed: connects are now refused

    // Every request still succeeds (fail-over), and after EJECT_AFTER
    // refused connects the dead backend is no longer tried at all.
    for _ in 0..40 {
        let r = c.get("/")?;
        assert_eq!(r.status, 200, "{}", r.head);
    }
    let fails = p.stat(|s| &s.connect_failures);
    assert_eq!(
        fails,
        u64::from(health::EJECT_AFTER),
        "ejected after exactly that many failures"
    );
    assert!(p.handles.shared.ejector.is_ejected(1));
    for _ in 0..20 {
        assert_eq!(c.get("/")?.status, 200);
    }
    assert_eq!(
        p.stat(|s| &s.connect_failures),
        fails,
        "no attempts while ejected"
    );

    // Restart it on the same port; after the ejection expires one probe
    // brings it back into rotation.
    let mut cfg = BackendConfig::new(flaky_addr, "0".parse()?);
    cfg.name = "flaky".into();
    let flaky = backend::spawn(cfg)?;
    let deadline = Instant::now() + health::BASE + Duration::from_secs(5);
    while Instant::now() < deadline && flaky.stats().requests == 0 {
        assert_eq!(c.get("/")?.status, 200);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        flaky.stats().requests > 0,
        "the restarted backend got the probe"
    );
    assert!(!p.handles.shared.ejector.is_ejected(1));
    let before = flaky.stats().requests;
    for _ in 0..10 {
        assert_eq!(c.get("/")?.status, 200);
    }
    assert!(
        flaky.stats().requests >= before + 4,
        "back in round-robin rotation"
    );
    Ok(())
}

/// `--health-check`: a backend failing its checks is taken out after FALL
/// of them, before any client request has to fail on it (ejection is off
/// here), and put back after RISE good ones.
#[test]
fn active_checks_take_a_failing_backend_out_and_bring_it_back() -> TestResult {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use util::scripted::{Reply, Scripted};

    let healthy = Arc::new(AtomicBool::new(true));
    let flaky = {
        let healthy = Arc::clone(&healthy);
        Scripted::start(move |seen| {
            let ok = healthy.load(Relaxed) || !seen.head.starts_with("GET /healthz ");
            let status: &[u8] = if ok {
                b"200 OK"
            } else {
                b"503 Service Unavailable"
            };
            let mut r = b"HTTP/1.1 ".to_vec();
            r.extend_from_slice(status);
            r.extend_from_slice(b"\r\nContent-Length: 5\r\nX-Backend: flaky\r\n\r\nflaky");
            Reply::Send(r)
        })?
    };
    let steady = proxy::backend("0", "steady")?;
    let interval = Duration::from_millis(50);
    let opts = Opts {
        policy: Policy::RoundRobin,
        health_check: Some(("/healthz".into(), interval)),
        ..Opts::default()
    };
    let p = proxy::start(&[steady.local_addr(), flaky.addr], opts)?;
    let active = p
        .handles
        .shared
        .active
        .as_ref()
        .ok_or("health checks are on")?;
    let wait = |up: bool| util::wait_until(Duration::from_secs(5), || active.is_up(1) == up);

    healthy.store(false, Relaxed);
    assert!(
        wait(false),
        "marked down after {} failed checks",
        tidegate::health::active::FALL
    );
    // The verdict is visible in /metrics.
    let live = tidegate::server::LiveStats {
        accept: Default::default(),
        workers: Vec::new(),
    };
    let sources = tidegate::admin::Sources {
        config: Some(Arc::clone(&p.handles.live)),
        shared: Arc::clone(&p.handles.shared),
        live,
        csv: None,
    };
    let admin = tidegate::admin::start("127.0.0.1:0".parse()?, sources)?;
    let mut m = util::connect(admin.local_addr())?;
    m.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let mut text = String::new();
    m.read_to_string(&mut text)?;
    assert!(
        text.contains(&format!(
            "tidegate_backend_up{{backend=\"{}\"}} 0\n",
            flaky.addr
        )),
        "{text}"
    );
    admin.stop();
    let mut c = p.client()?;
    for _ in 0..10 {
        let r = c.get("/")?;
        assert_eq!(
            (r.status, r.header("x-backend")),
            (200, Some("steady")),
            "no traffic to a down backend"
        );
    }
    healthy.store(true, Relaxed);
    assert!(
        wait(true),
        "back up after {} good checks",
        tidegate::health::active::RISE
    );
    let flaky_answers = (0..10)
        .filter_map(|_| c.get("/").ok())
        .filter(|r| r.header("x-backend") == Some("flaky"))
        .count();
    assert!(
        flaky_answers >= 4,
        "back in rotation: {flaky_answers} of 10"
    );
    assert_eq!(p.stat(|s| &s.status_5xx), 0);
    Ok(())
}

/// Success-rate ejection over real sockets: a backend answering every
/// other request with 503 (never 5 in a row, so the consecutive rule never
/// fires, and without `--eject-5xx`) is ejected once it has 20 requests in
/// the window, and then gets no more than the single probe.
#[test]
fn a_backend_answering_half_503_is_ejected_by_success_rate() -> TestResult {
    let bad = proxy::failing("status:503:0.5", "bad")?;
    let ok1 = proxy::backend("0", "ok1")?;
    let ok2 = proxy::backend("0", "ok2")?;
    let opts = Opts {
        policy: Policy::RoundRobin,
        ..Opts::default()
    };
    let p = proxy::start(
        &[bad.local_addr(), ok1.local_addr(), ok2.local_addr()],
        opts,
    )?;
    let mut c = p.client()?;
    let mut errors = 0;
    // Round-robin: the bad backend's 20th request is about the 60th.
    for _ in 0..3 * health::SR_MIN_REQUESTS {
        if c.get("/")?.status == 503 {
            errors += 1;
        }
        if p.handles.shared.ejector.is_ejected(0) {
            break;
        }
    }
    assert!(p.handles.shared.ejector.is_ejected(0), "ejected");
    assert_eq!(bad.stats().requests, health::SR_MIN_REQUESTS);
    assert_eq!(errors, health::SR_MIN_REQUESTS / 2);
    // While out, at most the probe (if the ejection expired meanwhile).
    for _ in 0..20 {
        c.get("/")?;
    }
    assert!(bad.stats().requests <= health::SR_MIN_REQUESTS + 1);
    Ok(())
}
