//! What `run` measures and where it writes.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::args::Args;
use crate::machine::loadavg;
use crate::sockperf::{MAX_SIZE, MIN_SIZE};

/// The matrix of issue 6 (1 B … 64 KiB) within what sockperf sends: its messages are 14 to
/// 65507 bytes, so 1 B has no row and 64 KiB becomes 65507 B.
const ALL_SIZES: [usize; 7] = [16, 64, 256, 1 << 10, 4 << 10, 16 << 10, MAX_SIZE];
/// One small-write, one mid and one bulk size: enough to see each regime in the demo.
const QUICK_SIZES: [usize; 3] = [16, 1 << 10, MAX_SIZE];

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
}

impl Opts {
    pub fn parse(a: &Args) -> Result<Self> {
        let quick = a.flag("quick");
        let sizes = match a.get_or("sizes", String::new())? {
            s if s.is_empty() => if quick { &QUICK_SIZES[..] } else { &ALL_SIZES[..] }.to_vec(),
            s => s.split(',').map(parse_size).collect::<Result<_>>()?,
        };
        let o = Self {
            sizes,
            reps: a.get_or("reps", if quick { 3 } else { 5 })?,
            secs: a.get_or("secs", 1)?,
            pods: a.get_or("pods", if quick { 50 } else { 200 })?,
            out: a.get_or("out", PathBuf::from("target/meshaccel-bench"))?,
            pin: false,
            pin_reason: String::new(),
        };
        let mut o = o;
        (o.pin, o.pin_reason) = match (a.flag("pin"), a.flag("no-pin")) {
            (true, true) => bail!("--pin or --no-pin, not both"),
            (true, false) => (true, "--pin".into()),
            (false, true) => (false, "--no-pin".into()),
            (false, false) => {
                let load: f64 = loadavg().split_whitespace().next().and_then(|l| l.parse().ok()).unwrap_or(f64::MAX);
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                let idle = load < 0.5 * cpus as f64;
                (idle, format!("automatic: 1-min load {load} {} half of {cpus} CPUs", if idle { "below" } else { "not below" }))
            }
        };
        if o.reps == 0 || o.secs == 0 {
            bail!("--reps and --secs must be at least 1");
        }
        Ok(o)
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
    if size >= 1024 && size.is_multiple_of(1024) { format!("{} KiB", size / 1024) } else { format!("{size} B") }
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
