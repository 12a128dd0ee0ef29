//! TLS test helpers: rcgen certificates written to a temporary directory
//! (no key is committed), rustls client configurations, and a proxy with
//! HTTPS listeners.
#![allow(dead_code)]

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tidegate::config::{Listener, ProxyConfig};
use tidegate::tls::certs::{self, CertSpec};

use super::client::{Client, READ_TIMEOUT};

/// A client over TLS.
pub type TlsClient = Client<StreamOwned<ClientConnection, TcpStream>>;

/// A directory of generated certificates, removed when dropped.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("tidegate-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Pki { dir }
    }

    /// A self-signed certificate for `names`, valid 2020..2040, written as
    /// `<file>.pem` and `<file>.key`; its spec and DER.
    pub fn cert(&self, file: &str, names: &[&str]) -> (CertSpec, CertificateDer<'static>) {
        self.cert_valid(file, names, (2020, 2040))
    }

    /// [`Pki::cert`] with its validity years.
    pub fn cert_valid(
        &self,
        file: &str,
        names: &[&str],
        years: (i32, i32),
    ) -> (CertSpec, CertificateDer<'static>) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let spec = CertSpec {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            names: None,
            default: None,
        };
        write(&spec.cert, &cert.pem());
        write(&spec.key, &key.serialize_pem());
        (spec, cert.der().clone())
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) {
    // Write then rename, so a concurrent reload never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A rustls client trusting `roots`, offering ALPN http/1.1.
pub fn client_config(roots: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).expect("root");
    }
    let mut cfg = ClientConfig::builder_with_provider(tidegate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// [`client_config`] without SNI (the server sees no name).
pub fn client_config_no_sni(roots: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut cfg = (*client_config(roots)).clone();
    cfg.enable_sni = false;
    Arc::new(cfg)
}

/// Connects and completes the handshake for `name` (SNI and verification).
pub fn connect(addr: SocketAddr, cfg: &Arc<ClientConfig>, name: &str) -> io::Result<TlsClient> {
    let sock = TcpStream::connect_timeout(&addr, READ_TIMEOUT)?;
    sock.set_read_timeout(Some(READ_TIMEOUT))?;
    sock.set_write_timeout(Some(READ_TIMEOUT))?;
    sock.set_nodelay(true)?;
    let name = ServerName::try_from(name.to_string()).map_err(io::Error::other)?;
    let conn = ClientConnection::new(Arc::clone(cfg), name).map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(conn, sock);
    // Bounded: a handshake is a few round trips.
    for _ in 0..16 {
        if !stream.conn.is_handshaking() {
            break;
        }
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(Client::over(stream))
}

/// The leaf certificate the server presented.
pub fn served(c: &TlsClient) -> Option<CertificateDer<'static>> {
    let certs = c.stream.conn.peer_certificates()?;
    certs.first().map(|c| c.clone().into_owned())
}

/// Adds an HTTPS listener on 127.0.0.1:0 with `specs` to `cfg`.
pub fn add_https(cfg: &mut ProxyConfig, specs: &[CertSpec]) {
    let tls = certs::load_listener(specs, certs::unix_now()).expect("certificates load");
    cfg.listeners.push(Listener {
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: Some(tls),
    });
}
