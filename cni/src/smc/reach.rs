//! The node's RDMA reachability verdict, cached in `<stateDir>/smc-reachability.json`.
//!
//! Why a gate at all: when RoCE works in one direction only while TCP works, an SMC
//! handshake can split (client SMC-R, server fallen back) and the client's close() then
//! sleeps uninterruptibly for ever (rxe retries without end; no kernel knob prevents it).
//! So no pod gets SMC until the node's RDMA path is verified, and a failed verdict stops
//! enabling it until a later check passes.
//!
//! The check today is local: the chosen port is ACTIVE and has RoCE GIDs. A verdict can
//! also be written by an operator or node agent (`meshaccel doctor` shows it): a
//! `"verified": false` verdict younger than the TTL blocks SMC for new pods.
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use slog::{info, Logger};

use super::rdma::Port;

pub fn default_ttl() -> u64 {
    60
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub verified: bool,
    /// Unix seconds.
    pub checked_at: u64,
    pub device: String,
    pub port: u8,
    pub detail: String,
}

fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("smc-reachability.json")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn load(state_dir: &Path) -> Option<Verdict> {
    serde_json::from_slice(&fs::read(file(state_dir)).ok()?).ok()
}

pub fn store(state_dir: &Path, v: &Verdict) -> Result<()> {
    fs::create_dir_all(state_dir)?;
    let tmp = file(state_dir).with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(v)?)?;
    fs::rename(tmp, file(state_dir)).context("store reachability verdict")
}

/// RoCE GIDs of a port (non-zero entries of its GID table).
fn gids(port: &Port) -> usize {
    let dir = Path::new("/sys/class/infiniband").join(&port.device).join("ports").join(port.port.to_string()).join("gids");
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
                .filter(|g| g.trim() != "0000:0000:0000:0000:0000:0000:0000:0000")
                .count()
        })
        .unwrap_or(0)
}

fn probe(port: &Port) -> Verdict {
    let n = gids(port);
    Verdict {
        verified: port.active && n > 0,
        checked_at: now(),
        device: port.device.clone(),
        port: port.port,
        detail: format!("port active={}, {n} RoCE GIDs", port.active),
    }
}

/// Ok when the node's RDMA path is verified for `port` (cached for `ttl` seconds).
pub fn gate(state_dir: &Path, port: &Port, ttl: u64, log: &Logger) -> Result<()> {
    let fresh = |v: &Verdict| v.device == port.device && v.port == port.port && now().saturating_sub(v.checked_at) < ttl;
    let v = match load(state_dir).filter(fresh) {
        Some(v) => v,
        None => {
            let v = probe(port);
            info!(log, "RDMA reachability checked"; "verified" => v.verified, "detail" => &v.detail);
            store(state_dir, &v)?;
            v
        }
    };
    if !v.verified {
        bail!("RDMA path of {} port {} not verified: {}", v.device, v.port, v.detail);
    }
    Ok(())
}

pub fn report(state_dir: &Path) -> Value {
    match load(state_dir) {
        Some(v) => json!({"ok": v.verified, "detail": v}),
        None => json!({"ok": false, "detail": "no verdict yet (the first SMC ADD checks)"}),
    }
}
