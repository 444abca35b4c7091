//! The node's RDMA reachability verdict, cached in `<stateDir>/smc-reachability.json`.
//!
//! Why a gate at all: when RoCE works in one direction only while TCP works, an SMC
//! handshake can split (client SMC-R, server fallen back) and the client's close() then
//! sleeps uninterruptibly for ever (rxe retries without end; no kernel knob prevents it).
//! So no pod gets SMC until RDMA has been seen working both ways to every configured peer
//! ([`probe`], from the pod's netns: the GID SMC will use), and a failed verdict stops
//! enabling it (and suspends it for pods already on SMC: [`super::gate`]) until a later
//! check passes. Verdicts, failed ones included, are cached per
//! (device, port, peer set) for `smc.reachabilityTtl` seconds.
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use meshaccel_node::files;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use slog::{debug, info, warn, Logger};

use super::dns;
use super::probe::{self, PeerResult, ProbeConf};
use super::rdma::Port;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub verified: bool,
    /// Unix seconds.
    pub checked_at: u64,
    pub device: String,
    pub port: u8,
    /// The configured peers (sorted), part of the cache key.
    #[serde(default)]
    pub peers: Vec<String>,
    /// The addresses probed: the static peers and what the `dns:` peers resolved to.
    #[serde(default)]
    pub resolved: Vec<String>,
    #[serde(default)]
    pub results: Vec<PeerResult>,
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
    // A private temporary name: concurrent ADDs may store verdicts at the same time.
    let tmp = file(state_dir).with_extension(format!("json.{}.tmp", std::process::id()));
    fs::write(&tmp, serde_json::to_vec_pretty(v)?)?;
    fs::rename(tmp, file(state_dir)).context("store reachability verdict")
}

/// An exclusive lock next to the verdict (released when the returned file is dropped).
fn lock(state_dir: &Path) -> Result<impl Sized> {
    fs::create_dir_all(state_dir)?;
    files::lock_exclusive(&state_dir.join("smc-reachability.lock")).context("lock the reachability verdict")
}

/// RoCE GIDs of a port (non-zero entries of its GID table).
fn gids(port: &Port) -> usize {
    let dir =
        Path::new("/sys/class/infiniband").join(&port.device).join("ports").join(port.port.to_string()).join("gids");
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
                .filter(|g| g.trim() != "0000:0000:0000:0000:0000:0000:0000:0000")
                .count()
        })
        .unwrap_or(0)
}

/// The local precondition of any probe: the port is ACTIVE and has RoCE GIDs.
fn local_check(port: &Port) -> Result<(), String> {
    let n = gids(port);
    if port.active && n > 0 {
        Ok(())
    } else {
        Err(format!("port active={}, {n} RoCE GIDs", port.active))
    }
}

/// Checks now: the local port, the peers' addresses (`dns:` peers resolved from the
/// caller's netns, the node's), then the two-way probe to each from `netns`.
pub fn check(port: &Port, conf: &ProbeConf, netns: &Path) -> Verdict {
    let mut v = Verdict {
        verified: false,
        checked_at: now(),
        device: port.device.clone(),
        port: port.port,
        peers: conf.peer_key(),
        resolved: Vec::new(),
        results: Vec::new(),
        detail: String::new(),
    };
    if let Err(why) = local_check(port) {
        v.detail = why;
        return v;
    }
    let deadline = std::time::Instant::now() + conf.timeout();
    let peers = match dns::resolve(&conf.peers, &conf.nameservers, &dns::own_addresses(), deadline) {
        Ok(peers) => peers,
        Err(why) => {
            v.detail = format!("cannot resolve the peers: {why}");
            return v;
        }
    };
    v.resolved = peers.iter().map(|p| p.to_string()).collect();
    let timeout = conf.timeout();
    match super::netns::run_in(netns, move || Ok(probe::probe_all(&peers, timeout))) {
        Ok(results) => {
            let failed: Vec<String> =
                results.iter().filter(|r| !r.ok).map(|r| format!("{}: {}", r.peer, r.detail)).collect();
            let slowest = results.iter().map(|r| r.elapsed_ms).max().unwrap_or(0);
            v.verified = failed.is_empty();
            v.detail = if v.verified {
                format!("{} peer(s) answered both ways (slowest {slowest} ms)", results.len())
            } else {
                failed.join("; ")
            };
            v.results = results;
        }
        Err(e) => v.detail = format!("cannot probe from {}: {e:#}", netns.display()),
    }
    v
}

/// Ok when the node's RDMA path is verified for `port` and the configured peers (cached for
/// `ttl` seconds), probing from `netns` when the cache has no fresh verdict. The node's SMC
/// gate follows the verdict ([`super::gate`]).
pub fn gate(
    state_dir: &Path,
    bpffs_root: &Path,
    port: &Port,
    conf: &ProbeConf,
    ttl: u64,
    netns: &Path,
    log: &Logger,
) -> Result<()> {
    if conf.trust {
        local_check(port)
            .map_err(|why| anyhow::anyhow!("RDMA port {} {} not usable: {why}", port.device, port.port))?;
        let _lock = lock(state_dir)?;
        super::gate::follow(state_dir, bpffs_root, true, "smc.probe.trust", log)?;
        warn!(
            log,
            "SMC enabled WITHOUT a reachability probe (smc.probe.trust): a one-way RoCE path will hang SMC connections"
        );
        return Ok(());
    }
    if conf.peers.is_empty() {
        bail!(
            "RDMA reachability cannot be verified: smc.probe.peers is empty (list the rdma-responders of other nodes, \
             or set smc.probe.trust at your own risk); SMC stays off"
        );
    }
    let v = current(state_dir, bpffs_root, port, conf, ttl, netns, log)?;
    if !v.verified {
        bail!("RDMA path of {} port {} not verified: {}", v.device, v.port, v.detail);
    }
    Ok(())
}

/// The verdict for `port` and the conf's peers: the cached one while younger than `ttl`
/// seconds, else probed now from `netns` and stored; then the node's SMC gate is set to
/// follow it. ADD's [`gate`] and the installer's periodic re-check both come here.
pub fn current(
    state_dir: &Path,
    bpffs_root: &Path,
    port: &Port,
    conf: &ProbeConf,
    ttl: u64,
    netns: &Path,
    log: &Logger,
) -> Result<Verdict> {
    // Held through the cache check, the probe, the store and the gate: a node starting many
    // SMC pods at once probes once, the other ADDs wait (at most one probe timeout) and read
    // its verdict; the gate is always the last stored verdict's.
    let _lock = lock(state_dir)?;
    let key = conf.peer_key();
    let fresh = |v: &Verdict| {
        v.device == port.device && v.port == port.port && v.peers == key && now().saturating_sub(v.checked_at) < ttl
    };
    let v = match load(state_dir).filter(fresh) {
        Some(v) => {
            debug!(log, "RDMA reachability verdict from cache"; "verified" => v.verified, "checkedAt" => v.checked_at);
            v
        }
        None => {
            let v = check(port, conf, netns);
            if v.verified {
                info!(log, "RDMA reachability verified"; "detail" => &v.detail, "peers" => ?v.peers);
            } else {
                warn!(log, "RDMA reachability probe failed: SMC is off for new pods and suspended for running ones until a later check passes";
                      "detail" => &v.detail, "peers" => ?v.peers, "ttl" => ttl);
            }
            store(state_dir, &v)?;
            v
        }
    };
    super::gate::follow(state_dir, bpffs_root, v.verified, &v.detail, log)?;
    Ok(v)
}

pub fn report(state_dir: &Path) -> Value {
    match load(state_dir) {
        Some(v) => json!({"ok": v.verified, "detail": v}),
        None => json!({"ok": false, "detail": "no verdict yet (the first SMC ADD checks)"}),
    }
}
