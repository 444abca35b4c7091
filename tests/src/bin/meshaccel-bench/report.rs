//! The results: a Markdown table (printed and written), every sample as JSON, the heatmap.
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cni_latency::CniLatency;
use crate::machine::Machine;
use crate::matrix::{Key, Matrix, Metric, Sample, Scenario, Summary, Verdict, NOT_SLOWER};
use crate::opts::{size_label, Opts};
use crate::stats::Spread;
use crate::{heatmap, overhead};

#[derive(Serialize)]
pub struct Settings {
    pub reps: usize,
    pub secs: u32,
    pub sizes: Vec<usize>,
    pub pinned: bool,
    pub pinning: String,
    pub pods: usize,
    /// `sockperf --version`'s first line.
    pub sockperf: String,
}

#[derive(Serialize)]
struct CellSamples {
    key: Key,
    plain: Vec<Sample>,
    accelerated: Vec<Sample>,
}

#[derive(Serialize)]
struct ReferenceSamples {
    metric: Metric,
    size: usize,
    values: Vec<f64>,
}

#[derive(Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub duration_secs: f64,
    pub cells: Vec<Summary>,
    samples: Vec<CellSamples>,
    reference: Vec<ReferenceSamples>,
    pub cni: CniLatency,
    pub overhead: Vec<overhead::Row>,
}

impl Report {
    pub fn new(
        o: &Opts,
        machine: Machine,
        m: &Matrix,
        cni: CniLatency,
        overhead: Vec<overhead::Row>,
        took: Duration,
    ) -> Self {
        let sockperf =
            meshaccel_tests::run("sockperf", &["--version"]).ok().and_then(|v| v.lines().next().map(str::to_string));
        let sockperf = sockperf.unwrap_or_else(|| "sockperf".into()).replace(", version", "").replace("-no.git", "");
        Self {
            machine,
            settings: Settings {
                reps: o.reps,
                secs: o.secs,
                sizes: o.sizes.clone(),
                pinned: o.pin,
                pinning: o.pin_reason.clone(),
                pods: o.pods,
                sockperf,
            },
            duration_secs: took.as_secs_f64(),
            cells: m.summaries(),
            samples: m
                .cells
                .iter()
                .map(|(k, r)| CellSamples { key: *k, plain: r.plain.clone(), accelerated: r.accelerated.clone() })
                .collect(),
            reference: m
                .reference
                .iter()
                .map(|(&(metric, size), v)| ReferenceSamples { metric, size, values: v.clone() })
                .collect(),
            cni,
            overhead,
        }
    }

    /// `results.md`, `results.json` and `heatmap.svg` in `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        fs::write(dir.join("results.md"), self.markdown())?;
        fs::write(dir.join("results.json"), serde_json::to_string_pretty(self)?)?;
        fs::write(dir.join("heatmap.svg"), heatmap::svg(&self.cells, &self.settings.sizes, &self.caption()))?;
        Ok(())
    }

    fn caption(&self) -> String {
        format!(
            "{} CPUs ({}), kernel {}; {} reps × {} s; load {} → {}",
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.kernel,
            self.settings.reps,
            self.settings.secs,
            self.machine.load_at_start,
            self.machine.load_at_end
        )
    }

    fn cell(&self, metric: Metric, size: usize, scenario: Scenario) -> Option<&Summary> {
        self.cells.iter().find(|c| c.key == Key { metric, size, scenario })
    }

    /// Cells that do not meet the goal, as `scenario metric size (verdict)`.
    pub fn below_goal(&self) -> Vec<String> {
        self.cells
            .iter()
            .filter(|c| c.verdict.is_some_and(|v| !v.meets_goal()))
            .map(|c| {
                let v = c.verdict.unwrap();
                format!("{} {} {} ({v:?})", c.key.scenario.label(), c.key.metric.short(), size_label(c.key.size))
            })
            .collect()
    }

    /// One line: how many cells got each verdict, and which do not meet the goal.
    fn verdicts(&self) -> String {
        let n = |v: Verdict| self.cells.iter().filter(|c| c.verdict == Some(v)).count();
        let below = self.below_goal();
        format!(
            "Verdicts (90 % intervals vs ≥ {NOT_SLOWER}): {} faster, {} not slower, {} unsettled, {} slower{}.",
            n(Verdict::Faster),
            n(Verdict::NotSlower),
            n(Verdict::Unsettled),
            n(Verdict::Slower),
            if below.is_empty() { String::new() } else { format!(" — below the goal: {}", below.join(", ")) }
        )
    }

    /// The matrix over `scenarios` (pod↔pod and loopback of one family), a row per metric and size.
    fn table(&self, out: &mut String, scenarios: [Scenario; 2], notes: &mut Vec<String>) {
        let [a, b] = scenarios.map(Scenario::label);
        let _ = writeln!(out, "| metric | size | {a} ratio | plain | accel | {b} ratio | plain | accel | AF_UNIX |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut rows: Vec<(Metric, usize)> = vec![];
        for metric in [Metric::PingPong, Metric::Stream, Metric::ConnRate] {
            let sizes = if metric == Metric::ConnRate { vec![1] } else { self.settings.sizes.clone() };
            rows.extend(sizes.into_iter().map(|size| (metric, size)));
        }
        for (metric, size) in rows {
            let mut line = format!(
                "| {} ({}) | {} ",
                metric.label(),
                metric.unit(),
                if metric == Metric::ConnRate { "—".into() } else { size_label(size) }
            );
            let mut reference = None;
            for scenario in scenarios {
                let Some(c) = self.cell(metric, size, scenario) else {
                    line.push_str("| | | ");
                    continue;
                };
                reference = reference.or(c.reference);
                let _ = write!(line, "| {} | {} | {} ", ratio_text(c, notes), value(c.plain), value(c.accelerated));
            }
            let _ = writeln!(out, "{line}| {} |", value(reference));
        }
    }

    pub fn markdown(&self) -> String {
        let (m, s) = (&self.machine, &self.settings);
        let mut out = String::new();
        let _ = writeln!(out, "## meshaccel benchmark: same-node TCP, accelerated vs plain\n");
        let _ = writeln!(
            out,
            "Machine: {} CPUs, {}, kernel {}. Load average (1/5/15 min) {} at start, {} at end. Run took {:.0} s.\n",
            m.cpus, m.cpu_model, m.kernel, m.load_at_start, m.load_at_end, self.duration_secs
        );
        let pin = if s.pinned { "client on CPU 0, server on CPU 1" } else { "client and server not pinned" };
        let pin = format!("{pin} ({})", s.pinning);
        let _ = writeln!(
            out,
            "Method: {}, `ping-pong` / `throughput` with `-m` size, event-driven (`--nonblocked -F epoll`: non-blocking \
             sockets in an epoll loop, as in the programs meshaccel accelerates); latency is one-way, half the mean round trip; \
             bandwidth is the bytes the client sent ÷ its send time; connection rate: `meshaccel-bench conn-client` / \
             `conn-server`, epoll and non-blocking too. {} repetitions × {} s per sample; in each repetition plain and \
             accelerated run back to back, alternating which goes first; {pin}. **Ratio** = how many times faster accelerated \
             is (bandwidth and rate: accelerated ÷ plain; latency: plain ÷ accelerated), median of the per-repetition ratios \
             [its 90 % bootstrap confidence interval]; > 1 is faster. The mark is the interval's verdict against the goal \
             that no cell is slower than plain (lower end ≥ 0.98): ▲ faster (lower end > 1), = not slower, ? unsettled \
             (the interval straddles 0.98: more repetitions to decide), ▼ slower. With 3 repetitions an interval is as \
             wide as their min–max. Plain and accelerated values are medians. **AF_UNIX** = the physical limit, a stream \
             socketpair (a path socket for connections) measured the same way (non-blocking, epoll, same sizes). Every accelerated sample was checked against \
             meshaccel's counters (bytes redirected ≥ 50 % of the bytes carried, or — marked ᵖ — the paired connection was \
             moved to plain TCP by meshaccel's streaming rule, `streaming_fallbacks`; plain samples: none redirected).\n",
            s.sockperf, s.reps, s.secs
        );
        let mut notes = vec![];
        self.table(&mut out, Scenario::IPV4, &mut notes);
        if self.cells.iter().any(|c| c.key.scenario.ipv6()) {
            let _ = writeln!(
                out,
                "\nIPv6, between the same dual-stack pods and over `::1`. sockperf 3.7 has no IPv6, so ping-pong and \
                 stream here are `meshaccel-bench perf-client` / `perf-server`: the AF_UNIX column's loop over TCP \
                 (non-blocking, epoll, Nagle off for ping-pong as sockperf, the same sizes and seconds), compare ratios rather than absolute \
                 values with the IPv4 rows; the connection rate is the same client as above.\n"
            );
            self.table(&mut out, Scenario::IPV6, &mut notes);
        }
        if !notes.is_empty() {
            let _ = writeln!(out);
            for n in notes {
                let _ = writeln!(out, "{n}  ");
            }
        }
        let _ = writeln!(out, "\n{}", self.verdicts());
        overhead::markdown(&self.overhead, &mut out);
        out.push_str(&self.cni.markdown());
        out
    }
}

/// `**1.23×** (1.10–1.40)`, or why there is no ratio; notes collect the footnotes.
fn ratio_text(c: &Summary, notes: &mut Vec<String>) -> String {
    let mut mark = |why: String| {
        notes.push(format!(
            "[{}] {} {} {}: {why}",
            notes.len() + 1,
            c.key.scenario.label(),
            c.key.metric.short(),
            size_label(c.key.size)
        ));
        format!("[{}]", notes.len())
    };
    let text = match (c.valid, c.ratio, c.ratio_ci90, c.verdict) {
        (true, Some(r), Some((lo, hi)), Some(v)) => format!("{} **{:.2}×** [{lo:.2}–{hi:.2}]", v.mark(), r.median),
        _ => format!("**invalid** {}", mark(c.problems.join("; "))),
    };
    let text = if c.valid && c.chose_plain { format!("{text} ᵖ") } else { text };
    if c.valid && (c.partial || !c.problems.is_empty()) {
        let share =
            c.min_redirected_share.map_or(String::new(), |s| format!("least redirected share {:.0} %; ", s * 100.0));
        return format!("{text} {}", mark(format!("{share}{}", c.problems.join("; "))));
    }
    text
}

fn value(s: Option<Spread>) -> String {
    s.map_or("—".into(), |s| num(s.median))
}

/// Three significant digits, at most two decimals.
pub fn num(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}
