//! `meshaccel-bench mesh`: HTTP and TCP echo through Istio-style sidecars on one node, pods
//! opted out (plain) vs accelerated, interleaved in one run. See docs/mesh.md.
//!
//! Two pod pairs on one bridge, each pair meshed (see meshaccel_tests::mesh). In the server
//! pod: nginx serving a 1 KiB body and the tag-checking echo server; in the client pod: wrk
//! (HTTP/1.1 keep-alive, `--conns` connections) and `meshaccel-rr rr` (TCP echo, `--conns`
//! connections, 1 KiB requests). Every round runs each scenario once per mode,
//! alternating which mode goes first; medians over rounds are reported. Where the time goes
//! is read from the cgroup `cpu.stat` of each container and `/proc/stat` (perf is not
//! available everywhere this runs).
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use meshaccel_tests::mesh::{self, counters, counters_since, Sidecar};
use meshaccel_tests::{Pod, Proc, TestNode};
use serde_json::{json, Value};

use crate::child::output_within;
use crate::machine::loadavg;
use crate::stats::spread;

const HTTP_PORT: u16 = 80;
const ECHO_PORT: u16 = 9000;
const BODY: usize = 1024;
const CONTAINERS: [&str; 2] = ["app", Sidecar::CONTAINER];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Plain,
    Accelerated,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Accelerated => "accelerated",
        }
    }
}

/// One meshed client/server pod pair and the app servers in it.
struct Pair {
    mode: Mode,
    client: Pod,
    server: Pod,
    _sidecars: [Sidecar; 2],
    _apps: Vec<Proc>,
    dir: PathBuf,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn nginx_config(dir: &str) -> String {
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {dir}/tmp;
    server {{
        listen {HTTP_PORT} reuseport;
        location / {{ root {dir}/www; }}
    }}
}}
"
    )
}

impl Pair {
    fn start(node: &TestNode, mode: Mode) -> Result<Self> {
        let pod = |role: &str| {
            let b = node.pod(&format!("{role}-{}", mode.name()));
            if mode == Mode::Plain { b.annotate("meshaccel.io/sockmap", "false") } else { b }.start()
        };
        let (client, server) = (pod("client")?, pod("server")?);
        let sidecars = [Sidecar::inject(&client)?, Sidecar::inject(&server)?];
        let dir = std::env::temp_dir().join(format!("meshaccel-mesh-bench-{}-{}", std::process::id(), mode.name()));
        fs::create_dir_all(dir.join("www"))?;
        fs::create_dir_all(dir.join("tmp"))?;
        fs::write(dir.join("www/1k"), vec![b'x'; BODY])?;
        let d = dir.display().to_string();
        fs::write(dir.join("nginx.conf"), nginx_config(&d))?;
        let nginx = mesh::container(&server, "app", "nginx", &["-p", &d, "-c", &format!("{d}/nginx.conf")])?;
        let echo = mesh::echo_server(&server, &format!("0.0.0.0:{ECHO_PORT}"), &[1])?;
        let pair = Self { mode, client, server, _sidecars: sidecars, _apps: vec![nginx, echo], dir };
        mesh::wait_listening(&pair.server, &[HTTP_PORT])?;
        // Warm up: one connection's worth of requests through the whole path.
        pair.wrk(1, 1)?;
        Ok(pair)
    }

    /// wrk in the client pod: 2 threads, `conns` keep-alive connections.
    fn wrk(&self, conns: u32, secs: u64) -> Result<Value> {
        let url = format!("http://{}:{HTTP_PORT}/1k", self.server.ip());
        let (c, d) = (conns.to_string(), format!("{secs}s"));
        let threads = conns.min(2).to_string();
        let wrk = mesh::container_command(
            &self.client,
            "app",
            "wrk",
            &["-t", &threads, "-c", &c, "-d", &d, "--latency", &url],
        )?;
        parse_wrk(&output_within(wrk, Duration::from_secs(secs + 60)).context("wrk")?)
    }

    /// TCP echo of 1 KiB requests over `conns` connections.
    fn echo(&self, conns: u32, secs: u64) -> Result<Value> {
        let connect = format!("{}:{ECHO_PORT}", self.server.ip());
        let (c, s, size) = (conns.to_string(), secs.to_string(), BODY.to_string());
        let rr = mesh::rr(&self.client, &connect, 1, &["--conns", &c, "--seconds", &s, "--size", &size])?;
        let done = rr.finish(Duration::from_secs(secs + 60))?;
        ensure!(done["error_count"] == 0, "echo errors: {done}");
        Ok(json!({"qps": done["qps"], "p50_us": done["p50_us"], "p90_us": done["p90_us"], "p99_us": done["p99_us"]}))
    }

    /// CPU µs of each container of the pair, user and system.
    fn cpu(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        let mut m = BTreeMap::new();
        for (pod, side) in [(&self.client, "client"), (&self.server, "server")] {
            for c in CONTAINERS {
                m.insert(format!("{side}/{c}"), mesh::cpu_usec(pod, c)?);
            }
        }
        Ok(m)
    }
}

/// Requests/sec and the latency percentiles from `wrk --latency` output.
fn parse_wrk(out: &str) -> Result<Value> {
    let field = |prefix: &str| out.lines().find_map(|l| l.trim().strip_prefix(prefix).map(str::trim));
    let rps: f64 = field("Requests/sec:").context("wrk: no Requests/sec")?.parse()?;
    let pct = |p: &str| -> Result<f64> { duration_us(field(p).with_context(|| format!("wrk: no {p} latency"))?) };
    if let Some(errors) = field("Non-2xx or 3xx responses:").or(field("Socket errors:")) {
        bail!("wrk reported errors: {errors}\n{out}");
    }
    Ok(json!({"qps": rps, "p50_us": pct("50%")?, "p90_us": pct("90%")?, "p99_us": pct("99%")?}))
}

/// wrk's "123.45us", "1.20ms", "2.00s" in µs.
fn duration_us(s: &str) -> Result<f64> {
    let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).with_context(|| format!("duration {s:?}"))?);
    let n: f64 = n.parse()?;
    Ok(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        u => bail!("unit {u:?} in {s:?}"),
    })
}

/// Whole-machine CPU time from /proc/stat, in clock ticks: (busy without softirq, softirq, idle).
fn machine_cpu() -> Result<[u64; 3]> {
    let stat = fs::read_to_string("/proc/stat")?;
    let cpu: Vec<u64> =
        stat.lines().next().context("/proc/stat")?.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal
    let busy = cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[7];
    Ok([busy, cpu[6], cpu[3] + cpu[4]])
}

/// One measurement: the load's numbers, CPU per container and per request, counters.
fn measure(node: &TestNode, pair: &Pair, scenario: &str, conns: u32, secs: u64) -> Result<Value> {
    let (cpu0, m0, c0) = (pair.cpu()?, machine_cpu()?, counters(node)?);
    let mut r = match scenario {
        "http" => pair.wrk(conns, secs)?,
        "echo" => pair.echo(conns, secs)?,
        s => bail!("scenario {s}"),
    };
    let (cpu1, m1, c1) = (pair.cpu()?, machine_cpu()?, counters(node)?);
    let requests = (r["qps"].as_f64().unwrap_or(0.0) * secs as f64).max(1.0);
    let per_request: BTreeMap<_, _> = cpu1
        .iter()
        .map(|(k, (u, s))| {
            (k.clone(), json!({"user": (u - cpu0[k].0) as f64 / requests, "system": (s - cpu0[k].1) as f64 / requests}))
        })
        .collect();
    let ticks: Vec<u64> = (0..3).map(|i| m1[i] - m0[i]).collect();
    let total = ticks.iter().sum::<u64>().max(1) as f64;
    r["cpu_us_per_request"] = json!(per_request);
    r["machine"] =
        json!({"busy": ticks[0] as f64 / total, "softirq": ticks[1] as f64 / total, "idle": ticks[2] as f64 / total});
    r["counters"] = json!(counters_since(&c1, &c0));
    r["loadavg"] = json!(loadavg().split_whitespace().next().and_then(|l| l.parse::<f64>().ok()));
    Ok(r)
}

/// `mesh [--seconds N] [--rounds N] [--conns N] [--json PATH]`.
#[derive(clap::Args, Debug)]
pub struct MeshArgs {
    /// Seconds per sample.
    #[arg(long, value_name = "N", default_value_t = 10)]
    seconds: u64,
    /// Rounds; each measures both scenarios in both modes, alternating which mode goes first.
    #[arg(long, value_name = "N", default_value_t = 3)]
    rounds: usize,
    /// Connections of each load generator.
    #[arg(long, value_name = "N", default_value_t = 64)]
    conns: u32,
    /// Also write the summary and every sample here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

pub fn run(a: &MeshArgs) -> Result<()> {
    let (secs, rounds, conns) = (a.seconds, a.rounds, a.conns);
    let node = TestNode::new()?;
    let pairs = [Pair::start(&node, Mode::Plain)?, Pair::start(&node, Mode::Accelerated)?];
    let mut samples: Vec<Value> = vec![];
    for round in 0..rounds {
        for scenario in ["http", "echo"] {
            let order: Vec<&Pair> = if round % 2 == 0 { pairs.iter().collect() } else { pairs.iter().rev().collect() };
            for pair in order {
                let mut r = measure(&node, pair, scenario, conns, secs)?;
                r["round"] = json!(round);
                r["scenario"] = json!(scenario);
                r["mode"] = json!(pair.mode.name());
                eprintln!("{r}");
                samples.push(r);
            }
        }
    }
    let summary = summarize(&samples);
    println!("{}", table(&summary, conns, secs, rounds));
    if let Some(path) = &a.json {
        fs::write(path, serde_json::to_string_pretty(&json!({"summary": summary, "samples": samples}))?)?;
    }
    Ok(())
}

/// Medians per scenario and mode of every number in the samples.
fn summarize(samples: &[Value]) -> Value {
    let mut out = json!({});
    for scenario in ["http", "echo"] {
        for mode in [Mode::Plain, Mode::Accelerated].map(Mode::name) {
            let mine: Vec<&Value> = samples.iter().filter(|s| s["scenario"] == scenario && s["mode"] == mode).collect();
            let med = |f: &dyn Fn(&Value) -> Option<f64>| {
                spread(&mine.iter().filter_map(|s| f(s)).collect::<Vec<_>>()).map_or(0.0, |s| s.median)
            };
            let mut m = json!({});
            for k in ["qps", "p50_us", "p90_us", "p99_us"] {
                m[k] = json!(med(&|s| s[k].as_f64()));
            }
            let containers: Vec<String> = mine
                .first()
                .and_then(|s| s["cpu_us_per_request"].as_object())
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            for c in containers {
                for k in ["user", "system"] {
                    m["cpu_us_per_request"][&c][k] = json!(med(&|s| s["cpu_us_per_request"][&c][k].as_f64()));
                }
            }
            for k in ["busy", "softirq", "idle"] {
                m["machine"][k] = json!(med(&|s| s["machine"][k].as_f64()));
            }
            m["loadavg"] = json!(med(&|s| s["loadavg"].as_f64()));
            for k in ["bytes_redirected", "msgs_redirected", "msgs_passed", "sockets_inserted"] {
                m["counters"][k] = json!(med(&|s| s["counters"][k].as_f64()));
            }
            out[scenario][mode] = m;
        }
    }
    out
}

fn table(s: &Value, conns: u32, secs: u64, rounds: usize) -> String {
    let sides = [
        "client/app".to_string(),
        format!("client/{}", Sidecar::CONTAINER),
        format!("server/{}", Sidecar::CONTAINER),
        "server/app".to_string(),
    ];
    let mut t = format!(
        "Sidecar mesh, {conns} connections, {BODY} B bodies/requests, {secs} s × {rounds} rounds (medians)\n\n\
         | scenario | mode | QPS | P50 µs | P90 µs | P99 µs | CPU µs/request user+system: {} | load |\n\
         |---|---|---:|---:|---:|---:|---|---:|\n",
        sides.join(", ")
    );
    for scenario in ["http", "echo"] {
        for mode in ["plain", "accelerated"] {
            let m = &s[scenario][mode];
            let num = |k: &str| m[k].as_f64().unwrap_or(0.0);
            let cpu: Vec<String> = sides
                .iter()
                .map(|c| {
                    let v = |k: &str| m["cpu_us_per_request"][c][k].as_f64().unwrap_or(0.0);
                    format!("{:.1}+{:.1}", v("user"), v("system"))
                })
                .collect();
            t += &format!(
                "| {scenario} | {mode} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.1} |\n",
                num("qps"),
                num("p50_us"),
                num("p90_us"),
                num("p99_us"),
                cpu.join(", "),
                num("loadavg")
            );
        }
        let (p, a) = (&s[scenario]["plain"], &s[scenario]["accelerated"]);
        let ratio = |k: &str| a[k].as_f64().unwrap_or(0.0) / p[k].as_f64().unwrap_or(1.0).max(1e-9);
        t += &format!(
            "| {scenario} | **accelerated / plain** | **{:.2}×** | {:.2}× | {:.2}× | {:.2}× | | |\n",
            ratio("qps"),
            ratio("p50_us"),
            ratio("p90_us"),
            ratio("p99_us")
        );
    }
    t
}
