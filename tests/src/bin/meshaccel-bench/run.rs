//! `run`: the node, the pods, the interleaved repetitions, the report.
use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use meshaccel_tests::{binaries, run as run_cmd, Pod, Proc, TestNode};

use crate::matrix::{Key, Matrix, Metric, Mode, Sample, Scenario};
use crate::opts::{size_label, Opts};
use crate::report::Report;
use crate::sockperf::{self, Test};
use crate::{cni_latency, machine::Machine, overhead, perf, reference};

/// The connection-rate server's port in the server pods (IPv4, and `[::]` for IPv6).
const CONN_PORT: u16 = 5301;
const CONN_PORT6: u16 = 5302;

/// Two accelerated pods and two opted out by annotation, all four on one bridge and
/// dual-stack: plain and accelerated traffic take identical veth/bridge paths.
struct Pods {
    accelerated: (Pod, Pod),
    plain: (Pod, Pod),
}

impl Pods {
    fn start(node: &TestNode) -> Result<Self> {
        Ok(Self {
            accelerated: (node.accelerated_pod("a-srv")?, node.accelerated_pod("a-cli")?),
            plain: (node.opted_out_pod("p-srv")?, node.opted_out_pod("p-cli")?),
        })
    }

    fn servers(&self) -> [&Pod; 2] {
        [&self.accelerated.0, &self.plain.0]
    }

    /// Where the client runs and which address it connects to.
    fn client(&self, scenario: Scenario, mode: Mode) -> (&Pod, IpAddr) {
        let (server, client) = match mode {
            Mode::Accelerated => &self.accelerated,
            Mode::Plain => &self.plain,
        };
        match scenario {
            Scenario::PodToPod => (client, server.ip().into()),
            Scenario::Loopback => (server, Ipv4Addr::LOCALHOST.into()),
            Scenario::PodToPod6 => (client, server.ip6().into()),
            Scenario::Loopback6 => (server, Ipv6Addr::LOCALHOST.into()),
        }
    }
}

fn bench_exe() -> Result<PathBuf> {
    std::env::current_exe().context("current_exe")
}

/// `--cpu N` for the connection-rate workers when pinning.
fn cpu_args(o: &Opts, cpu: &'static str) -> Vec<&'static str> {
    if o.pin {
        vec!["--cpu", cpu]
    } else {
        vec![]
    }
}

/// meshaccel's counters, all of them (`meshaccel stats --json`); none while no pod has made
/// the plugin load its programs (nothing can have been redirected then).
fn counters(node: &TestNode) -> Result<BTreeMap<String, u64>> {
    if !meshaccel_node::bpf::is_loaded(node.pins()) {
        return Ok(BTreeMap::new());
    }
    let root = node.pins().root().display().to_string();
    let out =
        run_cmd(binaries::meshaccel().to_str().context("plugin path")?, &["stats", "--json", "--bpffs-root", &root])?;
    serde_json::from_str(&out).with_context(|| format!("meshaccel stats: {out:?}"))
}

fn since(after: BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.into_iter().map(|(k, v)| (k.clone(), v.saturating_sub(before.get(&k).copied().unwrap_or(0)))).collect()
}

/// Runs a connection-rate client to completion; (conn/s, bytes carried).
fn conn_rate(cmd: Command, o: &Opts) -> Result<(f64, u64)> {
    let done = Proc::spawn("conn-client", cmd)?.finish(Duration::from_secs(u64::from(o.secs) + 30))?;
    ensure!(done["errors"].as_array().is_some_and(|e| e.is_empty()), "connection errors: {}", done["errors"]);
    let conns = done["conns"].as_u64().context("conns")?;
    Ok((conns as f64 / done["secs"].as_f64().context("secs")?, 2 * conns))
}

fn conn_client_args<'a>(o: &'a Opts, secs: &'a str, target: [&'a str; 2]) -> Vec<&'a str> {
    let mut args = vec!["conn-client", target[0], target[1], "--secs", secs];
    args.extend(cpu_args(o, "0"));
    args
}

/// One sample of one cell in one mode: the value and the bytes the test carried.
fn measure(pods: &Pods, key: Key, mode: Mode, dir: &Path, o: &Opts) -> Result<(f64, u64)> {
    let (client, host) = pods.client(key.scenario, mode);
    measure_from(client, host, key.metric, key.size, dir, o)
}

/// One sample from `client` towards the servers at `host`; `dir` holds sockperf's feed
/// files. sockperf (3.7) has no IPv6: there ping-pong and stream are `perf-client`'s.
fn measure_from(client: &Pod, host: IpAddr, metric: Metric, size: usize, dir: &Path, o: &Opts) -> Result<(f64, u64)> {
    let test = match metric {
        Metric::PingPong => Test::PingPong,
        Metric::Stream => Test::Stream,
        Metric::ConnRate => {
            let port = if host.is_ipv6() { CONN_PORT6 } else { CONN_PORT };
            let (secs, target) = (o.secs.to_string(), SocketAddr::new(host, port).to_string());
            let args = conn_client_args(o, &secs, ["--connect", &target]);
            return conn_rate(client.command(&bench_exe()?, &args)?, o);
        }
    };
    let m = if host.is_ipv6() {
        perf::run(client, &bench_exe()?, host, test, size, o.secs, o.pin)?
    } else {
        sockperf::run(client, &host.to_string(), dir, test, size, o.secs, o.pin)?
    };
    Ok((m.value, m.data_bytes))
}

/// What the overhead section measures: bulk and small-write bandwidth, connection rate.
const OVERHEAD_PLAN: [(Metric, usize); 3] =
    [(Metric::Stream, sockperf::MAX_SIZE), (Metric::Stream, 64), (Metric::ConnRate, 1)];

/// One repetition of the overhead rows: opted-out and accelerated clients against the same
/// opted-out server, in alternating order; a run that redirected anything does not count.
fn overhead_rep(
    node: &TestNode,
    pods: &Pods,
    rep: usize,
    dir: &Path,
    o: &Opts,
    rows: &mut [overhead::Samples],
) -> Result<()> {
    let host = pods.plain.0.ip().into();
    for (i, (&(metric, size), samples)) in OVERHEAD_PLAN.iter().zip(rows.iter_mut()).enumerate() {
        let mut values = [None, None];
        let order = if (rep + i).is_multiple_of(2) { [0, 1] } else { [1, 0] };
        for which in order {
            let client = if which == 0 { &pods.plain.1 } else { &pods.accelerated.1 };
            let before = counters(node)?;
            let outcome = measure_from(client, host, metric, size, dir, o);
            let redirected = since(counters(node)?, &before).get("bytes_redirected").copied().unwrap_or(0);
            values[which] = match outcome {
                Ok(_) if redirected > 0 => {
                    samples.problem(format!("rep {}: {redirected} bytes redirected", rep + 1));
                    None
                }
                Ok((v, _)) => Some(v),
                Err(e) => {
                    samples.problem(format!("rep {}: {e:#}", rep + 1));
                    None
                }
            };
        }
        eprintln!("[{}/{}] overhead {} {}: {values:?}", rep + 1, o.reps, metric.short(), size_label(size));
        samples.push(values[0], values[1]);
    }
    Ok(())
}

/// The AF_UNIX reference for one (metric, size).
fn reference(metric: Metric, size: usize, unix_path: &Path, o: &Opts) -> Result<f64> {
    match metric {
        Metric::PingPong => reference::socketpair(Test::PingPong, size, o.secs, o.pin),
        Metric::Stream => reference::socketpair(Test::Stream, size, o.secs, o.pin),
        Metric::ConnRate => {
            let (secs, path) = (o.secs.to_string(), unix_path.display().to_string());
            let mut cmd = Command::new(bench_exe()?);
            cmd.args(conn_client_args(o, &secs, ["--unix", &path]));
            Ok(conn_rate(cmd, o)?.0)
        }
    }
}

/// The cells in the order each repetition visits them.
fn plan(o: &Opts) -> Vec<(Metric, usize)> {
    let mut p: Vec<(Metric, usize)> =
        o.sizes.iter().flat_map(|&s| [(Metric::PingPong, s), (Metric::Stream, s)]).collect();
    p.push((Metric::ConnRate, 1));
    p
}

pub fn run(o: &Opts) -> Result<()> {
    let mut machine = Machine::now();
    let started = Instant::now();
    let plan = plan(o);
    let runs = o.reps * plan.len() * 9;
    // Matrix (IPv4) and overhead runs of sockperf, each with its start-up sleep.
    let sockperf_runs = o.reps * (plan.iter().filter(|c| c.0 != Metric::ConnRate).count() * 4 + 4);
    eprintln!(
        "[bench] {} cells × 4 scenarios × (plain, accelerated) + AF_UNIX, {} reps, {} s each: ~{} s of traffic \
         and {} s of sockperf's start-up sleeps, then {} pods for CNI ADD/DEL",
        plan.len(),
        o.reps,
        o.secs,
        runs as u32 * o.secs,
        sockperf_runs as f64 * sockperf::STARTUP_SLEEP.as_secs_f64(),
        o.pods
    );
    let node = TestNode::dual_stack()?;
    let pods = Pods::start(&node)?;
    // The AF_UNIX socket and sockperf's feed files.
    let dir = tempdir()?;
    let mut servers = vec![];
    for pod in pods.servers() {
        servers.push(sockperf::server(pod, &dir.0, o.pin)?);
        servers.push(perf::server(pod, &bench_exe()?, o.pin)?);
        for listen in [SocketAddr::from((Ipv4Addr::UNSPECIFIED, CONN_PORT)), (Ipv6Addr::UNSPECIFIED, CONN_PORT6).into()]
        {
            let listen = listen.to_string();
            let mut args = vec!["conn-server", "--listen", &listen];
            args.extend(cpu_args(o, "1"));
            let mut p = Proc::spawn(&format!("{}: conn-server", pod.name()), pod.command(&bench_exe()?, &args)?)?;
            p.expect_event("listening", Duration::from_secs(30))?;
            servers.push(p);
        }
    }
    let unix_path = dir.0.join("conn.sock");
    let mut cmd = Command::new(bench_exe()?);
    cmd.args(["conn-server", "--unix"]).arg(&unix_path).args(cpu_args(o, "1"));
    let mut unix_server = Proc::spawn("unix conn-server", cmd)?;
    unix_server.expect_event("listening", Duration::from_secs(30))?;

    let mut m = Matrix::default();
    let mut overhead_samples: Vec<overhead::Samples> = OVERHEAD_PLAN.iter().map(|_| Default::default()).collect();
    for rep in 0..o.reps {
        for (i, &(metric, size)) in plan.iter().enumerate() {
            for scenario in Scenario::ALL {
                let key = Key { metric, size, scenario };
                // Alternate which mode goes first, so slow drifts of the machine cancel out.
                let modes = if (rep + i).is_multiple_of(2) {
                    [Mode::Plain, Mode::Accelerated]
                } else {
                    [Mode::Accelerated, Mode::Plain]
                };
                for mode in modes {
                    let before = counters(&node)?;
                    let outcome = measure(&pods, key, mode, &dir.0, o);
                    let sample = Sample::judge(rep, mode, outcome, since(counters(&node)?, &before));
                    log_sample(rep, o.reps, key, mode, &sample);
                    m.push(key, mode, sample);
                }
            }
            let r = reference(metric, size, &unix_path, o)
                .with_context(|| format!("AF_UNIX {} {}", metric.short(), size_label(size)))?;
            m.reference.entry((metric, size)).or_default().push(r);
        }
        overhead_rep(&node, &pods, rep, &dir.0, o, &mut overhead_samples)?;
    }
    let overhead: Vec<_> = OVERHEAD_PLAN.iter().zip(&overhead_samples).map(|(&(m, s), x)| x.row(m, s)).collect();
    drop((servers, unix_server));
    drop(pods);
    drop(node);
    // On an IPv4 node, as in every earlier run: host-local's second range would add to ADD.
    let cni = cni_latency::measure(&TestNode::new()?, o.pods)?;
    machine.finish();
    let report = Report::new(o, machine, &m, cni, overhead, started.elapsed());
    report.write(&o.out)?;
    print!("{}", report.markdown());
    eprintln!("[bench] wrote {}", o.out.display());
    // Marked in the table, and a failure: a cell that could not show a redirected run is a
    // defect of meshaccel or of the bench, never a number to quote.
    let invalid = report.cells.iter().filter(|c| !c.valid).count();
    ensure!(invalid == 0, "{invalid} cells without a valid plain/accelerated pair (see the notes under the table)");
    let below = report.below_goal();
    ensure!(
        !o.check || below.is_empty(),
        "--check: below the goal (90 % interval's lower end < 0.98): {}",
        below.join(", ")
    );
    Ok(())
}

fn log_sample(rep: usize, reps: usize, key: Key, mode: Mode, s: &Sample) {
    let value = s.value.map_or("-".into(), |v| format!("{v:.2} {}", key.metric.unit()));
    let share = s.redirected_share.map_or(String::new(), |r| format!(", {:.0} % redirected", r * 100.0));
    let bad = s.invalid.as_ref().map_or(String::new(), |w| format!("  INVALID: {w}"));
    eprintln!(
        "[{}/{reps}] {} {} {} {:?}: {value}{share}{bad}",
        rep + 1,
        key.metric.short(),
        size_label(key.size),
        key.scenario.label(),
        mode
    );
}

/// A private directory for the AF_UNIX socket and the feed files, removed on drop.
struct TempDir(PathBuf);

fn tempdir() -> Result<TempDir> {
    let dir = std::env::temp_dir().join(format!("meshaccel-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(TempDir(dir))
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
