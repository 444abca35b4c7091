//! What `run` measures and where it writes.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::cni_latency::Pods;
use crate::machine::loadavg;
use crate::sockperf::{MAX_SIZE, MIN_SIZE};

/// The matrix of issue 6 (1 B … 64 KiB) within what sockperf sends: its messages are 14 to
/// 65507 bytes, so 1 B has no row and 64 KiB becomes 65507 B.
const ALL_SIZES: [usize; 7] = [16, 64, 256, 1 << 10, 4 << 10, 16 << 10, MAX_SIZE];
/// One small-write, one mid and one bulk size: enough to see each regime in the demo.
const QUICK_SIZES: [usize; 3] = [16, 1 << 10, MAX_SIZE];

/// `run`'s flags (also taken with no command: `meshaccel-bench --quick`).
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The demo's matrix: 3 sizes, 3 repetitions, 50 pods.
    #[arg(long)]
    quick: bool,
    /// Interleaved repetitions; every cell is a median over them [default: 5, --quick: 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    reps: Option<u64>,
    /// Message sizes, comma-separated (64, 1K, 4KiB), sockperf's 14 to 65507 bytes
    /// [default: 16,64,256,1K,4K,16K,65507; --quick: 16,1K,65507].
    #[arg(long, value_name = "SIZES", value_delimiter = ',', value_parser = parse_size)]
    sizes: Vec<usize>,
    /// Seconds per sample (sockperf takes whole seconds).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    secs: u32,
    #[command(flatten)]
    pods: Pods,
    /// Where results.md, results.json and heatmap.svg go.
    #[arg(long, value_name = "DIR", default_value = "target/meshaccel-bench")]
    out: PathBuf,
    /// Client on CPU 0, server on CPU 1 [default: only on an idle machine].
    #[arg(long, conflicts_with = "no_pin")]
    pin: bool,
    /// Never pin.
    #[arg(long = "no-pin")]
    no_pin: bool,
    /// Fail (exit 1) when a cell's 90 % interval does not show it at least as fast as plain
    /// (lower end < 0.98): the goal as a check.
    #[arg(long)]
    check: bool,
}

pub struct Opts {
    pub sizes: Vec<usize>,
    pub reps: usize,
    /// Seconds per sample (sockperf takes whole seconds).
    pub secs: u32,
    /// Pods for the CNI ADD/DEL latencies.
    pub pods: usize,
    pub out: PathBuf,
    /// Client on CPU 0, server on CPU 1: a fixed placement, so scheduler placement does
    /// not change latencies from one sample to the next. On a busy machine a pinned process
    /// waits behind whatever else runs on its CPU (measured here at load 7 on 2 CPUs: pinned
    /// ping-pong 50–450 µs, unpinned 5–10 µs), so by default it pins only an idle machine.
    pub pin: bool,
    /// How `pin` was decided, for the report.
    pub pin_reason: String,
    pub check: bool,
}

impl Opts {
    pub fn new(a: RunArgs) -> Self {
        let sizes = match (&a.sizes[..], a.quick) {
            ([], false) => ALL_SIZES.to_vec(),
            ([], true) => QUICK_SIZES.to_vec(),
            _ => a.sizes,
        };
        let (pin, pin_reason) = match (a.pin, a.no_pin) {
            (true, _) => (true, "--pin".into()),
            (false, true) => (false, "--no-pin".into()),
            (false, false) => {
                let load: f64 = loadavg().split_whitespace().next().and_then(|l| l.parse().ok()).unwrap_or(f64::MAX);
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                let idle = load < 0.5 * cpus as f64;
                (
                    idle,
                    format!(
                        "automatic: 1-min load {load} {} half of {cpus} CPUs",
                        if idle { "below" } else { "not below" }
                    ),
                )
            }
        };
        Self {
            sizes,
            reps: a.reps.unwrap_or(if a.quick { 3 } else { 5 }) as usize,
            secs: a.secs,
            pods: a.pods.or(if a.quick { 50 } else { 200 }),
            out: a.out,
            pin,
            pin_reason,
            check: a.check,
        }
    }
}

/// `64`, `1K`, `64KiB`.
fn parse_size(s: &str) -> Result<usize> {
    let s = s.trim();
    let (num, mult) = match s.trim_end_matches("iB").trim_end_matches('B') {
        n if n.ends_with(['K', 'k']) => (&n[..n.len() - 1], 1024),
        n => (n, 1),
    };
    let n: usize = num.parse().with_context(|| format!("message size {s:?}"))?;
    let n = n * mult;
    if !(MIN_SIZE..=MAX_SIZE).contains(&n) {
        bail!("message size {s}: sockperf sends messages of {MIN_SIZE} to {MAX_SIZE} bytes");
    }
    Ok(n)
}

/// `64 B`, `4 KiB`.
pub fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("64").unwrap(), 64);
        assert_eq!(parse_size("16K").unwrap(), 16384);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert!(parse_size("1").is_err());
        assert!(parse_size("64K").is_err());
        assert_eq!(size_label(65536), "64 KiB");
        assert_eq!(size_label(256), "256 B");
    }
}
