//! What the node must offer before anything is installed: cgroup v2 (the sock_ops program
//! attaches to pod cgroups) and a bpf filesystem for the pins (mounted if allowed).
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use meshaccel_node::{bpf, cgroup};
use nix::mount::{mount, MsFlags};

use crate::config::Config;

/// The cgroup v2 root the plugin will use.
pub fn cgroup_v2(cfg: &Config) -> Result<PathBuf> {
    match cfg.plugin.cgroup_root.clone() {
        Some(root) if cgroup::is_cgroup2(&root) => Ok(root),
        Some(root) => bail!("pluginConf.cgroupRoot {} is not a cgroup v2 mount; meshaccel needs cgroup v2", root.display()),
        None => cgroup::default_root().context(
            "no cgroup v2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup: meshaccel attaches to pod cgroups and needs cgroup v2 (unified or hybrid hierarchy)",
        ),
    }
}

/// Makes sure the pin root is on a bpf filesystem, mounting one on its parent directory
/// when it is not and `mountBpffs` allows. Returns the mount point if it mounted one.
pub fn bpffs(cfg: &Config) -> Result<Option<PathBuf>> {
    let root = cfg.pins.root();
    let existing = root.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if bpf::is_bpffs(existing) {
        return Ok(None);
    }
    let at = root.parent().context("bpffsRoot has no parent directory")?;
    if !cfg.mount_bpffs {
        bail!(
            "{} is not on a bpf filesystem and mountBpffs is false: mount one (mount -t bpf bpf {}) or allow the installer to",
            root.display(),
            at.display()
        );
    }
    fs::create_dir_all(at).with_context(|| format!("create {}", at.display()))?;
    mount(Some("bpf"), at, Some("bpf"), MsFlags::empty(), None::<&str>)
        .with_context(|| format!("mount -t bpf bpf {} (needs CAP_SYS_ADMIN)", at.display()))?;
    Ok(Some(at.to_path_buf()))
}
