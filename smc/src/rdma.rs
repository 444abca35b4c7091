//! RDMA devices as sysfs shows them (`/sys/class/infiniband`): which exist, which ports
//! are ACTIVE. SMC-R needs one; the conf may name it or leave it to auto-detection.
use std::fs;
use std::path::PathBuf;

const CLASS: &str = "/sys/class/infiniband";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Port {
    pub device: String,
    pub port: u8,
    pub active: bool,
}

fn ports_dir(dev: &str) -> PathBuf {
    PathBuf::from(CLASS).join(dev).join("ports")
}

pub fn devices() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(CLASS)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

pub fn ports(dev: &str) -> Vec<Port> {
    let mut v: Vec<Port> = fs::read_dir(ports_dir(dev))
        .map(|d| {
            d.filter_map(|e| {
                let port: u8 = e.ok()?.file_name().to_str()?.parse().ok()?;
                // "4: ACTIVE"
                let state = fs::read_to_string(ports_dir(dev).join(port.to_string()).join("state")).ok()?;
                Some(Port { device: dev.to_string(), port, active: state.contains("ACTIVE") })
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|p| p.port);
    v
}

#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    Found(Port),
    /// The named device does not exist: a conf error.
    Unknown(String),
    /// Nothing usable on this node (no device, no active port, or several to choose from).
    Unavailable(String),
}

/// The configured device's first active port, or the node's only active port.
pub fn pick(configured: Option<&str>) -> Pick {
    match configured {
        Some(dev) => {
            if !devices().iter().any(|d| d == dev) {
                return Pick::Unknown(format!("RDMA device {dev} does not exist (have: {:?})", devices()));
            }
            match ports(dev).into_iter().find(|p| p.active) {
                Some(p) => Pick::Found(p),
                None => Pick::Unavailable(format!("RDMA device {dev} has no ACTIVE port")),
            }
        }
        None => {
            let active: Vec<Port> = devices().iter().flat_map(|d| ports(d)).filter(|p| p.active).collect();
            match active.len() {
                0 => Pick::Unavailable(format!("no RDMA device with an ACTIVE port (devices: {:?})", devices())),
                1 => Pick::Found(active.into_iter().next().unwrap()),
                _ => Pick::Unavailable(format!("several active RDMA ports, set smc.rdmaDevice: {active:?}")),
            }
        }
    }
}
