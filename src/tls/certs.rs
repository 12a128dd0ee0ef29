//! Certificates of an HTTPS listener: loaded from PEM files, checked
//! (readable, key matches, not expired), and chosen per handshake by SNI.
//!
//! Selection ([`SniResolver`]): an exact name, then a `*.` wildcard for
//! the first label (`*.example.com` covers `a.example.com`, not
//! `example.com` nor `a.b.example.com`), then the default certificate, if
//! any. No match and no default: the handshake fails (rustls sends
//! `access_denied`), counted as `unknown_sni`.
//!
//! Loading happens in configuration validation, so `check-config` reports
//! a bad file and a reload that meets one keeps the running certificates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::der;

/// The only application protocol spoken over TLS.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// One certificate as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// PEM file: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Names SNI selects it by; `None`: the DNS names of its SAN.
    pub names: Option<Vec<String>>,
    /// Served to clients that send no SNI, or a name no certificate has.
    /// `None`: true if it is the listener's only certificate.
    pub default: Option<bool>,
}

/// An HTTPS listener's TLS configuration, ready for handshakes.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// `name1,name2 (default)` per certificate, for logs.
    pub summary: String,
}

/// Picks a certificate by SNI.
#[derive(Debug, Default)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// The certificate for `name` (`None`: no SNI).
    pub fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = name.and_then(|n| {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&n).or_else(|| {
                let (_, parent) = n.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        found.or(self.default.as_ref()).cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// Seconds since the Unix epoch, for the expiry check.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Loads and checks every certificate of a listener into its rustls
/// configuration (TLS 1.2 and 1.3, rustls's safe defaults, ALPN
/// `http/1.1`). `now`: Unix seconds, for the expiry check.
pub fn load_listener(specs: &[CertSpec], now: i64) -> Result<ListenerTls, String> {
    if specs.is_empty() {
        return Err("no certificate: give cert and key".into());
    }
    let provider = super::provider();
    let mut resolver = SniResolver::default();
    let mut summary = Vec::new();
    for spec in specs {
        let (key, facts) = load_one(spec, &provider, now)?;
        let key = Arc::new(key);
        let names = spec.names.clone().unwrap_or(facts.dns_names);
        let is_default = spec.default.unwrap_or(specs.len() == 1);
        if names.is_empty() && !is_default {
            return Err(format!(
                "{}: no DNS names in the certificate: list `names`, or mark it `default = true`",
                spec.cert.display()
            ));
        }
        for name in &names {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let (table, key_name) = match name.strip_prefix("*.") {
                Some(parent) => (&mut resolver.wildcard, parent.to_string()),
                None => (&mut resolver.exact, name.clone()),
            };
            if key_name.is_empty() || table.insert(key_name, Arc::clone(&key)).is_some() {
                return Err(format!(
                    "{}: name '{name}' is empty or already served by another certificate",
                    spec.cert.display()
                ));
            }
        }
        if is_default {
            if resolver.default.is_some() {
                return Err("more than one certificate has default = true".into());
            }
            resolver.default = Some(Arc::clone(&key));
        }
        summary.push(format!(
            "{}{}",
            names.join(","),
            if is_default { " (default)" } else { "" }
        ));
    }
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(ListenerTls {
        config: Arc::new(config),
        summary: summary.join("; "),
    })
}

/// One certificate and its key, checked.
fn load_one(
    spec: &CertSpec,
    provider: &rustls::crypto::CryptoProvider,
    now: i64,
) -> Result<(CertifiedKey, der::CertFacts), String> {
    let chain = read_chain(&spec.cert)?;
    let leaf = chain.first().ok_or_else(|| {
        format!(
            "{}: no certificate (expected PEM 'BEGIN CERTIFICATE')",
            spec.cert.display()
        )
    })?;
    let facts = der::facts(leaf)
        .map_err(|why| format!("{}: unreadable certificate: {why}", spec.cert.display()))?;
    if facts.not_after < now {
        return Err(format!(
            "{}: certificate expired on {}",
            spec.cert.display(),
            date(facts.not_after)
        ));
    }
    if facts.not_before > now {
        return Err(format!(
            "{}: certificate not valid before {}",
            spec.cert.display(),
            date(facts.not_before)
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&spec.key).map_err(|e| {
        format!(
            "{}: cannot read a private key: {}",
            spec.key.display(),
            pem_error(e)
        )
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{} and {}: certificate and key do not match",
            spec.cert.display(),
            spec.key.display()
        ),
        e => format!("{} and {}: {e}", spec.cert.display(), spec.key.display()),
    })?;
    // from_der accepts a key whose public half it cannot compare; refuse.
    certified.keys_match().map_err(|e| {
        format!(
            "{} and {}: certificate and key do not match ({e})",
            spec.cert.display(),
            spec.key.display()
        )
    })?;
    Ok((certified, facts))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read: {}", path.display(), pem_error(e)))?;
    iter.collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {}", path.display(), pem_error(e)))
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of that kind found".into(),
        other => format!("{other:?}"),
    }
}

/// `YYYY-MM-DD` of Unix seconds (for messages).
fn date(unix: i64) -> String {
    let (y, m, d) = crate::civil::civil_from_days(unix.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
#[path = "certs_tests.rs"]
mod tests;
