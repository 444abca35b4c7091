//! Medians, spreads, percentiles and bootstrap confidence intervals of samples.
use serde::Serialize;

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Interquartile range.
    pub q1: f64,
    pub q3: f64,
    pub n: usize,
}

pub fn spread(xs: &[f64]) -> Option<Spread> {
    if xs.is_empty() {
        return None;
    }
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    Some(Spread {
        median: quantile(&s, 0.5),
        min: s[0],
        max: s[s.len() - 1],
        q1: quantile(&s, 0.25),
        q3: quantile(&s, 0.75),
        n: s.len(),
    })
}

/// Linear interpolation between closest ranks (the median of an even count is the mean of
/// the middle two).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// A two-sided confidence interval of the median of `xs` at `level` (0.90: 5th to 95th
/// percentile of the medians of resamples): the percentile bootstrap, with a fixed-seed
/// generator so one set of samples always gets the same interval. With few samples it can
/// be no narrower than they are (3 samples: their min–max), which is the honest answer.
pub fn median_ci(xs: &[f64], level: f64) -> Option<(f64, f64)> {
    const RESAMPLES: usize = 4000;
    if xs.is_empty() {
        return None;
    }
    let mut rng = SplitMix64(0x6d65_7368_6163_6365);
    let mut medians = Vec::with_capacity(RESAMPLES);
    let mut resample = vec![0.0; xs.len()];
    for _ in 0..RESAMPLES {
        for r in resample.iter_mut() {
            *r = xs[(rng.next() % xs.len() as u64) as usize];
        }
        resample.sort_by(f64::total_cmp);
        medians.push(quantile(&resample, 0.5));
    }
    medians.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Some((quantile(&medians, tail), quantile(&medians, 1.0 - tail)))
}

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, good enough to draw resample indices.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quartiles() {
        let s = spread(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.q1, s.q3, s.n), (3.0, 1.0, 5.0, 2.0, 4.0, 5));
        assert_eq!(spread(&[1.0, 2.0]).unwrap().median, 1.5);
        assert!(spread(&[]).is_none());
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((quantile(&sorted, 0.99) - 99.01).abs() < 1e-9);
    }

    #[test]
    fn bootstrap_intervals_hold_the_median_and_shrink_with_samples() {
        let few = median_ci(&[0.9, 1.0, 1.1], 0.90).unwrap();
        assert!(few.0 >= 0.9 && few.1 <= 1.1 && few.0 < 1.0 && few.1 > 1.0, "{few:?}");
        // 40 samples spread like the 3: a much narrower interval around the same median.
        let many: Vec<f64> = (0..40).map(|i| 0.9 + 0.2 * f64::from(i) / 39.0).collect();
        let (lo, hi) = median_ci(&many, 0.90).unwrap();
        assert!(lo < 1.0 && hi > 1.0 && hi - lo < (few.1 - few.0) / 2.0, "{lo}–{hi} vs {few:?}");
        assert_eq!(median_ci(&many, 0.90), median_ci(&many, 0.90), "the same samples, the same interval");
        assert_eq!(median_ci(&[2.0], 0.90), Some((2.0, 2.0)));
        assert!(median_ci(&[], 0.90).is_none());
    }
}
