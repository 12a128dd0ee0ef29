//! TLS counters: handshakes by negotiated version and handshake failures
//! by reason. Bumped once per connection (never per request), shared by
//! every worker and every configuration generation.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rustls::ProtocolVersion;

use super::TlsFailure;

/// Label values of `tidegate_tls_handshakes_total{version}`.
pub const VERSIONS: [&str; 2] = ["TLSv1.2", "TLSv1.3"];

/// Why a handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// rustls refused it (and sent the alert that says why).
    Tls(TlsFailure),
    /// Not complete within the header timeout.
    Timeout,
    /// The client closed (or reset) the connection mid-handshake.
    Closed,
}

/// Label values of `tidegate_tls_handshake_errors_total{reason}`, in
/// [`HandshakeError::index`] order.
pub const REASONS: [&str; 8] = [
    "not_tls",
    "bad_handshake",
    "unknown_sni",
    "peer_alert",
    "bad_certificate",
    "other",
    "timeout",
    "closed",
];

impl HandshakeError {
    fn index(self) -> usize {
        match self {
            HandshakeError::Tls(f) => match f {
                TlsFailure::NotTls => 0,
                TlsFailure::BadHandshake => 1,
                TlsFailure::NoCertificate => 2,
                TlsFailure::PeerAlert => 3,
                TlsFailure::BadCertificate => 4,
                TlsFailure::Other => 5,
            },
            HandshakeError::Timeout => 6,
            HandshakeError::Closed => 7,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        REASONS[self.index()]
    }
}

/// The process's TLS counters.
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Completed handshakes, by [`VERSIONS`].
    pub handshakes: [AtomicU64; 2],
    /// Failed handshakes, by [`REASONS`].
    pub errors: [AtomicU64; 8],
}

impl TlsStats {
    /// A handshake completed with `version`.
    pub fn handshake(&self, version: Option<ProtocolVersion>) {
        let i = usize::from(version != Some(ProtocolVersion::TLSv1_2));
        self.handshakes[i].fetch_add(1, Relaxed);
    }

    /// A handshake failed.
    pub fn error(&self, why: HandshakeError) {
        self.errors[why.index()].fetch_add(1, Relaxed);
    }

    /// `(version, count)` pairs.
    pub fn handshakes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        VERSIONS
            .iter()
            .zip(&self.handshakes)
            .map(|(v, c)| (*v, c.load(Relaxed)))
    }

    /// `(reason, count)` pairs.
    pub fn errors(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REASONS
            .iter()
            .zip(&self.errors)
            .map(|(r, c)| (*r, c.load(Relaxed)))
    }
}
