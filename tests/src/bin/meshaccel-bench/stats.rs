//! Medians, spreads and percentiles of samples.
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
}
