//! The physical-limit column: AF_UNIX stream sockets, measured like qperf measures TCP
//! (blocking sockets, `size` bytes per read/write call, client and server on the CPUs qperf
//! gets), in two threads of this process over a socketpair.
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::connrate::pin;
use crate::qperf::Test;

/// Latency in µs (one way, half a round trip, as qperf reports it) or bandwidth in MB/s.
pub fn socketpair(test: Test, size: usize, secs: u32, pin_cpus: bool) -> Result<f64> {
    let (client, server) = UnixStream::pair()?;
    let dur = Duration::from_secs(secs.into());
    let server = thread::spawn(move || -> io::Result<(u64, Duration)> {
        if pin_cpus {
            pin(1).map_err(io::Error::other)?;
        }
        serve(server, test, size)
    });
    if pin_cpus {
        pin(0)?;
    }
    let sent = drive(client, test, size, dur);
    let (received, elapsed) = server.join().map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    let round_trips = sent?;
    if pin_cpus {
        unpin()?;
    }
    Ok(match test {
        Test::Latency => dur_per(elapsed, 2 * round_trips),
        Test::Bandwidth => received as f64 / elapsed.as_secs_f64() / 1e6,
    })
}

fn dur_per(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

fn unpin() -> Result<()> {
    let mut all = nix::sched::CpuSet::new();
    (0..std::thread::available_parallelism()?.get()).try_for_each(|c| all.set(c))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &all).context("unpin")
}

/// The client: ping-pongs (returns round trips) or writes (returns messages) for `dur`, then
/// closes its sending side.
fn drive(mut s: UnixStream, test: Test, size: usize, dur: Duration) -> io::Result<u64> {
    let mut buf = vec![0u8; size];
    let (deadline, mut n) = (Instant::now() + dur, 0u64);
    while Instant::now() < deadline {
        s.write_all(&buf)?;
        if test == Test::Latency {
            s.read_exact(&mut buf)?;
        }
        n += 1;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    Ok(n)
}

/// The server: echoes (ping-pong) or reads (stream) `size`-byte messages until EOF. Returns
/// the bytes received and the time from the first byte to EOF.
fn serve(mut s: UnixStream, test: Test, size: usize) -> io::Result<(u64, Duration)> {
    let mut buf = vec![0u8; size];
    let (mut start, mut total) = (None, 0u64);
    loop {
        let n = read_full(&mut s, &mut buf)?;
        start.get_or_insert_with(Instant::now);
        total += n as u64;
        if n < size {
            return Ok((total, start.unwrap().elapsed()));
        }
        if test == Test::Latency {
            s.write_all(&buf)?;
        }
    }
}

/// Reads until `buf` is full or EOF; the count read.
fn read_full(s: &mut UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketpair_measures_a_positive_value() {
        for test in [Test::Latency, Test::Bandwidth] {
            let v = socketpair(test, 64, 1, false).unwrap();
            assert!(v.is_finite() && v > 0.0, "{test:?}: {v}");
        }
    }
}
