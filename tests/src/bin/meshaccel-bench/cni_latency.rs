//! CNI ADD and DEL latency as a runtime sees it: spawn to exit of each plugin binary of the
//! chain (bridge runs host-local inside its time), over many pods. A batch of pods is added
//! (so later ADDs run with many pods on the node), then each gets the DEL of StopPodSandbox
//! (netns present, cached result), timed, before the pod is torn down. The traffic pods
//! loaded the BPF programs earlier, so no ADD here pays for that.
//!
//! Memory next to it: each plugin's peak RSS over all its invocations (`ru_maxrss`), and
//! the installer daemon's (`VmHWM`) after it loaded the programs, installed, and watched
//! the node through all those pods. Both are checked against issue 6's goals.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshaccel_tests::{binaries, Chain, TestNode};
use serde::Serialize;
use serde_json::json;

use crate::stats::quantile;

/// Issue 6's goals.
const ADD_P99_MS: f64 = 10.0;
const DEL_P99_MS: f64 = 5.0;
const PLUGIN_RSS_MIB: f64 = 10.0;
const INSTALLER_RSS_MIB: f64 = 50.0;

/// host-local hands out a /24 per node here; the traffic pods hold a few addresses.
const BATCH: usize = 200;

#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub n: usize,
}

fn percentiles(xs: &[Duration]) -> Percentiles {
    let mut ms: Vec<f64> = xs.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q| if ms.is_empty() { f64::NAN } else { quantile(&ms, q) };
    Percentiles { p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0), n: ms.len() }
}

#[derive(Clone, Debug, Serialize)]
pub struct PluginTimes {
    pub plugin: String,
    pub add: Percentiles,
    pub del: Percentiles,
    /// Largest `ru_maxrss` of any of its ADDs and DELs, KiB (the whole chain: the largest
    /// plugin's).
    pub peak_rss_kib: u64,
}

/// The installer daemon's memory, from /proc/PID/status.
#[derive(Clone, Debug, Serialize)]
pub struct InstallerMemory {
    pub vm_hwm_kib: u64,
    pub vm_rss_kib: u64,
    /// How long it had run when read.
    pub after_secs: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CniLatency {
    pub pods: usize,
    /// Each plugin of the chain, then the whole chain.
    pub plugins: Vec<PluginTimes>,
    pub installer: Option<InstallerMemory>,
    /// Why `installer` is missing.
    pub installer_error: Option<String>,
}

#[derive(Default)]
struct Times {
    add: Vec<Duration>,
    del: Vec<Duration>,
    peak_rss_kib: u64,
}

pub fn measure(node: &TestNode, pods: usize) -> Result<CniLatency> {
    let (mut by_plugin, mut order) = (BTreeMap::<String, Times>::new(), Vec::<String>::new());
    let mut record = |plugin: &str, d: Duration, rss: u64, add: bool| {
        if !order.iter().any(|p| p == plugin) {
            order.push(plugin.to_string());
        }
        let t = by_plugin.entry(plugin.to_string()).or_default();
        t.peak_rss_kib = t.peak_rss_kib.max(rss);
        if add {
            t.add.push(d)
        } else {
            t.del.push(d)
        }
    };
    let mut record_all = |timings: &meshaccel_tests::cni::Timings, add: bool| {
        timings.iter().for_each(|t| record(&t.plugin, t.elapsed, t.max_rss_kib, add));
        let peak = timings.iter().map(|t| t.max_rss_kib).max().unwrap_or(0);
        record(CHAIN, timings.iter().map(|t| t.elapsed).sum(), peak, add);
    };
    let installer = Installer::start(node);
    let network = node.network(Chain::Accelerated);
    let mut done = 0;
    while done < pods {
        let batch = BATCH.min(pods - done);
        let mut live = Vec::with_capacity(batch);
        for i in done..done + batch {
            let pod = node.accelerated_pod(&format!("cni{i}"))?;
            record_all(pod.add_timings(), true);
            live.push(pod);
        }
        for pod in live {
            record_all(&network.del_timed(pod.runtime_conf(), Some(pod.result()))?, false);
        }
        done += batch;
        eprintln!("[cni] {done}/{pods} pods added and deleted");
    }
    let (installer, installer_error) = match installer.and_then(|i| i.memory()) {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    // Chain order, whole chain last.
    order.retain(|p| p != CHAIN);
    order.push(CHAIN.into());
    let plugins = order
        .iter()
        .map(|p| {
            let t = &by_plugin[p];
            PluginTimes {
                plugin: p.clone(),
                add: percentiles(&t.add),
                del: percentiles(&t.del),
                peak_rss_kib: t.peak_rss_kib,
            }
        })
        .collect();
    Ok(CniLatency { pods, plugins, installer, installer_error })
}

/// `meshaccel-installer run` on the node's bpffs root, with its own conf and bin dirs (a
/// bridge conflist to chain into) and a CRI socket nobody serves: it loads (or finds)
/// the programs, installs, tries adoption, then watches. Killed on drop.
struct Installer {
    child: Child,
    started: Instant,
}

impl Installer {
    fn start(node: &TestNode) -> Result<Self> {
        let dir = node.scratch_dir()?.join("installer");
        let (conf, bin, state) = (dir.join("net.d"), dir.join("bin"), dir.join("state"));
        for d in [&conf, &bin, &state] {
            fs::create_dir_all(d)?;
        }
        let primary =
            json!({"cniVersion": "1.0.0", "name": "bench", "plugins": [{"type": "bridge", "bridge": "cni0"}]});
        fs::write(conf.join("10-bridge.conflist"), primary.to_string())?;
        let ready = dir.join("ready");
        let child = Command::new(binaries::installer())
            .arg("run")
            .arg("--cni-conf-dir")
            .arg(&conf)
            .arg("--cni-bin-dirs")
            .arg(&bin)
            .arg("--plugin-binary")
            .arg(binaries::meshaccel())
            .arg("--bpffs-root")
            .arg(node.pins().root())
            .args(["--mount-bpffs", "false", "--listen", "127.0.0.1:0", "--log-level", "info"])
            .arg("--plugin-conf")
            .arg(json!({"stateDir": state, "log": {"file": ""}}).to_string())
            .arg("--cri-socket")
            .arg(dir.join("no-cri.sock"))
            .arg("--ready-file")
            .arg(&ready)
            .env_remove("MESHACCEL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("installer.log"))?)
            .spawn()
            .context("spawn meshaccel-installer")?;
        let mut inst = Self { child, started: Instant::now() };
        while !ready.exists() {
            if let Some(status) = inst.child.try_wait()? {
                bail!(
                    "meshaccel-installer exited ({status}): {}",
                    fs::read_to_string(dir.join("installer.log")).unwrap_or_default()
                );
            }
            if inst.started.elapsed() > Duration::from_secs(60) {
                bail!("meshaccel-installer not ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(inst)
    }

    fn memory(&self) -> Result<InstallerMemory> {
        let status = fs::read_to_string(Path::new("/proc").join(self.child.id().to_string()).join("status"))?;
        let kib = |key: &str| -> Result<u64> {
            let v = status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .with_context(|| format!("{key} in /proc/PID/status"))?;
            Ok(v.trim().trim_end_matches("kB").trim().parse()?)
        };
        Ok(InstallerMemory {
            vm_hwm_kib: kib("VmHWM:")?,
            vm_rss_kib: kib("VmRSS:")?,
            after_secs: self.started.elapsed().as_secs_f64(),
        })
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

impl CniLatency {
    /// The latency and memory tables and the goals, in Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nCNI latency over {} pods, ms (spawn to exit of each plugin binary, as a runtime waits for it; bridge includes \
             host-local; DEL is the first one, with netns and cached result); peak RSS = largest `ru_maxrss` of its ADDs and DELs:\n",
            self.pods
        );
        let _ = writeln!(out, "| plugin | ADD p50 | ADD p99 | ADD max | DEL p50 | DEL p99 | DEL max | peak RSS MiB |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for p in &self.plugins {
            let (a, d) = (&p.add, &p.del);
            let _ = writeln!(
                out,
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
                p.plugin,
                a.p50_ms,
                a.p99_ms,
                a.max_ms,
                d.p50_ms,
                d.p99_ms,
                d.max_ms,
                mib(p.peak_rss_kib)
            );
        }
        let _ = writeln!(out);
        match (&self.installer, &self.installer_error) {
            (Some(m), _) => {
                let _ = writeln!(
                    out,
                    "Installer daemon: VmHWM {:.1} MiB, VmRSS {:.1} MiB after {:.0} s (loaded the programs, installed, watched through the pods above).\n",
                    mib(m.vm_hwm_kib),
                    mib(m.vm_rss_kib),
                    m.after_secs
                );
            }
            (None, e) => {
                let _ = writeln!(out, "Installer daemon: not measured ({}).\n", e.as_deref().unwrap_or("?"));
            }
        }
        if let Some(m) = self.plugins.iter().find(|p| p.plugin == "meshaccel") {
            let inst = self.installer.as_ref().map(|i| mib(i.vm_hwm_kib));
            let _ = writeln!(
                out,
                "Goals (issue 6): meshaccel ADD p99 ≤ {ADD_P99_MS} ms: {:.2} {}; DEL p99 ≤ {DEL_P99_MS} ms: {:.2} {}; \
                 plugin peak RSS ≤ {PLUGIN_RSS_MIB} MiB: {:.1} {}; installer RSS ≤ {INSTALLER_RSS_MIB} MiB: {}.",
                m.add.p99_ms,
                verdict(m.add.p99_ms <= ADD_P99_MS),
                m.del.p99_ms,
                verdict(m.del.p99_ms <= DEL_P99_MS),
                mib(m.peak_rss_kib),
                verdict(mib(m.peak_rss_kib) <= PLUGIN_RSS_MIB),
                inst.map_or("not measured".into(), |v| format!("{v:.1} {}", verdict(v <= INSTALLER_RSS_MIB))),
            );
        }
        out
    }
}

/// `--pods N` of `cni` and `run`.
#[derive(clap::Args, Debug)]
pub struct Pods {
    /// Pods for the CNI ADD/DEL latencies [default: 200, run --quick: 50].
    #[arg(long, value_name = "N")]
    pods: Option<usize>,
}

impl Pods {
    /// The number given, else `default`.
    pub fn or(&self, default: usize) -> usize {
        self.pods.unwrap_or(default)
    }
}

/// `meshaccel-bench cni [--pods N]`: only this part, on its own node; a first pod loads
/// the programs (untimed), as the traffic pods do in `run`.
pub fn run(a: &Pods) -> Result<()> {
    let pods = a.or(200);
    let node = TestNode::new()?;
    let _warm = node.accelerated_pod("warm")?;
    let r = measure(&node, pods)?;
    print!("{}", r.markdown());
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

pub const CHAIN: &str = "whole chain";
