//! What a configuration reload changes. Pure: compares the running
//! configuration with the new one and says which backends stay (and where
//! they were), which come and go, and what cannot change without a restart.
//!
//! A backend is the same backend across a reload when its address is the
//! same (its name, weight or backup flag may change): its learned routing
//! state, its counters and its pooled connections carry over.

use crate::config::{BackendAddr, ProxyConfig};

/// The difference between two configurations, as a reload applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// For each new backend, its index in the old list if it stays.
    pub map: Vec<Option<usize>>,
    /// Names of the backends that come.
    pub added: Vec<String>,
    /// Names of the backends that go (they finish what is in flight).
    pub removed: Vec<String>,
    /// Settings that differ but need a restart: left as they were.
    pub needs_restart: Vec<&'static str>,
}

impl Plan {
    /// Compares `old` with `new`.
    pub fn new(old: &ProxyConfig, new: &ProxyConfig) -> Plan {
        let map = map_backends(&old.backends, &new.backends);
        let added = new
            .backends
            .iter()
            .zip(&map)
            .filter(|(_, m)| m.is_none())
            .map(|(b, _)| b.name.clone())
            .collect();
        let removed = old
            .backends
            .iter()
            .enumerate()
            .filter(|(i, _)| !map.contains(&Some(*i)))
            .map(|(_, b)| b.name.clone())
            .collect();
        let mut needs_restart = Vec::new();
        if old.server.listen != new.server.listen {
            needs_restart.push("listen");
        }
        if old.server.workers != new.server.workers {
            needs_restart.push("workers");
        }
        if old.server.backlog != new.server.backlog {
            needs_restart.push("backlog");
        }
        if old.server.reuseport != new.server.reuseport {
            needs_restart.push("reuseport");
        }
        if old.access_log != new.access_log {
            needs_restart.push("access_log");
        }
        if !same_listeners(&old.listeners, &new.listeners) {
            needs_restart.push("listener");
        }
        Plan {
            map,
            added,
            removed,
            needs_restart,
        }
    }

    /// A one-line account for the log.
    pub fn describe(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        format!(
            "{} backends ({} kept), added: {}, removed: {}",
            self.map.len(),
            self.map.iter().filter(|m| m.is_some()).count(),
            list(&self.added),
            list(&self.removed)
        )
    }
}

/// For each new backend, the index of the old backend with its address.
/// Bounded: n x m comparisons of two short lists (a few hundred backends at
/// most; a reload is rare).
pub fn map_backends(old: &[BackendAddr], new: &[BackendAddr]) -> Vec<Option<usize>> {
    let mut taken = vec![false; old.len()];
    new.iter()
        .map(|b| {
            let i = position(old, b, &taken)?;
            if let Some(t) = taken.get_mut(i) {
                *t = true;
            }
            Some(i)
        })
        .collect()
}

/// The first old backend at `new`'s address, with the same TLS settings
/// (a pooled plaintext connection must not serve a TLS backend), not yet
/// matched (an address listed twice maps one to one).
fn position(old: &[BackendAddr], new: &BackendAddr, taken: &[bool]) -> Option<usize> {
    old.iter()
        .enumerate()
        .find(|(i, b)| {
            b.addr == new.addr && b.tls == new.tls && !taken.get(*i).copied().unwrap_or(true)
        })
        .map(|(i, _)| i)
}

/// Whether two `[[listener]]` lists bind the same addresses, each plaintext
/// or HTTPS alike (certificates may differ: they reload).
pub fn same_listeners(old: &[crate::config::Listener], new: &[crate::config::Listener]) -> bool {
    old.len() == new.len()
        && old
            .iter()
            .zip(new)
            .all(|(a, b)| a.address == b.address && a.tls.is_some() == b.tls.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn cfg(backends: &[(&str, u16)], workers: usize) -> ProxyConfig {
        ProxyConfig::for_tests(
            SocketAddr::from(([127, 0, 0, 1], 9090)),
            workers,
            backends
                .iter()
                .map(|&(name, port)| {
                    BackendAddr::new(name, SocketAddr::from(([127, 0, 0, 1], port)))
                })
                .collect(),
        )
    }

    #[test]
    fn kept_added_and_removed_backends_by_address() {
        let old = cfg(&[("a", 1), ("b", 2), ("c", 3)], 2);
        // c stays (renamed), a goes, d comes, b stays.
        let new = cfg(&[("c2", 3), ("d", 4), ("b", 2)], 2);
        let plan = Plan::new(&old, &new);
        assert_eq!(plan.map, vec![Some(2), None, Some(1)]);
        assert_eq!(plan.added, vec!["d".to_string()]);
        assert_eq!(plan.removed, vec!["a".to_string()]);
        assert!(plan.needs_restart.is_empty());
        assert_eq!(plan.describe(), "3 backends (2 kept), added: d, removed: a");
    }

    #[test]
    fn listen_and_workers_need_a_restart() {
        let old = cfg(&[("a", 1)], 2);
        let mut new = cfg(&[("a", 1)], 1);
        new.server.listen = SocketAddr::from(([127, 0, 0, 1], 9091));
        new.server.reuseport = true;
        assert_eq!(
            Plan::new(&old, &new).needs_restart,
            vec!["listen", "workers", "reuseport"]
        );
    }

    #[test]
    fn a_repeated_address_maps_one_to_one() {
        let old = [("a", 1), ("a2", 1)]
            .map(|(n, p)| BackendAddr::new(n, SocketAddr::from(([127, 0, 0, 1], p))));
        let new = [old[0].clone()];
        assert_eq!(map_backends(&old, &new), vec![Some(0)]);
        assert_eq!(map_backends(&new, &old), vec![Some(0), None]);
    }

    #[test]
    fn turning_tls_on_makes_a_new_backend() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let spec = crate::tls::backend::BackendTlsSpec {
            insecure_skip_verify: true,
            ..Default::default()
        };
        let tls = crate::tls::backend::BackendTls::build(spec, "127.0.0.1:1");
        let plain = [BackendAddr::new("a", addr)];
        let secure = [BackendAddr {
            tls: tls.ok().map(std::sync::Arc::new),
            ..BackendAddr::new("a", addr)
        }];
        assert!(secure[0].tls.is_some());
        assert_eq!(map_backends(&plain, &secure), vec![None]);
        assert_eq!(map_backends(&secure, &secure.clone()), vec![Some(0)]);
    }
}
