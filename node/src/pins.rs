//! The bpffs layout: the contract between the installer, the CNI plugin and operators.
//!
//! ```text
//! <root>/progs/meshaccel_sockops   sock_ops program (attached per pod through links below)
//! <root>/progs/meshaccel_skmsg     sk_msg program (attached to maps/SOCKS)
//! <root>/progs/meshaccel_consumed  fexit program on tcp_bpf_recvmsg (backlog accounting)
//! <root>/links/consumed            its bpf_link
//! <root>/maps/{SOCKS,COUNTERS,POD_CONFIG,CONN_STATE,DECISION,NODE,BACKLOG,OWNER}
//! <root>/progs/meshaccel_sock_create cgroup/sock_create program (records socket owners)
//! <root>/pods/<attachment>/sockops bpf_link of the sock_ops program to one pod's cgroup
//! <root>/pods/<attachment>/sock_create  bpf_link of the sock_create program to it
//! ```
//! `<attachment>` is `<container id>_<ifname>`, the key CNI uses for an attachment (DEL and
//! GC name attachments so), both validated to contain no `/`, `..` or NUL; `_` and `%` of
//! the ifname are written `%5F` and `%25`, so the last `_` always separates the two.
use std::path::{Path, PathBuf};

use meshaccel_common::names;

pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/meshaccel";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pins {
    root: PathBuf,
}

impl Pins {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn progs_dir(&self) -> PathBuf {
        self.root.join("progs")
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn prog(&self, name: &str) -> PathBuf {
        self.progs_dir().join(name)
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn sockops(&self) -> PathBuf {
        self.prog(names::PROG_SOCKOPS)
    }

    pub fn skmsg(&self) -> PathBuf {
        self.prog(names::PROG_SKMSG)
    }

    pub fn sock_create(&self) -> PathBuf {
        self.prog(names::PROG_SOCK_CREATE)
    }

    pub fn consumed(&self) -> PathBuf {
        self.prog(names::PROG_CONSUMED)
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn consumed_link(&self) -> PathBuf {
        self.links_dir().join("consumed")
    }

    /// Every pin that must exist for the programs to count as loaded (the fexit program
    /// and link are optional: kernels may refuse tracing programs). The sock_ops program
    /// is pinned last by the loader, so its presence also marks a complete load.
    pub fn required(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = names::MAPS.iter().map(|m| self.map(m)).collect();
        v.push(self.skmsg());
        v.push(self.sock_create());
        v.push(self.sockops());
        v
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    pub fn pod_dir(&self, attachment: &AttachmentId) -> PathBuf {
        self.pods_dir().join(attachment.as_str())
    }

    pub fn pod_link(&self, attachment: &AttachmentId) -> PathBuf {
        self.pod_dir(attachment).join("sockops")
    }

    pub fn pod_sock_create_link(&self, attachment: &AttachmentId) -> PathBuf {
        self.pod_dir(attachment).join("sock_create")
    }
}

/// Names one CNI attachment (container id + interface) in file paths. Construction is the
/// only place path safety is checked, so every path built from one is safe.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttachmentId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} {value:?} cannot name a file: {why}")]
pub struct UnsafeName {
    pub what: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl AttachmentId {
    /// Unescaped, `a_b`+`c` and `a`+`b_c` would share a name, and DEL of one would remove
    /// the other. Real ifnames (`eth0`, `net1`) have neither character and stay as they are.
    pub fn new(container_id: &str, ifname: &str) -> Result<Self, UnsafeName> {
        check_component("container id", container_id)?;
        check_component("interface name", ifname)?;
        Ok(Self(format!("{container_id}_{}", ifname.replace('%', "%25").replace('_', "%5F"))))
    }

    /// Parses a directory name back (GC lists the pods directory); only names [`Self::new`]
    /// makes.
    pub fn from_dir_name(name: &str) -> Option<Self> {
        let (cid, ifname) = name.rsplit_once('_')?;
        Self::new(cid, &ifname.replace("%5F", "_").replace("%25", "%")).ok().filter(|id| id.0 == name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AttachmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One path component that cannot escape its directory or confuse a reader.
pub fn check_component(what: &'static str, value: &str) -> Result<(), UnsafeName> {
    let err = |why| UnsafeName { what, value: value.to_string(), why };
    if value.is_empty() {
        return Err(err("empty"));
    }
    if value.len() > 128 {
        return Err(err("longer than 128 bytes"));
    }
    if value == "." || value == ".." {
        return Err(err("is a relative directory"));
    }
    if value.bytes().any(|b| b == b'/' || b == 0 || b.is_ascii_control()) {
        return Err(err("contains '/', NUL or a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_ids_refuse_escapes() {
        assert!(AttachmentId::new("abc123", "eth0").is_ok());
        for (cid, ifname) in [("..", "eth0"), ("a/b", "eth0"), ("abc", "../x"), ("", "eth0"), ("a\0b", "eth0")] {
            assert!(AttachmentId::new(cid, ifname).is_err(), "{cid:?} {ifname:?}");
        }
    }

    #[test]
    fn attachment_dir_names_round_trip() {
        let id = AttachmentId::new("c_with_underscore", "eth0").unwrap();
        assert_eq!(AttachmentId::from_dir_name(id.as_str()), Some(id));
        assert_eq!(AttachmentId::from_dir_name("noseparator"), None);
        for (cid, ifname) in [("a_b", "c"), ("a", "b_c"), ("a", "b%5Fc"), ("a", "%_%25")] {
            let id = AttachmentId::new(cid, ifname).unwrap();
            assert_eq!(AttachmentId::from_dir_name(id.as_str()), Some(id), "{cid:?} {ifname:?}");
        }
        assert_ne!(AttachmentId::new("a_b", "c"), AttachmentId::new("a", "b_c"));
        assert_eq!(AttachmentId::from_dir_name("a_b_c"), AttachmentId::new("a_b", "c").ok());
    }

    #[test]
    fn layout_is_stable() {
        let p = Pins::new("/sys/fs/bpf/meshaccel");
        let id = AttachmentId::new("cid", "eth0").unwrap();
        assert_eq!(p.pod_link(&id), Path::new("/sys/fs/bpf/meshaccel/pods/cid_eth0/sockops"));
        assert_eq!(p.sockops(), Path::new("/sys/fs/bpf/meshaccel/progs/meshaccel_sockops"));
    }
}
