//! A backend's counters: updated by its event loop, readable from any
//! thread while it runs ([`Counters`]), and snapshotted as [`BackendStats`].
//! `Relaxed` throughout: these are statistics, never synchronisation, and
//! the single writer makes each increment uncontended.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters, shared between the event loop and its handle.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub bad_requests: AtomicU64,
    pub injected: AtomicU64,
    pub garbage: AtomicU64,
    pub resets: AtomicU64,
    pub bytes_received: AtomicU64,
    pub body_bytes: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A consistent-enough copy (each field is read once).
    pub fn snapshot(&self, injected_status: Option<u16>) -> BackendStats {
        BackendStats {
            connections: self.connections.load(Relaxed),
            requests: self.requests.load(Relaxed),
            ok: self.ok.load(Relaxed),
            bad_requests: self.bad_requests.load(Relaxed),
            injected: self.injected.load(Relaxed),
            injected_status,
            garbage: self.garbage.load(Relaxed),
            resets: self.resets.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            body_bytes: self.body_bytes.load(Relaxed),
        }
    }
}

/// What a backend did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Connections accepted.
    pub connections: u64,
    /// Request heads parsed (answered or not).
    pub requests: u64,
    /// `200 OK` responses queued for sending.
    pub ok: u64,
    /// `400 Bad Request` responses (each closes its connection).
    pub bad_requests: u64,
    /// Responses with the `status:CODE:RATE` code.
    pub injected: u64,
    /// That code, when the fail mode is `status`.
    pub injected_status: Option<u16>,
    /// Garbage answers (`--fail garbage`).
    pub garbage: u64,
    /// Connections reset on purpose (`--fail reset`).
    pub resets: u64,
    /// Every byte read from clients: heads, bodies, framing.
    pub bytes_received: u64,
    /// Request body payload bytes (after chunked decoding).
    pub body_bytes: u64,
}

impl BackendStats {
    /// Responses by HTTP status, skipping statuses never sent.
    pub fn by_status(&self) -> Vec<(u16, u64)> {
        let mut v = vec![(200, self.ok), (400, self.bad_requests)];
        if let Some(code) = self.injected_status {
            v.push((code, self.injected));
        }
        v.sort_unstable();
        v.retain(|&(_, n)| n > 0);
        v
    }

    /// Responses of one status.
    pub fn status(&self, code: u16) -> u64 {
        self.by_status()
            .into_iter()
            .filter(|&(c, _)| c == code)
            .map(|(_, n)| n)
            .sum()
    }
}

impl fmt::Display for BackendStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests on {} connections;",
            self.requests, self.connections
        )?;
        for (code, n) in self.by_status() {
            write!(f, " {code}: {n}")?;
        }
        if self.garbage > 0 {
            write!(f, " garbage: {}", self.garbage)?;
        }
        if self.resets > 0 {
            write!(f, " reset: {}", self.resets)?;
        }
        write!(
            f,
            "; {} bytes received ({} body)",
            self.bytes_received, self.body_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_status_merges_and_skips_zeroes() {
        let s = BackendStats {
            ok: 5,
            injected: 2,
            injected_status: Some(503),
            ..Default::default()
        };
        assert_eq!(s.by_status(), [(200, 5), (503, 2)]);
        assert_eq!(s.status(503), 2);
        assert_eq!(s.status(400), 0);
        let text = s.to_string();
        assert!(text.contains("200: 5 503: 2"), "{text}");
    }
}
