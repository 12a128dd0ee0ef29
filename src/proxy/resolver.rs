//! The resolver thread: backends given as host names (`api.internal:8080`)
//! are resolved again every `resolve_interval`, off the workers.
//!
//! Each round reads the running configuration, resolves every configured
//! name (getaddrinfo through std: blocking, hence its own thread), and when
//! the set of addresses of a name differs from the one running, applies a
//! configuration in which that name's backends are replaced (weight and
//! backup kept) through [`Live::reload`]: new addresses take traffic,
//! vanished ones finish what is in flight, kept ones keep their state. A
//! failed resolution (or an empty answer) keeps the last good set and warns,
//! rate-limited. A change of order alone is not a change.
//!
//! The thread holds a [`Weak`] to the [`Live`] configuration: it ends
//! within one [`SLICE`] of the proxy being dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::live::Live;
use crate::config::{BackendAddr, expand, lookup};
use crate::runtime::ratelimit::RateLimit;

/// Longest single sleep: the thread notices within this long that the
/// proxy is gone, at 10 wake-ups a second of a thread doing nothing else.
const SLICE: Duration = Duration::from_millis(100);

/// At most one warning per this long about failed resolutions (a DNS
/// outage would otherwise warn once per name per interval).
const WARN_EVERY: Duration = Duration::from_secs(30);

/// How a name is resolved: the system resolver in production, a script
/// in tests.
pub type Resolve = dyn Fn(&str) -> io::Result<Vec<SocketAddr>> + Send;

/// Starts the resolver thread with the system resolver.
pub fn spawn(live: &Arc<Live>) -> io::Result<JoinHandle<()>> {
    spawn_with(live, Box::new(lookup))
}

/// Starts the resolver thread with `resolve` (tests inject a script).
pub fn spawn_with(live: &Arc<Live>, resolve: Box<Resolve>) -> io::Result<JoinHandle<()>> {
    let weak = Arc::downgrade(live);
    thread::Builder::new()
        .name("tidegate-resolver".into())
        .spawn(move || run(&weak, &*resolve))
}

/// Rounds until the proxy is gone (the loop's bound: the proxy's life).
fn run(live: &Weak<Live>, resolve: &Resolve) {
    let mut warn = RateLimit::new(WARN_EVERY);
    while let Some(interval) = live.upgrade().map(|l| l.config().resolve_interval) {
        if !sleep(live, interval) {
            return;
        }
        let Some(names) = live.upgrade().map(|l| names(&l.config().backends)) else {
            return;
        };
        // No strong reference while resolving: getaddrinfo may block.
        let mut resolved = Vec::with_capacity(names.len());
        for (name, host) in names {
            let why = match resolve(&host) {
                Ok(mut addrs) if !addrs.is_empty() => {
                    dedup(&mut addrs);
                    resolved.push((name, host, addrs));
                    continue;
                }
                Ok(_) => "no addresses".to_string(),
                Err(e) => e.to_string(),
            };
            if let Some(held) = warn.allow(Instant::now()) {
                log::warn!(
                    "resolving backend {name} ({host}) failed: {why}; keeping its last addresses \
                     ({held} similar warnings suppressed)"
                );
            }
        }
        match live.upgrade() {
            Some(live) => apply(&live, &resolved),
            None => return,
        }
    }
}

/// Sleeps `interval` in slices; `false` if the proxy went away meanwhile.
fn sleep(live: &Weak<Live>, interval: Duration) -> bool {
    let deadline = Instant::now() + interval;
    // Bounded: interval / SLICE rounds.
    loop {
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        if live.strong_count() == 0 {
            return false;
        }
        thread::sleep(deadline.saturating_duration_since(now).min(SLICE));
    }
}

/// Replaces every name whose addresses changed in the configuration
/// running now (read after resolving, so a reload that happened meanwhile
/// is kept), and applies it if anything changed.
fn apply(live: &Live, resolved: &[(String, String, Vec<SocketAddr>)]) {
    let mut cfg = live.config();
    let mut changed = false;
    for (name, host, addrs) in resolved {
        if let Some(next) = replace(&cfg.backends, name, host, addrs) {
            log::debug!("backend {name} ({host}) now resolves to {addrs:?}");
            cfg.backends = next;
            changed = true;
        }
    }
    if changed {
        // `reload` counts a failure; the outcome is logged here.
        match live.reload(cfg) {
            Ok(plan) => log::info!("DNS: backends changed: {}", plan.describe()),
            Err(e) => log::warn!("DNS: backends changed, but the reload failed: {e}"),
        }
    }
}

/// The configured names to resolve: `(name, host:port)`, each once, in order.
pub fn names(backends: &[BackendAddr]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for b in backends {
        if let Some(host) = &b.host {
            let key = (b.configured_name().to_string(), host.clone());
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    out
}

/// `backends` with the backends of `name` (`host`) replaced by one per
/// address of `addrs` (keeping the first one's weight and backup flag),
/// where they were; `None` if the set of addresses is the same (or `name`
/// is no longer configured).
pub fn replace(
    backends: &[BackendAddr],
    name: &str,
    host: &str,
    addrs: &[SocketAddr],
) -> Option<Vec<BackendAddr>> {
    let ours = |b: &BackendAddr| b.host.as_deref() == Some(host) && b.configured_name() == name;
    let first = backends.iter().find(|b| ours(b))?;
    let mut old: Vec<SocketAddr> = backends
        .iter()
        .filter(|b| ours(b))
        .map(|b| b.addr)
        .collect();
    let mut new = addrs.to_vec();
    dedup(&mut old);
    dedup(&mut new);
    old.sort_unstable();
    new.sort_unstable();
    if old == new {
        return None;
    }
    let mut fresh = Some(expand(name, Some(host), &new, first.weight, first.backup));
    for b in fresh.iter_mut().flatten() {
        b.maxconn = first.maxconn;
        b.tls.clone_from(&first.tls);
    }
    let mut out = Vec::with_capacity(backends.len() + addrs.len());
    for b in backends {
        if !ours(b) {
            out.push(b.clone());
        } else if let Some(fresh) = fresh.take() {
            out.extend(fresh);
        }
    }
    Some(out)
}

/// Each address once, first occurrence kept.
fn dedup(addrs: &mut Vec<SocketAddr>) {
    let mut seen: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
    addrs.retain(|a| {
        let first = !seen.contains(a);
        seen.push(*a);
        first
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 80))
    }

    fn named(name: &str, host: &str, addrs: &[SocketAddr], weight: u32) -> Vec<BackendAddr> {
        expand(name, Some(host), addrs, weight, false)
    }

    #[test]
    fn names_are_listed_once_each() {
        let mut b = named("api", "api:80", &[a(1), a(2)], 1);
        b.push(BackendAddr::new("static", a(9)));
        b.extend(named("db", "db:80", &[a(3)], 1));
        assert_eq!(
            names(&b),
            [
                ("api".to_string(), "api:80".to_string()),
                ("db".to_string(), "db:80".to_string())
            ]
        );
        assert!(names(&[BackendAddr::new("static", a(9))]).is_empty());
    }

    #[test]
    fn the_same_set_in_another_order_is_no_change() {
        let b = named("api", "api:80", &[a(1), a(2)], 1);
        assert_eq!(replace(&b, "api", "api:80", &[a(2), a(1)]), None);
        assert_eq!(replace(&b, "api", "api:80", &[a(2), a(1), a(2)]), None);
        assert_eq!(replace(&b, "gone", "gone:80", &[a(1)]), None);
    }

    #[test]
    fn a_changed_set_replaces_the_name_in_place_keeping_weight_and_backup() {
        let mut b = vec![BackendAddr::new("first", a(9))];
        let mut api = named("api", "api:80", &[a(1)], 3);
        api[0].backup = true;
        b.extend(api);
        b.push(BackendAddr::new("last", a(8)));
        let grown = replace(&b, "api", "api:80", &[a(1), a(2)]).unwrap_or_default();
        let view: Vec<_> = grown
            .iter()
            .map(|b| (b.name.as_str(), b.addr, b.weight, b.backup))
            .collect();
        assert_eq!(
            view,
            [
                ("first", a(9), 1, false),
                ("api@10.0.0.1:80", a(1), 3, true),
                ("api@10.0.0.2:80", a(2), 3, true),
                ("last", a(8), 1, false),
            ]
        );
        // Shrinking back to one address takes the plain name again.
        let shrunk = replace(&grown, "api", "api:80", &[a(2)]).unwrap_or_default();
        let view: Vec<_> = shrunk.iter().map(|b| (b.name.as_str(), b.addr)).collect();
        assert_eq!(view, [("first", a(9)), ("api", a(2)), ("last", a(8))]);
    }
}
