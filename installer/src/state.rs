//! What ADD (or the installer, adopting a running pod) did for one attachment, so DEL,
//! CHECK, GC and `meshaccel status` can act on it without the netns or prevResult
//! (containerd's second DEL has neither).
//!
//! One JSON file per attachment under the state directory, written atomically. The bpffs
//! pins remain the truth for what is attached; this records why and for which pod.
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::pins::AttachmentId;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentState {
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

pub struct StateDir<'a>(pub &'a Path);

/// Under the state dir: one empty file per node-level SMC UEID that the plugin added (not
/// one that was there before it), named after the UEID. `uninstall` has the plugin remove
/// exactly those (the SMC netlink client lives in the plugin).
pub const SMC_UEIDS_DIR: &str = "smc-ueids";

impl StateDir<'_> {
    /// The directory of the UEIDs the plugin added.
    pub fn smc_ueids(&self) -> PathBuf {
        self.0.join(SMC_UEIDS_DIR)
    }

    /// Whether the plugin recorded adding any UEID.
    pub fn has_smc_ueids(&self) -> bool {
        fs::read_dir(self.smc_ueids()).is_ok_and(|mut d| d.next().is_some())
    }

    fn file(&self, id: &AttachmentId) -> PathBuf {
        self.0.join(format!("{id}.json"))
    }

    pub fn save(&self, id: &AttachmentId, st: &AttachmentState) -> io::Result<()> {
        fs::create_dir_all(self.0)?;
        let path = self.file(id);
        let tmp = path.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(st)?)?;
        // No fsync: the rename keeps the record whole across a crash of the process, and
        // what it describes (bpffs pins, the pod) does not survive a crash of the node. On a
        // disk-backed state dir an fsync cost ADD 0.7 ms p50, 8 ms p99 here (docs/scale.md).
        fs::rename(&tmp, &path)
    }

    pub fn load(&self, id: &AttachmentId) -> io::Result<Option<AttachmentState>> {
        match fs::read(self.file(id)) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the record; absent is fine (DEL is idempotent).
    pub fn remove(&self, id: &AttachmentId) -> io::Result<()> {
        match fs::remove_file(self.file(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every recorded attachment (unreadable records are skipped, not fatal).
    pub fn list(&self) -> io::Result<Vec<(AttachmentId, AttachmentState)>> {
        let dir = match fs::read_dir(self.0) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in dir {
            let name = entry?.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            let Some(id) = AttachmentId::from_dir_name(stem) else { continue };
            if let Ok(Some(st)) = self.load(&id) {
                out.push((id, st));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_list_remove_round_trip() {
        let dir = std::env::temp_dir().join(format!("meshaccel-state-{}", std::process::id()));
        let sd = StateDir(&dir);
        let id = AttachmentId::new("cid", "eth0").unwrap();
        let st = AttachmentState {
            network: "net".into(),
            container_id: "cid".into(),
            ifname: "eth0".into(),
            pod_uid: "u".into(),
            pod_namespace: None,
            pod_name: Some("p".into()),
            cgroup: "/sys/fs/cgroup/x".into(),
            cgroup_id: 7,
            sockmap: true,
        };
        assert_eq!(sd.load(&id).unwrap(), None);
        sd.save(&id, &st).unwrap();
        assert_eq!(sd.load(&id).unwrap(), Some(st.clone()));
        assert_eq!(sd.list().unwrap(), vec![(id.clone(), st)]);
        sd.remove(&id).unwrap();
        sd.remove(&id).unwrap();
        assert!(sd.list().unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
