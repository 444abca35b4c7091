//! Many concurrent connections (`meshaccel-testkit many` workers inside pods) and what they
//! cost: map entries, the maps' own memory, kernel slab memory.
use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aya::maps::{HashMap, Map, MapData, SockHash};
use meshaccel_common::{names, Backlog, ConnKey};
use serde_json::Value;

use crate::node::TestNode;
use crate::pod::Pod;
use crate::process::Proc;
use crate::scenario::clean;

/// First server port; worker `i` uses `PORTS` ports from `PORT_BASE + i * PORTS`.
const PORT_BASE: u16 = 20000;
/// Server ports per worker: a worker's connections spread over them (see
/// `meshaccel-testkit many`), at most ~1 000 per destination for its 20 000 files.
const PORTS: u16 = 20;

/// Entries of the maps that hold per-connection state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapEntries {
    pub socks: usize,
    pub backlog: usize,
    pub decision: usize,
}

fn open(node: &TestNode, name: &str) -> Result<Map> {
    let path = node.pins().map(name);
    Ok(Map::from_map_data(MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?)?)
}

/// Counts by iterating the pinned maps' keys (the kernel keeps no count of a hash map).
pub fn map_entries(node: &TestNode) -> Result<MapEntries> {
    let socks: SockHash<MapData, ConnKey> = open(node, names::MAP_SOCKS)?.try_into()?;
    let backlog: HashMap<MapData, ConnKey, Backlog> = open(node, names::MAP_BACKLOG)?.try_into()?;
    let decision: HashMap<MapData, ConnKey, u32> = open(node, names::MAP_DECISION)?.try_into()?;
    Ok(MapEntries {
        socks: socks.keys().collect::<Result<Vec<_>, _>>()?.len(),
        backlog: backlog.keys().collect::<Result<Vec<_>, _>>()?.len(),
        decision: decision.keys().collect::<Result<Vec<_>, _>>()?.len(),
    })
}

/// The kernel's account of each map's memory (`memlock` in its fdinfo: since 6.4 what the
/// map uses now, entries allocated so far included), by map name.
pub fn map_memory(node: &TestNode) -> Result<BTreeMap<&'static str, u64>> {
    let mut out = BTreeMap::new();
    for name in names::MAPS {
        let path = node.pins().map(name);
        let data = MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
        let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{}", data.fd().as_fd().as_raw_fd()))?;
        let memlock = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .context("fdinfo without memlock")?
            .trim()
            .parse()?;
        out.insert(name, memlock);
    }
    Ok(out)
}

/// Bytes held by each slab cache (active objects × object size), from /proc/slabinfo.
pub fn slab_bytes() -> Result<BTreeMap<String, i64>> {
    let text = fs::read_to_string("/proc/slabinfo")?;
    let mut out = BTreeMap::new();
    for l in text.lines().skip(2) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [name, active, _total, size, ..] = f[..] {
            out.insert(name.to_string(), active.parse::<i64>()? * size.parse::<i64>()?);
        }
    }
    Ok(out)
}

/// `after - before` per slab cache, largest growth first, only caches that grew.
pub fn slab_growth(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> Vec<(String, i64)> {
    let mut d: Vec<(String, i64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    d.sort_by_key(|(_, d)| -d);
    d
}

/// `MemAvailable` from /proc/meminfo, bytes.
pub fn mem_available() -> Result<i64> {
    let text = fs::read_to_string("/proc/meminfo")?;
    let kib: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("MemAvailable")?;
    Ok(kib * 1024)
}

/// Connections one worker process can hold: its file limit (the hard limit, which the
/// worker raises its soft limit to) less a margin, halved when it holds both ends.
pub fn per_worker(both_ends: bool) -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let fds = (lim.rlim_max as usize).saturating_sub(64).clamp(64, 60_000);
    if both_ends {
        fds / 2
    } else {
        fds
    }
}

/// `total` split into shares of at most `max`.
fn shares(total: usize, max: usize) -> Vec<usize> {
    let n = total.div_ceil(max).max(1);
    (0..n).map(|i| total / n + usize::from(i < total % n)).filter(|s| *s > 0).collect()
}

/// Worker processes holding many open, exchanged connections.
pub struct Many {
    /// Client workers first (they close on `close`), then the servers.
    clients: Vec<Proc>,
    servers: Vec<Proc>,
    /// Slowest worker's time from its start to every exchange done.
    pub open_secs: f64,
}

/// Worker `i`'s first server port.
fn port(i: usize) -> u16 {
    PORT_BASE + i as u16 * PORTS
}

fn worker(pod: &Pod, role: &str, conns: usize, addr: &str, timeout: Duration) -> Result<Proc> {
    let key = match role {
        "loopback" => "--port",
        "server" => "--listen",
        _ => "--connect",
    };
    let (c, t, p) = (conns.to_string(), timeout.as_millis().to_string(), PORTS.to_string());
    pod.testkit(&["many", "--role", role, "--conns", &c, key, addr, "--ports", &p, "--timeout-ms", &t])
}

fn wait_established(procs: &mut [Proc], timeout: Duration) -> Result<f64> {
    let mut slowest: f64 = 0.0;
    for p in procs {
        let v = p.expect_one_of(&["established", "done"], timeout)?;
        if v["event"] == "done" {
            bail!("{}: ended before every connection was established: {v}", p.label());
        }
        slowest = slowest.max(v["secs"].as_f64().unwrap_or_default());
    }
    Ok(slowest)
}

impl Many {
    /// `conns` connections from `client` to `server` (pod IPs), spread over workers and
    /// server ports; returns once every connection has done its exchange.
    pub fn between(server: &Pod, client: &Pod, conns: usize, timeout: Duration) -> Result<Self> {
        let shares = shares(conns, per_worker(false));
        let mut servers = vec![];
        for (i, n) in shares.iter().enumerate() {
            let mut p = worker(server, "server", *n, &format!("{}:{}", server.ip(), port(i)), timeout)?;
            p.expect_event("listening", timeout)?;
            servers.push(p);
        }
        let started = Instant::now();
        let mut clients = shares
            .iter()
            .enumerate()
            .map(|(i, n)| worker(client, "client", *n, &format!("{}:{}", server.ip(), port(i)), timeout))
            .collect::<Result<Vec<_>>>()?;
        wait_established(&mut clients, timeout)?;
        wait_established(&mut servers, timeout)?;
        Ok(Self { clients, servers, open_secs: started.elapsed().as_secs_f64() })
    }

    /// `conns` connections over `127.0.0.1` inside `pod`.
    pub fn loopback(pod: &Pod, conns: usize, timeout: Duration) -> Result<Self> {
        let started = Instant::now();
        let mut clients = shares(conns, per_worker(true))
            .iter()
            .enumerate()
            .map(|(i, n)| worker(pod, "loopback", *n, &port(i).to_string(), timeout))
            .collect::<Result<Vec<_>>>()?;
        wait_established(&mut clients, timeout)?;
        Ok(Self { clients, servers: vec![], open_secs: started.elapsed().as_secs_f64() })
    }

    /// Closes every connection (client ends first) and checks each worker's report.
    pub fn close(mut self, timeout: Duration) -> Result<()> {
        for p in &mut self.clients {
            p.send("close")?;
        }
        for p in self.clients.into_iter().chain(self.servers) {
            let label = p.label().to_string();
            clean(p.finish(timeout)?).with_context(|| label)?;
        }
        Ok(())
    }
}

/// Polls until the maps hold exactly `want` (closing sockets leave them asynchronously).
pub fn wait_for_entries(node: &TestNode, want: MapEntries, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = map_entries(node)?;
        if now == want {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "maps hold {now:?} after {timeout:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One line for the test log, which the scale docs quote.
pub fn report(what: &str, v: Value) {
    eprintln!("[scale] {what}: {v}");
}
