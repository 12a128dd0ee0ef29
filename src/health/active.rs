//! Optional active health checks (`--health-check /path`), as in HAProxy:
//! a backend is marked down after `FALL` failed checks in a row and up again
//! after `RISE` good ones. One checker thread probes every backend each
//! `--health-interval` with a blocking `GET` (it is not a worker, so
//! blocking is fine) and publishes the verdicts as atomics that
//! `Shared::choose` reads. It holds only a `Weak` to the verdicts, so it
//! ends by itself once the proxy is gone.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::tls::backend::BackendTls;

/// Good checks in a row that bring a backend back (HAProxy's `rise 2`).
pub const RISE: u32 = 2;
/// Failed checks in a row that take a backend out (HAProxy's `fall 3`).
pub const FALL: u32 = 3;
/// A check gets at most this long (or the interval, if shorter): a
/// backend slower than that to answer a health check is not healthy.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Up/down state of every backend, as seen by the checker.
#[derive(Debug)]
pub struct ActiveHealth {
    up: Vec<AtomicBool>,
    /// Consecutive results against the current state.
    streak: Vec<AtomicU32>,
}

impl ActiveHealth {
    /// Every backend starts up (as in HAProxy), so traffic flows at once.
    pub fn new(backends: usize) -> Self {
        ActiveHealth {
            up: (0..backends).map(|_| AtomicBool::new(true)).collect(),
            streak: (0..backends).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    pub fn is_up(&self, backend: usize) -> bool {
        self.up.get(backend).is_none_or(|u| u.load(Relaxed))
    }

    /// Records one check; returns the new state when it changed.
    pub fn report(&self, backend: usize, ok: bool) -> Option<bool> {
        let (up, streak) = (self.up.get(backend)?, self.streak.get(backend)?);
        if up.load(Relaxed) == ok {
            streak.store(0, Relaxed);
            return None;
        }
        let n = streak.fetch_add(1, Relaxed) + 1;
        let needed = if ok { RISE } else { FALL };
        if n < needed {
            return None;
        }
        streak.store(0, Relaxed);
        up.store(ok, Relaxed);
        Some(ok)
    }
}

/// What the checker probes per backend: its address, its name (the Host
/// field) and, for a TLS backend, its TLS settings.
pub type Target = (SocketAddr, String, Option<Arc<BackendTls>>);

/// One check: `GET path` (over TLS for a TLS backend) answered with a 2xx
/// or 3xx status line in time.
pub fn check(
    addr: SocketAddr,
    tls: Option<&BackendTls>,
    host: &str,
    path: &str,
    timeout: Duration,
) -> bool {
    let Ok(s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    if s.set_read_timeout(Some(timeout)).is_err() || s.set_write_timeout(Some(timeout)).is_err() {
        return false;
    }
    match tls {
        None => probe(s, host, path),
        Some(t) => t.blocking(s).is_ok_and(|s| probe(s, host, path)),
    }
}

/// `GET path` on a connected stream; a 2xx or 3xx status line is good.
fn probe(mut s: impl Read + Write, host: &str, path: &str) -> bool {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tidegate-health\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    // Bounded: at most 16 bytes, each read under the timeout.
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    // "HTTP/1.x 2..": the status class is the tenth byte.
    head.starts_with(b"HTTP/1.") && matches!(head.get(9), Some(b'2' | b'3'))
}

/// Starts the checker thread for `targets` (address and name per backend,
/// in index order). It holds only a `Weak` to the verdicts, so it ends by
/// itself once the proxy drops them.
pub fn spawn(
    health: &Arc<ActiveHealth>,
    targets: Vec<Target>,
    path: String,
    interval: Duration,
) -> std::io::Result<JoinHandle<()>> {
    let weak: Weak<ActiveHealth> = Arc::downgrade(health);
    let timeout = interval.min(CHECK_TIMEOUT).max(Duration::from_millis(10));
    thread::Builder::new()
        .name("tidegate-health".into())
        .spawn(move || {
            loop {
                for (i, (addr, name, tls)) in targets.iter().enumerate() {
                    let ok = check(*addr, tls.as_deref(), name, &path, timeout);
                    let Some(active) = weak.upgrade() else { return };
                    match active.report(i, ok) {
                        Some(true) => {
                            log::info!("backend {name} is up ({RISE} good health checks)")
                        }
                        Some(false) => {
                            log::warn!("backend {name} is down ({FALL} failed health checks)")
                        }
                        None => {}
                    }
                }
                if weak.strong_count() == 0 {
                    return;
                }
                thread::sleep(interval);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_three_rise_two() {
        let h = ActiveHealth::new(2);
        assert!(h.is_up(0));
        assert_eq!(h.report(0, false), None);
        assert_eq!(h.report(0, true), None, "a good check resets the streak");
        assert_eq!(h.report(0, false), None);
        assert_eq!(h.report(0, false), None);
        assert_eq!(h.report(0, false), Some(false));
        assert!(!h.is_up(0) && h.is_up(1));
        assert_eq!(h.report(0, true), None);
        assert_eq!(h.report(0, true), Some(true));
        assert!(h.is_up(0));
    }
}
