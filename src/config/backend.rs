//! One configured backend and the `--backend` flags' resolution. A backend
//! given as a host name expands to one [`BackendAddr`] per address the
//! name resolves to ([`expand`]); the resolver thread
//! (`proxy::resolver`) re-resolves it every `resolve_interval`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::{ConfigError, MAX_TIMEOUT, parse_duration};
use crate::tls::backend::BackendTls;

/// One backend as configured: its name as given and its resolved address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddr {
    pub name: String,
    pub addr: SocketAddr,
    /// Relative share of traffic (1..=[`MAX_WEIGHT`]; 1 from the command
    /// line), honoured by round-robin, p2c sampling and tail-budget's floor.
    pub weight: u32,
    /// Used only when every primary (non-backup) backend is down or ejected.
    pub backup: bool,
    /// The `host:port` text when the address was given as a host name (not
    /// an IP literal): the resolver thread re-resolves it.
    pub host: Option<String>,
    /// `maxconn`: at most this many requests in flight to it at once, across
    /// all workers (1..=[`MAX_MAXCONN`]); the rest wait in the proxy's
    /// queue. `None`: no configured limit.
    pub maxconn: Option<u32>,
    /// TLS to this backend (`[[backend]] tls = true`), else plain TCP.
    pub tls: Option<Arc<BackendTls>>,
}

impl BackendAddr {
    /// A primary backend of weight 1, as `--backend` gives.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        BackendAddr {
            name: name.into(),
            addr,
            weight: 1,
            backup: false,
            host: None,
            maxconn: None,
            tls: None,
        }
    }

    /// The name it was configured under: `name` without the `@ADDR` that
    /// [`expand`] adds when a host name has several addresses.
    pub fn configured_name(&self) -> &str {
        let suffix = format!("@{}", self.addr);
        self.name
            .strip_suffix(suffix.as_str())
            .unwrap_or(&self.name)
    }
}

/// Largest `maxconn`: far above what one backend serves at once, small
/// enough that in-flight counts stay far from `u32` overflow.
pub const MAX_MAXCONN: u32 = 1_000_000;

/// Checks a `maxconn` value (1..=[`MAX_MAXCONN`]; 0 is refused rather
/// than read as "no limit", which is written by leaving the key out).
pub fn check_maxconn(flag: &'static str, n: u32) -> Result<u32, ConfigError> {
    if (1..=MAX_MAXCONN).contains(&n) {
        return Ok(n);
    }
    Err(ConfigError::BadValue {
        flag,
        value: n.to_string(),
        why: format!("maxconn out of range (1..={MAX_MAXCONN}; leave it out for no limit)"),
    })
}

/// One `--backend` value: `ADDR[,maxconn=N][,weight=W]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendFlag {
    pub addr: String,
    pub maxconn: Option<u32>,
    pub weight: Option<u32>,
}

/// Splits a `--backend` value into its address and options. The plain
/// `ADDR` form stays valid; each option at most once.
pub fn parse_backend_flag(value: &str) -> Result<BackendFlag, ConfigError> {
    let bad = |why: String| ConfigError::BadValue {
        flag: "--backend",
        value: value.to_string(),
        why,
    };
    let mut parts = value.split(',');
    let addr = parts.next().unwrap_or_default().trim().to_string();
    if addr.is_empty() {
        return Err(bad("missing address (ADDR[,maxconn=N][,weight=W])".into()));
    }
    let mut out = BackendFlag {
        addr,
        maxconn: None,
        weight: None,
    };
    // Bounded by the value's length.
    for opt in parts {
        let (key, v) = opt.split_once('=').unwrap_or((opt, ""));
        let n: u32 = v
            .trim()
            .parse()
            .map_err(|_| bad(format!("'{opt}': expected maxconn=N or weight=W")))?;
        let slot = match key.trim() {
            "maxconn" => &mut out.maxconn,
            "weight" => &mut out.weight,
            other => return Err(bad(format!("unknown option '{other}' (maxconn, weight)"))),
        };
        if slot.replace(n).is_some() {
            return Err(bad(format!("'{}' given twice", key.trim())));
        }
    }
    if let Some(n) = out.maxconn
        && !(1..=MAX_MAXCONN).contains(&n)
    {
        return Err(bad(format!("maxconn out of range (1..={MAX_MAXCONN})")));
    }
    if let Some(w) = out.weight
        && !(1..=MAX_WEIGHT).contains(&w)
    {
        return Err(bad(format!("weight out of range (1..={MAX_WEIGHT})")));
    }
    Ok(out)
}

/// Largest backend weight: HAProxy's limit (256), plenty for "3 times as
/// much"; keeps tail-budget's scaled floors and p2c's weight sums small.
pub const MAX_WEIGHT: u32 = 256;

/// Default interval between resolutions of host-name backends: a pod
/// added behind a headless Service takes traffic within 5 s, at one
/// getaddrinfo per name per 5 s (nginx's `resolver valid=` is often 5-10 s).
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);

/// Shortest `resolve_interval`: below 100 ms a resolver would mostly ask
/// the same cached answer again and reload for every flap.
pub const MIN_RESOLVE_INTERVAL: Duration = Duration::from_millis(100);

/// Parses `--resolve-interval` / `resolve_interval`: a duration within
/// [`MIN_RESOLVE_INTERVAL`]..=24 h.
pub fn parse_resolve_interval(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(flag, value)?;
    if d < MIN_RESOLVE_INTERVAL || d > MAX_TIMEOUT {
        return Err(ConfigError::BadValue {
            flag,
            value: value.to_string(),
            why: "must be between 100ms and 24h".into(),
        });
    }
    Ok(d)
}

/// Every address of `value`: an `ip:port` literal (`host` is `None`), or
/// a `host:port` name resolved now, all of its addresses in the order
/// getaddrinfo gives them, each once (`host` is the name). A name with no
/// address is an error.
pub fn resolve_all(
    flag: &'static str,
    value: &str,
) -> Result<(Vec<SocketAddr>, Option<String>), ConfigError> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok((vec![addr], None));
    }
    let bad = |why: String| ConfigError::BadAddress {
        flag,
        value: value.to_string(),
        why,
    };
    if !value.contains(':') {
        return Err(bad("missing port".into()));
    }
    let addrs = lookup(value).map_err(|e| bad(e.to_string()))?;
    if addrs.is_empty() {
        return Err(bad("name has no addresses".into()));
    }
    Ok((addrs, Some(value.to_string())))
}

/// getaddrinfo through std, each address once, in the order given. Blocks:
/// call it at start-up or on the resolver thread, never on a worker.
pub fn lookup(host: &str) -> std::io::Result<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in host.to_socket_addrs()? {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// One backend per address: named `name` when there is one address, else
/// `name@ADDR` (unique and stable while the address stays), each with
/// `weight`, `backup` and `host`.
pub fn expand(
    name: &str,
    host: Option<&str>,
    addrs: &[SocketAddr],
    weight: u32,
    backup: bool,
) -> Vec<BackendAddr> {
    addrs
        .iter()
        .map(|&addr| BackendAddr {
            name: if addrs.len() == 1 {
                name.to_string()
            } else {
                format!("{name}@{addr}")
            },
            addr,
            weight,
            backup,
            host: host.map(str::to_string),
            maxconn: None,
            tls: None,
        })
        .collect()
}

/// Resolves every `--backend` (a name to all of its addresses); at least
/// one is required.
pub fn resolve_backends(values: &[String]) -> Result<Vec<BackendAddr>, ConfigError> {
    if values.is_empty() {
        return Err(ConfigError::NoBackends);
    }
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        let flag = parse_backend_flag(v)?;
        let (addrs, host) = resolve_all("--backend", &flag.addr)?;
        let weight = flag.weight.unwrap_or(1);
        let mut these = expand(&flag.addr, host.as_deref(), &addrs, weight, false);
        for b in &mut these {
            b.maxconn = flag.maxconn;
        }
        out.extend(these);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn one_address_keeps_the_name_several_get_name_at_addr() {
        let one = expand("api", Some("api:80"), &[addr("10.0.0.1:80")], 3, true);
        assert_eq!(one.len(), 1);
        assert_eq!(
            (one[0].name.as_str(), one[0].weight, one[0].backup),
            ("api", 3, true)
        );
        assert_eq!(one[0].host.as_deref(), Some("api:80"));
        let two = [addr("10.0.0.1:80"), addr("[fd00::2]:80")];
        let names: Vec<_> = expand("api", Some("api:80"), &two, 1, false)
            .into_iter()
            .map(|b| (b.configured_name().to_string(), b.name))
            .collect();
        assert_eq!(
            names,
            [
                ("api".to_string(), "api@10.0.0.1:80".to_string()),
                ("api".to_string(), "api@[fd00::2]:80".to_string())
            ]
        );
        assert_eq!(one[0].configured_name(), "api");
    }

    #[test]
    fn literals_are_not_names_and_localhost_resolves_to_all() {
        assert_eq!(
            resolve_all("--backend", "127.0.0.1:81"),
            Ok((vec![addr("127.0.0.1:81")], None))
        );
        let (addrs, host) = resolve_all("--backend", "localhost:82")
            .unwrap_or_else(|e| panic!("localhost resolves: {e}"));
        assert_eq!(host.as_deref(), Some("localhost:82"));
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 82));
        assert!(addrs.contains(&addr("127.0.0.1:82")) || addrs.contains(&addr("[::1]:82")));
        let backends = resolve_backends(&["localhost:82".into()]);
        assert!(backends.is_ok_and(|b| b.len() == addrs.len()
            && b.iter().all(|b| b.host.as_deref() == Some("localhost:82"))));
        assert!(resolve_all("--backend", "nope").is_err());
        assert!(resolve_all("--backend", "no-such-host.invalid:80").is_err());
    }

    #[test]
    fn backend_flags_take_maxconn_and_weight() {
        let p = |v: &str| parse_backend_flag(v).map_err(|e| e.to_string());
        assert_eq!(
            p("127.0.0.1:81"),
            Ok(BackendFlag {
                addr: "127.0.0.1:81".into(),
                maxconn: None,
                weight: None
            })
        );
        assert_eq!(
            p("127.0.0.1:81,maxconn=2,weight=3"),
            Ok(BackendFlag {
                addr: "127.0.0.1:81".into(),
                maxconn: Some(2),
                weight: Some(3)
            })
        );
        assert!(p("127.0.0.1:81,maxconn=0").is_err_and(|e| e.contains("maxconn out of range")));
        assert!(p("127.0.0.1:81,weight=0").is_err_and(|e| e.contains("weight out of range")));
        assert!(p("127.0.0.1:81,maxconn=x").is_err_and(|e| e.contains("expected maxconn=N")));
        assert!(p("127.0.0.1:81,speed=3").is_err_and(|e| e.contains("unknown option 'speed'")));
        assert!(p("127.0.0.1:81,maxconn=2,maxconn=3").is_err_and(|e| e.contains("twice")));
        let b = resolve_backends(&["127.0.0.1:81,maxconn=4,weight=2".into()]);
        assert!(b.is_ok_and(|b| b.len() == 1
            && b[0].maxconn == Some(4)
            && b[0].weight == 2
            && b[0].name == "127.0.0.1:81"));
    }

    #[test]
    fn resolve_interval_is_at_least_100ms() {
        let p = |v| parse_resolve_interval("resolve_interval", v).map_err(|e| e.to_string());
        assert_eq!(p("5s"), Ok(DEFAULT_RESOLVE_INTERVAL));
        assert_eq!(p("100ms"), Ok(MIN_RESOLVE_INTERVAL));
        assert_eq!(
            p("50ms"),
            Err("invalid resolve_interval '50ms': must be between 100ms and 24h".into())
        );
        assert!(p("25h").is_err() && p("soon").is_err());
    }
}
