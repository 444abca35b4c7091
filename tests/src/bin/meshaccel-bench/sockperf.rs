//! qperf (Debian's) inside pods: `tcp_lat` (ping-pong: send a message, wait for it to come
//! back; qperf reports the one-way latency, half a round trip) and `tcp_bw` (one side writes
//! messages of the size, the other reads them), both with blocking sockets and `-m` bytes
//! per read/write call.
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use meshaccel_tests::{Pod, Proc};

use crate::child::output_within;

const QPERF: &str = "/usr/bin/qperf";
/// qperf's control port; each pod has its own netns, so one port serves all.
const PORT: &str = "19765";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    Latency,
    Bandwidth,
}

/// One qperf result.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Latency in µs, or bandwidth in MB/s (10⁶ bytes/s).
    pub value: f64,
    /// Bytes the test connection carried (both directions for ping-pong): what the
    /// redirected byte counter is compared with.
    pub data_bytes: u64,
}

/// A qperf server in `pod`, serving one client at a time until dropped.
pub fn server(pod: &Pod) -> Result<Proc> {
    Proc::spawn(&format!("{}: qperf server", pod.name()), pod.command(Path::new(QPERF), &["-lp", PORT])?)
}

/// Runs `test` from a client in `pod` against the qperf server at `host`.
pub fn run(pod: &Pod, host: &str, test: Test, size: usize, secs: u32, pin: bool) -> Result<Measured> {
    let (size, secs) = (size.to_string(), secs.to_string());
    let mut args = vec![host, "-lp", PORT, "-t", &secs, "-m", &size, "-uu", "-e", "6", "-vvs"];
    if pin {
        args.extend_from_slice(&["-lca", "0", "-rca", "1"]);
    }
    args.push(match test {
        Test::Latency => "tcp_lat",
        Test::Bandwidth => "tcp_bw",
    });
    let cmd = pod.command(Path::new(QPERF), &args)?;
    let out = output_within(cmd, Duration::from_secs(u64::from(secs.parse::<u32>()?) + 30))?;
    parse(&out, test).with_context(|| format!("qperf output {out:?}"))
}

/// `-uu -vvs` output: `name = number [unit]` lines, latency in ns, bandwidth in bytes/sec.
fn parse(out: &str, test: Test) -> Result<Measured> {
    let fields: HashMap<&str, f64> = out
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim(), v.split_whitespace().next()?.replace(',', "").parse().ok()?))
        })
        .collect();
    let get = |k: &str| fields.get(k).copied().with_context(|| format!("no {k}"));
    Ok(match test {
        Test::Latency => Measured {
            value: get("latency")? / 1e3,
            data_bytes: (get("loc_send_bytes")? + get("rem_send_bytes")?) as u64,
        },
        Test::Bandwidth => Measured { value: get("bw")? / 1e6, data_bytes: get("send_bytes")? as u64 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unified_verbose_output() {
        let lat = "tcp_lat:\n    latency         =    9456.8 ns\n    msg_rate        =    105744 /sec\n    loc_send_bytes  =  54141952 bytes\n    loc_recv_bytes  =  54140928 bytes\n    rem_send_bytes  =  54140928 bytes\n";
        let m = parse(lat, Test::Latency).unwrap();
        assert!((m.value - 9.4568).abs() < 1e-9);
        assert_eq!(m.data_bytes, 108_282_880);
        let bw = "tcp_bw:\n    bw          =  1401602048 bytes/sec\n    send_bytes  =  1401602048 bytes\n";
        assert_eq!(parse(bw, Test::Bandwidth).unwrap().data_bytes, 1_401_602_048);
        assert!(parse("tcp_bw:\n", Test::Bandwidth).is_err());
    }
}
