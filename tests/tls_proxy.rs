//! HTTPS listeners, in process, with rustls clients: SNI selection, bad
//! input counted by reason without disturbing other connections, the
//! handshake timeout, keep-alive and pipelining, and the plaintext
//! listener beside them.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use util::proxy::{self, Opts, TestProxy};
use util::scripted::{Reply, Scripted};
use util::tls::{self, Pki};
use util::{TestResult, wait_until};

/// Handshake failures counted under `reason`.
fn errors(p: &TestProxy, reason: &str) -> u64 {
    p.handshakes_failed(reason)
}

trait TlsCounters {
    fn handshakes_failed(&self, reason: &str) -> u64;
    fn handshakes(&self, version: &str) -> u64;
}

impl TlsCounters for TestProxy {
    fn handshakes_failed(&self, reason: &str) -> u64 {
        let s = &self.handles.shared.stats.tls;
        s.errors().find(|(r, _)| *r == reason).map_or(0, |(_, n)| n)
    }
    fn handshakes(&self, version: &str) -> u64 {
        let s = &self.handles.shared.stats.tls;
        s.handshakes()
            .find(|(v, _)| *v == version)
            .map_or(0, |(_, n)| n)
    }
}

/// A proxy with one HTTPS listener carrying `specs`, in front of `backend`.
fn https_proxy(
    backend: std::net::SocketAddr,
    opts: Opts,
    specs: &[tidegate::tls::certs::CertSpec],
) -> std::io::Result<TestProxy> {
    let mut cfg = proxy::config(&[backend], opts)?;
    tls::add_https(&mut cfg, specs);
    proxy::start_config(cfg)
}

#[test]
fn sni_selects_exact_wildcard_and_default_certificates() -> TestResult {
    let pki = Pki::new("sni");
    let (exact, exact_der) = pki.cert("exact", &["api.example.test"]);
    let (wild, wild_der) = pki.cert("wild", &["*.example.test"]);
    let (mut dflt, dflt_der) = pki.cert("default", &["fallback.test"]);
    dflt.default = Some(true);
    let b = proxy::backend("0", "a")?;
    let p = https_proxy(b.local_addr(), Opts::default(), &[exact, wild, dflt])?;
    let https = p.listeners[0];
    let roots = [&exact_der, &wild_der, &dflt_der];
    let cfg = tls::client_config(&roots);

    let mut c = tls::connect(https, &cfg, "api.example.test")?;
    assert_eq!(tls::served(&c).as_ref(), Some(&exact_der));
    assert_eq!(c.get("/")?.status, 200);

    let c = tls::connect(https, &cfg, "www.example.test")?;
    assert_eq!(tls::served(&c).as_ref(), Some(&wild_der));

    // No SNI: the default certificate (verified against its own name).
    let no_sni = tls::client_config_no_sni(&roots);
    let mut c = tls::connect(https, &no_sni, "fallback.test")?;
    assert_eq!(tls::served(&c).as_ref(), Some(&dflt_der));
    assert_eq!(c.get("/")?.status, 200);

    // An unknown name gets the default certificate too (and the client,
    // checking the name it asked for, refuses it).
    let e = tls::connect(https, &cfg, "other.test").err();
    assert!(
        e.is_some(),
        "the default certificate does not cover other.test"
    );
    assert!(p.handshakes("TLSv1.3") >= 3);
    Ok(())
}

#[test]
fn unknown_sni_without_a_default_is_refused_and_counted() -> TestResult {
    let pki = Pki::new("nodefault");
    let (a, a_der) = pki.cert("a", &["a.test"]);
    let (b_spec, b_der) = pki.cert("b", &["b.test"]);
    let b = proxy::backend("0", "a")?;
    let p = https_proxy(b.local_addr(), Opts::default(), &[a, b_spec])?;
    let cfg = tls::client_config(&[&a_der, &b_der]);
    // A connection that works, open across the failures.
    let mut good = tls::connect(p.listeners[0], &cfg, "b.test")?;
    assert_eq!(good.get("/")?.status, 200);

    let e = tls::connect(p.listeners[0], &cfg, "c.test").err();
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("AccessDenied"),
        "an access_denied alert: {msg}"
    );
    let no_sni = tls::client_config_no_sni(&[&a_der]);
    assert!(tls::connect(p.listeners[0], &no_sni, "a.test").is_err());
    assert!(wait_until(Duration::from_secs(5), || errors(
        &p,
        "unknown_sni"
    ) == 2));
    assert_eq!(
        good.get("/")?.status,
        200,
        "the other connection is untouched"
    );
    Ok(())
}

#[test]
fn plaintext_to_the_tls_port_gets_an_alert_and_is_counted() -> TestResult {
    let pki = Pki::new("plain");
    let (a, a_der) = pki.cert("a", &["a.test"]);
    let b = proxy::backend("0", "a")?;
    let p = https_proxy(b.local_addr(), Opts::default(), &[a])?;
    let cfg = tls::client_config(&[&a_der]);
    let mut good = tls::connect(p.listeners[0], &cfg, "a.test")?;

    let mut s = TcpStream::connect(p.listeners[0])?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")?;
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    // A TLS alert record (type 21), then the close.
    assert_eq!(back.first(), Some(&21), "{back:?}");
    assert!(wait_until(Duration::from_secs(5), || errors(&p, "not_tls") == 1));
    // Garbage that looks like a handshake record: a bad ClientHello.
    let mut s = TcpStream::connect(p.listeners[0])?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&[22, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0])?;
    let _ = s.read_to_end(&mut back);
    assert!(wait_until(Duration::from_secs(5), || {
        errors(&p, "bad_handshake") + errors(&p, "not_tls") == 2
    }));
    assert_eq!(good.get("/")?.status, 200);
    Ok(())
}

#[test]
fn a_stalled_handshake_hits_the_header_timeout() -> TestResult {
    let pki = Pki::new("stall");
    let (a, a_der) = pki.cert("a", &["a.test"]);
    let b = proxy::backend("0", "a")?;
    let opts = Opts {
        timeouts: tidegate::config::Timeouts {
            header: Duration::from_secs(1),
            ..Opts::default().timeouts
        },
        ..Opts::default()
    };
    let p = https_proxy(b.local_addr(), opts, &[a])?;
    // Half a ClientHello, then nothing.
    let mut s = TcpStream::connect(p.listeners[0])?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&[22, 3, 1, 0, 200, 1, 0])?;
    let silent = TcpStream::connect(p.listeners[0])?;
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let took = started.elapsed();
    assert_eq!(n, 0, "closed without an answer");
    assert!(took >= Duration::from_millis(800), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(wait_until(Duration::from_secs(5), || errors(&p, "timeout") == 2));
    drop(silent);
    // The listener still works.
    let cfg = tls::client_config(&[&a_der]);
    assert_eq!(
        tls::connect(p.listeners[0], &cfg, "a.test")?
            .get("/")?
            .status,
        200
    );
    Ok(())
}

#[test]
fn keep_alive_and_pipelining_over_tls_with_forwarded_proto() -> TestResult {
    let pki = Pki::new("ka");
    let (a, a_der) = pki.cert("a", &["a.test"]);
    let backend = Scripted::start(|seen| {
        let proto = util::scripted::header(&seen.head.to_ascii_lowercase(), "x-forwarded-proto")
            .unwrap_or("none")
            .to_string();
        Reply::Send(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{proto}",
                proto.len()
            )
            .into_bytes(),
        )
    })?;
    let p = https_proxy(backend.addr, Opts::default(), &[a])?;
    let cfg = tls::client_config(&[&a_der]);
    let mut c = tls::connect(p.listeners[0], &cfg, "a.test")?;
    for _ in 0..20 {
        let r = c.get("/")?;
        assert_eq!(r.body_str(), "https");
    }
    // Ten pipelined requests in one write.
    let one = b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n";
    c.send(&one.repeat(10))?;
    for _ in 0..10 {
        assert_eq!(c.response(false)?.body_str(), "https");
    }
    // The plaintext listener of the same process says http.
    let mut plain = p.client()?;
    assert_eq!(plain.get("/")?.body_str(), "http");
    assert_eq!(p.handshakes("TLSv1.3"), 1, "one handshake for 31 requests");
    // A clean close: close_notify, then EOF.
    c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")?;
    assert_eq!(c.response(false)?.status, 200);
    // rustls reports a close without close_notify as an error here.
    let rest = c.read_to_end()?;
    assert!(rest.is_empty());
    Ok(())
}

#[test]
fn tls12_is_spoken_too_and_counted_by_version() -> TestResult {
    let pki = Pki::new("v12");
    let (a, a_der) = pki.cert("a", &["a.test"]);
    let b = proxy::backend("0", "a")?;
    let p = https_proxy(b.local_addr(), Opts::default(), &[a])?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(a_der)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(tidegate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut c = tls::connect(p.listeners[0], &std::sync::Arc::new(cfg), "a.test")?;
    assert_eq!(c.get("/")?.status, 200);
    assert_eq!(p.handshakes("TLSv1.2"), 1);
    assert_eq!(p.handles.shared.stats.tls.handshakes[1].load(Relaxed), 0);
    Ok(())
}
