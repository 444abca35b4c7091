//! The DaemonSet's pod run over CRI the way kubelet runs it, read from manifests/ (nothing
//! of the spec is re-typed here): a sandbox in the pod's namespaces, each container with
//! the manifest's image, command, args, env (downward API resolved), security context,
//! memory limit and volumes (a hostPath becomes whatever directory the test stands in for
//! it; a configMap becomes files, as kubelet writes them), probes as kubelet probes, and
//! the grace period on stop.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use meshaccel_node::cri::api;
use nix::mount::{mount, MsFlags};
use serde_json::Value;

use super::pods::kernel_uuid;
use super::Containerd;
use crate::cgroup::{self, Driver, Qos};
use crate::manifests::Manifests;

/// One pod of the DaemonSet on the test node.
pub struct DaemonSetPod {
    pub name: String,
    pub uid: String,
    pub sandbox_id: String,
    /// Container name → id.
    pub containers: BTreeMap<String, String>,
    /// The pod template's spec.
    spec: Value,
    log_dir: PathBuf,
}

impl Containerd {
    /// Runs the DaemonSet's pod with the containers named `containers` (in the manifest's
    /// order). `host_path` maps each hostPath volume's path to the node directory standing
    /// for it; a path it does not know must fail, so no new mount reaches the real host.
    pub fn run_daemonset_pod(
        &self,
        manifests: &Manifests,
        containers: &[&str],
        host_path: impl Fn(&str) -> Result<PathBuf>,
    ) -> Result<DaemonSetPod> {
        let ds = manifests.one("DaemonSet", None)?;
        let template = &ds["spec"]["template"];
        let spec = &template["spec"];
        let uid = kernel_uuid()?;
        let name = format!("{}-{}", str(&ds["metadata"]["name"])?, self.tag);
        let namespace = str(&ds["metadata"]["namespace"])?;
        let selected: Vec<&Value> = array(&spec["containers"])
            .filter(|c| c["name"].as_str().is_some_and(|n| containers.contains(&n)))
            .collect();
        ensure!(selected.len() == containers.len(), "the DaemonSet has not all of {containers:?}");

        // Requests below limits: Burstable.
        let (_, cgroup_parent) = self.create_pod_cgroup(&cgroup::pod_cgroup(Driver::Cgroupfs, Qos::Burstable, &uid))?;
        let namespaces = api::NamespaceOption {
            network: if spec["hostNetwork"] == true { api::NamespaceMode::Node } else { api::NamespaceMode::Pod }
                as i32,
            pid: api::NamespaceMode::Container as i32,
            ipc: api::NamespaceMode::Pod as i32,
            ..Default::default()
        };
        let privileged = |c: &Value| c["securityContext"]["privileged"] == true;
        let log_dir = self.dir().join("pods").join(&uid);
        fs::create_dir_all(&log_dir)?;
        let sandbox = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            log_directory: log_dir.display().to_string(),
            labels: string_map(&template["metadata"]["labels"]),
            annotations: string_map(&template["metadata"]["annotations"]),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent,
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces.clone()),
                    privileged: selected.iter().any(|c| privileged(c)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sandbox_id = self.run_sandbox(&sandbox)?;
        let mut pod = DaemonSetPod { name, uid, sandbox_id, containers: BTreeMap::new(), spec: spec.clone(), log_dir };
        for c in selected {
            let cname = str(&c["name"])?.to_string();
            let config = api::ContainerConfig {
                metadata: Some(api::ContainerMetadata { name: cname.clone(), attempt: 0 }),
                image: Some(api::ImageSpec { image: manifests.image(c)?, ..Default::default() }),
                command: strings(&c["command"])?,
                args: strings(&c["args"])?,
                envs: pod.env(c)?,
                mounts: self.mounts(manifests, &pod, c, &host_path)?,
                log_path: format!("{cname}.log"),
                linux: Some(api::LinuxContainerConfig {
                    resources: Some(api::LinuxContainerResources {
                        memory_limit_in_bytes: quantity(&c["resources"]["limits"]["memory"])?,
                        ..Default::default()
                    }),
                    security_context: Some(api::LinuxContainerSecurityContext {
                        namespace_options: Some(namespaces.clone()),
                        privileged: privileged(c),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            };
            let id = self.create_and_start(&pod.sandbox_id, &sandbox, config)?;
            pod.containers.insert(cname, id);
        }
        Ok(pod)
    }

    /// CRI mounts for a container's volumeMounts.
    fn mounts(
        &self,
        manifests: &Manifests,
        pod: &DaemonSetPod,
        c: &Value,
        host_path: &impl Fn(&str) -> Result<PathBuf>,
    ) -> Result<Vec<api::Mount>> {
        let mut out = Vec::new();
        for m in array(&c["volumeMounts"]) {
            let vol = array(&pod.spec["volumes"])
                .find(|v| v["name"] == m["name"])
                .with_context(|| format!("no volume {}", m["name"]))?;
            let source = if let Some(path) = vol["hostPath"]["path"].as_str() {
                let dir = host_path(path)?;
                if vol["hostPath"]["type"] == "DirectoryOrCreate" {
                    fs::create_dir_all(&dir)?;
                }
                dir
            } else if let Some(name) = vol["configMap"]["name"].as_str() {
                self.config_map_volume(manifests, pod, name)?
            } else {
                bail!("volume {} is neither a hostPath nor a configMap", vol["name"]);
            };
            let propagation = match m["mountPropagation"].as_str() {
                None | Some("None") => api::MountPropagation::PropagationPrivate,
                Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => api::MountPropagation::PropagationBidirectional,
                Some(other) => bail!("mountPropagation {other}"),
            };
            out.push(api::Mount {
                container_path: str(&m["mountPath"])?.into(),
                host_path: source.display().to_string(),
                readonly: m["readOnly"] == true,
                propagation: propagation as i32,
                ..Default::default()
            });
        }
        Ok(out)
    }

    /// A ConfigMap of `manifests` written as kubelet writes a configMap volume: one file
    /// per data key.
    fn config_map_volume(&self, manifests: &Manifests, pod: &DaemonSetPod, name: &str) -> Result<PathBuf> {
        let cm = manifests.one("ConfigMap", Some(name))?;
        let dir = self.dir().join("volumes").join(&pod.uid).join(name);
        fs::create_dir_all(&dir)?;
        for (key, value) in cm["data"].as_object().into_iter().flatten() {
            fs::write(dir.join(key), str(value)?)?;
        }
        Ok(dir)
    }

    /// A bpf filesystem of the node's own, as a shared mount (systemd makes every mount
    /// shared; containerd refuses a Bidirectional mount of anything else).
    pub fn shared_bpffs(&self) -> Result<PathBuf> {
        let dir = self.dir().join("bpffs");
        fs::create_dir_all(&dir)?;
        mount(Some("bpf"), &dir, Some("bpf"), MsFlags::empty(), None::<&str>).context("mount bpffs")?;
        make_shared(&dir)?;
        Ok(dir)
    }

    /// `host` bind-mounted (recursively) into the node's directory as a shared mount, for a
    /// HostToContainer mount, without changing the propagation of the host's own mount.
    pub fn shared_bind(&self, host: &Path) -> Result<PathBuf> {
        let dir = self.dir().join("binds").join(host.strip_prefix("/").unwrap_or(host));
        fs::create_dir_all(&dir)?;
        let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount(Some(host), &dir, None::<&str>, flags, None::<&str>)
            .with_context(|| format!("bind {}", host.display()))?;
        make_shared(&dir)?;
        Ok(dir)
    }

    /// Stops the pod as kubelet does: each container with the pod's grace period
    /// (`terminationGracePeriodSeconds`: SIGTERM, SIGKILL after it), then the sandbox.
    /// Returns each container's exit code.
    pub fn stop_daemonset_pod(&self, pod: &DaemonSetPod) -> Result<BTreeMap<String, i32>> {
        let grace = pod.spec["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
        let cri = self.cri();
        let mut rs = cri.runtime();
        let mut codes = BTreeMap::new();
        for (name, id) in &pod.containers {
            let req = api::StopContainerRequest { container_id: id.clone(), timeout: grace };
            cri.block_on(rs.stop_container(req)).with_context(|| format!("StopContainer {name}"))?;
            let req = api::ContainerStatusRequest { container_id: id.clone(), verbose: false };
            let status = cri.block_on(rs.container_status(req))?.into_inner().status.context("no status")?;
            codes.insert(name.clone(), status.exit_code);
        }
        let req = api::StopPodSandboxRequest { pod_sandbox_id: pod.sandbox_id.clone() };
        cri.block_on(rs.stop_pod_sandbox(req)).with_context(|| format!("StopPodSandbox {}", pod.name))?;
        Ok(codes)
    }
}

impl DaemonSetPod {
    /// The container's env, `fieldRef`s resolved as kubelet resolves them for this pod.
    fn env(&self, c: &Value) -> Result<Vec<api::KeyValue>> {
        array(&c["env"])
            .map(|e| {
                let value = match (&e["value"], e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
                    (Value::String(v), _) => v.clone(),
                    (_, Some("metadata.uid")) => self.uid.clone(),
                    (_, Some("metadata.name")) => self.name.clone(),
                    (_, other) => bail!("env {}: cannot resolve {other:?}", e["name"]),
                };
                Ok(api::KeyValue { key: str(&e["name"])?.into(), value })
            })
            .collect()
    }

    fn container(&self, name: &str) -> Result<&Value> {
        array(&self.spec["containers"]).find(|c| c["name"] == name).with_context(|| format!("no container {name}"))
    }

    /// What the container wrote to stdout and stderr (its CRI log).
    pub fn logs(&self, container: &str) -> String {
        fs::read_to_string(self.log_dir.join(format!("{container}.log"))).unwrap_or_default()
    }

    /// An HTTP GET of one of the container's httpGet probes (`readinessProbe`, …) from the
    /// node's network namespace, as kubelet sends it to a host-network pod: (code, body).
    pub fn probe_once(&self, node: &Containerd, container: &str, probe: &str) -> Result<(u16, String)> {
        let c = self.container(container)?;
        let p = &c[probe];
        let get = &p["httpGet"];
        let port = match &get["port"] {
            Value::Number(n) => n.to_string(),
            Value::String(named) => array(&c["ports"])
                .find(|port| port["name"] == *named)
                .map(|port| port["containerPort"].to_string())
                .with_context(|| format!("no port named {named}"))?,
            other => bail!("{probe} port {other}"),
        };
        let url = format!("http://127.0.0.1:{port}{}", str(&get["path"])?);
        let timeout = p["timeoutSeconds"].as_u64().unwrap_or(1).to_string();
        let out = Command::new("nsenter")
            .arg(format!("--net={}", node.netns().path().display()))
            .args(["curl", "-s", "--max-time", &timeout, "-w", "\n%{http_code}", &url])
            .output()
            .context("run curl (tests/setup)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((code.trim().parse().unwrap_or(0), body.to_string()))
    }

    /// Probes as kubelet does, every `periodSeconds` (after `initialDelaySeconds`), until
    /// `successThreshold` successes in a row (2xx, 3xx); returns how long that took.
    pub fn wait_probe(&self, node: &Containerd, container: &str, probe: &str, within: Duration) -> Result<Duration> {
        let p = &self.container(container)?[probe];
        let period = Duration::from_secs(p["periodSeconds"].as_u64().unwrap_or(10));
        let needed = p["successThreshold"].as_u64().unwrap_or(1);
        let start = Instant::now();
        thread::sleep(Duration::from_secs(p["initialDelaySeconds"].as_u64().unwrap_or(0)));
        let (mut successes, mut last) = (0, (0, String::new()));
        while start.elapsed() < within {
            last = self.probe_once(node, container, probe)?;
            successes = if (200..400).contains(&last.0) { successes + 1 } else { 0 };
            if successes == needed {
                return Ok(start.elapsed());
            }
            thread::sleep(period);
        }
        bail!("{container} {probe} failing after {within:?}: {last:?}\n{}", self.logs(container))
    }
}

fn make_shared(dir: &Path) -> Result<()> {
    mount(None::<&str>, dir, None::<&str>, MsFlags::MS_SHARED, None::<&str>)
        .with_context(|| format!("make {} shared", dir.display()))
}

fn array(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn str(v: &Value) -> Result<&str> {
    v.as_str().with_context(|| format!("{v} is not a string"))
}

fn strings(v: &Value) -> Result<Vec<String>> {
    array(v).map(|s| Ok(str(s)?.to_string())).collect()
}

fn string_map(v: &Value) -> std::collections::HashMap<String, String> {
    v.as_object().into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()
}

/// A Kubernetes memory quantity in bytes (`256Mi`, `1Gi`, `64M`, plain bytes); 0 if unset.
fn quantity(v: &Value) -> Result<i64> {
    let Some(q) = v.as_str() else { return Ok(v.as_i64().unwrap_or(0)) };
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let scale: i64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => bail!("memory quantity {q}"),
    };
    Ok(n.parse::<i64>().with_context(|| format!("memory quantity {q}"))? * scale)
}
