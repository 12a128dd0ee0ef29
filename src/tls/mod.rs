//! TLS termination (rustls, with the `ring` crypto provider).
//!
//! - `stream`: [`stream::TlsStream`], plaintext over TLS on a non-blocking
//!   socket, for server and client connections alike; the HTTP session
//!   reads and writes through it exactly as through a TCP stream.
//! - `certs`: an HTTPS listener's certificates: loaded from PEM, checked
//!   (readable, key matches, not expired), chosen by SNI.
//! - `server`: an accepted HTTPS connection (a `TlsStream` over mio) that
//!   counts its handshake once, by version or by failure reason.
//! - `stats`: `tidegate_tls_handshakes_total{version}` and
//!   `tidegate_tls_handshake_errors_total{reason}`.
//! - `der`: the validity and DNS names of a certificate (pure).
//! - `backend`: TLS to backends (`[[backend]] tls = true`): the client
//!   settings per backend and the pool's plain-or-TLS stream.

pub mod backend;
pub mod certs;
pub mod der;
pub mod server;
pub mod stats;
pub mod stream;

pub use stream::{TlsConn, TlsFailure, TlsStream};

/// The crypto provider every TLS configuration uses: `ring`, because it
/// builds with a C compiler alone (aws-lc-rs, rustls's default, needs cmake).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
