//! The proxy's TOML configuration file: `tidegate proxy --config FILE` and
//! `tidegate check-config FILE`. `examples/tidegate.toml` documents every key.
//!
//! Two steps, both pure (no socket is opened; host names are resolved):
//! 1. [`FileConfig::parse`]: TOML into the schema below. Syntax errors, an
//!    unknown key (`deny_unknown_fields`) or a value of the wrong type stop
//!    here, with toml's line and column.
//! 2. [`FileConfig::validate`]: every value checked (durations, ranges,
//!    addresses, duplicate names...) into a [`ProxyConfig`]; every problem
//!    is collected, each naming its key, at its value's line and column.
//!
//! [`load`] is both: what `check-config` runs and what a reload re-runs.
//! Absent keys take the same defaults as the flags. The binary lays the
//! flags given on its command line over a parsed file (recording them in
//! `from_cli`, so a bad one is named as the flag) before validating.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::policy::{PolicyParams, build_policy};
use super::{
    BackendAddr, ConfigError, DEFAULT_BACKLOG, DEFAULT_HEALTH_INTERVAL, DEFAULT_PROXY_LISTEN,
    MAX_WEIGHT, ProxyConfig, ServerConfig, Timeouts,
};
use crate::balance::Policy;
use crate::http::{ForwardOpts, Proto};

pub use check::Problem;
use check::{Check, key_at, line_col, rename};

/// A value as read, with where it was read (`0..0` when set from a flag).
pub type Val<T> = Option<Spanned<T>>;

/// The file's top level: one key per proxy flag, in snake case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Val<String>,
    pub workers: Val<usize>,
    pub backlog: Val<u32>,
    pub policy: Val<String>,
    pub sma_window: Val<usize>,
    pub ewma_alpha: Val<f64>,
    pub decay: Val<String>,
    pub default_rtt: Val<String>,
    pub slo_ms: Val<u64>,
    pub backend_conn: Val<String>,
    pub log_csv: Val<String>,
    pub access_log: Val<String>,
    pub access_log_format: Val<String>,
    pub via: Val<String>,
    pub request_id: Val<String>,
    /// `--resolve-interval`.
    pub resolve_interval: Val<String>,
    /// `--queue-timeout`.
    pub queue_timeout: Val<String>,
    /// `--max-queue`.
    pub max_queue: Val<usize>,
    #[serde(default)]
    pub timeouts: FileTimeouts,
    #[serde(default)]
    pub health: FileHealth,
    #[serde(default)]
    pub admin: FileAdmin,
    /// `[[backend]]` tables.
    #[serde(default, rename = "backend")]
    pub backends: Vec<FileBackend>,
    /// `[[listener]]` tables: more listeners, plaintext or HTTPS.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<listener::FileListener>,
    /// `(key, flag)` of each value the command line set over the file.
    #[serde(skip)]
    pub from_cli: Vec<(&'static str, &'static str)>,
}

/// `[timeouts]`: each `--X-timeout`, as a duration string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    pub connect: Val<String>,
    pub backend: Val<String>,
    pub header: Val<String>,
    pub idle: Val<String>,
    pub client: Val<String>,
    pub tunnel: Val<String>,
    pub drain: Val<String>,
}

/// `[health]`: active checks and outlier ejection.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    /// `--health-check PATH`.
    pub check: Val<String>,
    /// `--health-interval`.
    pub interval: Val<String>,
    /// `--eject-after`.
    pub eject_after: Val<u32>,
    /// `--eject-5xx`.
    pub eject_5xx: Val<bool>,
}

/// `[admin]`: the admin listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// `--admin ADDR` (`"off"`: none).
    pub address: Val<String>,
    /// Bearer token the admin API requires.
    pub token: Val<String>,
}

/// One `[[backend]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    pub address: Spanned<String>,
    pub name: Val<String>,
    pub weight: Val<u32>,
    pub backup: Val<bool>,
    /// Requests in flight to it at once, across all workers.
    pub maxconn: Val<u32>,
    /// TLS to the backend; `ca`, `server_name`, `insecure_skip_verify`
    /// go with it (see `tls::backend`).
    pub tls: Val<bool>,
    pub ca: Val<String>,
    pub server_name: Val<String>,
    pub insecure_skip_verify: Val<bool>,
}

/// Parses and validates a file's text: the one function a reload needs.
pub fn load(text: &str) -> Result<ProxyConfig, Vec<Problem>> {
    FileConfig::parse(text)?.validate(text)
}

/// `3 backends (1 backup), policy tail-budget, listen 127.0.0.1:9090`.
pub fn summary(cfg: &ProxyConfig) -> String {
    let n = cfg.backends.len();
    let backups = cfg.backends.iter().filter(|b| b.backup).count();
    let mut out = format!(
        "{n} backend{} ({backups} backup{}), policy {}, listen {}",
        if n == 1 { "" } else { "s" },
        if backups == 1 { "" } else { "s" },
        cfg.policy.name(),
        cfg.server.listen
    );
    for l in &cfg.listeners {
        match &l.tls {
            Some(tls) => out.push_str(&format!(", https {} [{}]", l.address, tls.summary)),
            None => out.push_str(&format!(", {}", l.address)),
        }
    }
    out
}

impl FileConfig {
    /// The TOML text into the schema; the first syntax, key or type error.
    pub fn parse(text: &str) -> Result<FileConfig, Vec<Problem>> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let span = e.span();
            let msg = e.message().trim().replace('\n', " ");
            let message = match span.as_ref().and_then(|s| key_at(text, s.start)) {
                Some(key) if !msg.contains(&key) => format!("{key}: {msg}"),
                _ => msg,
            };
            vec![Problem {
                at: span.map(|s| line_col(text, s.start)),
                message,
            }]
        })
    }

    /// Checks every value (`text`: the file, for positions) into a
    /// [`ProxyConfig`], or every problem found.
    pub fn validate(&self, text: &str) -> Result<ProxyConfig, Vec<Problem>> {
        let mut c = Check {
            text,
            from_cli: &self.from_cli,
            problems: Vec::new(),
        };
        let cfg = self.build(&mut c);
        match cfg {
            Some(cfg) if c.problems.is_empty() => Ok(cfg),
            _ => Err(c.problems),
        }
    }

    fn build(&self, c: &mut Check<'_>) -> Option<ProxyConfig> {
        let listen = match &self.listen {
            Some(v) => c.get("listen", v, super::resolve),
            None => super::resolve("listen", DEFAULT_PROXY_LISTEN).ok(),
        };
        let workers = match &self.workers {
            Some(v) if *v.get_ref() == 0 => c.fail("workers", v.span(), "must be at least 1"),
            Some(v) => Some(*v.get_ref()),
            None => Some(super::default_workers()),
        };
        let backlog = match &self.backlog {
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > i32::MAX as u32 => {
                let why = format!("out of range (1..={})", i32::MAX);
                c.fail("backlog", v.span(), &why)
            }
            Some(v) => Some(*v.get_ref()),
            None => Some(DEFAULT_BACKLOG),
        };
        let policy = self.policy(c);
        let backend_conn = match &self.backend_conn {
            Some(v) => c.get("backend_conn", v, |k, s: &str| {
                s.parse().map_err(|e: ConfigError| rename(e, k))
            }),
            None => Some(super::BackendConn::Persistent),
        };
        let timeouts = self.timeouts(c);
        let field = |c: &mut Check<'_>, key, v: &Val<String>, default: &str, is_field| match v {
            Some(v) => c.get(key, v, |k, s| super::forward_field(k, s, is_field)),
            None => super::forward_field(key, default, is_field).ok(),
        };
        let defaults = ForwardOpts::default();
        let via = field(
            c,
            "via",
            &self.via,
            defaults.via.as_deref().unwrap_or("off"),
            false,
        );
        let rid_default = defaults.request_id.as_deref().unwrap_or("off");
        let request_id = field(c, "request_id", &self.request_id, rid_default, true);
        let health_check = self.health_check(c);
        let (admin, admin_token) = (self.admin_address(c), self.admin_token(c));
        let backends = self.backends(c);
        let access_log = self.access_log(c);
        let resolve_interval = match &self.resolve_interval {
            Some(v) => c.get("resolve_interval", v, super::parse_resolve_interval),
            None => Some(super::DEFAULT_RESOLVE_INTERVAL),
        };
        let listeners = self.listeners(c, listen);
        let queue = self.queue(c);
        let h = &self.health;
        Some(ProxyConfig {
            server: ServerConfig {
                listen: listen?,
                workers: workers?,
                backlog: backlog?,
                // --reuseport is a command-line flag only.
                reuseport: false,
            },
            listeners: listeners?,
            backends: backends?,
            policy: policy?,
            backend_conn: backend_conn?,
            timeouts: timeouts?,
            access_log: access_log?,
            slo: self
                .slo_ms
                .as_ref()
                .map(|v| Duration::from_millis(*v.get_ref())),
            eject_5xx: h.eject_5xx.as_ref().is_some_and(|v| *v.get_ref()),
            eject_after: h
                .eject_after
                .as_ref()
                .map_or(crate::health::EJECT_AFTER, |v| *v.get_ref()),
            health_check: health_check?,
            forward: ForwardOpts {
                via: via?,
                proto: Proto::Http,
                request_id: request_id?,
            },
            admin: admin?,
            admin_token: admin_token?,
            resolve_interval: resolve_interval?,
            queue: queue?,
        })
    }

    fn policy(&self, c: &mut Check<'_>) -> Option<Policy> {
        let dur = |c: &mut Check<'_>, key, v: &Val<String>, default| match v {
            Some(v) => c.get(key, v, super::parse_duration),
            None => Some(default),
        };
        let defaults = PolicyParams::default();
        let params = PolicyParams {
            sma_window: self
                .sma_window
                .as_ref()
                .map_or(defaults.sma_window, |v| *v.get_ref()),
            ewma_alpha: self
                .ewma_alpha
                .as_ref()
                .map_or(defaults.ewma_alpha, |v| *v.get_ref()),
            decay: dur(c, "decay", &self.decay, defaults.decay)?,
            default_rtt: dur(c, "default_rtt", &self.default_rtt, defaults.default_rtt)?,
            slo: self
                .slo_ms
                .as_ref()
                .map(|v| Duration::from_millis(*v.get_ref())),
        };
        let name = self.policy.as_ref();
        let span = name.map_or(0..0, |v| v.span());
        let name = name.map_or(crate::balance::ADAPTIVE, |v| v.get_ref().as_str());
        let key = c.name("policy");
        match build_policy(key, name, &params) {
            Ok(p) => Some(p),
            Err(e) => c.push("policy", span, e.to_string()),
        }
    }

    /// `[timeouts]`, each checked; `None` if any is bad (all reported).
    fn timeouts(&self, c: &mut Check<'_>) -> Option<Timeouts> {
        let t = &self.timeouts;
        let d = Timeouts::default();
        let mut get = |key: &'static str, v: &Val<String>, default: Duration| match v {
            Some(v) => c.get(key, v, super::parse_timeout),
            None => Some(default),
        };
        let connect = get("timeouts.connect", &t.connect, d.connect);
        let backend = get("timeouts.backend", &t.backend, d.backend);
        let header = get("timeouts.header", &t.header, d.header);
        let idle = get("timeouts.idle", &t.idle, d.idle);
        let client = get("timeouts.client", &t.client, d.client);
        let tunnel = get("timeouts.tunnel", &t.tunnel, d.tunnel);
        let drain = get("timeouts.drain", &t.drain, d.drain);
        Some(Timeouts {
            connect: connect?,
            backend: backend?,
            header: header?,
            idle: idle?,
            client: client?,
            tunnel: tunnel?,
            drain: drain?,
        })
    }

    fn health_check(&self, c: &mut Check<'_>) -> Option<Option<(String, Duration)>> {
        let h = &self.health;
        let interval = match &h.interval {
            Some(v) => match c.get("health.interval", v, super::parse_duration)? {
                d if d.is_zero() => {
                    return c.fail("health.interval", v.span(), "must be above zero");
                }
                d => d,
            },
            None => DEFAULT_HEALTH_INTERVAL,
        };
        match &h.check {
            Some(v) if !v.get_ref().starts_with('/') => c.fail(
                "health.check",
                v.span(),
                "expected an absolute path like /healthz",
            ),
            Some(v) => Some(Some((v.get_ref().clone(), interval))),
            None => Some(None),
        }
    }

    fn admin_address(&self, c: &mut Check<'_>) -> Option<Option<std::net::SocketAddr>> {
        match &self.admin.address {
            Some(v) if v.get_ref() == "off" => Some(None),
            Some(v) => c.get("admin.address", v, super::resolve).map(Some),
            None => Some(None),
        }
    }

    fn admin_token(&self, c: &mut Check<'_>) -> Option<Option<String>> {
        match &self.admin.token {
            Some(v) if v.get_ref().trim().is_empty() => {
                c.fail("admin.token", v.span(), "must not be empty")
            }
            Some(v) => Some(Some(v.get_ref().clone())),
            None => Some(None),
        }
    }

    fn backends(&self, c: &mut Check<'_>) -> Option<Vec<BackendAddr>> {
        if self.backends.is_empty() {
            let why = "no backends: add a [[backend]] table with an address (or give --backend)";
            return c.push("backend", 0..0, why.to_string());
        }
        let mut out = Vec::with_capacity(self.backends.len());
        let mut names: Vec<&str> = Vec::with_capacity(self.backends.len());
        let mut ok = true;
        for b in &self.backends {
            let addrs = c.get("backend.address", &b.address, super::resolve_all);
            let weight = match &b.weight {
                Some(w) if !(1..=MAX_WEIGHT).contains(w.get_ref()) => {
                    let why = format!("out of range (1..={MAX_WEIGHT})");
                    c.fail("backend.weight", w.span(), &why)
                }
                Some(w) => Some(*w.get_ref()),
                None => Some(1),
            };
            let name = b.name.as_ref().map_or(b.address.get_ref(), |n| n.get_ref());
            if name.trim().is_empty() {
                let span = b.name.as_ref().map_or(0..0, |n| n.span());
                c.fail::<()>("backend.name", span, "must not be empty");
                ok = false;
            }
            if names.contains(&name.as_str()) {
                let span = b.name.as_ref().map_or(b.address.span(), |n| n.span());
                let why = format!("duplicate backend.name '{name}' (names must be unique)");
                c.push::<()>("backend.name", span, why);
                ok = false;
            }
            names.push(name);
            let backup = b.backup.as_ref().is_some_and(|v| *v.get_ref());
            let maxconn = match &b.maxconn {
                Some(m) => match super::check_maxconn("backend.maxconn", *m.get_ref()) {
                    Ok(m) => Some(Some(m)),
                    Err(_) => {
                        let why = format!("out of range (1..={})", super::MAX_MAXCONN);
                        c.fail("backend.maxconn", m.span(), &why)
                    }
                },
                None => Some(None),
            };
            let tls = match b.tls_settings() {
                Ok(tls) => Some(tls),
                Err((key, span, why)) => c.push(key, span, format!("invalid {key}: {why}")),
            };
            match (addrs, weight, maxconn, tls) {
                (Some((addrs, host)), Some(weight), Some(maxconn), Some(tls)) => {
                    let at = out.len();
                    out.extend(super::expand(name, host.as_deref(), &addrs, weight, backup));
                    for b in out.iter_mut().skip(at) {
                        b.maxconn = maxconn;
                        b.tls.clone_from(&tls);
                    }
                }
                _ => ok = false,
            }
        }
        if ok && out.iter().all(|b| b.backup) {
            let why = "every backend is a backup: at least one must not be";
            return c.push("backend.backup", 0..0, why.to_string());
        }
        ok.then_some(out)
    }
}

impl FileBackend {
    /// The backend's TLS keys, validated (`tls::backend::from_file`).
    fn tls_settings(&self) -> crate::tls::backend::FileResult {
        fn flag(v: &Val<bool>) -> Option<(bool, Range<usize>)> {
            v.as_ref().map(|v| (*v.get_ref(), v.span()))
        }
        fn text(v: &Val<String>) -> Option<(&str, Range<usize>)> {
            v.as_ref().map(|v| (v.get_ref().as_str(), v.span()))
        }
        crate::tls::backend::from_file(
            flag(&self.tls),
            text(&self.ca),
            text(&self.server_name),
            flag(&self.insecure_skip_verify),
            self.address.get_ref(),
        )
    }
}

mod check;
mod listener;
mod log;
mod queue;

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
