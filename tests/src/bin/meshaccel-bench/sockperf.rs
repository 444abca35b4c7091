//! sockperf (Debian's 3.7) inside pods, in its event-driven mode: `--nonblocked -F epoll`
//! (epoll needs the connection in a feed file, `-f`, which is also how it takes TCP). Every
//! socket is O_NONBLOCK from before connect/listen, as in the programs meshaccel accelerates
//! (Envoy, nginx, Go, tokio, …); blocking programs are left on plain TCP by design.
//! `ping-pong`: send a message, wait in epoll_wait for it to come back; sockperf reports the
//! average one-way latency, half a round trip, over its valid window. `throughput`: the
//! client writes messages back to back (an EAGAIN send is retried at once), the server reads
//! what is there (up to 65507 bytes per recv). A message of `-m` bytes is one send of that
//! many bytes, sockperf's 14-byte header included, so sizes run from 14 to 65507 bytes (the
//! largest `-m` its feed-file client takes).
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use meshaccel_tests::{Pod, Proc};

use crate::child::output_within;

const SOCKPERF: &str = "/usr/bin/sockperf";
const TASKSET: &str = "/usr/bin/taskset";
/// Each pod has its own netns, so one port serves all.
pub const PORT: u16 = 11111;
/// sockperf's message header: the smallest message.
pub const MIN_SIZE: usize = 14;
/// The largest `-m` sockperf's client takes with a feed file (a UDP datagram's payload).
pub const MAX_SIZE: usize = 65507;
/// Each client run connects, then sleeps this long before it sends (hard-coded in 3.7).
pub const STARTUP_SLEEP: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Test {
    PingPong,
    Stream,
}

/// One sockperf result.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Latency in µs, or bandwidth in MB/s (10⁶ bytes/s).
    pub value: f64,
    /// Bytes the test connection carried (both directions for ping-pong): what the
    /// redirected byte counter is compared with.
    pub data_bytes: u64,
}

/// `program args…`, under `taskset -c cpu` when pinned.
fn command(pod: &Pod, cpu: Option<&str>, args: &[&str]) -> Result<std::process::Command> {
    match cpu {
        Some(c) => pod.command(Path::new(TASKSET), &[&["-c", c, SOCKPERF], args].concat()),
        None => pod.command(Path::new(SOCKPERF), args),
    }
}

/// sockperf's connection list: one TCP address per line.
fn feed(dir: &Path, host: &str) -> Result<PathBuf> {
    let path = dir.join(format!("sockperf-{host}.feed"));
    fs::write(&path, format!("T:{host}:{PORT}\n"))?;
    Ok(path)
}

/// A sockperf server in `pod` (on CPU 1 when pinned), serving every client until dropped;
/// returns once it accepts connections. `dir` holds its feed file.
pub fn server(pod: &Pod, dir: &Path, pin: bool) -> Result<Proc> {
    let feed = feed(dir, "0.0.0.0")?;
    let max = MAX_SIZE.to_string();
    let args = ["server", "--nonblocked", "-F", "epoll", "-f", feed.to_str().context("feed path")?, "-m", &max];
    let p = Proc::spawn(&format!("{}: sockperf server", pod.name()), command(pod, pin.then_some("1"), &args)?)?;
    // sockperf says nothing machine-readable when it listens: connect from the node (the
    // bridge is the pods' gateway) until it accepts.
    let addr = (pod.ip(), PORT).into();
    for _ in 0..100 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(p);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{}: sockperf server not accepting on {addr}: {}", pod.name(), p.stderr())
}

/// Runs `test` from a client in `pod` (on CPU 0 when pinned) against the sockperf server at
/// `host`. Each run costs [`STARTUP_SLEEP`] more than `secs`.
pub fn run(pod: &Pod, host: &str, dir: &Path, test: Test, size: usize, secs: u32, pin: bool) -> Result<Measured> {
    ensure!((MIN_SIZE..=MAX_SIZE).contains(&size), "sockperf sends {MIN_SIZE}–{MAX_SIZE} byte messages, not {size}");
    let (feed, size_arg, secs_arg) = (feed(dir, host)?, size.to_string(), secs.to_string());
    let mode = match test {
        Test::PingPong => "ping-pong",
        Test::Stream => "throughput",
    };
    let args = [
        mode,
        "--nonblocked",
        "-F",
        "epoll",
        "-f",
        feed.to_str().context("feed path")?,
        "-m",
        &size_arg,
        "-t",
        &secs_arg,
    ];
    let out = output_within(command(pod, pin.then_some("0"), &args)?, Duration::from_secs(u64::from(secs) + 30))?;
    parse(&out, test, size).with_context(|| format!("sockperf output {out:?}"))
}

/// The number after `key` in `out` (up to the next `;`, space or colour escape).
fn field(out: &str, key: &str) -> Result<f64> {
    let rest = &out[out.find(key).with_context(|| format!("no {key:?}"))? + key.len()..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    rest[..end].parse().with_context(|| format!("{key:?} not followed by a number"))
}

/// Ping-pong: `avg-latency=<µs>` and the whole run's `SentMessages=` / `ReceivedMessages=`
/// (the server echoes each message whole). Throughput: `Total of <n> messages sent in <s>
/// sec`; sockperf's own "MBps" is MiB/s of a rounded message rate, so MB/s is computed here.
fn parse(out: &str, test: Test, size: usize) -> Result<Measured> {
    Ok(match test {
        Test::PingPong => {
            let messages = field(out, "SentMessages=")? + field(out, "ReceivedMessages=")?;
            Measured { value: field(out, "avg-latency=")?, data_bytes: messages as u64 * size as u64 }
        }
        Test::Stream => {
            let sent = field(out, "Total of ")? as u64 * size as u64;
            let secs = field(out, "messages sent in ")?;
            ensure!(secs > 0.0, "no send time");
            Measured { value: sent as f64 / secs / 1e6, data_bytes: sent }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_summaries() {
        let pp = "sockperf: [Total Run] RunTime=1.000 sec; Warm up time=400 msec; SentMessages=22854; ReceivedMessages=22853\n\
                  sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=14975; ReceivedMessages=14975\n\
                  sockperf: \x1b[2;35m====> avg-latency=18.333 (std-dev=14.335)\x1b[0m\n";
        let m = parse(pp, Test::PingPong, 64).unwrap();
        assert!((m.value - 18.333).abs() < 1e-9);
        assert_eq!(m.data_bytes, (22854 + 22853) * 64);
        let tp = "sockperf: Total of 164789 messages sent in 1.001 sec\n\nsockperf: Summary: BandWidth is 160.725 MBps (1285.797 Mbps)\n";
        let m = parse(tp, Test::Stream, 1024).unwrap();
        assert_eq!(m.data_bytes, 164_789 * 1024);
        assert!((m.value - 164_789.0 * 1024.0 / 1.001 / 1e6).abs() < 1e-9);
        assert!(parse("sockperf: ERROR: Can`t connect socket\n", Test::PingPong, 64).is_err());
    }
}
