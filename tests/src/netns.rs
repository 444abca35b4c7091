//! Named network namespaces, made the way `ip netns` (and containerd) make them.
use std::path::PathBuf;

use anyhow::Result;

use crate::run;

#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `/var/run/netns/<name>` with `lo` up (what the `loopback` plugin does for
    /// Kubernetes pods). A leftover of a killed run with the same name is replaced.
    pub fn create(name: &str) -> Result<Self> {
        let _ = run("ip", &["netns", "del", name]);
        run("ip", &["netns", "add", name])?;
        let ns = Self { name: name.to_string() };
        run("ip", &["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The path runtimes pass as `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn delete(&mut self) -> Result<()> {
        if self.path().exists() {
            run("ip", &["netns", "del", &self.name])?;
        }
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            eprintln!("cleanup: {e:#}");
        }
    }
}
