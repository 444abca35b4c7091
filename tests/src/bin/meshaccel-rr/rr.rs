//! Request/response load: `--conns` threads, each sending a request of `--size` bytes and
//! waiting for its echo, on one connection (`TCP_RR`) or a new one per request
//! (`--reconnect`, `TCP_CRR`: connect, send, read, close). Reports QPS and latency
//! percentiles, and every answer that was not the request's own bytes.
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::json;

/// `rr --connect ADDR --tag-prefix P [--conns N] [--size BYTES] [--requests N | --seconds N] [--reconnect]`.
#[derive(clap::Args, Debug)]
pub struct Rr {
    /// The `meshaccel-rr echo` to load.
    #[arg(long, value_name = "ADDR")]
    connect: SocketAddr,
    /// This client's tag prefix (what the echo server expects).
    #[arg(long = "tag-prefix", value_name = "P")]
    tag_prefix: u32,
    /// Threads, each on its own connection.
    #[arg(long, value_name = "N", default_value_t = 1)]
    conns: usize,
    /// Bytes per request, a positive multiple of 8.
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    size: usize,
    /// Requests per thread (default 1000; with --seconds, unbounded).
    #[arg(long, value_name = "N")]
    requests: Option<u64>,
    /// Run for this long (0: until --requests are done).
    #[arg(long, value_name = "N", default_value_t = 0)]
    seconds: u64,
    /// A new connection per request (TCP_CRR) instead of one per thread (TCP_RR).
    #[arg(long)]
    reconnect: bool,
}
use crate::echo::Errors;
use crate::io::{connect, emit, errno_name, fill_tag, read_exact, records, tag, write_all};

struct Load {
    addr: SocketAddr,
    prefix: u32,
    size: usize,
    reconnect: bool,
    requests: u64,
    until: Option<Instant>,
    next_conn: AtomicU32,
    errors: Errors,
}

pub fn client(a: &Rr) -> Result<()> {
    let (size, seconds) = (a.size, a.seconds);
    ensure!(size >= 8 && size.is_multiple_of(8), "--size must be a positive multiple of 8");
    let load = Arc::new(Load {
        addr: a.connect,
        prefix: a.tag_prefix,
        size,
        reconnect: a.reconnect,
        requests: a.requests.unwrap_or(if seconds > 0 { u64::MAX } else { 1000 }),
        until: (seconds > 0).then(|| Instant::now() + Duration::from_secs(seconds)),
        next_conn: AtomicU32::new(0),
        errors: Errors::default(),
    });
    let conns = a.conns;
    let started = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let load = load.clone();
            thread::spawn(move || worker(&load))
        })
        .collect();
    let mut latencies: Vec<u32> = workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect();
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: usize| {
        latencies.get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1))).copied().unwrap_or(0)
    };
    emit(json!({
        "event": "done",
        "requests": latencies.len(),
        "conns_opened": load.next_conn.load(Ordering::Relaxed),
        "elapsed_ms": elapsed.as_millis() as u64,
        "qps": latencies.len() as f64 / elapsed.as_secs_f64(),
        "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99), "max_us": latencies.last().copied().unwrap_or(0),
        "error_count": load.errors.count(),
        "errors": load.errors.kept(),
    }));
    Ok(())
}

/// One connection's requests; the latency of each completed one, in µs (with
/// `--reconnect` from before connect() to after the answer).
fn worker(load: &Load) -> Vec<u32> {
    let (mut req, mut resp) = (vec![0u8; load.size], vec![0u8; load.size]);
    let mut conn: Option<(TcpStream, u64)> = None;
    let mut latencies = vec![];
    while (latencies.len() as u64) < load.requests && load.until.is_none_or(|t| Instant::now() < t) {
        let t0 = Instant::now();
        let (s, own) = match conn.take() {
            Some(c) => c,
            None => match connect(load.addr) {
                Ok(s) => {
                    let own = tag(load.prefix, load.next_conn.fetch_add(1, Ordering::Relaxed));
                    fill_tag(&mut req, own);
                    (s, own)
                }
                Err(e) => {
                    load.errors.add(format!("connect {}: {}", load.addr, errno_name(&e)));
                    return latencies;
                }
            },
        };
        if let Err(e) = write_all(&s, &req).and_then(|()| read_exact(&s, &mut resp)) {
            load.errors.add(format!("connection {own:#x}: {}", errno_name(&e)));
            return latencies;
        }
        if resp != req {
            let got = records(&resp).find(|t| *t != own).unwrap_or(own);
            load.errors.add(format!("connection {own:#x} got foreign bytes back (tag {got:#x})"));
            return latencies;
        }
        latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        if !load.reconnect {
            conn = Some((s, own));
        }
    }
    latencies
}
