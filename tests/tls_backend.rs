//! TLS to backends (`[[backend]] tls = true`): the proxy in front of a
//! small rustls HTTP/1.1 backend written here, with certificates from
//! rcgen (no key is committed): a valid CA, a wrong CA, a wrong server
//! name, `insecure_skip_verify`, keep-alive reuse of one pooled TLS
//! connection, a large request body and a large response through TLS, and
//! `check-config` on the new keys.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use tidegate::config::BackendAddr;
use tidegate::tls::backend::{BackendTls, BackendTlsSpec};
use util::proxy::{self, Opts, TestProxy};
use util::{TestResult, run_bin};

type Error = Box<dyn std::error::Error>;

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1.
struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn pki() -> Result<Pki, Error> {
    let ca = ca("tidegate test CA")?;
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(Pki {
        ca_pem: ca.pem(),
        cert: cert.der().clone(),
        key: key.serialize_der(),
    })
}

/// A file in the temp dir holding `text`.
fn temp_file(name: &str, text: &str) -> io::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("tidegate-tlsb-{}-{name}", std::process::id()));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// What the test backend saw.
#[derive(Default)]
struct Seen {
    /// TCP connections accepted.
    accepted: AtomicUsize,
    /// Handshakes completed.
    handshakes: AtomicUsize,
    /// Handshakes that failed.
    failed: AtomicUsize,
    /// SNI of the last handshake.
    sni: Mutex<Option<String>>,
}

/// A rustls HTTP/1.1 keep-alive backend on 127.0.0.1:0. Every response
/// body is `conn=C req=R alpn=A body=N`: which connection (1-based, in
/// accept order) and which request on it, the ALPN protocol, and how many
/// body bytes the request had. `GET /big/N` answers N bytes instead.
struct TlsBackend {
    addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

/// Accept polls (5 ms apart) before the backend gives up: 2 minutes.
const ACCEPT_POLLS: usize = 24_000;

/// Requests one backend connection serves at most.
const MAX_REQUESTS: usize = 1000;

fn tls_backend(pki: &Pki) -> Result<TlsBackend, Error> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone()));
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![pki.cert.clone()], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (seen.clone(), stop.clone());
    thread::spawn(move || {
        for _ in 0..ACCEPT_POLLS {
            if st.load(SeqCst) {
                return;
            }
            match listener.accept() {
                Ok((sock, _)) => {
                    let n = s.accepted.fetch_add(1, SeqCst) + 1;
                    let (config, s) = (config.clone(), s.clone());
                    thread::spawn(move || serve(sock, config, n, &s));
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Ok(TlsBackend { addr, seen, stop })
}

fn serve(sock: TcpStream, config: Arc<ServerConfig>, n: usize, seen: &Seen) {
    let run = || -> io::Result<()> {
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(Duration::from_secs(20)))?;
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                seen.failed.fetch_add(1, SeqCst);
                return Err(e);
            }
        }
        seen.handshakes.fetch_add(1, SeqCst);
        *seen.sni.lock().map_err(|_| io::Error::other("poisoned"))? =
            tls.conn.server_name().map(str::to_string);
        let alpn = String::from_utf8_lossy(tls.conn.alpn_protocol().unwrap_or(b"-")).into_owned();
        let mut buf = Vec::new();
        for req in 1..=MAX_REQUESTS {
            let Some((head, body)) = read_request(&mut tls, &mut buf)? else {
                return Ok(());
            };
            let reply = match head
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.strip_prefix("/big/"))
            {
                Some(len) => {
                    let len: usize = len.parse().map_err(|_| io::Error::other("bad /big/N"))?;
                    (0..len).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>()
                }
                None => format!("conn={n} req={req} alpn={alpn} body={body}").into_bytes(),
            };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", reply.len());
            tls.write_all(head.as_bytes())?;
            tls.write_all(&reply)?;
            tls.flush()?;
        }
        Ok(())
    };
    let _ = run();
}

/// One request: its head and how many body bytes it had (Content-Length);
/// `None` at a clean end of the connection.
fn read_request(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<(String, usize)>> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = util::client::find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        match r.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(k) => buf.extend_from_slice(chunk.get(..k).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    let head = String::from_utf8_lossy(buf.get(..head_end).unwrap_or_default()).into_owned();
    buf.drain(..head_end);
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < len {
        match r.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            k => buf.extend_from_slice(chunk.get(..k).unwrap_or_default()),
        }
    }
    buf.drain(..len);
    Ok(Some((head, len)))
}

/// A proxy whose one backend is `backend`, over TLS as `spec` says.
fn proxy_to(backend: &TlsBackend, spec: BackendTlsSpec) -> Result<TestProxy, Error> {
    let addr = backend.addr;
    let tls = BackendTls::build(spec, &addr.to_string())?;
    let b = BackendAddr {
        tls: Some(Arc::new(tls)),
        ..BackendAddr::new("tls", addr)
    };
    Ok(proxy::start_backends(vec![b], Opts::default())?)
}

fn trusting(ca: &str, server_name: Option<&str>) -> Result<BackendTlsSpec, Error> {
    Ok(BackendTlsSpec {
        ca: Some(temp_file(&format!("ca-{}.pem", rand_tag()), ca)?),
        server_name: server_name.map(str::to_string),
        insecure_skip_verify: false,
    })
}

/// A tag unique within this process, for temp file names.
fn rand_tag() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, SeqCst)
}

#[test]
fn a_valid_ca_proxies_over_tls_and_keep_alive_reuses_the_pooled_connection() -> TestResult {
    let pki = pki()?;
    let backend = tls_backend(&pki)?;
    let proxy = proxy_to(&backend, trusting(&pki.ca_pem, Some("localhost"))?)?;
    let mut client = proxy.client()?;
    for req in 1..=3 {
        let r = client.get("/")?;
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(
            r.body_str(),
            format!("conn=1 req={req} alpn=http/1.1 body=0")
        );
    }
    // A second client connection gets the same pooled TLS connection.
    let mut other = proxy.client()?;
    let r = other.get("/")?;
    assert_eq!(r.body_str(), "conn=1 req=4 alpn=http/1.1 body=0");
    assert_eq!(backend.seen.accepted.load(SeqCst), 1);
    assert_eq!(backend.seen.handshakes.load(SeqCst), 1);
    let sni = backend.seen.sni.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(sni.as_deref(), Some("localhost"));
    Ok(())
}

#[test]
fn large_bodies_go_both_ways_through_backend_tls() -> TestResult {
    let pki = pki()?;
    let backend = tls_backend(&pki)?;
    // server_name defaults to the address's IP, which the certificate has.
    let proxy = proxy_to(&backend, trusting(&pki.ca_pem, None)?)?;
    let mut client = proxy.client()?;
    // 1 MiB up: more than the socket and rustls buffer, so the request
    // is written in many turns, each waiting for writability.
    let body = util::pattern(7, 1 << 20);
    let mut req = format!(
        "POST /up HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = client.exchange(&req)?;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(
        r.body_str(),
        format!("conn=1 req=1 alpn=http/1.1 body={}", body.len())
    );
    // 4 MiB down, in full TLS records.
    let len = 4 << 20;
    let r = client.get(&format!("/big/{len}"))?;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body.len(), len);
    assert!(
        r.body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == b'a' + (i % 26) as u8)
    );
    // And the connection is still good and still the same one.
    assert_eq!(
        client.get("/")?.body_str(),
        "conn=1 req=3 alpn=http/1.1 body=0"
    );
    assert_eq!(backend.seen.accepted.load(SeqCst), 1);
    Ok(())
}

#[test]
fn a_wrong_ca_or_name_fails_the_handshake_and_the_request() -> TestResult {
    let pki = pki()?;
    let backend = tls_backend(&pki)?;
    let other = ca("some other CA")?;
    let wrong_ca = proxy_to(&backend, trusting(&other.pem(), Some("localhost"))?)?;
    let r = wrong_ca.client()?.get("/")?;
    assert_eq!(r.status, 502, "{}", r.head);
    // The right CA, but a name the certificate does not have.
    let wrong_name = proxy_to(&backend, trusting(&pki.ca_pem, Some("elsewhere.test"))?)?;
    let r = wrong_name.client()?.get("/")?;
    assert_eq!(r.status, 502, "{}", r.head);
    assert!(util::wait_until(Duration::from_secs(5), || backend
        .seen
        .failed
        .load(SeqCst)
        >= 2));
    assert_eq!(backend.seen.handshakes.load(SeqCst), 0);
    Ok(())
}

#[test]
fn insecure_skip_verify_accepts_a_certificate_no_ca_vouches_for() -> TestResult {
    let pki = pki()?;
    let backend = tls_backend(&pki)?;
    let spec = BackendTlsSpec {
        insecure_skip_verify: true,
        ..BackendTlsSpec::default()
    };
    let proxy = proxy_to(&backend, spec)?;
    let r = proxy.client()?.get("/")?;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "conn=1 req=1 alpn=http/1.1 body=0");
    Ok(())
}

#[test]
fn active_health_checks_speak_tls_to_a_tls_backend() -> TestResult {
    let pki = pki()?;
    let backend = tls_backend(&pki)?;
    let tls = BackendTls::build(trusting(&pki.ca_pem, Some("localhost"))?, "127.0.0.1:1")?;
    let b = BackendAddr {
        tls: Some(Arc::new(tls)),
        ..BackendAddr::new("tls", backend.addr)
    };
    let opts = Opts {
        health_check: Some(("/health".into(), Duration::from_millis(50))),
        ..Opts::default()
    };
    let proxy = proxy::start_backends(vec![b], opts)?;
    // More checks than it takes to mark a backend down (3), all over TLS.
    assert!(util::wait_until(Duration::from_secs(10), || {
        backend.seen.handshakes.load(SeqCst) >= 5
    }));
    assert_eq!(backend.seen.failed.load(SeqCst), 0);
    let r = proxy.client()?.get("/")?;
    assert_eq!(r.status, 200, "{}", r.head);
    Ok(())
}

fn check_config(text: &str) -> io::Result<(Option<i32>, String)> {
    let path = temp_file(&format!("cfg-{}.toml", rand_tag()), text)?;
    run_bin(&["check-config", &path.to_string_lossy()])
}

#[test]
fn check_config_validates_the_backend_tls_keys() -> TestResult {
    let pki = pki()?;
    let ca = temp_file("check-ca.pem", &pki.ca_pem)?;
    let ca = ca.to_string_lossy();
    let ok = format!(
        "[[backend]]\naddress = \"127.0.0.1:8443\"\ntls = true\nca = \"{ca}\"\nserver_name = \"localhost\"\n"
    );
    let (code, out) = check_config(&ok)?;
    assert_eq!(code, Some(0), "{out}");
    let bad: &[(String, &str)] = &[
        (
            "[[backend]]\naddress = \"127.0.0.1:8443\"\ntls = true\n".into(),
            "line 3, column 7: invalid backend.tls: tls = true needs ca",
        ),
        (
            format!("[[backend]]\naddress = \"127.0.0.1:8443\"\nca = \"{ca}\"\n"),
            "line 3, column 6: invalid backend.ca: needs tls = true",
        ),
        (
            "[[backend]]\naddress = \"127.0.0.1:8443\"\ntls = true\nca = \"/nonexistent/ca.pem\"\n"
                .into(),
            "invalid backend.tls: cannot read ca /nonexistent/ca.pem",
        ),
        (
            format!(
                "[[backend]]\naddress = \"127.0.0.1:8443\"\ntls = true\nca = \"{ca}\"\ninsecure_skip_verify = true\n"
            ),
            "ca and insecure_skip_verify = true exclude each other",
        ),
    ];
    for (text, want) in bad {
        let (code, out) = check_config(text)?;
        assert_eq!(code, Some(1), "{text}: {out}");
        assert!(out.contains(want), "{text}: want {want:?} in {out}");
    }
    Ok(())
}
