//! When each request is answered.
//!
//! Plain mode: request `n` (counted across all connections) waits the
//! profile's `n`-th delay, measured from the moment its head is complete.
//! A zero delay is answered at once, without a heap entry.
//!
//! Capacity mode (`--capacity N`): at most `N` requests are in service; each
//! takes `--service-ms` (or its profile delay) from when it enters service,
//! and the rest wait first-in, first-out. Its latency is queue wait plus
//! service time. Like a real server, the scheduler does not notice clients
//! that leave: an abandoned request still takes its turn and its slot.
//!
//! Slow phase (`--slow FACTORx@AFTER+FOR`): a request admitted inside the
//! phase's window (measured from the scheduler's start) has its delay, or
//! its service time in capacity mode, multiplied by the factor.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::profile::{Profile, SlowPhase};
use super::timer::Timer;

/// A request whose answer is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The connection's slab key.
    pub key: usize,
    /// The request's id: the connection answers only if it still serves it.
    pub id: u64,
    /// What the response reports as its latency.
    pub latency: Duration,
}

/// A heap entry: a due answer, and whether it also ends a service slot.
#[derive(Debug)]
struct Entry {
    due: Due,
    in_service: bool,
}

/// A request waiting for a service slot.
#[derive(Debug)]
struct Queued {
    key: usize,
    id: u64,
    arrived: Instant,
    service: Duration,
}

#[derive(Debug)]
struct Capacity {
    slots: usize,
    busy: usize,
    /// Fixed service time; `None` takes each request's profile delay.
    service: Option<Duration>,
    queue: VecDeque<Queued>,
}

/// Decides each request's delay and tells the event loop when it is due.
#[derive(Debug)]
pub struct Scheduler {
    profile: Profile,
    /// Requests admitted so far: the position in the latency cycle.
    admitted: u64,
    capacity: Option<Capacity>,
    timer: Timer<Entry>,
    /// Optional slowdown window, timed from `started`.
    slow: Option<SlowPhase>,
    started: Instant,
}

impl Scheduler {
    /// `capacity` of 0 is treated as 1 (the configuration rejects it).
    pub fn new(profile: Profile, capacity: Option<usize>, service: Option<Duration>) -> Self {
        Scheduler {
            profile,
            admitted: 0,
            capacity: capacity.map(|slots| Capacity {
                slots: slots.max(1),
                busy: 0,
                service,
                queue: VecDeque::new(),
            }),
            timer: Timer::default(),
            slow: None,
            started: Instant::now(),
        }
    }

    /// Adds a slow phase, timed from `started` (the backend's start).
    pub fn with_slow(mut self, slow: Option<SlowPhase>, started: Instant) -> Self {
        self.slow = slow;
        self.started = started;
        self
    }

    /// Admits a request whose head completed at `now`. `Some(latency)`:
    /// answer it now; `None`: it will come out of [`Scheduler::expire`].
    pub fn admit(&mut self, key: usize, id: u64, now: Instant) -> Option<Duration> {
        let delay = self.profile.delay(self.admitted);
        self.admitted += 1;
        let (slow, started) = (self.slow, self.started);
        let slowed = |d: Duration| match slow {
            Some(p) => p.apply(d, now.saturating_duration_since(started)),
            None => d,
        };
        let Some(cap) = &mut self.capacity else {
            let delay = slowed(delay);
            if delay.is_zero() {
                return Some(Duration::ZERO);
            }
            let due = Due {
                key,
                id,
                latency: delay,
            };
            self.timer.push(
                now + delay,
                Entry {
                    due,
                    in_service: false,
                },
            );
            return None;
        };
        let q = Queued {
            key,
            id,
            arrived: now,
            service: slowed(cap.service.unwrap_or(delay)),
        };
        if cap.busy < cap.slots && cap.queue.is_empty() {
            start(cap, &mut self.timer, q, now).map(|d| d.latency)
        } else {
            cap.queue.push_back(q);
            None
        }
    }

    /// The next time [`Scheduler::expire`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timer.next_deadline()
    }

    /// Moves every answer due by `now` into `out`, freeing service slots
    /// and starting queued requests as they free.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Due>) {
        // Bounded: entries pushed from here are due after `now`.
        while let Some(entry) = self.timer.pop_expired(now) {
            out.push(entry.due);
            if !entry.in_service {
                continue;
            }
            if let Some(cap) = &mut self.capacity {
                cap.busy = cap.busy.saturating_sub(1);
                while cap.busy < cap.slots {
                    let Some(q) = cap.queue.pop_front() else {
                        break;
                    };
                    out.extend(start(cap, &mut self.timer, q, now));
                }
            }
        }
    }

    /// Requests in service and waiting for service (capacity mode).
    #[cfg(test)]
    pub fn load(&self) -> (usize, usize) {
        self.capacity
            .as_ref()
            .map_or((0, 0), |c| (c.busy, c.queue.len()))
    }
}

/// Puts `q` in service at `now`. Returns it as due at once when its service
/// time is zero (it then holds no slot).
fn start(cap: &mut Capacity, timer: &mut Timer<Entry>, q: Queued, now: Instant) -> Option<Due> {
    let due = Due {
        key: q.key,
        id: q.id,
        latency: now.saturating_duration_since(q.arrived) + q.service,
    };
    if q.service.is_zero() {
        return Some(due);
    }
    cap.busy += 1;
    timer.push(
        now + q.service,
        Entry {
            due,
            in_service: true,
        },
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn plain_mode_cycles_across_requests() {
        let t0 = Instant::now();
        let mut s = Scheduler::new("30,0,60".parse().unwrap(), None, None);
        assert_eq!(s.admit(1, 1, t0), None);
        assert_eq!(s.admit(2, 2, t0), Some(Duration::ZERO), "zero: at once");
        assert_eq!(s.admit(3, 3, t0), None);
        assert_eq!(s.next_deadline(), Some(t0 + ms(30)));
        let mut out = Vec::new();
        s.expire(t0 + ms(59), &mut out);
        assert_eq!(
            out,
            [Due {
                key: 1,
                id: 1,
                latency: ms(30)
            }]
        );
        s.expire(t0 + ms(60), &mut out);
        assert_eq!(out[1].latency, ms(60));
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn capacity_queues_fifo_and_latency_grows() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(Profile::immediate(), Some(2), Some(ms(50)));
        for id in 0..6 {
            assert_eq!(s.admit(id as usize, id, t0), None);
        }
        assert_eq!(s.load(), (2, 4));
        let mut out = Vec::new();
        for step in 1..=3 {
            s.expire(t0 + ms(50 * step), &mut out);
        }
        let got: Vec<(u64, u128)> = out.iter().map(|d| (d.id, d.latency.as_millis())).collect();
        assert_eq!(
            got,
            [(0, 50), (1, 50), (2, 100), (3, 100), (4, 150), (5, 150)]
        );
        assert_eq!(s.load(), (0, 0));
    }

    #[test]
    fn capacity_without_service_time_uses_the_profile() {
        let t0 = Instant::now();
        let mut s = Scheduler::new("20,40".parse().unwrap(), Some(1), None);
        assert_eq!(s.admit(0, 0, t0), None);
        assert_eq!(s.admit(1, 1, t0), None);
        let mut out = Vec::new();
        s.expire(t0 + ms(20), &mut out);
        s.expire(t0 + ms(60), &mut out);
        let lat: Vec<u128> = out.iter().map(|d| d.latency.as_millis()).collect();
        assert_eq!(lat, [20, 60], "second waits 20 then serves 40");
    }

    #[test]
    fn slow_phase_scales_delays_inside_its_window() {
        let t0 = Instant::now();
        let slow = "10x@100ms+50ms".parse().ok();
        let mut s = Scheduler::new("20".parse().unwrap(), None, None).with_slow(slow, t0);
        let mut out = Vec::new();
        // Admitted at 0, 100 (phase on), 149 (still on), 150 (off again).
        for (id, at) in [(0u64, 0u64), (1, 100), (2, 149), (3, 150)] {
            assert_eq!(s.admit(id as usize, id, t0 + ms(at)), None);
        }
        s.expire(t0 + ms(1_000), &mut out);
        let mut got: Vec<(u64, u128)> = out.iter().map(|d| (d.id, d.latency.as_millis())).collect();
        got.sort_unstable();
        assert_eq!(got, [(0, 20), (1, 200), (2, 200), (3, 20)]);
    }

    #[test]
    fn slow_phase_scales_service_time_and_immediate_profiles() {
        let t0 = Instant::now();
        let slow = "10x@0s+1s".parse().ok();
        let mut cap =
            Scheduler::new(Profile::immediate(), Some(1), Some(ms(20))).with_slow(slow, t0);
        assert_eq!(cap.admit(0, 0, t0), None);
        assert_eq!(cap.admit(1, 1, t0), None);
        let mut out = Vec::new();
        cap.expire(t0 + ms(199), &mut out);
        assert!(out.is_empty(), "service is 200 ms in the phase");
        cap.expire(t0 + ms(200), &mut out);
        cap.expire(t0 + ms(400), &mut out);
        let lat: Vec<u128> = out.iter().map(|d| d.latency.as_millis()).collect();
        assert_eq!(lat, [200, 400], "second waits 200 then serves 200");

        let mut zero = Scheduler::new(Profile::immediate(), None, None).with_slow(slow, t0);
        assert_eq!(zero.admit(0, 0, t0 + ms(10)), None, "0 ms becomes 10 ms");
        assert_eq!(zero.next_deadline(), Some(t0 + ms(20)));
        assert_eq!(
            zero.admit(1, 1, t0 + ms(1_000)),
            Some(Duration::ZERO),
            "after the phase"
        );
    }
}
