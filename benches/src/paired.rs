//! Paired comparisons for benches whose timings drift: the HTTP bench runs many short rounds,
//! each variant once per round in a balanced order, and compares each variant with its baseline
//! round by round, so that a drift in the machine's load moves both sides of a pair alike.
//!
//! The median of the per-round figures comes with a distribution-free 95 % confidence interval
//! from its order statistics: with `n` rounds, the `k`-th smallest and `k`-th largest figures,
//! `k` the largest rank with P(Binomial(n, ½) < k) ≤ 2.5 %. It assumes nothing about the shape
//! of the rounds' spread, only that rounds are independent.

/// A median with its 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The median of the figures.
    pub median: f64,
    /// The interval's lower end; `None` when there are too few figures (fewer than 6) for one.
    pub low: Option<f64>,
    /// The interval's upper end; `None` with `low`.
    pub high: Option<f64>,
}

impl Interval {
    /// The median of `figures` and its interval (NaN figures are dropped).
    ///
    /// # Panics
    /// If no figure is left.
    pub fn of(figures: &[f64]) -> Self {
        let mut sorted: Vec<f64> = figures.iter().copied().filter(|x| !x.is_nan()).collect();
        assert!(!sorted.is_empty(), "a median needs at least one figure");
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        let k = median_rank(n);
        let (low, high) = if k == 0 {
            (None, None)
        } else {
            (Some(sorted[k - 1]), Some(sorted[n - k]))
        };
        Interval { median, low, high }
    }

    /// The interval's width, if it has one.
    pub fn width(&self) -> Option<f64> {
        Some(self.high? - self.low?)
    }
}

/// The rank `k` (1-based) of the lower end of the median's 95 % interval among `n` sorted
/// figures, 0 when `n` is too small for one: the largest `k` with P(Binomial(n, ½) ≤ k − 1)
/// ≤ 2.5 %, so that [x₍ₖ₎, x₍ₙ₋ₖ₊₁₎] covers the median with at least 95 %.
pub fn median_rank(n: usize) -> usize {
    if n > 1000 {
        // The normal approximation, within one rank of the exact figure at this size.
        return ((n as f64 - 1.96 * (n as f64).sqrt()) / 2.0).floor() as usize;
    }
    let mut pmf = 0.5f64.powi(n as i32);
    let mut below = 0.0;
    let mut k = 0;
    while k < n {
        // `below` is P(X ≤ k − 1); rank k + 1 is allowed when P(X ≤ k) ≤ 2.5 %.
        below += pmf;
        if below > 0.025 {
            break;
        }
        pmf *= (n - k) as f64 / (k + 1) as f64;
        k += 1;
    }
    k
}

/// The order in which `variants` run in each of `rounds` rounds: a shuffled order, then the same
/// order reversed, and again (ABBA), so that each variant's mean position is the same over
/// every two rounds and a drift within a pair of rounds favours none.
pub fn balanced_orders(
    variants: usize,
    rounds: usize,
    mut random: impl FnMut() -> u64,
) -> Vec<Vec<usize>> {
    let mut orders = Vec::with_capacity(rounds);
    let mut order: Vec<usize> = (0..variants).collect();
    for round in 0..rounds {
        if round % 2 == 0 {
            for i in (1..variants).rev() {
                order.swap(i, (random() % (i as u64 + 1)) as usize);
            }
        } else {
            order.reverse();
        }
        orders.push(order.clone());
    }
    orders
}

#[cfg(test)]
mod tests {
    use super::*;

    /// P(Binomial(n, ½) ≤ k), summed term by term.
    fn cdf(n: usize, k: usize) -> f64 {
        let mut c = 1.0f64;
        let mut total = 0.0;
        for i in 0..=k {
            total += c;
            c = c * (n - i) as f64 / (i + 1) as f64;
        }
        total / 2f64.powi(n as i32)
    }

    #[test]
    fn median_rank_matches_the_published_table() {
        // The ranks of binomial tables for the median's 95 % interval.
        for (n, k) in [
            (5, 0),
            (6, 1),
            (10, 2),
            (20, 6),
            (30, 10),
            (40, 14),
            (100, 40),
        ] {
            assert_eq!(median_rank(n), k, "n = {n}");
        }
    }

    #[test]
    fn median_rank_is_the_largest_with_at_least_95_percent_coverage() {
        for n in 6..=400 {
            let k = median_rank(n);
            // Coverage of [x(k), x(n-k+1)] is 1 - 2 P(X <= k - 1).
            assert!(1.0 - 2.0 * cdf(n, k - 1) >= 0.95, "n = {n}");
            assert!(
                1.0 - 2.0 * cdf(n, k) < 0.95,
                "n = {n}: rank {} also holds",
                k + 1
            );
        }
    }

    #[test]
    fn median_rank_approximation_is_within_one_rank_above_1000() {
        let n = 1001;
        let mut exact = 0;
        while cdf(n, exact) <= 0.025 {
            exact += 1;
        }
        assert!(median_rank(n).abs_diff(exact) <= 1);
    }

    #[test]
    fn interval_takes_the_order_statistics() {
        let figures: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let interval = Interval::of(&figures);
        assert_eq!(interval.median, 5.5);
        assert_eq!((interval.low, interval.high), (Some(2.0), Some(9.0)));
        let few = Interval::of(&[3.0, 1.0, 2.0]);
        assert_eq!((few.median, few.low, few.width()), (2.0, None, None));
    }

    #[test]
    fn balanced_orders_reverse_every_second_round() {
        let mut state = 7u64;
        let orders = balanced_orders(6, 8, || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        });
        assert_eq!(orders.len(), 8);
        let mut position_sum = [0usize; 6];
        for pair in orders.chunks(2) {
            let mut reversed = pair[0].clone();
            reversed.reverse();
            assert_eq!(pair[1], reversed);
            for order in pair {
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..6).collect::<Vec<_>>());
                for (position, &variant) in order.iter().enumerate() {
                    position_sum[variant] += position;
                }
            }
        }
        assert!(position_sum.iter().all(|&sum| sum == 4 * 5));
        assert_ne!(
            orders[0], orders[2],
            "each pair of rounds draws a new order"
        );
    }
}
