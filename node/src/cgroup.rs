//! Finding a pod's cgroup from its UID, the way kubelet lays them out.
//!
//! At ADD the pod's netns is still empty (the pause process starts after the CNI chain),
//! but kubelet has already created the pod cgroup, so the UID is the only handle we have.
use std::path::{Path, PathBuf};

/// The cgroup v2 mount: `/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on
/// unified ones.
pub fn default_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"].into_iter().map(PathBuf::from).find(|p| is_cgroup2(p))
}

pub fn is_cgroup2(p: &Path) -> bool {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
    statfs(p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
}

/// Every place kubelet may have put the pod, relative to the cgroup root: the cgroupfs
/// driver (`kubepods[/<qos>]/pod<uid>`) and the systemd driver
/// (`kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_with_underscores>.slice`).
pub fn candidates(uid: &str) -> Vec<PathBuf> {
    let systemd_uid = uid.replace('-', "_");
    let mut v = Vec::with_capacity(6);
    for qos in ["", "burstable", "besteffort"] {
        let (cgfs, slice_dir, slice) = if qos.is_empty() {
            (format!("kubepods/pod{uid}"), "kubepods.slice".to_string(), format!("kubepods-pod{systemd_uid}.slice"))
        } else {
            (
                format!("kubepods/{qos}/pod{uid}"),
                format!("kubepods.slice/kubepods-{qos}.slice"),
                format!("kubepods-{qos}-pod{systemd_uid}.slice"),
            )
        };
        v.push(PathBuf::from(cgfs));
        v.push(PathBuf::from(slice_dir).join(slice));
    }
    v
}

/// The pod's cgroup directory under `root`, if kubelet created it. The UID becomes a path
/// component, so one with anything but UUID characters finds nothing.
pub fn find_pod(root: &Path, uid: &str) -> Option<PathBuf> {
    let uuid_like = !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if !uuid_like {
        return None;
    }
    candidates(uid).into_iter().map(|rel| root.join(rel)).find(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_kubelet_layouts_are_candidates() {
        let c = candidates("1234-ab");
        for want in [
            "kubepods/pod1234-ab",
            "kubepods/burstable/pod1234-ab",
            "kubepods/besteffort/pod1234-ab",
            "kubepods.slice/kubepods-pod1234_ab.slice",
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_ab.slice",
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234_ab.slice",
        ] {
            assert!(c.contains(&PathBuf::from(want)), "{want} missing from {c:?}");
        }
    }

    #[test]
    fn finds_a_real_directory_only() {
        let root = std::env::temp_dir().join(format!("meshaccel-cg-{}", std::process::id()));
        let pod = root.join("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda_b.slice");
        std::fs::create_dir_all(&pod).unwrap();
        assert_eq!(find_pod(&root, "a-b"), Some(pod));
        assert_eq!(find_pod(&root, "c-d"), None);
        std::fs::create_dir_all(root.join("kubepods/pod../x")).unwrap();
        assert_eq!(find_pod(&root, "../x"), None, "not a UID: must not be joined into a path");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
