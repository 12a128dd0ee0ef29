//! The admin API over real sockets: listing backends, draining one under
//! traffic (no new request reaches it, its requests in flight finish, its
//! pooled connections close), enabling it again, `/readyz`, the bearer
//! token and the loopback rule, `/api/reload` sharing SIGHUP's path, and
//! the 404/405 answers.

mod util;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::{Duration, Instant};

use util::admin::{self, AdminProxy, Traffic};
use util::client::Response;
use util::json::{self, Json};
use util::proxy::Opts;
use util::scripted::{Reply, Scripted};
use util::{Proc, TestResult, run_bin, wait_until};

/// What every scripted backend answers.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// The slow backend's service time: long enough that requests are
/// certainly in flight when the drain comes.
const SLOW: Duration = Duration::from_millis(300);

/// A backend answering after `delay`, on keep-alive connections.
fn backend(delay: Duration) -> std::io::Result<Scripted> {
    Scripted::start(move |_| {
        thread::sleep(delay);
        Reply::Send(OK.to_vec())
    })
}

/// Requests the backend received since last asked.
fn received(b: &Scripted) -> usize {
    b.seen.try_iter().count()
}

fn json_of(r: &Response) -> Result<Json, Box<dyn std::error::Error>> {
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{}",
        r.head
    );
    Ok(json::parse(&r.body_str())?)
}

/// The object of backend `name` in `GET /api/backends`.
fn listed(p: &AdminProxy, name: &str) -> Result<Json, Box<dyn std::error::Error>> {
    let list = json_of(&p.get("/api/backends")?)?;
    list.arr()
        .iter()
        .find(|b| b.get("name").str() == Some(name))
        .cloned()
        .ok_or_else(|| format!("{name} not listed").into())
}

fn post(p: &AdminProxy, path: &str) -> std::io::Result<Response> {
    p.call("POST", path, "")
}

#[test]
fn backends_are_listed_with_address_weight_state_in_flight_and_health() -> TestResult {
    let (a, b) = (backend(Duration::ZERO)?, backend(Duration::ZERO)?);
    let p = admin::start(&[("alpha", a.addr), ("beta", b.addr)], Opts::default())?;
    let r = p.get("/api/backends")?;
    assert_eq!(r.status, 200);
    let list = json_of(&r)?;
    assert_eq!(list.arr().len(), 2, "{list:?}");
    for (item, (name, addr)) in list.arr().iter().zip([("alpha", a.addr), ("beta", b.addr)]) {
        assert_eq!(
            item.keys(),
            [
                "name",
                "address",
                "weight",
                "backup",
                "state",
                "in_flight",
                "health"
            ]
        );
        assert_eq!(item.get("name").str(), Some(name));
        assert_eq!(item.get("address").str(), Some(addr.to_string().as_str()));
        assert_eq!(item.get("weight").num(), Some(1.0));
        assert_eq!(item.get("state").str(), Some("up"));
        assert_eq!(item.get("in_flight").num(), Some(0.0));
        // No --health-check: no verdict.
        assert_eq!(item.get("health"), &Json::Null);
    }
    // HEAD: the head only.
    let head = p.call("HEAD", "/api/backends", "")?;
    assert_eq!((head.status, head.body.len()), (200, 0));
    Ok(())
}

#[test]
fn a_drained_backend_takes_no_new_request_finishes_its_own_and_closes_its_pool() -> TestResult {
    let slow = backend(SLOW)?;
    let fast = backend(Duration::ZERO)?;
    let opts = Opts {
        workers: 2,
        ..Opts::default()
    };
    let p = admin::start(&[("slow", slow.addr), ("fast", fast.addr)], opts)?;
    let traffic = Traffic::start(p.addr, 6, Duration::from_secs(60));
    // Under way: the slow backend holds requests and pooled connections.
    assert!(
        wait_until(Duration::from_secs(10), || slow.open.load(Relaxed) >= 2
            && listed(&p, "slow")
                .is_ok_and(|b| b.get("in_flight").num() >= Some(2.0))),
        "the slow backend never had requests in flight"
    );
    let open_before = slow.open.load(Relaxed);
    assert!(
        open_before >= 2,
        "{open_before} connections to the slow backend"
    );

    let _ = received(&slow);
    let r = post(&p, "/api/backends/slow/drain")?;
    let drained_at = Instant::now();
    assert_eq!(r.status, 200, "{}", r.body_str());
    let obj = json_of(&r)?;
    assert_eq!(obj.get("state").str(), Some("drained"));
    let in_flight = obj.get("in_flight").num().unwrap_or_default();
    assert!(in_flight >= 1.0, "nothing in flight at the drain: {obj:?}");

    // A request chosen just before the drain may still be connecting for
    // a moment; after that, nothing new reaches the drained backend.
    thread::sleep(Duration::from_millis(100));
    // Arrived since just before the drain: requests chosen before it.
    let before = received(&slow);
    let fast_before = received(&fast);
    thread::sleep(Duration::from_millis(1500));
    let after = received(&slow);
    let fast_after = received(&fast);
    assert_eq!(
        after,
        0,
        "{after} new requests reached the drained backend (drained {:?} ago, {before} arrived in the first 100 ms)",
        drained_at.elapsed()
    );
    assert!(fast_after > 50, "traffic went on elsewhere: {fast_after}");
    eprintln!(
        "drain: {in_flight} in flight at the drain, {before} arrived during the drain or within 100 ms of it, 0 after; fast got {fast_before} + {fast_after}"
    );
    // Its requests in flight finished normally; its connections closed.
    let state = listed(&p, "slow")?;
    assert_eq!(state.get("in_flight").num(), Some(0.0), "{state:?}");
    assert!(
        wait_until(Duration::from_secs(3), || slow.open.load(Relaxed) == 0),
        "{} connections to the drained backend still open (were {open_before})",
        slow.open.load(Relaxed)
    );
    assert_eq!(traffic.failed.load(Relaxed), 0, "a request failed");

    // Shown in /stats and /metrics; /readyz still ready (fast is up).
    let stats = json::parse(&p.body("/stats")?)?;
    let s0 = stats
        .get("backends")
        .arr()
        .first()
        .cloned()
        .unwrap_or(Json::Null);
    assert_eq!(s0.get("drained"), &Json::Bool(true));
    assert_eq!(s0.get("state").str(), Some("drained"));
    let metrics = p.body("/metrics")?;
    assert!(metrics.contains("tidegate_backend_drained{backend=\"slow\"} 1\n"));
    assert!(metrics.contains("tidegate_backend_drained{backend=\"fast\"} 0\n"));
    assert_eq!(p.get("/readyz")?.status, 200);

    // Enable: traffic comes back.
    let r = post(&p, "/api/backends/slow/enable")?;
    assert_eq!(r.status, 200);
    assert_eq!(json_of(&r)?.get("state").str(), Some("up"));
    let mut back = 0;
    assert!(
        wait_until(Duration::from_secs(3), || {
            back += received(&slow);
            back >= 3
        }),
        "the enabled backend got only {back} requests"
    );
    let sent = traffic.stop();
    assert_eq!(traffic_failed(&p), 0);
    eprintln!("drain: {sent} requests answered, none failed");
    Ok(())
}

#[test]
fn idle_pooled_connections_close_when_their_backend_is_drained() -> TestResult {
    let (a, b) = (backend(Duration::ZERO)?, backend(Duration::ZERO)?);
    let opts = Opts {
        workers: 2,
        ..Opts::default()
    };
    let p = admin::start(&[("a", a.addr), ("b", b.addr)], opts)?;
    // Requests on two client connections leave pooled connections to both
    // backends; then nothing: only the workers' housekeeping can act.
    for _ in 0..2 {
        let mut c = util::client::Client::connect(p.addr)?;
        for _ in 0..4 {
            assert_eq!(c.get("/")?.status, 200);
        }
    }
    assert!(wait_until(Duration::from_secs(2), || a.open.load(Relaxed) >= 1));
    let pooled = (a.open.load(Relaxed), b.open.load(Relaxed));
    assert_eq!(post(&p, "/api/backends/a/drain")?.status, 200);
    let started = Instant::now();
    assert!(
        wait_until(Duration::from_secs(3), || a.open.load(Relaxed) == 0),
        "{} idle connections to the drained backend still open",
        a.open.load(Relaxed)
    );
    let took = started.elapsed();
    // The other backend's pool is untouched.
    assert_eq!(b.open.load(Relaxed), pooled.1);
    eprintln!(
        "idle pool: {} connections closed {took:?} after the drain",
        pooled.0
    );
    Ok(())
}

/// Requests the proxy answered with an error of its own or a backend's.
fn traffic_failed(p: &AdminProxy) -> u64 {
    let s = &p.handles.shared.stats;
    s.status_5xx.load(Relaxed) + s.status_4xx.load(Relaxed)
}

#[test]
fn readyz_is_503_while_every_backend_is_drained() -> TestResult {
    let (a, b) = (backend(Duration::ZERO)?, backend(Duration::ZERO)?);
    let p = admin::start(&[("a", a.addr), ("b", b.addr)], Opts::default())?;
    assert_eq!(p.get("/readyz")?.status, 200);
    assert_eq!(post(&p, "/api/backends/a/drain")?.status, 200);
    assert_eq!(p.get("/readyz")?.status, 200, "b is still up");
    // By address, percent-encoded.
    let by_addr = format!("/api/backends/{}/drain", b.addr).replace(':', "%3A");
    let r = post(&p, &by_addr)?;
    assert_eq!(json_of(&r)?.get("name").str(), Some("b"));
    let r = p.get("/readyz")?;
    assert_eq!(r.status, 503);
    assert!(
        r.body_str().contains("a drained, b drained"),
        "{}",
        r.body_str()
    );
    // Liveness is not readiness.
    assert_eq!(p.get("/healthz")?.status, 200);
    // A request now gets the proxy's own 503, and neither backend sees it.
    let resp = util::client::Client::connect(p.addr)?.get("/")?;
    assert_eq!(resp.status, 503);
    assert_eq!(received(&a) + received(&b), 0);
    assert_eq!(
        post(&p, &format!("/api/backends/{}/enable", b.addr))?.status,
        200
    );
    assert_eq!(p.get("/readyz")?.status, 200);
    assert_eq!(util::client::Client::connect(p.addr)?.get("/")?.status, 200);
    Ok(())
}

#[test]
fn unknown_backends_are_404_and_wrong_methods_405() -> TestResult {
    let a = backend(Duration::ZERO)?;
    let p = admin::start(&[("a", a.addr)], Opts::default())?;
    let r = post(&p, "/api/backends/nosuch/drain")?;
    assert_eq!(r.status, 404);
    let err = json_of(&r)?;
    assert!(
        err.get("error").str().is_some_and(|e| e.contains("nosuch")),
        "{err:?}"
    );
    assert_eq!(post(&p, "/api/backends/a/restart")?.status, 404);
    for (method, path, allow) in [
        ("GET", "/api/backends/a/drain", "POST"),
        ("PUT", "/api/backends/a/enable", "POST"),
        ("DELETE", "/api/reload", "POST"),
        ("GET", "/api/reload", "POST"),
        ("POST", "/api/backends", "GET, HEAD"),
        ("POST", "/readyz", "GET, HEAD"),
    ] {
        let r = p.call(method, path, "")?;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
    // Nothing changed.
    assert_eq!(listed(&p, "a")?.get("state").str(), Some("up"));
    // A body on a POST is ignored, and the answer still arrives whole.
    let r = p.call(
        "POST",
        "/api/backends/a/drain",
        "Content-Length: 5\r\n\r\nhello",
    )?;
    assert_eq!(r.status, 200);
    Ok(())
}

#[test]
fn api_reload_runs_the_reload_hook_and_is_501_without_one() -> TestResult {
    let a = backend(Duration::ZERO)?;
    let p = admin::start(&[("a", a.addr)], Opts::default())?;
    let r = post(&p, "/api/reload")?;
    assert_eq!(r.status, 501);
    let err = json_of(&r)?;
    assert!(
        err.get("error")
            .str()
            .is_some_and(|e| e.contains("not supported")),
        "{err:?}"
    );
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    p.reloader
        .set(Arc::new(move || match seen.fetch_add(1, Relaxed) {
            0 => Ok("generation 2: 1 backend added".into()),
            _ => Err("line 4, column 1: unknown key `bakend`".into()),
        }));
    let r = post(&p, "/api/reload")?;
    assert_eq!(r.status, 200);
    let ok = json_of(&r)?;
    assert_eq!(ok.get("reloaded"), &Json::Bool(true));
    assert_eq!(
        ok.get("summary").str(),
        Some("generation 2: 1 backend added")
    );
    let r = post(&p, "/api/reload")?;
    assert_eq!(r.status, 500);
    let failed = json_of(&r)?;
    assert_eq!(failed.get("reloaded"), &Json::Bool(false));
    assert!(
        failed
            .get("error")
            .str()
            .is_some_and(|e| e.contains("unknown key `bakend`")),
        "{failed:?}"
    );
    assert_eq!(calls.load(Relaxed), 2);
    Ok(())
}

#[test]
fn with_a_token_every_request_but_the_probes_needs_the_right_bearer() -> TestResult {
    let a = backend(Duration::ZERO)?;
    let opts = Opts {
        admin_token: Some("s3cret-Token".into()),
        ..Opts::default()
    };
    let p = admin::start(&[("a", a.addr)], opts)?;
    for (path, method) in [
        ("/api/backends", "GET"),
        ("/metrics", "GET"),
        ("/api/backends/a/drain", "POST"),
        ("/nosuch", "GET"),
    ] {
        for auth in [
            "",
            "Authorization: Bearer wrong\r\n",
            "Authorization: Bearer s3cret-Token-and-more\r\n",
            "Authorization: Bearer s3cret-Toke\r\n",
            "Authorization: Basic czNjcmV0LVRva2Vu\r\n",
            "Authorization: s3cret-Token\r\n",
        ] {
            let r = p.call(method, path, auth)?;
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}");
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer"))
            );
        }
    }
    assert_eq!(listed_with_token(&p)?, "up", "the drain was refused");
    let good = "Authorization: Bearer s3cret-Token\r\n";
    assert_eq!(p.call("GET", "/api/backends", good)?.status, 200);
    assert_eq!(p.call("GET", "/healthz", good)?.status, 200);
    // Kubernetes probes carry no token: liveness and readiness stay open.
    assert_eq!(p.call("GET", "/healthz", "")?.status, 200);
    assert_eq!(p.call("GET", "/readyz", "")?.status, 200);
    // The scheme is case-insensitive.
    let r = p.call(
        "POST",
        "/api/backends/a/drain",
        "authorization: bearer s3cret-Token\r\n",
    )?;
    assert_eq!(r.status, 200);
    assert_eq!(listed_with_token(&p)?, "drained");
    Ok(())
}

fn listed_with_token(p: &AdminProxy) -> Result<String, Box<dyn std::error::Error>> {
    let r = p.call(
        "GET",
        "/api/backends",
        "Authorization: Bearer s3cret-Token\r\n",
    )?;
    let list = json_of(&r)?;
    Ok(list
        .arr()
        .first()
        .and_then(|b| b.get("state").str())
        .unwrap_or_default()
        .to_string())
}

/// A free loopback port (closed again; the proxy binds it next).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[test]
fn off_loopback_the_admin_endpoint_needs_a_token() -> TestResult {
    // Refused before anything is bound: one line, exit 1.
    for admin in ["0.0.0.0:0", "[::]:0"] {
        let (code, stderr) = run_bin(&[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:9",
            "--admin",
            admin,
        ])?;
        assert_eq!(code, Some(1), "{admin}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("--admin-token"), "{stderr}");
    }
    // A token that cannot travel in a header is refused, and not echoed.
    let (code, stderr) = run_bin(&[
        "proxy",
        "--backend",
        "127.0.0.1:9",
        "--admin",
        "127.0.0.1:0",
        "--admin-token",
        "has space",
    ])?;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("has space"), "{stderr}");
    // With a token it starts (a start-up check only: stopped at once).
    let mut p = Proc::spawn(
        "",
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:9",
            "--admin",
            "0.0.0.0:0",
            "--admin-token",
            "t0ken",
        ],
    )?;
    p.addr()?;
    assert!(
        p.drain_stderr()
            .iter()
            .any(|l| l.contains("bearer token required")),
        "{:?}",
        p.stderr
    );
    p.signal("TERM")?;
    let (code, _, _) = p.wait()?;
    assert_eq!(code, Some(0));
    Ok(())
}

#[test]
fn sighup_and_api_reload_take_the_same_path() -> TestResult {
    let a = backend(Duration::ZERO)?;
    let port = free_port()?;
    let admin = SocketAddr::from(([127, 0, 0, 1], port));
    let mut p = Proc::spawn(
        "",
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--backend",
            &a.addr.to_string(),
            "--admin",
            &admin.to_string(),
        ],
    )?;
    let proxy = p.addr()?;
    p.signal("HUP")?;
    let r = util::client::Client::connect(admin)?
        .exchange(b"POST /api/reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")?;
    assert_eq!(r.status, 501, "{}", r.body_str());
    let logged = |who: &str, p: &mut Proc| {
        p.drain_stderr()
            .iter()
            .any(|l| l.contains(&format!("{who}: configuration reload is not supported")))
    };
    assert!(
        wait_until(Duration::from_secs(5), || logged("SIGHUP", &mut p)
            && logged("POST /api/reload", &mut p)),
        "{:?}",
        p.stderr
    );
    // Still serving.
    assert_eq!(util::client::Client::connect(proxy)?.get("/")?.status, 200);
    p.signal("TERM")?;
    let (code, _, _) = p.wait()?;
    assert_eq!(code, Some(0));
    Ok(())
}

#[test]
fn the_dashboard_shows_a_drained_backend() -> TestResult {
    if !admin::external(
        "headless chromium",
        admin::have_chromium(),
        "apt-get install chromium",
    ) {
        return Ok(());
    }
    let (a, b) = (backend(Duration::ZERO)?, backend(Duration::ZERO)?);
    let p = admin::start(&[("alpha", a.addr), ("beta", b.addr)], Opts::default())?;
    assert_eq!(post(&p, "/api/backends/beta/drain")?.status, 200);
    let out = admin::headless(&format!("http://{}/", p.admin_addr), &["--dump-dom"])?;
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let table = admin::section(&dom, "backends", "table").ok_or("no #backends")?;
    assert!(
        table.contains("<tr data-backend=\"alpha\" data-state=\"up\">"),
        "{table}"
    );
    assert!(
        table.contains("<tr data-backend=\"beta\" data-state=\"drained\" class=\"drained\">"),
        "{table}"
    );
    assert!(
        table.contains("class=\"pill st-drained\">drained<"),
        "{table}"
    );
    Ok(())
}
