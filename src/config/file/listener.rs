//! `[[listener]]` tables: listeners beside `listen`, plaintext or HTTPS.
//!
//! ```toml
//! [[listener]]
//! address = "0.0.0.0:443"
//! tls = { cert = "site.pem", key = "site.key" }     # one certificate
//!
//! [[listener]]
//! address = "0.0.0.0:8443"
//! [[listener.tls.certificate]]                      # several, by SNI
//! cert = "a.pem"
//! key = "a.key"
//! names = ["a.example.com", "*.a.example.com"]      # default: its SANs
//! default = true                                    # for no/unknown SNI
//! ```
//!
//! Certificates are read and checked here (so `check-config` and a
//! reload both refuse an unreadable, expired or mismatched one).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{Check, FileConfig, Val};
use crate::config::Listener;
use crate::tls::certs::{self, CertSpec};

/// One `[[listener]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub address: Spanned<String>,
    pub tls: Option<FileTls>,
}

/// `tls = { cert, key }`, or `[[listener.tls.certificate]]` entries, or both
/// (the first is then one more certificate).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub cert: Val<String>,
    pub key: Val<String>,
    pub names: Option<Vec<String>>,
    pub default: Option<bool>,
    #[serde(default)]
    pub certificate: Vec<FileCert>,
}

/// One `[[listener.tls.certificate]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCert {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    pub names: Option<Vec<String>>,
    pub default: Option<bool>,
}

impl FileConfig {
    /// Every `[[listener]]`, its certificates loaded; `None` if a problem
    /// was recorded. `listen`: the main address, which none may repeat.
    pub(super) fn listeners(
        &self,
        c: &mut Check<'_>,
        listen: Option<SocketAddr>,
    ) -> Option<Vec<Listener>> {
        let mut out = Vec::with_capacity(self.listeners.len());
        let mut ok = true;
        let now = certs::unix_now();
        for l in &self.listeners {
            let Some(address) = c.get("listener.address", &l.address, crate::config::resolve)
            else {
                ok = false;
                continue;
            };
            // Port 0 (any free port, in tests) never collides.
            let taken = address.port() != 0
                && (listen == Some(address) || out.iter().any(|o: &Listener| o.address == address));
            if taken {
                c.fail::<()>("listener.address", l.address.span(), "already listened on");
                ok = false;
                continue;
            }
            let tls = match &l.tls {
                None => None,
                Some(t) => match t.specs(c) {
                    None => {
                        ok = false;
                        continue;
                    }
                    Some((specs, span)) => match certs::load_listener(&specs, now) {
                        Ok(tls) => Some(tls),
                        Err(why) => {
                            let message = format!("invalid listener.tls for {address}: {why}");
                            c.push::<()>("listener.tls", span, message);
                            ok = false;
                            continue;
                        }
                    },
                },
            };
            out.push(Listener { address, tls });
        }
        ok.then_some(out)
    }
}

impl FileTls {
    /// The certificates listed, and a span to point problems at.
    fn specs(&self, c: &mut Check<'_>) -> Option<(Vec<CertSpec>, std::ops::Range<usize>)> {
        let mut specs = Vec::with_capacity(1 + self.certificate.len());
        let mut span = 0..0;
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                span = cert.span();
                specs.push(CertSpec {
                    cert: PathBuf::from(cert.get_ref()),
                    key: PathBuf::from(key.get_ref()),
                    names: self.names.clone(),
                    default: self.default,
                });
            }
            (None, None) => {}
            (Some(v), None) | (None, Some(v)) => {
                return c.fail("listener.tls", v.span(), "give both cert and key");
            }
        }
        for e in &self.certificate {
            if span == (0..0) {
                span = e.cert.span();
            }
            specs.push(CertSpec {
                cert: PathBuf::from(e.cert.get_ref()),
                key: PathBuf::from(e.key.get_ref()),
                names: e.names.clone(),
                default: e.default,
            });
        }
        if specs.is_empty() {
            let why = "no certificate: give cert and key, or [[listener.tls.certificate]] entries";
            return c.push("listener.tls", span, why.to_string());
        }
        Some((specs, span))
    }
}
