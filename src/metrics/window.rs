//! Exact latency percentiles per backend over a sliding window: one
//! HdrHistogram per worker for the sub-window being filled, and a ring of
//! the last finished sub-windows, merged when read.
//!
//! The data path: a worker records into its own cell, a `Mutex` that only
//! that worker and the reader (the admin thread, about once a second) ever
//! lock, so the lock is uncontended but for the rare moment a reader
//! holds it; each cell sits on its own cache lines. No lock or counter is
//! shared across workers. The reader's [`LatencyWindow::rotate`] swaps
//! each cell's histogram for an empty one every [`PERIOD`] and keeps the
//! last [`SUB_WINDOWS`] - 1 finished ones; a read merges those with the
//! cells' current ones, so a read covers the last 50 to 60 s. Without a
//! reader rotating (no `--admin`), the cells cover the whole run.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Length of one sub-window: the window slides in steps of this.
pub const PERIOD: Duration = Duration::from_secs(10);

/// Sub-windows in the window (the oldest is dropped as a new one
/// starts): 6 x 10 s makes the dashboard's one-minute window.
pub const SUB_WINDOWS: usize = 6;

/// The window a read covers at most, in seconds (reported in `/stats`).
pub const WINDOW_SECS: u64 = PERIOD.as_secs() * SUB_WINDOWS as u64;

/// Highest latency recorded exactly: 1 hour in µs (above saturates), as
/// the run summary's histogram.
const MAX_MICROS: u64 = 3_600_000_000;

/// 2 significant figures: a recorded value is within 1 % of the true one
/// (the issue asks for under 5 %), at 26 KB per histogram instead of the
/// 190 KB that 3 figures cost per worker, backend and sub-window.
const SIGFIGS: u8 = 2;

/// Worker cells per backend; a worker index past it shares a cell (still
/// correct, only no longer uncontended). Cells are allocated on first use.
pub const CELLS: usize = 64;

/// An empty histogram with the window's bounds.
#[allow(clippy::expect_used)]
pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds (low >= 1, high >= 2 * low, sigfigs <= 5):
    // this cannot fail, and nothing from the network reaches it.
    Histogram::new_with_bounds(1, MAX_MICROS, SIGFIGS).expect("constant histogram bounds are valid")
}

/// One worker's current sub-window, alone on its cache lines (128 bytes:
/// two lines, as adjacent-line prefetch pairs them).
#[derive(Debug)]
#[repr(align(128))]
struct Cell(Mutex<Histogram<u64>>);

/// What only the reader touches: the finished sub-windows.
#[derive(Debug, Default)]
struct Past {
    ring: VecDeque<Histogram<u64>>,
    /// When the current sub-window started (`None` before the first rotate).
    started: Option<Instant>,
}

/// One backend's latencies over the sliding window.
#[derive(Debug)]
pub struct LatencyWindow {
    cells: [OnceLock<Box<Cell>>; CELLS],
    past: Mutex<Past>,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            cells: std::array::from_fn(|_| OnceLock::new()),
            past: Mutex::default(),
        }
    }
}

impl LatencyWindow {
    /// Records `micros` from `worker` (its own cell; see the module doc).
    pub fn record(&self, worker: usize, micros: u64) {
        let Some(slot) = self.cells.get(worker % CELLS) else {
            return;
        };
        let cell = slot.get_or_init(|| Box::new(Cell(Mutex::new(new_histogram()))));
        if let Ok(mut h) = cell.0.lock() {
            h.saturating_record(micros.max(1));
        }
    }

    /// Starts a new sub-window if the current one is [`PERIOD`] old: each
    /// cell's histogram is swapped for an empty one (allocated before the
    /// lock is taken) and their sum joins the ring. The reader's tick.
    pub fn rotate(&self, now: Instant) {
        let Ok(mut past) = self.past.lock() else {
            return;
        };
        match past.started {
            None => {
                past.started = Some(now);
                return;
            }
            Some(t) if now.saturating_duration_since(t) < PERIOD => return,
            Some(_) => past.started = Some(now),
        }
        let mut finished = new_histogram();
        for cell in self.cells.iter().filter_map(OnceLock::get) {
            let mut fresh = new_histogram();
            if let Ok(mut h) = cell.0.lock() {
                std::mem::swap(&mut *h, &mut fresh);
            }
            let _ = finished.add(&fresh);
        }
        // Bounded: at most SUB_WINDOWS - 1 finished sub-windows are kept.
        while past.ring.len() >= SUB_WINDOWS.saturating_sub(1) {
            past.ring.pop_front();
        }
        past.ring.push_back(finished);
    }

    /// The window's latencies (µs): the finished sub-windows and every
    /// worker's current one.
    pub fn merged(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        if let Ok(past) = self.past.lock() {
            for h in &past.ring {
                let _ = out.add(h);
            }
        }
        for cell in self.cells.iter().filter_map(OnceLock::get) {
            if let Ok(h) = cell.0.lock() {
                let _ = out.add(&*h);
            }
        }
        out
    }
}

/// Quantile `q` of `h` in ms, `None` if `h` is empty.
pub fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_251_ms_backend_shows_p95_within_5_percent() {
        let w = LatencyWindow::default();
        for i in 0..1_000 {
            w.record(i % 3, 251_000);
        }
        let h = w.merged();
        let p95 = quantile_ms(&h, 0.95).unwrap_or_default();
        assert!((p95 - 251.0).abs() / 251.0 < 0.05, "p95 {p95} ms");
        // The 2-figure histogram is within 1 %.
        assert!((p95 - 251.0).abs() / 251.0 < 0.01, "p95 {p95} ms");
        assert_eq!(h.len(), 1_000);
    }

    #[test]
    fn percentiles_of_a_mix_are_exact_to_one_percent() {
        let w = LatencyWindow::default();
        // 100 requests: 1..=100 ms, so pN is N ms.
        for ms in 1..=100u64 {
            w.record(usize::try_from(ms).unwrap_or(0), ms * 1000);
        }
        let h = w.merged();
        for (q, want) in [(0.5, 50.0), (0.95, 95.0), (0.99, 99.0)] {
            let got = quantile_ms(&h, q).unwrap_or_default();
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(quantile_ms(&new_histogram(), 0.5), None);
    }

    #[test]
    fn old_sub_windows_slide_out() {
        let w = LatencyWindow::default();
        let t0 = Instant::now();
        w.rotate(t0);
        w.record(0, 900_000);
        // One period later the 900 ms sample is in the ring: still read.
        w.rotate(t0 + PERIOD);
        w.record(1, 10_000);
        assert_eq!(w.merged().len(), 2);
        // A rotate before the period is up changes nothing.
        w.rotate(t0 + PERIOD + Duration::from_secs(1));
        assert_eq!(w.merged().len(), 2);
        // After SUB_WINDOWS periods the 900 ms sample has left the window.
        for k in 2..=SUB_WINDOWS as u32 {
            w.rotate(t0 + PERIOD * k);
        }
        let h = w.merged();
        assert_eq!(h.len(), 1);
        assert_eq!(quantile_ms(&h, 1.0).map(f64::round), Some(10.0));
        // Nothing recorded for a whole window: empty.
        w.rotate(t0 + PERIOD * (SUB_WINDOWS as u32 + 1));
        assert!(w.merged().is_empty());
    }
}
