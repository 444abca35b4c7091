//! One simulated Kubernetes node per test: a bridge network, a cgroup root, a bpffs root, a
//! plugin state dir and log, all uniquely named and all removed on drop.
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use meshaccel_node::{bpf, pins::Pins};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cgroup;
use crate::cni::{Invocation, NetworkList, RuntimeConf};
use crate::names::{unique_tag, Subnet};
use crate::pod::{Pod, PodBuilder};
use crate::{binaries, run, Cleanup};

/// Which conflist a pod is set up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// bridge, then meshaccel.
    Accelerated,
    /// bridge only: a node (or network) without meshaccel.
    BridgeOnly,
}

pub(crate) struct NodeInner {
    pub tag: String,
    bridge: String,
    // Held for its Drop: the claim lasts as long as the node.
    _subnet: Subnet,
    pub cgroup_root: PathBuf,
    pub pins: Pins,
    state_dir: PathBuf,
    ipam_dir: PathBuf,
    pub log_file: PathBuf,
    accelerated: NetworkList,
    bridge_only: NetworkList,
    /// Pods get an IPv6 address too (see [`TestNode::dual_stack`]).
    pub dual_stack: bool,
}

impl NodeInner {
    pub fn chain(&self, chain: Chain) -> &NetworkList {
        match chain {
            Chain::Accelerated => &self.accelerated,
            Chain::BridgeOnly => &self.bridge_only,
        }
    }
}

pub struct TestNode {
    inner: Arc<NodeInner>,
}

/// meshaccel's counters, as `meshaccel stats --json` prints them.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub sockets_inserted: u64,
    pub insert_failures: u64,
    pub msgs_redirected: u64,
    pub redirect_misses: u64,
    pub bytes_redirected: u64,
    pub msgs_passed: u64,
    pub ambiguous: u64,
    pub backpressure_fallbacks: u64,
    pub filtered: u64,
    pub streaming_fallbacks: u64,
    pub left_sockmap: u64,
    pub blocking_plain: u64,
}

/// `meshaccel stats --json` for the bpffs root of `pins`; all zero while nothing is loaded
/// there (nothing can have been redirected then).
pub fn counters(pins: &Pins) -> Result<Counters> {
    if !bpf::is_loaded(pins) {
        return Ok(Counters::default());
    }
    let out = run(
        binaries::meshaccel().to_str().unwrap(),
        &["stats", "--json", "--bpffs-root", pins.root().to_str().unwrap()],
    )?;
    serde_json::from_str(&out).with_context(|| format!("meshaccel stats output {out:?}"))
}

impl Counters {
    /// What happened since `before`.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            sockets_inserted: self.sockets_inserted - before.sockets_inserted,
            insert_failures: self.insert_failures - before.insert_failures,
            msgs_redirected: self.msgs_redirected - before.msgs_redirected,
            redirect_misses: self.redirect_misses - before.redirect_misses,
            bytes_redirected: self.bytes_redirected - before.bytes_redirected,
            msgs_passed: self.msgs_passed - before.msgs_passed,
            ambiguous: self.ambiguous - before.ambiguous,
            backpressure_fallbacks: self.backpressure_fallbacks - before.backpressure_fallbacks,
            filtered: self.filtered - before.filtered,
            streaming_fallbacks: self.streaming_fallbacks - before.streaming_fallbacks,
            left_sockmap: self.left_sockmap - before.left_sockmap,
            blocking_plain: self.blocking_plain - before.blocking_plain,
        }
    }
}

/// The conf of the reference `bridge` plugin as these tests use it: pods on one L2 bridge,
/// the bridge as their gateway, no masquerading, `host-local` addresses from `subnet`.
pub fn bridge_conf(bridge: &str, subnet: &str, ipam_data_dir: &Path) -> Value {
    json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipMasq": false,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": ipam_data_dir},
    })
}

/// [`bridge_conf`] for dual-stack pods: one IPv4 and one IPv6 address each (host-local's
/// two range sets), the bridge the gateway of both.
pub fn dual_stack_bridge_conf(bridge: &str, subnet: &str, subnet6: &str, ipam_data_dir: &Path) -> Value {
    let mut conf = bridge_conf(bridge, subnet, ipam_data_dir);
    conf["ipam"]["ranges"] = json!([[{"subnet": subnet}], [{"subnet": subnet6}]]);
    conf
}

impl TestNode {
    pub fn new() -> Result<Self> {
        Self::with_sockmap(json!({"enabled": true}))
    }

    /// A node whose meshaccel network has this `sockmap` section (filter rules, …).
    pub fn with_sockmap(sockmap: Value) -> Result<Self> {
        Self::build(sockmap, false)
    }

    /// A node whose pods are dual-stack: an IPv4 and an IPv6 address each ([`Pod::ip6`]).
    pub fn dual_stack() -> Result<Self> {
        Self::build(json!({"enabled": true}), true)
    }

    /// A dual-stack node whose meshaccel network has this `sockmap` section.
    pub fn dual_stack_with_sockmap(sockmap: Value) -> Result<Self> {
        Self::build(sockmap, true)
    }

    fn build(sockmap: Value, dual_stack: bool) -> Result<Self> {
        let tag = unique_tag();
        let subnet = Subnet::claim(&tag)?;
        let bridge = format!("mab{tag}");
        assert!(bridge.len() <= 15, "bridge name {bridge} too long");
        let name = format!("meshaccel-test-{tag}");
        let run_dir = PathBuf::from("/run").join(&name);
        let cgroup_root = cgroup::v2_mount().join(&name);
        let pins = Pins::new(PathBuf::from("/sys/fs/bpf").join(&name));
        let meshaccel_dir = binaries::meshaccel().parent().context("plugin dir")?.to_path_buf();
        let cni_path = vec![PathBuf::from("/usr/lib/cni"), meshaccel_dir];
        let bridge_conf = if dual_stack {
            dual_stack_bridge_conf(&bridge, &subnet.cidr(), &subnet.cidr6(), &run_dir.join("ipam"))
        } else {
            bridge_conf(&bridge, &subnet.cidr(), &run_dir.join("ipam"))
        };
        let meshaccel_conf = json!({
            "type": "meshaccel",
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
            "sockmap": sockmap,
            "bpffsRoot": pins.root(),
            "cgroupRoot": cgroup_root,
            "stateDir": run_dir.join("state"),
            "log": {"file": run_dir.join("meshaccel.log"), "level": "debug"},
            // Tests want a setup failure at ADD, not a silently unaccelerated pod.
            "failurePolicy": "closed",
        });
        // One network name for both lists: host-local allocates from one pool per name.
        let list = |plugins| NetworkList {
            name: name.clone(),
            cni_version: "1.0.0".into(),
            plugins,
            cni_path: cni_path.clone(),
        };
        let inner = NodeInner {
            accelerated: list(vec![bridge_conf.clone(), meshaccel_conf]),
            bridge_only: list(vec![bridge_conf]),
            tag,
            _subnet: subnet,
            cgroup_root,
            pins,
            state_dir: run_dir.join("state"),
            ipam_dir: run_dir.join("ipam"),
            log_file: run_dir.join("meshaccel.log"),
            bridge,
            dual_stack,
        };
        // Leftovers of a killed run that had our pid: start clean.
        inner.cleanup().into_result()?;
        fs::create_dir_all(&run_dir)?;
        fs::create_dir_all(&inner.cgroup_root).with_context(|| format!("create {}", inner.cgroup_root.display()))?;
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Starts describing a pod; `.start()` on the builder creates it. Defaults: accelerated
    /// chain, best-effort QoS, cgroupfs driver, no annotations.
    pub fn pod(&self, name: &str) -> PodBuilder {
        PodBuilder::new(self.inner.clone(), name)
    }

    /// A pod that has opted out of sockmap by annotation.
    pub fn opted_out_pod(&self, name: &str) -> Result<Pod> {
        self.pod(name).annotate("meshaccel.io/sockmap", "false").start()
    }

    pub fn accelerated_pod(&self, name: &str) -> Result<Pod> {
        self.pod(name).start()
    }

    pub fn cgroup_root(&self) -> &Path {
        &self.inner.cgroup_root
    }

    pub fn pins(&self) -> &Pins {
        &self.inner.pins
    }

    pub fn log_file(&self) -> &Path {
        &self.inner.log_file
    }

    /// `meshaccel stats --json` for this node's bpffs root; all zero while no pod has made
    /// the plugin load its programs (nothing can have been redirected then).
    pub fn stats(&self) -> Result<Counters> {
        counters(&self.inner.pins)
    }

    /// The conflist a chain runs; tests of the CNI protocol call its plugins one by one.
    pub fn network(&self, chain: Chain) -> &NetworkList {
        self.inner.chain(chain)
    }

    /// meshaccel's entry in the accelerated conflist.
    pub fn meshaccel_conf(&self) -> Value {
        self.inner.accelerated.plugins.last().cloned().expect("meshaccel conf")
    }

    /// Runs the meshaccel plugin alone, as the accelerated chain would run it, whatever it
    /// answers. `conf` is its conflist entry (name and cniVersion come from the list).
    pub fn call_meshaccel(
        &self,
        command: &str,
        conf: &Value,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Result<Invocation> {
        self.inner.accelerated.call(command, conf, rt, prev)
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// A directory for a test's own files (created on demand), removed with the node.
    pub fn scratch_dir(&self) -> Result<PathBuf> {
        let dir = self.inner.scratch_dir();
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Every file and directory under this node's bpffs root and run directory, except the
    /// plugin log and host-local's data: all a meshaccel call may have created.
    pub fn plugin_footprint(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, skip: &[&Path], out: &mut Vec<PathBuf>) {
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = entry.path();
                if skip.contains(&p.as_path()) {
                    continue;
                }
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&p, skip, out);
                }
                out.push(p);
            }
        }
        let skip = [self.inner.log_file.as_path(), self.inner.ipam_dir.as_path()];
        let mut out = vec![];
        let run_dir = self.inner.log_file.parent().expect("run dir");
        for root in [self.inner.pins.root(), run_dir] {
            if root.exists() {
                out.push(root.to_path_buf());
            }
            walk(root, &skip, &mut out);
        }
        out.sort();
        out
    }

    /// The plugin's log so far (for failure messages).
    pub fn plugin_log(&self) -> String {
        fs::read_to_string(&self.inner.log_file).unwrap_or_default()
    }
}

impl NodeInner {
    fn scratch_dir(&self) -> PathBuf {
        self.log_file.with_file_name("scratch")
    }

    /// Removes everything the node owns. Pods are cleaned up by their own drop first.
    fn cleanup(&self) -> Cleanup {
        let mut c = Cleanup::default();
        c.step("cgroups", || cgroup::kill_and_remove(&self.cgroup_root));
        c.step("bpffs", || bpf::unload_all(&self.pins));
        c.step("bridge", || {
            if Path::new("/sys/class/net").join(&self.bridge).exists() {
                run("ip", &["link", "del", &self.bridge])?;
            }
            Ok(())
        });
        for dir in [&self.state_dir, &self.ipam_dir, &self.scratch_dir()] {
            c.step("dirs", || Ok(fs::remove_dir_all(dir).or_else(ignore_not_found)?));
        }
        c
    }
}

fn ignore_not_found(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let mut c = self.inner.cleanup();
        let log = &self.inner.log_file;
        if std::thread::panicking() {
            let text = self.plugin_log();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("meshaccel log kept at {}; its end:", log.display());
            tail.iter().rev().for_each(|l| eprintln!("  {l}"));
        } else {
            c.step("log", || Ok(fs::remove_file(log).or_else(ignore_not_found)?));
            let _ = fs::remove_dir(log.parent().unwrap());
        }
        c.finish(&format!("node {}", self.inner.tag));
    }
}
