//! The measured matrix: samples per cell and mode, their validity (judged from meshaccel's
//! counters), and per-cell summaries.
use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::stats::{median_ci, spread, Spread};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    PingPong,
    Stream,
    ConnRate,
}

impl Metric {
    pub fn label(self) -> &'static str {
        match self {
            // sockperf's latency, like qperf's before it: half the mean round trip.
            Self::PingPong => "ping-pong one-way latency",
            Self::Stream => "stream bandwidth",
            Self::ConnRate => "connect + 1 B + close",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Self::PingPong => "ping-pong",
            Self::Stream => "stream",
            Self::ConnRate => "conn rate",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Self::PingPong => "µs",
            Self::Stream => "MB/s",
            Self::ConnRate => "conn/s",
        }
    }

    /// How many times faster accelerated is: latencies compare inversely, so every ratio
    /// reads the same way (> 1 is better).
    pub fn speedup(self, plain: f64, accelerated: f64) -> f64 {
        match self {
            Self::PingPong => plain / accelerated,
            _ => accelerated / plain,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Two pods on one bridge.
    PodToPod,
    /// 127.0.0.1 inside one pod.
    Loopback,
    /// Two pods on one bridge, over their IPv6 addresses.
    PodToPod6,
    /// `::1` inside one pod.
    Loopback6,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [Scenario::PodToPod, Scenario::Loopback, Scenario::PodToPod6, Scenario::Loopback6];
    /// The columns of each table: pod↔pod and loopback, per family.
    pub const IPV4: [Scenario; 2] = [Scenario::PodToPod, Scenario::Loopback];
    pub const IPV6: [Scenario; 2] = [Scenario::PodToPod6, Scenario::Loopback6];

    pub fn label(self) -> &'static str {
        match self {
            Self::PodToPod => "pod↔pod",
            Self::Loopback => "loopback",
            Self::PodToPod6 => "pod↔pod IPv6",
            Self::Loopback6 => "loopback ::1",
        }
    }

    pub fn ipv6(self) -> bool {
        matches!(self, Self::PodToPod6 | Self::Loopback6)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Plain,
    Accelerated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Key {
    pub metric: Metric,
    /// Message size; 1 for the connection rate (one byte each way).
    pub size: usize,
    pub scenario: Scenario,
}

/// An accelerated sample with less than this share of its bytes redirected measured plain
/// TCP (e.g. only some other connection of the run was redirected): invalid.
const MIN_SHARE: f64 = 0.5;
/// Below this share it counts, but the cell is marked partial.
const FULL_SHARE: f64 = 0.9;

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub rep: usize,
    /// In the metric's unit; `None` when the run failed.
    pub value: Option<f64>,
    /// Bytes the measured connections carried.
    pub data_bytes: u64,
    /// meshaccel's counters over this run (differences).
    pub counters: BTreeMap<String, u64>,
    /// bytes_redirected ÷ data bytes.
    pub redirected_share: Option<f64>,
    /// Why the sample does not count.
    pub invalid: Option<String>,
    /// An accelerated run that meshaccel's data path deliberately moved to plain TCP
    /// (a paired connection that streamed batchable sends: `streaming_fallbacks`).
    pub chose_plain: bool,
}

impl Sample {
    /// Judges one run: `outcome` is its value and data bytes, `counters` meshaccel's counters
    /// over it. An accelerated run must have been redirected, a plain one must not.
    pub fn judge(rep: usize, mode: Mode, outcome: Result<(f64, u64)>, counters: BTreeMap<String, u64>) -> Self {
        let redirected = counters.get("bytes_redirected").copied().unwrap_or(0);
        let (value, data_bytes, mut invalid) = match outcome {
            Ok((v, b)) => (Some(v), b, None),
            Err(e) => (None, 0, Some(format!("run failed: {e:#}"))),
        };
        let share = (data_bytes > 0).then(|| redirected as f64 / data_bytes as f64);
        let chose_plain = mode == Mode::Accelerated
            && counters.get("streaming_fallbacks").is_some_and(|&n| n > 0)
            && counters.get("sockets_inserted").is_some_and(|&n| n >= 2);
        if invalid.is_none() {
            invalid = match (mode, share) {
                (Mode::Plain, _) if redirected > 0 => Some(format!("plain run had {redirected} bytes redirected")),
                (Mode::Accelerated, _) if chose_plain => None,
                (Mode::Accelerated, _) if redirected == 0 => Some("not redirected (bytes_redirected = 0)".into()),
                (Mode::Accelerated, Some(s)) if s < MIN_SHARE => {
                    Some(format!("only {:.1} % of {data_bytes} bytes redirected", s * 100.0))
                }
                _ => None,
            };
        }
        Self { rep, value, data_bytes, counters, redirected_share: share, invalid, chose_plain }
    }

    fn valid_value(&self) -> Option<f64> {
        self.value.filter(|_| self.invalid.is_none())
    }
}

#[derive(Default, Serialize)]
pub struct Runs {
    pub plain: Vec<Sample>,
    pub accelerated: Vec<Sample>,
}

#[derive(Default)]
pub struct Matrix {
    pub cells: BTreeMap<Key, Runs>,
    /// AF_UNIX values per (metric, size).
    pub reference: BTreeMap<(Metric, usize), Vec<f64>>,
}

impl Matrix {
    pub fn push(&mut self, key: Key, mode: Mode, s: Sample) {
        let runs = self.cells.entry(key).or_default();
        match mode {
            Mode::Plain => runs.plain.push(s),
            Mode::Accelerated => runs.accelerated.push(s),
        }
    }

    pub fn summaries(&self) -> Vec<Summary> {
        self.cells.iter().map(|(k, r)| Summary::of(*k, r, self.reference.get(&(k.metric, k.size)))).collect()
    }
}

/// The goal: no cell slower than plain, read as the 90 % interval's lower end ≥ 0.98.
pub const NOT_SLOWER: f64 = 0.98;

/// What a ratio's 90 % interval says against [`NOT_SLOWER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Lower end above 1.
    Faster,
    /// Lower end ≥ 0.98: meets the goal.
    NotSlower,
    /// The interval straddles 0.98: more repetitions (or a quieter machine) to decide.
    Unsettled,
    /// Upper end below 0.98.
    Slower,
}

impl Verdict {
    pub fn of(ci: (f64, f64)) -> Self {
        match ci {
            (lo, _) if lo > 1.0 => Self::Faster,
            (lo, _) if lo >= NOT_SLOWER => Self::NotSlower,
            (_, hi) if hi >= NOT_SLOWER => Self::Unsettled,
            _ => Self::Slower,
        }
    }

    pub fn meets_goal(self) -> bool {
        matches!(self, Self::Faster | Self::NotSlower)
    }

    /// The table's mark.
    pub fn mark(self) -> &'static str {
        match self {
            Self::Faster => "▲",
            Self::NotSlower => "=",
            Self::Unsettled => "?",
            Self::Slower => "▼",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub key: Key,
    pub plain: Option<Spread>,
    pub accelerated: Option<Spread>,
    /// Speedup per repetition (accelerated and plain of the same repetition paired).
    pub ratio: Option<Spread>,
    /// 90 % bootstrap confidence interval of the median speedup.
    pub ratio_ci90: Option<(f64, f64)>,
    pub verdict: Option<Verdict>,
    pub reference: Option<Spread>,
    /// At least one repetition where both modes gave a valid sample.
    pub valid: bool,
    /// Some accelerated sample had less than 90 % of its bytes redirected.
    pub partial: bool,
    pub min_redirected_share: Option<f64>,
    /// Some valid accelerated sample was moved to plain TCP by meshaccel (streaming).
    pub chose_plain: bool,
    pub problems: Vec<String>,
}

impl Summary {
    fn of(key: Key, runs: &Runs, reference: Option<&Vec<f64>>) -> Self {
        let values = |v: &[Sample]| v.iter().filter_map(Sample::valid_value).collect::<Vec<_>>();
        let ratios: Vec<f64> = runs
            .accelerated
            .iter()
            .filter_map(|a| {
                let p = runs.plain.iter().find(|p| p.rep == a.rep)?.valid_value()?;
                Some(key.metric.speedup(p, a.valid_value()?))
            })
            .collect();
        let shares = runs
            .accelerated
            .iter()
            .filter(|a| a.invalid.is_none() && !a.chose_plain)
            .filter_map(|a| a.redirected_share);
        let min_share = shares.reduce(f64::min);
        let problems = [("plain", &runs.plain), ("accelerated", &runs.accelerated)]
            .iter()
            .flat_map(|(m, v)| {
                v.iter().filter_map(move |s| Some(format!("{m} rep {}: {}", s.rep + 1, s.invalid.as_ref()?)))
            })
            .collect();
        Self {
            key,
            plain: spread(&values(&runs.plain)),
            accelerated: spread(&values(&runs.accelerated)),
            ratio: spread(&ratios),
            ratio_ci90: median_ci(&ratios, 0.90),
            verdict: median_ci(&ratios, 0.90).map(Verdict::of),
            reference: reference.and_then(|r| spread(r)),
            valid: !ratios.is_empty(),
            partial: min_share.is_some_and(|s| s < FULL_SHARE),
            min_redirected_share: min_share,
            chose_plain: runs.accelerated.iter().any(|a| a.invalid.is_none() && a.chose_plain),
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(redirected: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([("bytes_redirected".to_string(), redirected)])
    }

    #[test]
    fn verdicts_read_the_interval_against_the_goal() {
        assert_eq!(Verdict::of((1.05, 1.3)), Verdict::Faster);
        assert_eq!(Verdict::of((0.99, 1.3)), Verdict::NotSlower);
        assert_eq!(Verdict::of((0.90, 1.3)), Verdict::Unsettled);
        assert_eq!(Verdict::of((0.80, 0.97)), Verdict::Slower);
        assert!(Verdict::of((0.98, 0.99)).meets_goal() && !Verdict::of((0.97, 1.2)).meets_goal());
    }

    #[test]
    fn samples_are_judged_by_the_counters() {
        let ok = Sample::judge(0, Mode::Accelerated, Ok((1.0, 1000)), counters(1000));
        assert!(ok.invalid.is_none());
        let plain_twice = Sample::judge(0, Mode::Accelerated, Ok((1.0, 1000)), counters(0));
        assert!(plain_twice.invalid.unwrap().contains("not redirected"));
        let control_only = Sample::judge(0, Mode::Accelerated, Ok((1.0, 1_000_000)), counters(300));
        assert!(control_only.invalid.unwrap().contains("0.0 %"));
        let leaked = Sample::judge(0, Mode::Plain, Ok((1.0, 1000)), counters(5));
        assert!(leaked.invalid.is_some());
        let failed = Sample::judge(0, Mode::Plain, Err(anyhow::anyhow!("timed out")), counters(0));
        assert!(failed.value.is_none() && failed.invalid.unwrap().contains("timed out"));
        let mut streamed = counters(300);
        streamed.extend([("streaming_fallbacks".to_string(), 1), ("sockets_inserted".to_string(), 2)]);
        let streamed = Sample::judge(0, Mode::Accelerated, Ok((1.0, 1_000_000)), streamed);
        assert!(streamed.invalid.is_none() && streamed.chose_plain);
    }

    #[test]
    fn ratios_pair_repetitions_and_read_as_speedups() {
        let mut m = Matrix::default();
        let key = Key { metric: Metric::PingPong, size: 64, scenario: Scenario::Loopback };
        for (rep, plain, accel) in [(0, 10.0, 5.0), (1, 12.0, 4.0)] {
            m.push(key, Mode::Plain, Sample::judge(rep, Mode::Plain, Ok((plain, 100)), counters(0)));
            m.push(key, Mode::Accelerated, Sample::judge(rep, Mode::Accelerated, Ok((accel, 100)), counters(95)));
        }
        // A rep whose accelerated run was not redirected does not count.
        m.push(key, Mode::Plain, Sample::judge(2, Mode::Plain, Ok((10.0, 100)), counters(0)));
        m.push(key, Mode::Accelerated, Sample::judge(2, Mode::Accelerated, Ok((1.0, 100)), counters(0)));
        let s = &m.summaries()[0];
        let r = s.ratio.unwrap();
        assert_eq!((r.min, r.max, r.n), (2.0, 3.0, 2));
        assert!(s.valid && !s.partial);
        assert_eq!(s.problems.len(), 1);
    }
}
