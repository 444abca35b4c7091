//! A private containerd 1.6 with its CRI plugin, driven the way kubelet drives it.
//!
//! Everything is the test's own: root, state and socket under a temp dir, its own network
//! namespace (where the CNI bridge lands and where containerd works on these machines), a
//! CNI conf and bin dir, a cgroup subtree for the pods, and images built locally (no
//! registry is reachable). Drop removes the pods through CRI, stops containerd and its
//! shims, and removes mounts, cgroups, the netns and the directory.
pub mod daemonset;
pub mod images;
pub mod installer;
pub mod network;
pub mod pods;
pub mod traffic;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshaccel_node::bpf;
use meshaccel_node::cri::{api, Cri};
use meshaccel_node::pins::Pins;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::names::unique_tag;
use crate::netns::NetNs;
use crate::{cgroup, Cleanup};

pub use pods::CriPod;

/// The CNI plugins the chain needs besides meshaccel.
const CNI_PLUGINS: [&str; 3] = ["bridge", "host-local", "loopback"];

pub struct Containerd {
    pub tag: String,
    dir: PathBuf,
    netns: NetNs,
    child: Option<Child>,
    cri: Option<Cri>,
    /// `<cgroup v2 mount>/<name>`: where this node's `kubepods` hierarchy starts (the
    /// plugin's `cgroupRoot`); the same relative path exists in every v1 hierarchy runc uses.
    cgroup_root: PathBuf,
    cgroup_name: String,
    /// meshaccel's bpffs root for this node.
    pins: Pins,
}

impl Containerd {
    /// Starts containerd with an empty CNI conf dir and a bin dir holding the standard
    /// plugins (the installer adds `meshaccel`), and imports the test images.
    pub fn start() -> Result<Self> {
        let tag = unique_tag();
        let name = format!("meshaccel-e2e-{tag}");
        let dir = std::env::temp_dir().join(&name);
        let _ = fs::remove_dir_all(&dir);
        let cgroup_root = cgroup::v2_mount().join(&name);
        let mut c = Self {
            netns: NetNs::create(&name)?,
            tag,
            child: None,
            cri: None,
            cgroup_root,
            pins: Pins::new(Path::new("/sys/fs/bpf").join(&name)),
            cgroup_name: name,
            dir,
        };
        for d in [c.conf_dir(), c.bin_dir(), c.dir.join("root"), c.dir.join("state"), c.dir.join("run")] {
            fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        }
        fs::create_dir_all(&c.cgroup_root).with_context(|| format!("create {}", c.cgroup_root.display()))?;
        for p in CNI_PLUGINS {
            std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(p), c.bin_dir().join(p))?;
        }
        fs::write(c.dir.join("config.toml"), c.config_toml())?;
        c.spawn()?;
        images::build_and_import(&c)?;
        Ok(c)
    }

    fn config_toml(&self) -> String {
        let d = self.dir.display();
        format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # runc fails to raise oom_score_adj without CAP_SYS_RESOURCE, which these machines lack.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
"#,
            sock = self.socket().display(),
            pause = images::PAUSE,
            bin = self.bin_dir().display(),
            conf = self.conf_dir().display(),
        )
    }

    /// Starts containerd inside the node netns and connects the CRI client.
    fn spawn(&mut self) -> Result<()> {
        let log = fs::File::create(self.dir.join("containerd.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.path().display()))
            .args(["containerd", "--config"])
            .arg(self.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn containerd (apt-get install containerd runc; see tests/setup)")?;
        self.child = Some(child);
        let socket = self.socket();
        let cri = poll(Duration::from_secs(20), || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!("containerd exited ({status}): {}", self.log_tail());
            }
            Ok(socket.exists().then(|| Cri::connect(&socket).ok()).flatten())
        })
        .with_context(|| format!("containerd's CRI did not answer: {}", self.log_tail()))?;
        self.cri = Some(cri);
        Ok(())
    }

    pub fn cri(&self) -> &Cri {
        self.cri.as_ref().expect("containerd is running")
    }

    pub fn socket(&self) -> PathBuf {
        // In a directory of its own: the DaemonSet mounts the socket's directory.
        self.dir.join("run/containerd.sock")
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// A scratch directory removed with the node.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    pub fn pins(&self) -> &Pins {
        &self.pins
    }

    /// meshaccel's per-attachment records.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("meshaccel-state")
    }

    pub fn plugin_log(&self) -> PathBuf {
        self.dir.join("meshaccel.log")
    }

    /// The end of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until the CRI plugin has loaded a CNI config whose text contains `needle`
    /// (it re-reads the conf dir on change): pods started after this use that chain.
    pub fn wait_for_cni_config(&self, needle: &str) -> Result<()> {
        let mut last = String::new();
        poll(Duration::from_secs(20), || {
            let mut rs = self.cri().runtime();
            let resp = self.cri().block_on(rs.status(api::StatusRequest { verbose: true }))?.into_inner();
            last = resp.info.get("cniconfig").cloned().unwrap_or_default();
            Ok(last.contains(needle).then_some(()))
        })
        .with_context(|| format!("containerd did not load a CNI config containing {needle:?}; it has: {last}"))
    }

    /// Removes every pod sandbox (stop, then remove, as kubelet does).
    pub fn remove_all_pods(&self) -> Result<()> {
        let mut rs = self.cri().runtime();
        let list = self.cri().block_on(rs.list_pod_sandbox(api::ListPodSandboxRequest { filter: None }))?;
        for sb in list.into_inner().items {
            pods::stop_and_remove(self.cri(), &sb.id)?;
        }
        Ok(())
    }

    fn stop_daemon(&mut self) -> Result<()> {
        self.cri = None;
        if let Some(child) = self.child.take() {
            // SIGTERM lets containerd close its sockets; shims keep running by design.
            terminate(child, Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Shims of this containerd (they outlive it): found by the socket in their command line.
    fn kill_shims(&self) -> Result<()> {
        let needle = self.socket().display().to_string();
        for entry in fs::read_dir("/proc")? {
            let Ok(entry) = entry else { continue };
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.starts_with("/usr/bin/containerd-shim") && cmdline.contains(&needle) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
        }
        Ok(())
    }

    /// Unmounts everything under the temp dir (rootfs overlays, sandbox shm), deepest first.
    fn unmount_all(&self) -> Result<()> {
        let prefix = self.dir.display().to_string();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let mut points: Vec<&str> =
            mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&prefix)).collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH).with_context(|| format!("umount {p}"))?;
        }
        Ok(())
    }

    /// The pods' cgroup subtree, in the v2 hierarchy and in each v1 hierarchy (runc on a
    /// hybrid host creates the same path in every controller).
    fn remove_cgroups(&self) -> Result<()> {
        cgroup::kill_and_remove(&self.cgroup_root)?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let fstype = fields.iter().skip_while(|f| **f != "-").nth(1);
            if fstype == Some(&"cgroup") {
                let dir = Path::new(fields[4]).join(&self.cgroup_name);
                if dir.exists() {
                    cgroup::remove_tree(&dir)?;
                }
            }
        }
        Ok(())
    }
}

/// Calls `check` every 50 ms until it yields a value; an error from it ends the wait.
pub(crate) fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("still waiting after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then SIGKILL if the process has not exited within `grace`. Returns how it exited.
pub(crate) fn terminate(mut child: Child, grace: Duration) -> Result<ExitStatus> {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
    match poll(grace, || Ok(child.try_wait()?)) {
        Ok(status) => Ok(status),
        Err(e) => {
            child.kill()?;
            child.wait()?;
            Err(e.context("ignored SIGTERM"))
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let mut c = Cleanup::default();
        if self.cri.is_some() {
            c.step("remove pods", || self.remove_all_pods());
        }
        if std::thread::panicking() {
            eprintln!("containerd log ({}):\n{}", self.dir.display(), self.log_tail());
            let plugin = fs::read_to_string(self.plugin_log()).unwrap_or_default();
            eprintln!("meshaccel log:\n{plugin}");
        }
        c.step("stop containerd", || self.stop_daemon());
        c.step("kill shims", || self.kill_shims());
        c.step("cgroups", || self.remove_cgroups());
        c.step("unmount", || self.unmount_all());
        c.step("bpffs", || bpf::unload_all(&self.pins));
        c.step("netns", || self.netns.delete());
        c.step("temp dir", || Ok(fs::remove_dir_all(&self.dir)?));
        c.finish(&format!("containerd {}", self.tag));
    }
}
