//! A pod as kubelet + containerd make one: pod cgroup first, then a netns, then the CNI ADD
//! of the node's conflist; processes run in a container cgroup below the pod cgroup.
use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

use crate::cgroup::{self, Driver, Qos};
use crate::cni::{RuntimeConf, Timings};
use crate::netns::NetNs;
use crate::node::{Chain, NodeInner};
use crate::process::Proc;
use crate::{binaries, Cleanup};

pub const ANNOTATIONS: &str = "io.kubernetes.cri.pod-annotations";

pub struct PodBuilder {
    node: Arc<NodeInner>,
    name: String,
    chain: Chain,
    qos: Qos,
    driver: Driver,
    annotations: Map<String, Value>,
}

impl PodBuilder {
    pub(crate) fn new(node: Arc<NodeInner>, name: &str) -> Self {
        Self {
            node,
            name: name.to_string(),
            chain: Chain::Accelerated,
            qos: Qos::BestEffort,
            driver: Driver::Cgroupfs,
            annotations: Map::new(),
        }
    }

    pub fn chain(mut self, chain: Chain) -> Self {
        self.chain = chain;
        self
    }

    pub fn qos(mut self, qos: Qos) -> Self {
        self.qos = qos;
        self
    }

    pub fn driver(mut self, driver: Driver) -> Self {
        self.driver = driver;
        self
    }

    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Creates the pod. On failure everything created so far is removed again (including
    /// the DEL a runtime sends after a failed ADD).
    pub fn start(self) -> Result<Pod> {
        let uid = uuid();
        let cgroup = self.node.cgroup_root.join(cgroup::pod_cgroup(self.driver, self.qos, &uid));
        fs::create_dir_all(&cgroup).with_context(|| format!("create {}", cgroup.display()))?;
        let mut pod = Pod {
            netns: None,
            result: None,
            ip: Ipv4Addr::UNSPECIFIED,
            ip6: None,
            rt: RuntimeConf::default(),
            add_timings: vec![],
            cgroup,
            chain: self.chain,
            name: self.name,
            node: self.node,
        };
        let netns = NetNs::create(&format!("meshaccel-test-{}-{}", pod.node.tag, pod.name))?;
        if pod.node.dual_stack {
            // Addresses usable at once: no duplicate address detection on the pod's side
            // (the bridge plugin creates eth0 in the netns, with its defaults).
            for conf in ["all", "default"] {
                let key = format!("net.ipv6.conf.{conf}.accept_dad=0");
                crate::run("ip", &["netns", "exec", netns.name(), "sysctl", "-qw", &key])?;
            }
        }
        let sandbox_id = random_hex(32);
        // containerd's key order is not fixed; vary it so the plugin cannot rely on one.
        let mut args = vec![
            ("IgnoreUnknown".to_string(), "1".to_string()),
            ("K8S_POD_NAMESPACE".into(), "meshaccel-test".into()),
            ("K8S_POD_NAME".into(), pod.name.clone()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), sandbox_id.clone()),
            ("K8S_POD_UID".into(), uid),
        ];
        args.rotate_left(sandbox_id.as_bytes()[0] as usize % 5);
        pod.rt = RuntimeConf {
            container_id: sandbox_id,
            netns: netns.path().display().to_string(),
            ifname: "eth0".into(),
            args,
            capability_args: Map::from_iter([(ANNOTATIONS.to_string(), Value::Object(self.annotations))]),
        };
        pod.netns = Some(netns);
        let (result, timings) = pod.node.chain(pod.chain).add_timed(&pod.rt)?;
        pod.result = Some(result.clone());
        pod.add_timings = timings;
        let addr = result["ips"][0]["address"].as_str().context("ADD result without ips")?;
        pod.ip = addr.split('/').next().unwrap().parse().with_context(|| format!("address {addr}"))?;
        for ip in result["ips"].as_array().into_iter().flatten() {
            let addr = ip["address"].as_str().context("ips entry without address")?;
            if let IpAddr::V6(a) = addr.split('/').next().unwrap().parse().with_context(|| format!("address {addr}"))? {
                pod.ip6 = Some(a);
            }
        }
        if pod.node.dual_stack && pod.ip6.is_none() {
            anyhow::bail!("dual-stack pod without an IPv6 address: {result}");
        }
        Ok(pod)
    }
}

pub struct Pod {
    node: Arc<NodeInner>,
    name: String,
    chain: Chain,
    rt: RuntimeConf,
    add_timings: Timings,
    cgroup: PathBuf,
    netns: Option<NetNs>,
    result: Option<Value>,
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
}

impl Pod {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The pod's IPv6 address (pods of a [`crate::TestNode::dual_stack`] node have one).
    pub fn ip6(&self) -> Ipv6Addr {
        self.ip6.expect("an IPv6 address: the pod of a dual-stack node")
    }

    /// The pod cgroup (kubelet's).
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Where the pod's processes run, as runc puts containers below the pod cgroup.
    pub fn container_cgroup(&self) -> PathBuf {
        self.cgroup.join("container")
    }

    pub fn netns_path(&self) -> PathBuf {
        self.netns.as_ref().expect("netns").path()
    }

    pub fn runtime_conf(&self) -> &RuntimeConf {
        &self.rt
    }

    /// The pod's UID (`K8S_POD_UID`).
    pub fn uid(&self) -> &str {
        self.rt.args.iter().find(|(k, _)| k == "K8S_POD_UID").map(|(_, v)| v.as_str()).expect("K8S_POD_UID")
    }

    /// How long each plugin of the chain took for the pod's ADD.
    pub fn add_timings(&self) -> &Timings {
        &self.add_timings
    }

    /// The cached result of the chain's ADD.
    pub fn result(&self) -> &Value {
        self.result.as_ref().expect("ADD result")
    }

    /// CHECK through the pod's chain, as a runtime does.
    pub fn check(&self) -> Result<()> {
        self.node.chain(self.chain).check(&self.rt, self.result())
    }

    /// `program args…` running inside the pod: in its netns and container cgroup.
    pub fn command(&self, program: &Path, args: &[&str]) -> Result<Command> {
        let cg = self.container_cgroup();
        fs::create_dir_all(&cg)?;
        let mut cmd = Command::new(binaries::testkit());
        cmd.arg("exec").arg("--netns").arg(self.netns_path()).arg("--cgroup").arg(cg).arg("--").arg(program).args(args);
        Ok(cmd)
    }

    /// A `meshaccel-testkit` subcommand running inside the pod.
    pub fn testkit(&self, args: &[&str]) -> Result<Proc> {
        let label = format!("{}: {}", self.name, args.join(" "));
        Proc::spawn(&label, self.command(&binaries::testkit(), args)?)
    }

    /// What a runtime does at StopPodSandbox and RemovePodSandbox.
    fn teardown(&mut self) -> Cleanup {
        let mut c = Cleanup::default();
        let chain = self.node.chain(self.chain).clone();
        c.step("kill processes", || cgroup::kill(&self.cgroup));
        c.step("DEL", || chain.del(&self.rt, self.result.as_ref()));
        c.step("netns", || self.netns.take().map_or(Ok(()), |mut n| n.delete()));
        let gone = RuntimeConf { netns: String::new(), ..self.rt.clone() };
        c.step("DEL without netns", || chain.del(&gone, None));
        c.step("pod cgroup", || cgroup::kill_and_remove(&self.cgroup));
        c
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let c = self.teardown();
        c.finish(&format!("pod {}", self.name));
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).expect("/dev/urandom");
    b
}

fn random_hex(bytes: usize) -> String {
    random_bytes::<64>()[..bytes].iter().map(|b| format!("{b:02x}")).collect()
}

/// A version-4 UUID, like the pod UIDs of the API server.
fn uuid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}
