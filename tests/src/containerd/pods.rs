//! Pods through CRI, in kubelet's order: pod cgroup, RunPodSandbox, CreateContainer +
//! StartContainer; then StopPodSandbox and RemovePodSandbox.
use std::collections::HashMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use meshaccel_node::cri::{api, Cri};

use super::{images, Containerd};
use crate::binaries;
use crate::cgroup::{self, Driver, Qos};
use crate::process::Proc;

/// One pod sandbox with the containers started in it.
#[derive(Clone, Debug)]
pub struct CriPod {
    pub name: String,
    pub uid: String,
    pub sandbox_id: String,
    pub ip: Ipv4Addr,
    /// The pod cgroup (cgroup v2 path) created before RunPodSandbox.
    pub cgroup: PathBuf,
    config: api::PodSandboxConfig,
}

/// A version-4 UUID from the kernel, like the pod UIDs of the API server.
pub fn kernel_uuid() -> Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/uuid")?.trim().to_string())
}

impl Containerd {
    /// Creates the pod cgroup as kubelet does (cgroupfs driver, best-effort QoS) and runs a
    /// sandbox in it; the CNI chain runs inside RunPodSandbox.
    pub fn run_pod(&self, name: &str, annotations: &[(&str, &str)]) -> Result<CriPod> {
        let uid = kernel_uuid()?;
        let rel = cgroup::pod_cgroup(Driver::Cgroupfs, Qos::BestEffort, &uid);
        self.run_pod_in(name, &uid, annotations, &rel)
    }

    /// Like [`Self::run_pod`], with the pod cgroup at `rel` under the node's cgroup root
    /// (something other than kubelet's layout, to test what cannot be found).
    pub fn run_pod_in(&self, name: &str, uid: &str, annotations: &[(&str, &str)], rel: &Path) -> Result<CriPod> {
        let uid = uid.to_string();
        let (cgroup, cgroup_parent) = self.create_pod_cgroup(rel)?;
        let config = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: "e2e".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            linux: Some(api::LinuxPodSandboxConfig { cgroup_parent, ..Default::default() }),
            ..Default::default()
        };
        let sandbox_id = self.run_sandbox(&config)?;
        let cri = self.cri();
        let mut rs = cri.runtime();
        let status = cri
            .block_on(rs.pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.clone(),
                verbose: false,
            }))?
            .into_inner()
            .status
            .context("no sandbox status")?;
        let ip = status.network.map(|n| n.ip).unwrap_or_default();
        let ip = ip.parse().with_context(|| format!("pod {name} has no IPv4 address ({ip:?})"))?;
        Ok(CriPod { name: name.into(), uid, sandbox_id, ip, cgroup, config })
    }

    /// Creates and starts a busybox container running `cmd`; returns its id.
    pub fn start_container(&self, pod: &CriPod, name: &str, cmd: &[&str]) -> Result<String> {
        let config = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(api::ImageSpec { image: images::BUSYBOX.into(), ..Default::default() }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        self.create_and_start(&pod.sandbox_id, &pod.config, config)
    }

    /// The pod cgroup at `rel` under the node's cgroup root, created as kubelet does before
    /// RunPodSandbox: (its cgroup v2 path, the `cgroup_parent` to ask for).
    pub(super) fn create_pod_cgroup(&self, rel: &Path) -> Result<(PathBuf, String)> {
        let cgroup = self.cgroup_root().join(rel);
        fs::create_dir_all(&cgroup).with_context(|| format!("create {}", cgroup.display()))?;
        let parent = PathBuf::from("/").join(self.cgroup_root().file_name().unwrap()).join(rel);
        Ok((cgroup, parent.display().to_string()))
    }

    /// RunPodSandbox; returns the sandbox id.
    pub(super) fn run_sandbox(&self, config: &api::PodSandboxConfig) -> Result<String> {
        let name = config.metadata.as_ref().map_or("", |m| m.name.as_str());
        let mut rs = self.cri().runtime();
        let req = api::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let resp = self.cri().block_on(rs.run_pod_sandbox(req)).with_context(|| format!("RunPodSandbox {name}"))?;
        Ok(resp.into_inner().pod_sandbox_id)
    }

    /// CreateContainer + StartContainer in a sandbox; returns the container id.
    pub(super) fn create_and_start(
        &self,
        sandbox_id: &str,
        sandbox_config: &api::PodSandboxConfig,
        config: api::ContainerConfig,
    ) -> Result<String> {
        let cri = self.cri();
        let mut rs = cri.runtime();
        let name = format!("{}/{}", sandbox_id, config.metadata.as_ref().map_or("", |m| m.name.as_str()));
        let req = api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        };
        let id = cri
            .block_on(rs.create_container(req))
            .with_context(|| format!("CreateContainer {name}"))?
            .into_inner()
            .container_id;
        cri.block_on(rs.start_container(api::StartContainerRequest { container_id: id.clone() }))
            .with_context(|| format!("StartContainer {name}"))?;
        Ok(id)
    }

    /// `ExecSync` in a container; fails unless the command exits 0. Returns stdout.
    pub fn exec(&self, container: &str, cmd: &[&str], timeout: Duration) -> Result<String> {
        exec(self.cri(), container, cmd, timeout)
    }

    pub fn stop_pod(&self, pod: &CriPod) -> Result<()> {
        let mut rs = self.cri().runtime();
        let req = api::StopPodSandboxRequest { pod_sandbox_id: pod.sandbox_id.clone() };
        self.cri().block_on(rs.stop_pod_sandbox(req)).with_context(|| format!("StopPodSandbox {}", pod.name))?;
        Ok(())
    }

    pub fn remove_pod(&self, pod: &CriPod) -> Result<()> {
        let mut rs = self.cri().runtime();
        let req = api::RemovePodSandboxRequest { pod_sandbox_id: pod.sandbox_id.clone() };
        self.cri().block_on(rs.remove_pod_sandbox(req)).with_context(|| format!("RemovePodSandbox {}", pod.name))?;
        Ok(())
    }
}

/// Exec through any client, so a test can run a long command on its own connection (and
/// thread) while the main one carries on.
pub fn exec(cri: &Cri, container: &str, cmd: &[&str], timeout: Duration) -> Result<String> {
    let mut rs = cri.runtime();
    let req = api::ExecSyncRequest {
        container_id: container.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: timeout.as_secs() as i64,
    };
    let resp = cri.block_on(rs.exec_sync(req)).with_context(|| format!("ExecSync {cmd:?}"))?.into_inner();
    let stdout = String::from_utf8_lossy(&resp.stdout).into_owned();
    if resp.exit_code != 0 {
        bail!("{cmd:?} exited {}: {stdout}{}", resp.exit_code, String::from_utf8_lossy(&resp.stderr));
    }
    Ok(stdout)
}

pub(super) fn stop_and_remove(cri: &Cri, sandbox_id: &str) -> Result<()> {
    let mut rs = cri.runtime();
    cri.block_on(rs.stop_pod_sandbox(api::StopPodSandboxRequest { pod_sandbox_id: sandbox_id.into() }))?;
    cri.block_on(rs.remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: sandbox_id.into() }))?;
    Ok(())
}

impl CriPod {
    /// The sandbox's network namespace, through its first process (the pause).
    pub fn netns_path(&self) -> Result<PathBuf> {
        let pid = first_pid(&self.cgroup)?.with_context(|| format!("pod {} has no process", self.name))?;
        Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    /// A `meshaccel-testkit` subcommand running inside the pod, as a container process would:
    /// in its netns and in a cgroup of its own under the pod cgroup.
    pub fn testkit(&self, args: &[&str]) -> Result<Proc> {
        let cg = self.cgroup.join("testkit");
        fs::create_dir_all(&cg)?;
        let mut cmd = Command::new(binaries::testkit());
        cmd.arg("exec").arg("--netns").arg(self.netns_path()?).arg("--cgroup").arg(cg).arg("--");
        cmd.arg(binaries::testkit()).args(args);
        Proc::spawn(&format!("{}: {}", self.name, args.join(" ")), cmd)
    }
}

/// A process somewhere in the cgroup subtree `dir`.
fn first_pid(dir: &Path) -> Result<Option<u32>> {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    if let Some(pid) = procs.lines().next() {
        return Ok(Some(pid.parse()?));
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            if let Some(pid) = first_pid(&entry.path())? {
                return Ok(Some(pid));
            }
        }
    }
    Ok(None)
}
