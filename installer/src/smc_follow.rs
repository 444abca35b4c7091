//! The installer's half of "SMC follows its probe": while pods run with SMC, the node's RDMA
//! reachability is re-checked every `smc.reachabilityTtl` seconds without waiting for an
//! ADD, and the node's SMC gate follows each verdict (`meshaccel_smc::gate`: suspended pods
//! make plain TCP connections until a later probe passes).
//!
//! The probe runs from the netns of a live SMC pod: it must take the path SMC takes (the
//! pod's GID), and the host netns may not reach the peers over RDMA at all. The netns is
//! held open while probing, so it cannot vanish mid-probe and fail the verdict for a reason
//! that is not the path's. It goes through the plugin's own code (`reach::current`, under
//! the same lock), so a probe the installer runs and one an ADD runs never overlap and the
//! gate is always the last verdict's. No SMC pod, nothing to follow: the next ADD probes.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use meshaccel_node::conf::smc::Mode;
use meshaccel_smc::{netns, rdma, reach, record};
use slog::{debug, info, warn, Logger};

use crate::config::Config;
use crate::status::Status;

/// Starts the re-check thread, unless the conf leaves nothing to follow.
pub fn spawn(cfg: &Config, status: Arc<Status>, uninstalled: fn(&Config) -> bool, log: &Logger) -> Result<()> {
    let smc = &cfg.plugin.smc;
    if smc.mode == Mode::Off || smc.probe.trust || smc.probe.peers.is_empty() {
        debug!(log, "no SMC reachability to follow (smc off, no probe peers, or probe.trust)");
        return Ok(());
    }
    let (cfg, log) = (cfg.clone(), log.clone());
    info!(log, "following the SMC reachability of running SMC pods"; "everySeconds" => smc.reachability_ttl);
    std::thread::Builder::new().name("smc-follow".into()).spawn(move || loop {
        let wait = if uninstalled(&cfg) {
            Duration::from_secs(cfg.plugin.smc.reachability_ttl)
        } else {
            tick(&cfg, &status, &log)
        };
        std::thread::sleep(wait.max(Duration::from_secs(1)));
    })?;
    Ok(())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One round: re-checks when the cached verdict has expired and an SMC pod runs. Returns
/// how long to wait for the next round.
fn tick(cfg: &Config, status: &Status, log: &Logger) -> Duration {
    let (smc, state_dir) = (&cfg.plugin.smc, cfg.state_dir());
    let ttl = smc.reachability_ttl;
    if let Some(v) = reach::load(&state_dir).filter(|v| v.peers == smc.probe.peer_key()) {
        let age = now().saturating_sub(v.checked_at);
        if age < ttl {
            return Duration::from_secs(ttl - age); // fresh (an ADD probed): wake when it expires
        }
    }
    let pod = match live_pod(&state_dir) {
        Ok(Some(pod)) => pod,
        Ok(None) => return Duration::from_secs(ttl),
        Err(e) => {
            warn!(log, "cannot list the SMC pods to re-check reachability from"; "error" => format!("{e:#}"));
            return Duration::from_secs(ttl);
        }
    };
    // The port the pod's ADD verified (an inactive or vanished one fails the local check).
    let port = rdma::ports(&pod.device).into_iter().find(|p| p.port == pod.port).unwrap_or(rdma::Port {
        device: pod.device.clone(),
        port: pod.port,
        active: false,
    });
    match reach::current(&state_dir, cfg.pins.root(), &port, &smc.probe, ttl, &pod.path, log) {
        Ok(v) => {
            status.smc_rechecked(v.verified);
            info!(log, "SMC reachability re-checked"; "verified" => v.verified, "detail" => &v.detail,
                "from" => &pod.attachment);
        }
        Err(e) => warn!(log, "cannot re-check SMC reachability"; "error" => format!("{e:#}")),
    }
    Duration::from_secs(ttl)
}

/// A live SMC pod's netns, held open.
struct LivePod {
    attachment: String,
    device: String,
    port: u8,
    path: PathBuf,
    _ns: File,
}

/// The first SMC record whose netns still exists and is the one its ADD set up.
fn live_pod(state_dir: &Path) -> Result<Option<LivePod>> {
    for (id, r) in record::records(state_dir).list().context("list SMC records")? {
        let Ok(ns) = File::open(&r.state.netns) else { continue };
        let path = PathBuf::from(format!("/proc/self/fd/{}", ns.as_raw_fd()));
        let cookie = r.state.netns_cookie;
        match netns::run_in(&path, netns::current_cookie) {
            Ok(c) if c == cookie => {
                let (device, port) = (r.state.rdma_device, r.state.rdma_port);
                return Ok(Some(LivePod { attachment: id.as_str().to_string(), device, port, path, _ns: ns }));
            }
            _ => continue, // the path names another netns now, or cannot be entered
        }
    }
    Ok(None)
}
