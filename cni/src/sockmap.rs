//! Per-pod sockmap acceleration: the pinned sock_ops program attached to the pod cgroup
//! through a pinned bpf_link, and the pod's flags in cgroup storage.
use std::path::Path;

use anyhow::{ensure, Context, Result};
use meshaccel_common::PodConfig;
use meshaccel_installer::bpf;
use meshaccel_installer::pins::{AttachmentId, Pins};

/// Attaches and enables with `cfg` (flags and filter rules); returns the cgroup id.
pub fn attach(pins: &Pins, id: &AttachmentId, cgroup: &Path, cfg: PodConfig) -> Result<u64> {
    bpf::attach_pod(pins, id, cgroup, cfg)
        .with_context(|| format!("attach sock_ops to {}", cgroup.display()))
}

/// Unpins the link (the kernel detaches it with the last reference). Sockets already in
/// the sockhash stay accelerated until they close: removing them under live traffic
/// could reorder bytes in flight.
pub fn detach(pins: &Pins, id: &AttachmentId) -> Result<bool> {
    bpf::detach_pod(pins, id).context("unpin sock_ops link")
}

/// The pinned link exists, runs the pinned program, points at `cgroup` (same inode as
/// when attached, so a recreated cgroup is caught) and the pod's settings are `want`.
pub fn verify(pins: &Pins, id: &AttachmentId, cgroup: &Path, cgroup_id: u64, want: &PodConfig) -> Result<()> {
    let link = bpf::pod_link(pins, id)?.context("sock_ops link is not pinned")?;
    let live_id = bpf::cgroup_id(cgroup)?;
    ensure!(live_id == cgroup_id, "{} was recreated (id {live_id}, attached to {cgroup_id})", cgroup.display());
    ensure!(link.cgroup_id == cgroup_id, "link is attached to cgroup {}, not {cgroup_id}", link.cgroup_id);
    let prog = bpf::sockops_prog_id(pins)?;
    ensure!(link.prog_id == prog, "link runs program {}, the pinned sock_ops is {prog}", link.prog_id);
    let cfg = bpf::read_pod_config(pins, cgroup_id)?;
    ensure!(&cfg == want, "pod settings in cgroup storage differ from the network's: {cfg:?}");
    Ok(())
}
