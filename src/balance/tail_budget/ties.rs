//! Ties: differences the windows cannot resolve count as no difference.
//!
//! The LP minimises the mean, so between two backends it always prefers
//! the cheaper one, however small the gap: with three identical backends,
//! the one that is 0.1 ms faster by chance would take all but the others'
//! floors (issue 12). Before the LP runs, backends whose window
//! statistics are [`tied`] are grouped, and each member of a group is
//! given the group's pooled mean and tail (sample-weighted). The LP then
//! sees identical arms; its optimum is no longer unique among them, and
//! [`spread`] picks the most even one: each member gets the group's total
//! share divided equally. Under the pooled estimates this changes neither
//! the objective nor the tail, so the shares stay an optimum of the LP.
//!
//! Two backends are tied when neither statistic tells them apart:
//! - the means differ by at most the larger of [`MEAN_MARGIN`] of the
//!   smaller mean (too small to matter) and [`Z`] standard errors of the
//!   difference (too small to measure), the standard errors taken from
//!   the answered samples (sd/√n);
//! - the tails (`P(L > T)`) differ by at most [`Z`] standard errors of a
//!   two-proportion test with the pooled proportion.
//!
//! Failures and censored (overdue) samples enter the means at their
//! penalty or age but not the standard errors: they are facts, not noise,
//! so one failure in a window separates a backend from its peers, as
//! before.
//!
//! Groups are formed greedily in order of increasing mean: a backend joins
//! the first group whose leader (the group's fastest) it is tied with, else
//! it leads a new group. O(n²) comparisons, a few hundred flops for tens
//! of backends, every `PERIOD`; no allocation (the caller's buffers).

use super::lp::Arm;
use super::window::Censored;

/// Relative gap between two means below which it is not worth acting on:
/// 3%. Spreading evenly over backends within 3% of each other costs at
/// most ~3% of the mean against herding on the best (2% on average with
/// three backends), while a backend that carries all the traffic carries
/// all the risk and leaves the others cold. It is also larger than the
/// systematic gap a hot backend has over cold ones at 10 ms (wake-up and
/// cache effects of well under 1 ms), so that gap cannot keep a herd in
/// place.
pub const MEAN_MARGIN: f64 = 0.03;

/// Standard errors a difference must exceed to be resolved: 3, a
/// two-sided false "different" rate of 0.3% per pair and recompute for
/// normal estimates (2 would be 5%: with three pairs checked 10 times a
/// second, identical backends would split every few recomputes). The
/// seed's real differences are far beyond it: A's tail (1/3 of its
/// answers above `T`) is 5 standard errors from B's 0 with 64 samples
/// each.
pub const Z: f64 = 3.0;

/// One backend's window as the tie rule sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Stats {
    /// Samples in the window: answered, censored and failed.
    pub(super) n: f64,
    /// Mean latency with penalties and ages, ns: the LP's mean.
    pub(super) mean: f64,
    /// Share of the window above `T` (censored and failed included).
    pub(super) tail: f64,
    /// Standard error of the answered samples' mean, ns (0 below two).
    pub(super) se: f64,
}

impl Stats {
    /// The statistics of a window: `answered` (ns, sorted), `censored`,
    /// threshold `t` (ns). `None` if the window is empty.
    pub(super) fn of(answered: &[u64], censored: &Censored, t: f64) -> Option<Stats> {
        let n = answered.len() + censored.count;
        if n == 0 {
            return None;
        }
        let k = answered.len() as f64;
        let sum: f64 = answered.iter().map(|&ns| ns as f64).sum();
        let above = answered.len() - answered.partition_point(|&ns| ns as f64 <= t);
        let se = if answered.len() < 2 {
            0.0
        } else {
            let mean = sum / k;
            let sq: f64 = answered.iter().map(|&ns| (ns as f64 - mean).powi(2)).sum();
            (sq / (k - 1.0) / k).sqrt()
        };
        let n_f = n as f64;
        Some(Stats {
            n: n_f,
            mean: (sum + censored.age_sum as f64) / n_f,
            tail: (above + censored.count) as f64 / n_f,
            se,
        })
    }
}

/// Can the windows not tell `a` and `b` apart? See the module doc.
pub(super) fn tied(a: &Stats, b: &Stats) -> bool {
    let gap = (a.mean - b.mean).abs();
    let noise = Z * (a.se * a.se + b.se * b.se).sqrt();
    if gap > (MEAN_MARGIN * a.mean.min(b.mean)).max(noise) {
        return false;
    }
    let p = (a.n * a.tail + b.n * b.tail) / (a.n + b.n);
    let se = (p * (1.0 - p) * (1.0 / a.n + 1.0 / b.n)).max(0.0).sqrt();
    (a.tail - b.tail).abs() <= Z * se
}

/// Groups `stats` into ties: `group[i]` is the index (into `stats`) of
/// i's group leader; `arms[i]` its group's pooled mean and tail. `order`
/// is scratch. All three are overwritten.
pub(super) fn pool(
    stats: &[Stats],
    order: &mut Vec<usize>,
    group: &mut Vec<usize>,
    arms: &mut Vec<Arm>,
) {
    let n = stats.len();
    order.clear();
    order.extend(0..n);
    order.sort_unstable_by(|&x, &y| stats[x].mean.total_cmp(&stats[y].mean).then(x.cmp(&y)));
    group.clear();
    group.resize(n, usize::MAX);
    for (pos, &i) in order.iter().enumerate() {
        let leader = order[..pos]
            .iter()
            .copied()
            .find(|&l| group[l] == l && tied(&stats[l], &stats[i]));
        group[i] = leader.unwrap_or(i);
    }
    arms.clear();
    for i in 0..n {
        let (mut w, mut m, mut t) = (0.0, 0.0, 0.0);
        for (s, _) in stats
            .iter()
            .zip(group.iter())
            .filter(|(_, g)| **g == group[i])
        {
            w += s.n;
            m += s.n * s.mean;
            t += s.n * s.tail;
        }
        let w = w.max(f64::MIN_POSITIVE);
        // Weight 1 here; the caller sets each backend's configured weight.
        arms.push(Arm {
            mean: m / w,
            tail: t / w,
            weight: 1.0,
        });
    }
}

/// Shares each group's total of `target` among its members in proportion
/// to their configured weights (equally when the weights are equal;
/// `group` as [`pool`] left it, `arms` carrying the weights).
pub(super) fn spread(group: &[usize], arms: &[Arm], target: &mut [f64]) {
    let n = group.len().min(target.len()).min(arms.len());
    for leader in 0..n {
        if group[leader] != leader {
            continue;
        }
        let (mut sum, mut weights) = (0.0, 0.0);
        for ((g, t), a) in group.iter().zip(target.iter()).zip(arms).take(n) {
            if *g == leader {
                sum += t;
                weights += a.weight;
            }
        }
        let weights = weights.max(f64::MIN_POSITIVE);
        for ((g, t), a) in group.iter().zip(target.iter_mut()).zip(arms).take(n) {
            if *g == leader {
                *t = sum * a.weight / weights;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(n: f64, mean_ms: f64, tail: f64, se_ms: f64) -> Stats {
        Stats {
            n,
            mean: mean_ms * 1e6,
            tail,
            se: se_ms * 1e6,
        }
    }

    #[test]
    fn window_statistics() {
        let ms = 1_000_000u64;
        let v = [10 * ms, 10 * ms, 12 * ms, 20 * ms];
        let c = Censored {
            count: 1,
            age_sum: u128::from(50 * ms),
            failed: 0,
        };
        let s = Stats::of(&v, &c, 11e6).unwrap();
        assert_eq!(s.n, 5.0);
        assert!((s.mean - 20.4e6).abs() < 1.0, "{s:?}");
        assert!((s.tail - 0.6).abs() < 1e-12, "{s:?}");
        // Answered sd = sqrt(((3)^2 + 3^2 + 1 + 7^2)/3) = sqrt(68/3) ms.
        let want = (68.0f64 / 3.0 / 4.0).sqrt() * 1e6;
        assert!((s.se - want).abs() < 1.0, "{s:?}");
        assert_eq!(Stats::of(&[], &Censored::default(), 1.0), None);
        assert_eq!(Stats::of(&[ms], &Censored::default(), 1.0).unwrap().se, 0.0);
    }

    #[test]
    fn small_or_unresolved_gaps_are_ties_real_ones_are_not() {
        // Within 3%: tied, however precise.
        assert!(tied(
            &stats(64.0, 10.0, 0.0, 0.0),
            &stats(64.0, 10.29, 0.0, 0.0)
        ));
        assert!(!tied(
            &stats(64.0, 10.0, 0.0, 0.0),
            &stats(64.0, 10.4, 0.0, 0.0)
        ));
        // 10% apart but 3 standard errors are wider: tied.
        assert!(tied(
            &stats(64.0, 10.0, 0.0, 0.5),
            &stats(64.0, 11.0, 0.0, 0.5)
        ));
        // Tails 3/64 and 1/64: within noise. 21/64 (seed A) and 0: not.
        assert!(tied(
            &stats(64.0, 10.0, 3.0 / 64.0, 0.1),
            &stats(64.0, 10.0, 1.0 / 64.0, 0.1)
        ));
        assert!(!tied(
            &stats(64.0, 200.0, 21.0 / 64.0, 25.0),
            &stats(64.0, 200.0, 0.0, 0.1)
        ));
        // Seed B and C: 200 and 250 ms.
        assert!(!tied(
            &stats(64.0, 200.0, 0.0, 0.1),
            &stats(64.0, 250.0, 1.0, 0.1)
        ));
    }

    #[test]
    fn groups_pool_and_spread_evenly() {
        let s = [
            stats(64.0, 10.2, 0.04, 0.05),
            stats(64.0, 30.0, 0.0, 0.05),
            stats(32.0, 10.0, 0.01, 0.05),
            stats(64.0, 10.1, 0.06, 0.05),
        ];
        let (mut order, mut group, mut arms) = (Vec::new(), Vec::new(), Vec::new());
        pool(&s, &mut order, &mut group, &mut arms);
        // Fastest first: 2 leads 0 and 3; 1 alone.
        assert_eq!(group, [2, 1, 2, 2]);
        let w = 64.0 + 32.0 + 64.0;
        let mean = (64.0 * 10.2 + 32.0 * 10.0 + 64.0 * 10.1) * 1e6 / w;
        let tail = (64.0 * 0.04 + 32.0 * 0.01 + 64.0 * 0.06) / w;
        for i in [0, 2, 3] {
            assert!((arms[i].mean - mean).abs() < 1e-3 && (arms[i].tail - tail).abs() < 1e-12);
        }
        assert_eq!(
            arms[1],
            Arm {
                mean: 30e6,
                tail: 0.0,
                weight: 1.0
            }
        );
        let mut target = [0.01, 0.01, 0.97, 0.01];
        spread(&group, &arms, &mut target);
        for (got, want) in target.iter().zip([0.33, 0.01, 0.33, 0.33]) {
            assert!((got - want).abs() < 1e-12, "{target:?}");
        }
        pool(&[], &mut order, &mut group, &mut arms);
        assert!(arms.is_empty() && group.is_empty());
    }
}
