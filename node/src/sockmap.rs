//! The same-node feature: the pinned sock_ops program attached to the pod's cgroup through
//! a pinned bpf_link, the pod's settings (flags, filter rules) in cgroup storage, and the
//! record of it (`<stateDir>/<attachment>.json`). Used by ADD and by the installer's
//! adoption of running pods, so both attach and record a pod the same way.
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use slog::{info, Logger};

use crate::bpf;
use crate::cgroup;
use crate::conf::PluginConf;
use crate::fault;
use crate::feature::{Feature, Pod, SetupError};
use crate::pins::AttachmentId;
use crate::records::{Record, Store};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SockmapRecord {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub pod_uid: String,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    pub sockmap: bool,
}

impl Record for SockmapRecord {
    const SCHEMA: u32 = 1;
}

/// The sockmap records, in the state directory itself (where they were before features
/// had their own directories, so existing nodes keep theirs).
pub fn records(state_dir: &Path) -> Store<SockmapRecord> {
    Store::new(state_dir)
}

pub struct Sockmap;

impl Feature for Sockmap {
    fn name(&self) -> &'static str {
        "sockmap"
    }

    fn wanted(&self, pod: &Pod) -> bool {
        pod.settings.sockmap
    }

    fn set_up(&self, pod: &Pod, log: &Logger) -> Result<(), SetupError> {
        let record = attach_recorded(pod, log)?;
        info!(log, "pod accelerated"; "cgroup" => %record.cgroup.display(), "cgroupID" => record.cgroup_id);
        Ok(())
    }

    fn tear_down(&self, conf: &PluginConf, id: &AttachmentId) -> Result<bool> {
        detach(conf, id)
    }

    fn recorded(&self, conf: &PluginConf, id: &AttachmentId) -> Result<bool> {
        Ok(records(&conf.state_dir).load(id)?.is_some())
    }

    fn verify(&self, pod: &Pod) -> Result<()> {
        ensure!(self.verify_recorded(pod)?, "no sockmap record");
        Ok(())
    }

    fn verify_recorded(&self, pod: &Pod) -> Result<bool> {
        let conf = pod.conf;
        let Some(st) = records(&conf.state_dir).load(pod.attachment)? else { return Ok(false) };
        let expected_cgroup = cgroup_root(conf).ok().and_then(|root| cgroup::find_pod(&root, &st.pod_uid));
        ensure!(
            expected_cgroup.as_ref() == Some(&st.cgroup),
            "pod cgroup is now {expected_cgroup:?}, attachment is on {}",
            st.cgroup.display()
        );
        let pins = conf.pins();
        let link = bpf::pod_link(&pins, pod.attachment)?.context("sock_ops link is not pinned")?;
        let live_id = bpf::cgroup_id(&st.cgroup)?;
        ensure!(
            live_id == st.cgroup_id,
            "{} was recreated (id {live_id}, attached to {})",
            st.cgroup.display(),
            st.cgroup_id
        );
        ensure!(link.cgroup_id == st.cgroup_id, "link is attached to cgroup {}, not {}", link.cgroup_id, st.cgroup_id);
        let prog = bpf::sockops_prog_id(&pins)?;
        ensure!(link.prog_id == prog, "link runs program {}, the pinned sock_ops is {prog}", link.prog_id);
        let want = conf.sockmap.pod_config().map_err(anyhow::Error::msg)?;
        let live = bpf::read_pod_config(&pins, st.cgroup_id)?;
        ensure!(live == want, "pod settings in cgroup storage differ from the network's: {live:?}");
        Ok(true)
    }

    fn verify_absent(&self, pod: &Pod) -> Result<()> {
        ensure!(
            bpf::pod_link(&pod.conf.pins(), pod.attachment)?.is_none(),
            "pod is opted out but a sock_ops link is pinned"
        );
        Ok(())
    }

    /// This network's records, and the pinned links no record claims (whatever the
    /// network: only a killed ADD or adoption leaves those, and nothing uses them).
    fn attachments(&self, conf: &PluginConf, network: &str) -> Result<Vec<AttachmentId>> {
        let all = records(&conf.state_dir).list().with_context(|| format!("read {}", conf.state_dir.display()))?;
        let mut ids: Vec<AttachmentId> =
            all.into_iter().filter(|(_, r)| r.network == network).map(|(id, _)| id).collect();
        ids.extend(orphans(conf, ORPHAN_GRACE)?);
        Ok(ids)
    }

    fn ready(&self, conf: &PluginConf) -> Result<()> {
        if conf.sockmap.enabled {
            bpf::ensure_loaded(&conf.pins()).context("BPF programs not loadable")?;
        }
        Ok(())
    }
}

fn cgroup_root(conf: &PluginConf) -> Result<PathBuf> {
    match &conf.cgroup_root {
        Some(r) => Ok(r.clone()),
        None => cgroup::default_root().context("no cgroup v2 mount found"),
    }
}

/// Finds the pod's cgroup, loads the programs if nobody has, attaches and records. On
/// error, everything this call created is removed again.
pub fn attach_recorded(pod: &Pod, log: &Logger) -> Result<SockmapRecord> {
    let conf = pod.conf;
    let uid = pod.identity.uid.as_deref().context("CNI_ARGS has no K8S_POD_UID: cannot find the pod's cgroup")?;
    let root = cgroup_root(conf)?;
    let cgroup =
        cgroup::find_pod(&root, uid).with_context(|| format!("no cgroup for pod {uid} under {}", root.display()))?;
    let pins = conf.pins();
    if bpf::ensure_loaded(&pins)? {
        info!(log, "loaded and pinned the BPF programs"; "root" => %pins.root().display());
    }
    // Validated when the conf was parsed, so this cannot fail here.
    let pod_config = conf.sockmap.pod_config().map_err(anyhow::Error::msg)?;
    let result = bpf::attach_pod(&pins, pod.attachment, &cgroup, pod_config)
        .with_context(|| format!("attach sock_ops to {}", cgroup.display()))
        .and_then(|cgroup_id| {
            fault::point(fault::ADD_ATTACHED);
            let record = SockmapRecord {
                network: pod.network.to_string(),
                container_id: pod.container_id.to_string(),
                ifname: pod.ifname.to_string(),
                pod_uid: uid.to_string(),
                pod_namespace: pod.identity.namespace.clone(),
                pod_name: pod.identity.name.clone(),
                cgroup: cgroup.clone(),
                cgroup_id,
                sockmap: true,
            };
            records(&conf.state_dir).save(pod.attachment, &record).context("save attachment state")?;
            fault::point(fault::ADD_RECORDED);
            Ok(record)
        });
    if result.is_err() {
        if let Err(e) = detach(conf, pod.attachment) {
            slog::warn!(log, "rollback incomplete"; "error" => format!("{e:#}"));
        }
    }
    result
}

/// Unpins the link (the kernel detaches it with the last reference) and removes the
/// record. Sockets already in the sockhash stay accelerated until they close: removing them
/// under live traffic could reorder bytes in flight. Returns whether a link was pinned.
pub fn detach(conf: &PluginConf, id: &AttachmentId) -> Result<bool> {
    let had_link = bpf::detach_pod(&conf.pins(), id).context("unpin sock_ops link")?;
    fault::point(fault::DEL_UNPINNED);
    records(&conf.state_dir).remove(id).context("remove attachment state")?;
    Ok(had_link)
}

/// How long a pinned link may go without a record before GC takes it: an ADD between its
/// attach and its record (milliseconds, seconds on a crowded node) must never lose its link.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(120);

/// Pinned pod links without a record, unchanged for at least `grace`: what a plugin or
/// installer killed between attach and record left behind.
pub fn orphans(conf: &PluginConf, grace: Duration) -> Result<Vec<AttachmentId>> {
    let pins = conf.pins();
    let store = records(&conf.state_dir);
    let mut out = Vec::new();
    for id in bpf::list_pods(&pins)? {
        let changed = std::fs::metadata(pins.pod_dir(&id)).and_then(|m| m.modified());
        let old = changed.is_ok_and(|t| SystemTime::now().duration_since(t).is_ok_and(|age| age >= grace));
        // An unreadable record still claims its link (GC skips it, CHECK reports it).
        if old && matches!(store.load(&id), Ok(None)) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Both halves of an attachment exist: the pinned link and the record.
pub fn is_attached(conf: &PluginConf, id: &AttachmentId) -> Result<bool> {
    Ok(bpf::pod_link(&conf.pins(), id)?.is_some() && records(&conf.state_dir).load(id)?.is_some())
}
