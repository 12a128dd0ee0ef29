//! Backends given as host names (issue 9 §5), over real sockets: a name
//! becomes one backend per address (`localhost`, from /etc/hosts), and the
//! resolver thread, driven by a scripted resolve function, adds a new
//! address, keeps the last good set when resolution fails, and drains an
//! address that disappears, with no request failing.

mod util;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tidegate::config::{BackendAddr, expand, resolve_all, resolve_backends};
use tidegate::proxy::resolver;
use util::admin::Traffic;
use util::proxy::{self, Opts};
use util::scripted::Scripted;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Interval of the resolver in these tests: short, so a change shows
/// within a few hundred milliseconds.
const INTERVAL: Duration = Duration::from_millis(100);

fn counting(bind: SocketAddr, name: &'static str) -> io::Result<(Scripted, Arc<AtomicU64>)> {
    Scripted::counting(bind, name)
}

fn opts() -> Opts {
    Opts {
        workers: 2,
        ..Opts::default()
    }
}

#[test]
fn a_localhost_backend_is_one_backend_per_address_and_serves() -> TestResult {
    // 127.0.0.1:P first; then every other address localhost resolves to
    // (::1 where /etc/hosts lists it) on the same port, where it binds.
    let (v4, n4) = counting(SocketAddr::from(([127, 0, 0, 1], 0)), "v4")?;
    let port = v4.addr.port();
    let name = format!("localhost:{port}");
    let (addrs, host) = resolve_all("--backend", &name)?;
    assert_eq!(host.as_deref(), Some(name.as_str()));
    let mut others = Vec::new();
    for &a in addrs.iter().filter(|&&a| a != v4.addr) {
        if let Ok(b) = counting(a, "other") {
            others.push(b);
        }
    }
    let mut cfg = proxy::config(&[], opts())?;
    cfg.backends = resolve_backends(std::slice::from_ref(&name))?;
    cfg.resolve_interval = INTERVAL;
    assert_eq!(cfg.backends.len(), addrs.len());
    for b in &cfg.backends {
        assert_eq!(b.host.as_deref(), Some(name.as_str()));
        let expected = if addrs.len() == 1 {
            name.clone()
        } else {
            format!("{name}@{}", b.addr)
        };
        assert_eq!(b.name, expected);
    }
    let p = proxy::start_config(cfg)?;
    let mut c = p.client()?;
    for _ in 0..20 {
        assert_eq!(c.get("/")?.status, 200);
    }
    assert!(n4.load(Relaxed) > 0, "127.0.0.1 served");
    for (_, n) in &others {
        assert!(n.load(Relaxed) > 0, "every bound address served");
    }
    // The resolver runs (the name has a host) and finds the same set: no
    // reload happens.
    std::thread::sleep(INTERVAL * 5);
    assert_eq!(p.handles.live.generation(), 0);
    assert_eq!(p.stat(|s| &s.status_5xx), 0);
    Ok(())
}

/// The scripted resolver's phases: [a], [a, b], an error, [b].
fn script(a: SocketAddr, b: SocketAddr, phase: usize) -> io::Result<Vec<SocketAddr>> {
    match phase {
        0 => Ok(vec![a]),
        1 => Ok(vec![b, a]),
        2 => Err(io::Error::other("scripted SERVFAIL")),
        _ => Ok(vec![b]),
    }
}

fn names(p: &proxy::TestProxy) -> Vec<String> {
    (p.handles.live.config().backends.iter())
        .map(|b| b.name.clone())
        .collect()
}

#[test]
fn the_resolver_adds_keeps_on_failure_and_drains() -> TestResult {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let (a, na) = counting(local, "a")?;
    let (b, nb) = counting(local, "b")?;
    let host = "svc.test:80";
    // Started without a host (so no system resolver), then tagged with one
    // by a reload that keeps the same address.
    let mut cfg = proxy::config(&[], opts())?;
    cfg.backends = vec![BackendAddr::new("svc", a.addr)];
    cfg.resolve_interval = INTERVAL;
    let p = proxy::start_config(cfg.clone())?;
    cfg.backends = expand("svc", Some(host), &[a.addr], 1, false);
    let plan = p.handles.live.reload(cfg)?;
    assert_eq!(plan.map, vec![Some(0)]);

    let phase = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (phase2, calls2, (aa, ba)) = (Arc::clone(&phase), Arc::clone(&calls), (a.addr, b.addr));
    let resolver = resolver::spawn_with(
        &p.handles.live,
        Box::new(move |name: &str| {
            if name != host {
                return Err(io::Error::other(format!("unexpected name {name}")));
            }
            let r = script(aa, ba, phase2.load(Relaxed));
            calls2.fetch_add(1, Relaxed);
            r
        }),
    )?;
    let traffic = Traffic::start(p.addr, 4, Duration::from_secs(20));
    let rounds = |n: usize| {
        let from = calls.load(Relaxed);
        util::wait_until(Duration::from_secs(3), || calls.load(Relaxed) >= from + n)
    };

    // [a]: nothing changes.
    assert!(rounds(3));
    assert_eq!(p.handles.live.generation(), 1);
    assert!(na.load(Relaxed) > 0 && nb.load(Relaxed) == 0);

    // [a, b]: b takes traffic within 1 s of the next round.
    phase.store(1, Relaxed);
    assert!(
        util::wait_until(Duration::from_secs(2), || nb.load(Relaxed) > 0),
        "a new address takes traffic"
    );
    let mut both = vec![format!("svc@{}", a.addr), format!("svc@{}", b.addr)];
    both.sort();
    let mut sorted = names(&p);
    sorted.sort();
    assert_eq!(sorted, both);
    let generation = p.handles.live.generation();
    assert_eq!(generation, 2);

    // An error: the last good set stays, and both keep serving.
    phase.store(2, Relaxed);
    assert!(rounds(3));
    let (from_a, from_b) = (na.load(Relaxed), nb.load(Relaxed));
    assert!(rounds(2));
    assert_eq!(p.handles.live.generation(), generation);
    let mut sorted = names(&p);
    sorted.sort();
    assert_eq!(sorted, both);
    assert!(na.load(Relaxed) > from_a && nb.load(Relaxed) > from_b);

    // [b]: a is drained: in-flight requests finish, then nothing new.
    phase.store(3, Relaxed);
    assert!(util::wait_until(Duration::from_secs(2), || names(&p)
        == vec!["svc".to_string()]));
    assert_eq!(p.handles.live.config().backends[0].addr, b.addr);
    std::thread::sleep(Duration::from_millis(100));
    let frozen = na.load(Relaxed);
    let from_b = nb.load(Relaxed);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        na.load(Relaxed),
        frozen,
        "a vanished address takes no new request"
    );
    assert!(nb.load(Relaxed) > from_b);

    let sent = traffic.stop();
    assert!(sent > 100, "traffic flowed: {sent}");
    assert_eq!(p.stat(|s| &s.status_5xx), 0, "no request failed");
    assert_eq!(p.stat(|s| &s.status_4xx), 0);
    assert_eq!(p.handles.live.reload_failures.load(Relaxed), 0);

    // The thread holds only a Weak: it ends once the proxy is gone.
    drop(p);
    assert!(
        util::wait_until(Duration::from_secs(2), || resolver.is_finished()),
        "the resolver thread ends with the proxy"
    );
    Ok(())
}
