//! What `meshaccel doctor` and `meshaccel smc-stats` print: the kernel's view of SMC in
//! the caller's netns (run them under `ip netns exec` for a pod's view).
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::{convert, fmodret, gate, pnet, probe, rdma, reach, smcgen, sysctl};

/// `meshaccel smc-stats`: counters and fallback reasons of the caller's netns.
pub fn stats() -> anyhow::Result<Value> {
    let mut nl = smcgen::SmcNl::open()?;
    Ok(json!({"stats": nl.stats()?, "fallbacks": nl.fallbacks()?}))
}

fn check(ok: bool, detail: Value) -> Value {
    json!({"ok": ok, "detail": detail})
}

fn result<T: serde::Serialize>(r: anyhow::Result<T>) -> Value {
    match r {
        Ok(v) => check(true, json!(v)),
        Err(e) => check(false, json!(format!("{e:#}"))),
    }
}

/// `meshaccel doctor --probe [--peer IP:PORT]… [--timeout-ms N]`: probe now, from the
/// caller's netns, the given peers or else those of the cached verdict.
pub struct ProbeNow {
    peers: Vec<SocketAddr>,
    timeout: Duration,
}

/// doctor's probe options; --peer and --timeout-ms go with --probe.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// Also probe RDMA reachability now, from the caller's netns.
    #[arg(long)]
    probe: bool,
    /// With --probe: a peer's `meshaccel rdma-responder` (repeatable; default: the cached
    /// verdict's peers).
    #[arg(long = "peer", value_name = "IP:PORT", requires = "probe")]
    peers: Vec<SocketAddr>,
    /// With --probe: how long each peer's probe may take.
    #[arg(long = "timeout-ms", value_name = "N", default_value_t = probe::DEFAULT_TIMEOUT_MS, requires = "probe")]
    timeout_ms: u64,
}

impl ProbeArgs {
    /// What to probe, when --probe was given.
    pub fn requested(&self) -> Option<ProbeNow> {
        self.probe.then(|| ProbeNow { peers: self.peers.clone(), timeout: Duration::from_millis(self.timeout_ms) })
    }
}

fn probe_now(p: &ProbeNow, state_dir: &Path) -> Value {
    let peers = if p.peers.is_empty() {
        let cached = reach::load(state_dir)
            .map(|v| if v.resolved.is_empty() { v.peers } else { v.resolved })
            .unwrap_or_default();
        cached.iter().filter_map(|s| s.parse().ok()).collect()
    } else {
        p.peers.clone()
    };
    if peers.is_empty() {
        return check(false, json!("no peers: give --peer IP:PORT (no cached verdict names any)"));
    }
    let results = probe::probe_all(&peers, p.timeout);
    check(results.iter().all(|r| r.ok), json!(results))
}

/// `meshaccel doctor`: can this node (and the caller's netns) do SMC-R, and how.
pub fn doctor(bpffs_root: &Path, state_dir: &Path, probe_req: Option<&ProbeNow>) -> Value {
    let smc = smcgen::SmcNl::open();
    let has_smc = smc.is_ok();
    let (sys, ueids) = match smc {
        Ok(mut nl) => (result(nl.sys_info().map_err(Into::into)), result(nl.ueids().map_err(Into::into))),
        Err(e) => {
            let v = check(false, json!(e.to_string()));
            (v.clone(), v)
        }
    };
    let ports: Vec<rdma::Port> = rdma::devices().iter().flat_map(|d| rdma::ports(d)).collect();
    let active = ports.iter().any(|p| p.active);
    let pnet = result(pnet::PnetTable::open().and_then(|mut t| t.list()).map_err(anyhow::Error::from));
    let tcp2smc = Path::new("/proc/sys/net/smc").join(convert::TCP2SMC_NAME).exists();
    let hook = fmodret::kernel_supports();
    let mode = if tcp2smc {
        "tcp2smc"
    } else if hook.is_ok() {
        "bpf"
    } else {
        "none"
    };
    let pins = fmodret::SmcPins::new(bpffs_root);
    let probed = probe_req.map(|p| probe_now(p, state_dir));
    let probe_ok = probed.as_ref().is_none_or(|v| v["ok"] == json!(true));
    json!({
        "ok": has_smc && active && mode != "none" && probe_ok,
        "smcModule": sys,
        "rdmaPorts": check(active, json!(ports)),
        "pnetTable": pnet,
        "ueids": ueids,
        // Those uninstall removes; the others were there before meshaccel.
        "ueidsAddedByMeshaccel": super::ueid::recorded(state_dir),
        "sysctls": result(sysctl::available()),
        "conversion": {
            "autoMode": mode,
            "tcp2smc": tcp2smc,
            "bpfHook": result(hook.map(|()| fmodret::TARGET)),
            "programPinned": pins.is_loaded(),
        },
        "rdmaReachability": reach::report(state_dir),
        // Whether pods already on SMC make SMC connections now (suspended: plain TCP).
        "smcGate": gate::report(state_dir, bpffs_root),
        "rdmaProbe": probed,
    })
}
