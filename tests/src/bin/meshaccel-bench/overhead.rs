//! Overhead on traffic meshaccel does not accelerate (issue 6: ≤ 2 %): an accelerated client
//! pod (sock_ops and sock_create attached, its SYNs tagged, nothing paired) against an
//! opted-out server, compared with an opted-out client against the same server, interleaved.
use std::fmt::Write as _;

use serde::Serialize;

use crate::matrix::Metric;
use crate::opts::size_label;
use crate::stats::{spread, Spread};

/// One measured (metric, size): baseline and unaccelerated values and their per-repetition
/// ratios (> 1 is faster, as in the matrix).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub metric: Metric,
    pub size: usize,
    pub baseline: Option<Spread>,
    pub unaccelerated: Option<Spread>,
    pub ratio: Option<Spread>,
    /// Why samples were dropped (bytes redirected where none may be, failed runs).
    pub problems: Vec<String>,
}

/// Samples of one row: (baseline, unaccelerated) per repetition.
#[derive(Default)]
pub struct Samples {
    pairs: Vec<(Option<f64>, Option<f64>)>,
    problems: Vec<String>,
}

impl Samples {
    pub fn push(&mut self, baseline: Option<f64>, unaccelerated: Option<f64>) {
        self.pairs.push((baseline, unaccelerated));
    }

    pub fn problem(&mut self, why: String) {
        self.problems.push(why);
    }

    pub fn row(&self, metric: Metric, size: usize) -> Row {
        type Pick = fn(&(Option<f64>, Option<f64>)) -> Option<f64>;
        let side = |f: Pick| spread(&self.pairs.iter().filter_map(f).collect::<Vec<_>>());
        let ratios: Vec<f64> = self.pairs.iter().filter_map(|&(b, u)| Some(metric.speedup(b?, u?))).collect();
        Row {
            metric,
            size,
            baseline: side(|p| p.0),
            unaccelerated: side(|p| p.1),
            ratio: spread(&ratios),
            problems: self.problems.clone(),
        }
    }
}

/// The report's section.
pub fn markdown(rows: &[Row], out: &mut String) {
    let _ = writeln!(
        out,
        "\nOverhead on traffic meshaccel does not accelerate: an accelerated pod (programs attached, SYN tagged, not \
         paired) → an opted-out pod, against opted-out → opted-out; ratio as above (goal ≥ 0.98×):\n"
    );
    let _ = writeln!(out, "| metric | size | ratio | opted out | accelerated pod, unpaired |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for r in rows {
        let v = |s: Option<Spread>| s.map_or("—".into(), |s| format!("{:.4}", s.median));
        let ratio =
            r.ratio.map_or("**invalid**".into(), |s| format!("**{:.3}×** ({:.3}–{:.3})", s.median, s.min, s.max));
        let size = if r.metric == Metric::ConnRate { "—".into() } else { size_label(r.size) };
        let _ = writeln!(
            out,
            "| {} ({}) | {size} | {ratio} | {} | {} |",
            r.metric.label(),
            r.metric.unit(),
            v(r.baseline),
            v(r.unaccelerated)
        );
        for p in &r.problems {
            let _ = writeln!(out, "|  | | {p} | | |");
        }
    }
}
