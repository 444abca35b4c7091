//! meshaccel's installer on the test node: chains the plugin into the primary conflist and
//! adopts the pods already running.
use std::fs;

use anyhow::{Context, Result};
use meshaccel_installer::adopt::{self, AdoptConfig, Adoption};
use meshaccel_installer::cri::Cri;
use serde_json::Value;

use super::network::PRIMARY;
use super::Containerd;

/// One installer start-up: what `meshaccel-installer` does before its watch loop.
pub fn install(node: &Containerd) -> Result<Vec<Adoption>> {
    let path = node.conf_dir().join(PRIMARY);
    let mut list: Value = serde_json::from_slice(&fs::read(&path)?).context("primary conflist")?;
    let mut entry = node.plugin_settings();
    entry["type"] = "meshaccel".into();
    entry["bpffsRoot"] = node.pins().root().display().to_string().into();
    entry["capabilities"] = serde_json::json!({"io.kubernetes.cri.pod-annotations": true});
    let plugins = list["plugins"].as_array_mut().context("plugins")?;
    if !plugins.iter().any(|p| p["type"] == "meshaccel") {
        plugins.push(entry);
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(&list)?)?;
    fs::rename(&tmp, &path)?;
    let cfg = AdoptConfig {
        network: node.network_name(),
        ifname: adopt::DEFAULT_IFNAME.into(),
        pins: node.pins().clone(),
        cgroup_root: Some(node.cgroup_root().to_path_buf()),
        state_dir: node.state_dir(),
        sockmap_default: true,
    };
    let mut cri = Cri::connect(&node.socket())?;
    adopt::adopt_running_pods(&mut cri, &cfg)
}
