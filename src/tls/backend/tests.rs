//! BackendTls validation and BackendStream over an in-memory socket.

use super::*;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};

/// One direction of an in-memory socket: at most `cap` bytes in flight.
type Dir = Rc<RefCell<(VecDeque<u8>, usize)>>;

/// One end of a duplex in-memory, non-blocking socket.
#[derive(Debug)]
struct End {
    rx: Dir,
    tx: Dir,
}

fn pipe(cap: usize) -> (End, End) {
    let a: Dir = Rc::new(RefCell::new((VecDeque::new(), cap)));
    let b: Dir = Rc::new(RefCell::new((VecDeque::new(), cap)));
    (
        End {
            rx: a.clone(),
            tx: b.clone(),
        },
        End { rx: b, tx: a },
    )
}

impl Read for End {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut d = self.rx.borrow_mut();
        if d.0.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(d.0.len());
        for (slot, b) in buf.iter_mut().zip(d.0.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

impl Write for End {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut d = self.tx.borrow_mut();
        let room = d.1.saturating_sub(d.0.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(room);
        d.0.extend(buf.iter().take(n));
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A CA file (in the temp dir) and a server config for "localhost".
fn pki(tag: &str) -> (PathBuf, Arc<ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .and_then(|p| p.signed_by(&key, &ca))
        .expect("cert");
    let path =
        std::env::temp_dir().join(format!("tidegate-backend-{}-{tag}.pem", std::process::id()));
    std::fs::write(&path, ca.pem()).expect("write ca");
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], der)
        })
        .expect("server config");
    (path, Arc::new(config))
}

/// The server side, driven by hand: reads what came, answers.
fn serve(server: &mut ServerConnection, sock: &mut End) {
    for _ in 0..64 {
        match server.read_tls(sock) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    server.process_new_packets().expect("server processes");
    while server.wants_write() && server.write_tls(sock).is_ok() {}
}

#[test]
fn the_handshake_is_part_of_connecting_and_owed_records_wait_for_flush_owed() {
    let (ca, server_config) = pki("flush");
    let spec = BackendTlsSpec {
        ca: Some(ca),
        server_name: Some("localhost".into()),
        insecure_skip_verify: false,
    };
    let tls = BackendTls::build(spec, "127.0.0.1:1").expect("builds");
    // Room for the handshake; then the socket is made small.
    let (client_end, mut server_end) = pipe(64 * 1024);
    let mut stream = BackendStream::new(client_end, Some(&tls)).expect("stream");
    let mut server = ServerConnection::new(server_config).expect("server");
    let connected = |_: &End| Connect::Connected;
    let mut done = false;
    for _ in 0..10 {
        match stream.connect_result(connected) {
            Connect::Connected => {
                done = true;
                break;
            }
            Connect::Pending => serve(&mut server, &mut server_end),
            Connect::Failed(e) => panic!("handshake failed: {e}"),
        }
    }
    assert!(done && stream.is_tls(), "handshake did not complete");
    serve(&mut server, &mut server_end);
    assert!(!server.is_handshaking());
    // Shrink the pipe: the socket now takes 1 KiB at a time.
    server_end.rx.borrow_mut().1 = 1024;
    let body = vec![7u8; 3000];
    let n = stream.write(&body).expect("plaintext accepted");
    assert_eq!(n, body.len());
    // The rest of the record is owed, and only flush_owed sends it.
    assert!(
        stream
            .flush_owed()
            .is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock)
    );
    let mut got = Vec::new();
    let mut plain = [0u8; 4096];
    for _ in 0..100 {
        serve(&mut server, &mut server_end);
        while let Ok(k) = server.reader().read(&mut plain) {
            if k == 0 {
                break;
            }
            got.extend_from_slice(plain.get(..k).unwrap_or_default());
        }
        match stream.flush_owed() {
            Ok(()) if got.len() == body.len() => break,
            Ok(()) | Err(_) => {}
        }
    }
    assert_eq!(got, body);
    assert!(stream.flush_owed().is_ok());
}

#[test]
fn default_server_name_is_the_host_of_the_address() {
    assert_eq!(default_server_name("127.0.0.1:443"), "127.0.0.1");
    assert_eq!(default_server_name("[::1]:8443"), "::1");
    assert_eq!(default_server_name("api.internal:443"), "api.internal");
}

#[test]
fn tls_keys_are_checked() {
    let err = |r: FileResult| r.err().map(|(k, _, why)| format!("{k}: {why}"));
    // No tls: nothing, and no stray keys.
    assert!(matches!(
        from_file(None, None, None, None, "127.0.0.1:1"),
        Ok(None)
    ));
    assert_eq!(
        err(from_file(
            None,
            Some(("ca.pem", 1..2)),
            None,
            None,
            "127.0.0.1:1"
        )),
        Some("backend.ca: needs tls = true".into())
    );
    // tls without a CA or the test switch.
    let e = err(from_file(
        Some((true, 1..2)),
        None,
        None,
        None,
        "127.0.0.1:1",
    ));
    assert!(e.is_some_and(|e| e.contains("needs ca")));
    // An unreadable CA file.
    let e = err(from_file(
        Some((true, 1..2)),
        Some(("/nonexistent/ca.pem", 3..4)),
        None,
        None,
        "127.0.0.1:1",
    ));
    assert!(e.is_some_and(|e| e.contains("cannot read ca /nonexistent/ca.pem")));
    // Both a CA and the test switch.
    let e = err(from_file(
        Some((true, 1..2)),
        Some(("/nonexistent/ca.pem", 3..4)),
        None,
        Some((true, 5..6)),
        "127.0.0.1:1",
    ));
    assert!(e.is_some_and(|e| e.contains("exclude each other")));
    // A bad server name.
    let e = err(from_file(
        Some((true, 1..2)),
        None,
        Some(("not a name", 3..4)),
        Some((true, 5..6)),
        "127.0.0.1:1",
    ));
    assert!(e.is_some_and(|e| e.contains("not a valid DNS name")));
    // The test switch alone builds, with the address's host as the name.
    let t = from_file(
        Some((true, 1..2)),
        None,
        None,
        Some((true, 5..6)),
        "127.0.0.1:1",
    );
    assert!(
        t.is_ok_and(|t| t.is_some_and(|t| t.insecure() && t.server_name().to_str() == "127.0.0.1"))
    );
}
