//! The TLS stream over an in-memory, non-blocking, capacity-bounded pipe.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use super::{TlsFailure, TlsStream, WRITE_CHUNK};
use crate::tls::provider;

/// One direction of a pipe: bytes in flight, at most `cap` of them.
#[derive(Debug, Default)]
struct Dir {
    bytes: VecDeque<u8>,
    cap: usize,
    closed: bool,
}

/// One end of a duplex in-memory pipe.
#[derive(Debug)]
struct End {
    rx: Rc<RefCell<Dir>>,
    tx: Rc<RefCell<Dir>>,
}

fn pipe(cap: usize) -> (End, End) {
    let a = Rc::new(RefCell::new(Dir {
        cap,
        ..Dir::default()
    }));
    let b = Rc::new(RefCell::new(Dir {
        cap,
        ..Dir::default()
    }));
    (
        End {
            rx: Rc::clone(&a),
            tx: Rc::clone(&b),
        },
        End { rx: b, tx: a },
    )
}

impl End {
    fn close(&self) {
        self.tx.borrow_mut().closed = true;
    }
}

impl Read for End {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut d = self.rx.borrow_mut();
        if d.bytes.is_empty() {
            return if d.closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(d.bytes.len());
        for (slot, b) in buf.iter_mut().zip(d.bytes.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

impl Write for End {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut d = self.tx.borrow_mut();
        let room = d.cap - d.bytes.len();
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        d.bytes.extend(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Server = TlsStream<ServerConnection, End>;
type Client = TlsStream<ClientConnection, End>;

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(server), Arc::new(client))
}

fn pair(cap: usize) -> (Server, Client) {
    let (s, c) = configs();
    let (a, b) = pipe(cap);
    let server = TlsStream::new(ServerConnection::new(s).unwrap(), a);
    let name = ServerName::try_from("localhost").unwrap();
    let client = TlsStream::new(ClientConnection::new(c, name).unwrap(), b);
    (server, client)
}

/// Reads what is available now (WouldBlock ends it).
fn drain(s: &mut impl Read, into: &mut Vec<u8>) -> io::Result<usize> {
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0;
    for _ in 0..10_000 {
        match s.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Runs both sides until the handshake is done.
fn handshake(server: &mut Server, client: &mut Client) {
    let mut sink = Vec::new();
    for _ in 0..20 {
        let _ = client.flush();
        drain(server, &mut sink).unwrap();
        let _ = server.flush();
        drain(client, &mut sink).unwrap();
        if !server.is_handshaking() && !client.is_handshaking() {
            assert!(sink.is_empty());
            return;
        }
    }
    panic!("handshake did not complete");
}

#[test]
fn handshake_then_plaintext_both_ways() {
    let (mut server, mut client) = pair(64 * 1024);
    handshake(&mut server, &mut client);
    assert!(server.take_handshake_done());
    assert!(!server.take_handshake_done(), "reported once");
    assert_eq!(server.conn().alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(server.conn().server_name(), Some("localhost"));

    client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut got = Vec::new();
    drain(&mut server, &mut got).unwrap();
    assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");

    server
        .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        .unwrap();
    let mut back = Vec::new();
    drain(&mut client, &mut back).unwrap();
    assert_eq!(back, b"HTTP/1.1 204 No Content\r\n\r\n");
}

#[test]
fn backpressure_holds_a_few_records_and_resumes() {
    // A socket with room for 8 KiB: the writer must be told to wait, hold
    // at most a couple of records, and lose nothing.
    let (mut server, mut client) = pair(8 * 1024);
    handshake(&mut server, &mut client);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut blocked = 0;
    for _ in 0..100_000 {
        if sent == data.len() && server.flush().is_ok() {
            drain(&mut client, &mut got).unwrap();
            break;
        }
        match server.write(&data[sent..]) {
            Ok(n) => {
                assert!(n <= WRITE_CHUNK);
                sent += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked += 1,
            Err(e) => panic!("{e}"),
        }
        // Owed ciphertext never exceeds a chunk and its framing.
        drain(&mut client, &mut got).unwrap();
    }
    assert!(blocked > 0, "the small socket pushed back");
    assert_eq!(got.len(), data.len());
    assert!(got == data);
}

#[test]
fn short_read_only_after_the_socket_would_block() {
    let (mut server, mut client) = pair(1 << 20);
    handshake(&mut server, &mut client);
    // 200 KiB queued: one read into 64 KiB fills it, the socket is not
    // drained, and read_pending says to come back.
    let data = vec![7u8; 200 * 1024];
    let mut off = 0;
    while off < data.len() {
        off += client.write(&data[off..]).unwrap();
    }
    let mut buf = vec![0u8; 64 * 1024];
    let n = server.read(&mut buf).unwrap();
    assert_eq!(n, buf.len());
    assert!(server.read_pending());
    let mut total = n;
    for _ in 0..100 {
        match server.read(&mut buf) {
            Ok(n) => {
                total += n;
                if n < buf.len() {
                    // A short read: the socket said WouldBlock.
                    assert!(!server.read_pending());
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(total, data.len());
}

#[test]
fn close_notify_is_a_clean_eof_and_drop_sends_it() {
    let (mut server, mut client) = pair(64 * 1024);
    handshake(&mut server, &mut client);
    server.write_all(b"bye").unwrap();
    drop(server);
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).unwrap(), 3);
    assert_eq!(
        client.read(&mut buf).unwrap(),
        0,
        "close_notify reads as EOF"
    );
}

#[test]
fn tcp_eof_without_close_notify_is_eof() {
    let (mut server, mut client) = pair(64 * 1024);
    handshake(&mut server, &mut client);
    client.sock().close();
    let mut buf = [0u8; 16];
    assert_eq!(server.read(&mut buf).unwrap(), 0);
}

#[test]
fn plaintext_http_to_a_tls_server_fails_as_not_tls_with_an_alert() {
    let (s, _) = configs();
    let (a, mut b) = pipe(64 * 1024);
    let mut server = TlsStream::new(ServerConnection::new(s).unwrap(), a);
    b.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let e = server.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert_eq!(server.failure(), Some(TlsFailure::NotTls));
    // A TLS alert record (content type 21) went back.
    let mut back = Vec::new();
    drain(&mut b, &mut back).unwrap();
    assert_eq!(back.first(), Some(&21));
}

#[test]
fn a_client_rejecting_the_certificate_is_a_peer_alert_on_the_server() {
    let (s, _) = configs();
    let (_, c) = configs(); // trusts another certificate
    let (a, b) = pipe(64 * 1024);
    let mut server = TlsStream::new(ServerConnection::new(s).unwrap(), a);
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = TlsStream::new(ClientConnection::new(c, name).unwrap(), b);
    let mut sink = Vec::new();
    let mut server_err = None;
    for _ in 0..10 {
        let _ = client.flush();
        if let Err(e) = drain(&mut server, &mut sink) {
            server_err = Some(e);
            break;
        }
        let _ = server.flush();
        let _ = drain(&mut client, &mut sink);
    }
    assert!(server_err.is_some());
    assert_eq!(client.failure(), Some(TlsFailure::BadCertificate));
    assert_eq!(server.failure(), Some(TlsFailure::PeerAlert));
}
