//! The node's CNI network as an operator's primary CNI would write it (bridge + host-local;
//! containerd adds `lo` itself),
//! and the meshaccel settings the installer chains after it.
use std::fs;
use std::path::PathBuf;

use anyhow::Result;
use serde_json::{json, Value};

use super::Containerd;

/// The primary CNI's file in the conf dir.
pub const PRIMARY: &str = "10-bridge.conflist";

impl Containerd {
    /// The network name: host-local keeps one pool per name, so it is unique per node.
    pub fn network_name(&self) -> String {
        format!("e2e-{}", self.tag)
    }

    /// Writes the primary CNI's conflist (what a node has before meshaccel is installed).
    /// The bridge lives in containerd's private netns, so the subnet cannot clash.
    pub fn write_primary_conflist(&self) -> Result<PathBuf> {
        let bridge = format!("e2e{}", self.tag);
        anyhow::ensure!(bridge.len() <= 15, "bridge name {bridge} too long");
        let list = json!({
            "cniVersion": "1.0.0",
            "name": self.network_name(),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": "10.250.1.0/24"}]],
                        "dataDir": self.dir().join("ipam"),
                    },
                },
            ],
        });
        let path = self.conf_dir().join(PRIMARY);
        fs::write(&path, serde_json::to_vec_pretty(&list)?)?;
        Ok(path)
    }

    /// The plugin settings this node's installer writes into meshaccel's entry (besides
    /// `bpffsRoot`, which is the installer's own setting): everything private to the test.
    pub fn plugin_settings(&self) -> Value {
        json!({
            "sockmap": {"enabled": true},
            "cgroupRoot": self.cgroup_root(),
            "stateDir": self.state_dir(),
            "log": {"file": self.plugin_log(), "level": "debug"},
            // A pod that cannot be accelerated fails loudly instead of running on plain TCP.
            "failurePolicy": "closed",
        })
    }
}
