//! Each backend's recent answers, and the sample set the LP sees.
//!
//! # Why by dispatch time
//! "The last 64 answers" in completion order is biased whenever a
//! backend's traffic changes: after a burst, its fast answers come back
//! first and its slow ones last, so once the burst is over the window is
//! all slow answers, and at a 1% floor (5 req/s) it takes 13 s to refresh.
//! The seed's A lands exactly there after the cold start (one whole
//! second of its 400 ms answers). So [`Samples`] keeps each answer's send
//! time, and [`select`] takes the [`WINDOW`] most recently *sent* requests
//! among those sent at least `H` ago, `H` being the longest answer seen:
//! all requests sent before `now - H` have either answered (and are in the
//! ring) or are still pending, already slower than anything seen, and join
//! as censored samples at their age (a lower bound: they are tail samples
//! we know of before they finish). That set is an unbiased sample of the
//! backend's latency per request sent, whatever the traffic did, and a
//! backend that hangs shows up as tail after `H`.
//!
//! The censored samples count as tail whatever `T` is: a request that has
//! outlived every answer of its backend is, for a budget, presumed slow.
//!
//! # Failures
//! A failed attempt (connect error, reset, 5xx) is recorded at its real
//! send time, flagged [`FAILED`], with its penalised sample (see
//! `Outcome::penalised`) as its latency. [`select`] counts it as tail
//! whatever `T` is, like a censored sample (a failure is never within the
//! budget, even under a generous `--slo-ms`), and its penalty enters the
//! mean. Failures do not set the horizon `H`: a penalty is not a latency,
//! and a 1 s horizon would hold every backend's window a second behind.
//! At the seed's cold start, A's 400 ms answers are still out while its
//! fast ones are back; this is what tells the LP so at 200 ms instead of
//! 400 ms.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::time::Duration;

use super::WINDOW;

/// Answers kept per backend: enough that [`WINDOW`] of them were sent
/// before `now - H` even at the seed's B (90% of ~500 req/s = 92 answers
/// per 200 ms), at 16 bytes each.
pub(super) const RING: usize = 256;

/// A slot never written, or being written (seqlock, as `dispatch`).
const EMPTY: u64 = 0;

/// Marks a failure's latency: bit 62, far above any latency (146 years)
/// and below the censored marks of [`select`] (above `u64::MAX / 2`).
pub(super) const FAILED: u64 = 1 << 62;

/// Relaxed unless stated: each counter stands alone.
const ORDER: Ordering = Ordering::Relaxed;

/// The last [`RING`] answers of one backend: (send stamp, latency ns).
#[derive(Debug)]
pub(super) struct Samples {
    sent: [AtomicU64; RING],
    ns: [AtomicU64; RING],
    next: AtomicUsize,
}

impl Samples {
    pub(super) fn new() -> Self {
        Samples {
            sent: std::array::from_fn(|_| AtomicU64::new(EMPTY)),
            ns: std::array::from_fn(|_| AtomicU64::new(0)),
            next: AtomicUsize::new(0),
        }
    }

    /// Records an answer to a request sent at `sent` (a stamp, never 0);
    /// `failed`: the attempt failed and `sample` is its penalty.
    pub(super) fn record(&self, sent: u64, sample: Duration, failed: bool) {
        let ns = u64::try_from(sample.as_nanos())
            .unwrap_or(u64::MAX)
            .min(FAILED - 1);
        let ns = if failed { ns | FAILED } else { ns };
        let i = self.next.fetch_add(1, ORDER) % RING;
        self.sent[i].store(EMPTY, ORDER);
        fence(Ordering::Release);
        self.ns[i].store(ns, ORDER);
        self.sent[i].store(sent.max(1), Ordering::Release);
    }

    pub(super) fn measured(&self) -> bool {
        self.next.load(ORDER) > 0
    }

    /// Mean of the last [`WINDOW`] answers (completion order), ms.
    pub(super) fn mean_ms(&self) -> Option<f64> {
        let next = self.next.load(ORDER);
        let count = next.min(WINDOW);
        if count == 0 {
            return None;
        }
        let sum: u128 = (1..=count)
            .map(|k| u128::from(self.ns[(next - k) % RING].load(ORDER) & !FAILED))
            .sum();
        Some(sum as f64 / count as f64 / 1e6)
    }

    /// On a reload: records `old`'s answers in their order, each send
    /// stamp passed through `restamp` (to this selector's epoch).
    pub(super) fn take_over(&self, old: &Samples, restamp: impl Fn(u64) -> u64) {
        let next = old.next.load(ORDER);
        for k in (1..=next.min(RING)).rev() {
            let i = next.wrapping_sub(k) % RING;
            let s1 = old.sent[i].load(Ordering::Acquire);
            let v = old.ns[i].load(ORDER);
            fence(Ordering::Acquire);
            if s1 != EMPTY && old.sent[i].load(ORDER) == s1 {
                let failed = v & FAILED != 0;
                self.record(restamp(s1), Duration::from_nanos(v & !FAILED), failed);
            }
        }
    }

    /// Appends every consistent (send stamp, ns) pair to `out`.
    pub(super) fn collect(&self, out: &mut Vec<(u64, u64)>) {
        for (sent, ns) in self.sent.iter().zip(&self.ns) {
            let s1 = sent.load(Ordering::Acquire);
            let v = ns.load(ORDER);
            fence(Ordering::Acquire);
            if s1 != EMPTY && sent.load(ORDER) == s1 {
                out.push((s1, v));
            }
        }
    }
}

/// The LP's samples of one backend that count as tail whatever `T` is.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(super) struct Censored {
    /// Requests still unanswered, older than every answer seen, and
    /// failures.
    pub(super) count: usize,
    /// Their ages (lower bounds of their latencies) and the failures'
    /// penalties summed, ns.
    pub(super) age_sum: u128,
    /// Of `count`, the failures.
    pub(super) failed: usize,
}

/// The LP's samples from `answers` ((send stamp, ns), any order) and the
/// `pending` ages of unanswered sends, of which at most `inflight` are
/// real (the oldest extras are abandoned sends): the answered ones into
/// `out` (ns, sorted), the censored ones counted; see the module doc.
/// `answers` and `pending` are reordered.
pub(super) fn select(
    answers: &mut Vec<(u64, u64)>,
    pending: &mut [u64],
    inflight: usize,
    now: u64,
    out: &mut Vec<u64>,
) -> Censored {
    out.clear();
    if answers.is_empty() {
        return Censored::default();
    }
    let horizon = (answers.iter().map(|a| a.1))
        .filter(|ns| ns & FAILED == 0)
        .max()
        .unwrap_or(0);
    let cutoff = now.saturating_sub(horizon);
    answers.retain(|&(sent, _)| sent <= cutoff);
    pending.sort_unstable();
    let real = pending.iter().take(inflight);
    // Marked with ns = u64::MAX: no answer is that long.
    answers.extend(
        real.filter(|&&age| age >= horizon)
            .map(|&age| (now - age, u64::MAX - age)),
    );
    answers.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
    let mut censored = Censored::default();
    for &(_, ns) in answers.iter().take(WINDOW) {
        if ns > u64::MAX / 2 {
            censored.count += 1;
            censored.age_sum += u128::from(u64::MAX - ns);
        } else if ns & FAILED != 0 {
            censored.count += 1;
            censored.failed += 1;
            censored.age_sum += u128::from(ns & !FAILED);
        } else {
            out.push(ns);
        }
    }
    out.sort_unstable();
    censored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_send_times_and_means_the_last_window() {
        let s = Samples::new();
        assert!(!s.measured() && s.mean_ms().is_none());
        for k in 0..300u64 {
            s.record(
                1 + k,
                Duration::from_millis(if k < 200 { 1 } else { 3 }),
                false,
            );
        }
        assert!(s.measured());
        assert_eq!(s.mean_ms(), Some(3.0));
        let mut v = Vec::new();
        s.collect(&mut v);
        assert_eq!(v.len(), RING);
        assert_eq!(v.iter().map(|p| p.0).min(), Some(1 + 300 - RING as u64));
    }

    #[test]
    fn recent_sends_wait_and_overdue_ones_count_at_their_age() {
        let ms = 1_000_000u64;
        let now = 1_000 * ms;
        // Fast answers sent recently, slow ones sent long ago: only
        // requests sent before now - 400 ms are used.
        let mut answers: Vec<(u64, u64)> = (0..50).map(|k| (now - 100 * ms + k, 10 * ms)).collect();
        answers.extend((0..10).map(|k| (now - 900 * ms + k, 400 * ms)));
        answers.extend((0..20).map(|k| (now - 800 * ms + k, 10 * ms)));
        // Pending: two over 400 ms (one abandoned: in flight is 2 and a
        // young one is in flight too), one recent.
        let mut pending = vec![5_000 * ms, 450 * ms, 5 * ms];
        let mut out = Vec::new();
        let c = select(&mut answers, &mut pending, 2, now, &mut out);
        assert_eq!(out.len(), 30);
        assert_eq!(out.iter().filter(|&&v| v == 10 * ms).count(), 20);
        assert_eq!(out.iter().filter(|&&v| v == 400 * ms).count(), 10);
        let age_sum = u128::from(450 * ms);
        assert_eq!(
            c,
            Censored {
                count: 1,
                age_sum,
                failed: 0
            }
        );
        let mut none = Vec::new();
        let c = select(&mut none, &mut [], 0, now, &mut out);
        assert!(out.is_empty() && c.count == 0);
    }

    #[test]
    fn failures_are_tail_at_their_penalty_and_set_no_horizon() {
        let ms = 1_000_000u64;
        let now = 1_000 * ms;
        let s = Samples::new();
        // 20 ms answers and 1 ms failures (penalty 1 s), sent 100 ms ago.
        for k in 0..10 {
            s.record(now - 100 * ms + k, Duration::from_millis(20), false);
            s.record(now - 100 * ms + k, Duration::from_secs(1), true);
        }
        // The mean counts the penalty.
        assert_eq!(s.mean_ms(), Some(510.0));
        let mut answers = Vec::new();
        s.collect(&mut answers);
        let mut out = Vec::new();
        let c = select(&mut answers, &mut [], 0, now, &mut out);
        // The horizon is 20 ms, not 1 s: all 20 are in the set.
        assert_eq!(out, vec![20 * ms; 10]);
        assert_eq!(c.count, 10);
        assert_eq!(c.failed, 10);
        assert_eq!(c.age_sum, 10 * 1_000 * u128::from(ms));
        // Only failures: still measured, all tail.
        let only = Samples::new();
        only.record(now - 10 * ms, Duration::from_secs(1), true);
        let mut answers = Vec::new();
        only.collect(&mut answers);
        let c = select(&mut answers, &mut [], 0, now, &mut out);
        assert!(out.is_empty() && c.count == 1 && c.failed == 1);
    }
}
