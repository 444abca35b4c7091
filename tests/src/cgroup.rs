//! cgroup v2 directories laid out as kubelet lays out pod cgroups.
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The cgroup v2 mount: `/sys/fs/cgroup/unified` on hybrid hosts, else `/sys/fs/cgroup`.
pub fn v2_mount() -> PathBuf {
    let hybrid = Path::new("/sys/fs/cgroup/unified");
    if hybrid.join("cgroup.procs").exists() { hybrid } else { Path::new("/sys/fs/cgroup") }.to_path_buf()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// kubelet's `--cgroup-driver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

/// Where kubelet puts a pod's cgroup, relative to the cgroup root.
pub fn pod_cgroup(driver: Driver, qos: Qos, uid: &str) -> PathBuf {
    match (driver, qos) {
        (Driver::Cgroupfs, Qos::Guaranteed) => format!("kubepods/pod{uid}"),
        (Driver::Cgroupfs, Qos::Burstable) => format!("kubepods/burstable/pod{uid}"),
        (Driver::Cgroupfs, Qos::BestEffort) => format!("kubepods/besteffort/pod{uid}"),
        (Driver::Systemd, Qos::Guaranteed) => {
            format!("kubepods.slice/kubepods-pod{}.slice", uid.replace('-', "_"))
        }
        (Driver::Systemd, qos) => {
            let q = if qos == Qos::Burstable { "burstable" } else { "besteffort" };
            format!("kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{}.slice", uid.replace('-', "_"))
        }
    }
    .into()
}

/// Kills every process in the subtree and removes its directories, deepest first. An absent
/// directory is fine.
pub fn kill_and_remove(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    kill(dir)?;
    remove_tree(dir)
}

/// Kills every process in the subtree (`cgroup.kill`) and waits until it is empty.
pub fn kill(dir: &Path) -> Result<()> {
    fs::write(dir.join("cgroup.kill"), "1").with_context(|| format!("kill {}", dir.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(dir.join("cgroup.events"))?.contains("populated 1") {
        if Instant::now() > deadline {
            bail!("{} still has processes 10 s after cgroup.kill", dir.display());
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Removes a cgroup directory tree (no processes left), deepest first.
pub fn remove_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir).with_context(|| format!("rmdir {}", dir.display()))
}
