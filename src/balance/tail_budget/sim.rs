//! A discrete-event closed-loop simulation for any [`Selector`], in
//! virtual time (µs), with the proxy's calling order: `tick`, `pick`,
//! `on_send` (its ticket kept); at the answer `observe` consuming the
//! ticket; the client's next request
//! after `gap`. Extends `sim_tests`' seed model with in-flight hooks, a
//! capacity (queueing) model and latency statistics.
//!
//! - [`Seed`]: A cycles [10,15,20,400,400,400,10,15,20] ms, advancing on
//!   every arrival; B = 200 ms; C = 250 ms; unlimited concurrency.
//! - [`Identical`]: every backend the same latency plus noise (issue 12).
//! - [`Capacity`]: each backend has `c` servers and a FIFO queue, fixed
//!   service time (the research's scenario 2: 4/8/16 servers, 20 ms).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::super::test_util::{TickPick, every};
use super::super::{Outcome, Selector};

/// Backend A's latencies in ms, one per request it receives.
pub(in crate::balance) const A_CYCLE: [u64; 9] = [10, 15, 20, 400, 400, 400, 10, 15, 20];

/// How backends answer.
pub(in crate::balance) trait Model {
    /// Latency in µs of a request reaching backend `b` at `t` µs. Called
    /// in non-decreasing `t` order.
    fn latency(&mut self, b: usize, t: u64) -> u64;
}

/// Deterministic xorshift64 in [0, 1).
#[derive(Debug, Clone)]
pub(in crate::balance) struct Rng(u64);

impl Rng {
    pub(in crate::balance) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(in crate::balance) fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The seed scenario (three backends); optionally A starts at a random
/// phase and every latency gets +U(0, 1) ms (the research's robustness
/// runs).
#[derive(Debug, Default)]
pub(in crate::balance) struct Seed {
    a_next: usize,
    jitter: Option<Rng>,
}

impl Seed {
    pub(in crate::balance) fn jittered(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        Seed {
            a_next: (rng.next() * A_CYCLE.len() as f64) as usize,
            jitter: Some(rng),
        }
    }
}

impl Model for Seed {
    fn latency(&mut self, b: usize, _t: u64) -> u64 {
        let ms = match b {
            0 => {
                self.a_next += 1;
                A_CYCLE[(self.a_next - 1) % A_CYCLE.len()]
            }
            1 => 200,
            _ => 250,
        };
        let extra = self
            .jitter
            .as_mut()
            .map_or(0, |r| (r.next() * 1000.0) as u64);
        ms * 1000 + extra
    }
}

/// Identical backends: `base` µs plus U(0, 1) ms of jitter, and one
/// answer in 50 delayed by a further U(5, 15) ms (a CPU stall).
#[derive(Debug)]
pub(in crate::balance) struct Identical {
    base: u64,
    rng: Rng,
}

impl Identical {
    pub(in crate::balance) fn new(base: Duration, seed: u64) -> Self {
        Identical {
            base: base.as_micros() as u64,
            rng: Rng::new(seed),
        }
    }
}

impl Model for Identical {
    fn latency(&mut self, _b: usize, _t: u64) -> u64 {
        let jitter = (self.rng.next() * 1000.0) as u64;
        let stall = if self.rng.next() < 0.02 {
            5_000 + (self.rng.next() * 10_000.0) as u64
        } else {
            0
        };
        self.base + jitter + stall
    }
}

/// `servers[b]` servers per backend, FIFO, `service` µs each.
#[derive(Debug)]
pub(in crate::balance) struct Capacity {
    /// When each server of each backend is next free, µs.
    free: Vec<Vec<u64>>,
    service: u64,
    /// Exponential service times (mean `service`) instead of fixed.
    exponential: Option<Rng>,
}

impl Capacity {
    pub(in crate::balance) fn new(servers: &[usize], service: Duration) -> Self {
        Capacity {
            free: servers.iter().map(|&c| vec![0; c.max(1)]).collect(),
            service: service.as_micros() as u64,
            exponential: None,
        }
    }

    pub(in crate::balance) fn exponential(servers: &[usize], mean: Duration, seed: u64) -> Self {
        Capacity {
            exponential: Some(Rng::new(seed)),
            ..Capacity::new(servers, mean)
        }
    }
}

impl Model for Capacity {
    fn latency(&mut self, b: usize, t: u64) -> u64 {
        // Arrivals come in time order, so the earliest-free server is the
        // one a FIFO queue would hand this request to.
        let servers = &mut self.free[b];
        let (k, _) = servers.iter().enumerate().min_by_key(|&(_, f)| *f).unwrap();
        let service = match &mut self.exponential {
            Some(rng) => (-(1.0 - rng.next()).ln() * self.service as f64) as u64,
            None => self.service,
        };
        let done = servers[k].max(t) + service.max(1);
        servers[k] = done;
        done - t
    }
}

/// What a run measured (answers completed within the run).
#[derive(Debug)]
pub(in crate::balance) struct Run {
    pub(in crate::balance) secs: f64,
    /// Client-side latencies, µs.
    pub(in crate::balance) latencies: Vec<u64>,
    /// Every answer within the run: (sent at µs, backend, latency µs).
    pub(in crate::balance) answers: Vec<(u64, usize, u64)>,
    pub(in crate::balance) per_backend: Vec<usize>,
}

impl Run {
    pub(in crate::balance) fn req_per_s(&self) -> f64 {
        self.latencies.len() as f64 / self.secs
    }

    pub(in crate::balance) fn mean_ms(&self) -> f64 {
        self.latencies.iter().sum::<u64>() as f64 / self.latencies.len() as f64 / 1e3
    }

    /// Nearest-rank quantile, ms.
    pub(in crate::balance) fn quantile_ms(&self, q: f64) -> f64 {
        let mut v = self.latencies.clone();
        v.sort_unstable();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1] as f64 / 1e3
    }

    /// Backend `b`'s share of the requests sent, %.
    pub(in crate::balance) fn share_pct(&self, b: usize) -> f64 {
        let total: usize = self.per_backend.iter().sum();
        100.0 * self.per_backend[b] as f64 / total as f64
    }

    /// The answers to requests sent in `[from, to)` s, as a run of
    /// `to - from` s (latencies and shares of those answered).
    pub(in crate::balance) fn slice(&self, from: f64, to: f64) -> Run {
        let (a, b) = ((from * 1e6) as u64, (to * 1e6) as u64);
        let answers: Vec<_> = self
            .answers
            .iter()
            .copied()
            .filter(|&(sent, _, _)| (a..b).contains(&sent))
            .collect();
        let mut per_backend = vec![0; self.per_backend.len()];
        for &(_, b, _) in &answers {
            per_backend[b] += 1;
        }
        Run {
            secs: to - from,
            latencies: answers.iter().map(|a| a.2).collect(),
            answers,
            per_backend,
        }
    }

    /// Share of answers slower than `ms`, %.
    pub(in crate::balance) fn above_pct(&self, ms: f64) -> f64 {
        let slow = self
            .latencies
            .iter()
            .filter(|&&us| us as f64 > ms * 1e3)
            .count();
        100.0 * slow as f64 / self.latencies.len() as f64
    }

    pub(in crate::balance) fn summary(&self) -> String {
        let shares: Vec<String> = (0..self.per_backend.len())
            .map(|b| format!("{:.1}", self.share_pct(b)))
            .collect();
        format!(
            "{:.1} req/s, mean {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, shares % {}",
            self.req_per_s(),
            self.mean_ms(),
            self.quantile_ms(0.95),
            self.quantile_ms(0.99),
            shares.join(" / ")
        )
    }
}

/// Closed-loop settings.
#[derive(Debug, Clone, Copy)]
pub(in crate::balance) struct Load {
    pub(in crate::balance) clients: usize,
    pub(in crate::balance) run: Duration,
    /// Added to every backend latency the proxy sees (its own overhead).
    pub(in crate::balance) overhead: Duration,
    /// Client think time between an answer and its next request.
    pub(in crate::balance) gap: Duration,
}

impl Load {
    pub(in crate::balance) fn new(clients: usize, run: Duration) -> Self {
        Load {
            clients,
            run,
            overhead: Duration::ZERO,
            gap: Duration::ZERO,
        }
    }
}

/// Runs `load` against `model`'s `n` backends through `s`.
pub(in crate::balance) fn simulate(
    s: &dyn Selector,
    model: &mut dyn Model,
    n: usize,
    load: Load,
) -> Run {
    let t0 = Instant::now();
    let at = |us: u64| t0 + Duration::from_micros(us);
    let end = load.run.as_micros() as u64;
    let overhead = load.overhead.as_micros() as u64;
    let gap = load.gap.as_micros() as u64;
    let mut run = Run {
        secs: load.run.as_secs_f64(),
        latencies: Vec::new(),
        answers: Vec::new(),
        per_backend: vec![0; n],
    };
    // (time µs, order, backend or None for "client sends", latency µs)
    let mut events = BinaryHeap::new();
    let mut order = 0u64;
    for _ in 0..load.clients {
        events.push(Reverse((0u64, order, None, 0u64)));
        order += 1;
    }
    // Each request's ticket, by its answer event's order.
    let mut tickets = std::collections::HashMap::new();
    while let Some(Reverse((now, key, what, lat))) = events.pop() {
        match what {
            None => {
                if now >= end {
                    continue;
                }
                let b = s.tick_pick(at(now), &every).expect("a backend");
                tickets.insert(order, s.on_send(b, at(now)));
                run.per_backend[b] += 1;
                let lat = model.latency(b, now) + overhead;
                events.push(Reverse((now + lat, order, Some(b), lat)));
            }
            Some(b) => {
                let latency = Duration::from_micros(lat);
                if let Some(ticket) = tickets.remove(&key) {
                    debug_assert_eq!(ticket.backend(), b);
                    s.observe(ticket, Outcome::Success { latency }, at(now));
                }
                if now <= end {
                    run.latencies.push(lat);
                    run.answers.push((now - lat, b, lat));
                }
                events.push(Reverse((now + gap, order, None, 0)));
            }
        }
        order += 1;
    }
    run
}
