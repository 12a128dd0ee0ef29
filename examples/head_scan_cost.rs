//! The parser work for a 16 KiB request head that arrives one byte per
//! read, without sockets: calling `parse_request` after every byte (what
//! the proxy did) against calling it only when `parse_due` says so (what it
//! does). Companion of `benches/slow_head.sh`, which measures the whole
//! proxy, where the per-read wake-up dominates.
//!
//! `cargo run --release --example head_scan_cost`

use std::time::Instant;

use tidegate::http::{self, EMPTY_HEADER, MAX_HEADERS};

fn head() -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\nHost: bench\r\n".to_vec();
    let pad = [b"X-Pad: ".as_slice(), &[b'a'; 190], b"\r\n"].concat();
    while head.len() + pad.len() + 2 <= 16_000 {
        head.extend_from_slice(&pad);
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Parses after every byte; returns the head length found.
fn every_byte(head: &[u8]) -> usize {
    for n in 1..=head.len() {
        let mut fields = [EMPTY_HEADER; MAX_HEADERS];
        if let Ok(Some(p)) = http::parse_request(&head[..n], &mut fields) {
            return p.head.head_len;
        }
    }
    0
}

/// Parses only when `parse_due` says it can answer.
fn when_due(head: &[u8]) -> usize {
    let mut scanned = 0;
    for n in 1..=head.len() {
        if !http::parse_due(&head[..n], &mut scanned) {
            continue;
        }
        let mut fields = [EMPTY_HEADER; MAX_HEADERS];
        if let Ok(Some(p)) = http::parse_request(&head[..n], &mut fields) {
            return p.head.head_len;
        }
    }
    0
}

fn main() {
    let head = head();
    for (name, f) in [
        ("parse after every byte", every_byte as fn(&[u8]) -> usize),
        ("parse when due", when_due),
    ] {
        // Bounded: 5 rounds, best one reported.
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = Instant::now();
            let len = std::hint::black_box(f(std::hint::black_box(&head)));
            best = best.min(t0.elapsed().as_secs_f64());
            assert_eq!(len, head.len());
        }
        println!(
            "{name}: {:.3} ms of CPU for a {}-byte head fed one byte at a time",
            best * 1000.0,
            head.len()
        );
    }
}
