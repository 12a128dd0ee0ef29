//! TLS to backends: `[[backend]] tls = true`, optional per backend.
//!
//! - [`BackendTls`]: one backend's client settings, built once when the
//!   configuration is validated (start, `check-config`, reload): the CA
//!   certificates to trust (`ca`, a PEM file), the name to verify and send
//!   as SNI (`server_name`, by default the host of `address`), and
//!   `insecure_skip_verify` (tests only: any certificate is accepted, the
//!   handshake signatures are still checked). ALPN `http/1.1`; TLS 1.2 and
//!   1.3 with rustls's safe defaults; rustls's in-memory session cache, so
//!   a fresh connection to a backend resumes its session.
//! - [`BackendStream`]: what the worker's backend pool holds, plain TCP or
//!   TLS over it. The TLS handshake is part of connecting:
//!   [`BackendStream::connect_result`] says `Pending` until it completes,
//!   so nothing is written before it and the connect timeout covers it.
//!   A pooled connection stays TLS: the pool keeps the stream as it is.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned,
};

use super::stream::TlsStream;
use crate::runtime::io::Connect;

/// The one application protocol offered to backends.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Plaintext read while driving the handshake, per call. A backend sends
/// nothing before our request, so this is only ever a safety net for one
/// that does; 512 bytes keep the stack small.
const HANDSHAKE_READ: usize = 512;

/// The `[[backend]]` keys as written, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendTlsSpec {
    /// `ca`: PEM file of the CA certificates to trust.
    pub ca: Option<PathBuf>,
    /// `server_name`: the name to verify and send as SNI.
    pub server_name: Option<String>,
    /// `insecure_skip_verify`: accept any certificate (tests only).
    pub insecure_skip_verify: bool,
}

/// One backend's TLS client settings.
#[derive(Clone)]
pub struct BackendTls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    spec: BackendTlsSpec,
}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.name)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// Equal when configured alike (a reload compares configurations).
impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.name == other.name
    }
}

impl Eq for BackendTls {}

impl BackendTls {
    /// Validates `spec` for a backend at `address` (its `ip:port` or
    /// `host:port` text) and builds the client settings. The error names
    /// what is wrong, for `check-config`.
    pub fn build(spec: BackendTlsSpec, address: &str) -> Result<Self, String> {
        let text = match &spec.server_name {
            Some(n) => n.clone(),
            None => default_server_name(address),
        };
        let name = ServerName::try_from(text.clone())
            .map_err(|_| format!("'{text}' is not a valid DNS name or IP address"))?;
        let provider = super::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?;
        let mut config = match (&spec.ca, spec.insecure_skip_verify) {
            (Some(_), true) => {
                return Err("ca and insecure_skip_verify = true exclude each other".into());
            }
            (Some(ca), false) => builder
                .with_root_certificates(roots(ca)?)
                .with_no_client_auth(),
            (None, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth(),
            (None, false) => {
                return Err(
                    "tls = true needs ca (a PEM file of the CA certificates to trust), \
                            or insecure_skip_verify = true (tests only)"
                        .into(),
                );
            }
        };
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(BackendTls {
            config: Arc::new(config),
            name,
            spec,
        })
    }

    /// Whether certificates go unverified (logged at start).
    pub fn insecure(&self) -> bool {
        self.spec.insecure_skip_verify
    }

    /// The name verified and sent as SNI.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.name
    }

    /// A blocking TLS client over `sock` (the active health checks); the
    /// handshake happens on its first write.
    pub fn blocking<S: Read + Write>(
        &self,
        sock: S,
    ) -> io::Result<StreamOwned<ClientConnection, S>> {
        Ok(StreamOwned::new(self.connection()?, sock))
    }

    /// A new client connection (ClientHello queued).
    fn connection(&self) -> io::Result<ClientConnection> {
        ClientConnection::new(self.config.clone(), self.name.clone()).map_err(io::Error::other)
    }
}

/// What [`from_file`] gives: the settings (`None` without `tls = true`),
/// or the key at fault, the span of its value and why.
pub type FileResult = Result<Option<Arc<BackendTls>>, (&'static str, Range<usize>, String)>;

/// Validates the TLS keys of one `[[backend]]` (each with the span of its
/// value) for a backend at `address`.
pub fn from_file(
    tls: Option<(bool, Range<usize>)>,
    ca: Option<(&str, Range<usize>)>,
    server_name: Option<(&str, Range<usize>)>,
    insecure: Option<(bool, Range<usize>)>,
    address: &str,
) -> FileResult {
    let on = tls.as_ref().is_some_and(|(v, _)| *v);
    if !on {
        let stray = [
            ca.as_ref().map(|(_, s)| ("backend.ca", s.clone())),
            server_name
                .as_ref()
                .map(|(_, s)| ("backend.server_name", s.clone())),
            insecure
                .as_ref()
                .map(|(_, s)| ("backend.insecure_skip_verify", s.clone())),
        ];
        if let Some((key, span)) = stray.into_iter().flatten().next() {
            return Err((key, span, "needs tls = true".into()));
        }
        return Ok(None);
    }
    let span = tls.map_or(0..0, |(_, s)| s);
    let spec = BackendTlsSpec {
        ca: ca.map(|(p, _)| PathBuf::from(p)),
        server_name: server_name.map(|(n, _)| n.to_string()),
        insecure_skip_verify: insecure.is_some_and(|(v, _)| v),
    };
    let built = BackendTls::build(spec, address).map_err(|why| ("backend.tls", span, why))?;
    if built.insecure() {
        log::warn!("backend {address}: insecure_skip_verify: its TLS certificate is not verified");
    }
    Ok(Some(Arc::new(built)))
}

/// The host of `address` (`host:port`, `ip:port` or `[v6]:port`).
fn default_server_name(address: &str) -> String {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return a.ip().to_string();
    }
    address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_matches(|c| c == '[' || c == ']')
        .to_string()
}

/// The CA certificates of a PEM file; at least one.
fn roots(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read ca {shown}: {e}"))?;
    let mut store = RootCertStore::empty();
    for cert in iter {
        let cert = cert.map_err(|e| format!("ca {shown}: {e}"))?;
        store
            .add(cert)
            .map_err(|e| format!("ca {shown}: not a usable CA certificate: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!("ca {shown}: no certificate in the file"));
    }
    Ok(store)
}

/// `insecure_skip_verify`: any certificate chain and name is accepted;
/// the handshake signature is still checked against the presented key.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A backend connection: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum BackendStream<S: Read + Write> {
    Plain(S),
    /// Boxed: a rustls connection is large, and most pools are plaintext.
    Tls(Box<TlsBackend<S>>),
}

/// The TLS side of a [`BackendStream`].
#[derive(Debug)]
pub struct TlsBackend<S: Read + Write> {
    stream: TlsStream<ClientConnection, S>,
    /// Plaintext that arrived with the end of the handshake (see
    /// [`HANDSHAKE_READ`]), handed out by the next reads.
    early: Vec<u8>,
}

impl<S: Read + Write> BackendStream<S> {
    /// Wraps a connecting socket; with `tls`, a client connection whose
    /// ClientHello goes out once the socket is connected.
    pub fn new(sock: S, tls: Option<&BackendTls>) -> io::Result<Self> {
        Ok(match tls {
            None => BackendStream::Plain(sock),
            Some(t) => BackendStream::Tls(Box::new(TlsBackend {
                stream: TlsStream::new(t.connection()?, sock),
                early: Vec::new(),
            })),
        })
    }

    /// The socket underneath.
    pub fn sock(&self) -> &S {
        match self {
            BackendStream::Plain(s) => s,
            BackendStream::Tls(t) => t.stream.sock(),
        }
    }

    /// Whether a read may give more without a new readiness event (TLS:
    /// the socket has not said `WouldBlock` since it last gave bytes).
    pub fn read_pending(&self) -> bool {
        match self {
            BackendStream::Plain(_) => false,
            BackendStream::Tls(t) => !t.early.is_empty() || t.stream.read_pending(),
        }
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, BackendStream::Tls(_))
    }

    /// Whether connecting is done: the TCP connect (`tcp`, the
    /// [`crate::proxy::net::Net::connect_result`] of the socket) and, for
    /// TLS, the handshake, driven one step further by each call (on a
    /// readiness event: it reads and writes until the socket would block).
    pub fn connect_result(&mut self, tcp: impl FnOnce(&S) -> Connect) -> Connect {
        match self {
            BackendStream::Plain(s) => tcp(s),
            BackendStream::Tls(t) => match tcp(t.stream.sock()) {
                Connect::Connected => t.handshake(),
                other => other,
            },
        }
    }

    /// Sends whatever TLS output is owed (handshake messages, records the
    /// socket refused earlier): `Err(WouldBlock)` while some remains. Call
    /// it on writability when no plaintext is waiting; plain TCP owes
    /// nothing.
    pub fn flush_owed(&mut self) -> io::Result<()> {
        match self {
            BackendStream::Plain(_) => Ok(()),
            BackendStream::Tls(t) if t.stream.wants_write() => t.stream.flush(),
            BackendStream::Tls(_) => Ok(()),
        }
    }

    /// Queues `close_notify` (TLS) before our FIN is sent with `tcp_fin`.
    pub fn shutdown_write(&mut self, tcp_fin: impl FnOnce(&mut S)) {
        match self {
            BackendStream::Plain(s) => tcp_fin(s),
            BackendStream::Tls(t) => {
                t.stream.close_notify();
                tcp_fin(t.stream.sock_mut());
            }
        }
    }
}

impl<S: Read + Write> TlsBackend<S> {
    fn handshake(&mut self) -> Connect {
        let mut buf = [0u8; HANDSHAKE_READ];
        // Bounded by the stream's own per-call bound; one call per event.
        match self.stream.read(&mut buf) {
            Ok(0) => return Connect::Failed(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => self
                .early
                .extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Connect::Failed(e),
        }
        if self.stream.is_handshaking() {
            Connect::Pending
        } else {
            Connect::Connected
        }
    }
}

impl<S: Read + Write> Read for BackendStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BackendStream::Plain(s) => s.read(buf),
            BackendStream::Tls(t) if !t.early.is_empty() => {
                let n = t.early.len().min(buf.len());
                buf.get_mut(..n)
                    .unwrap_or_default()
                    .copy_from_slice(t.early.get(..n).unwrap_or_default());
                t.early.drain(..n);
                Ok(n)
            }
            BackendStream::Tls(t) => t.stream.read(buf),
        }
    }
}

impl<S: Read + Write> Write for BackendStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BackendStream::Plain(s) => s.write(buf),
            BackendStream::Tls(t) => t.stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            BackendStream::Plain(s) => s.flush(),
            BackendStream::Tls(t) => t.stream.flush(),
        }
    }
}

#[cfg(test)]
mod tests;
