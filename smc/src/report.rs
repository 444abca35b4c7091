//! What `meshaccel doctor` and `meshaccel smc-stats` print: the kernel's view of SMC in
//! the caller's netns (run them under `ip netns exec` for a pod's view).
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::{convert, fmodret, pnet, probe, rdma, reach, smcgen, sysctl};

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

/// Takes the probe options out of doctor's arguments; the rest is left to the CLI.
pub fn take_probe_args(args: &[String]) -> anyhow::Result<(Option<ProbeNow>, Vec<String>)> {
    let (mut on, mut peers, mut timeout_ms, mut rest) = (false, Vec::new(), probe::DEFAULT_TIMEOUT_MS, Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--probe" => on = true,
            "--peer" => peers.push(it.next().context("--peer needs IP:PORT")?.parse().context("--peer IP:PORT")?),
            "--timeout-ms" => {
                timeout_ms = it.next().context("--timeout-ms needs a value")?.parse().context("--timeout-ms")?
            }
            _ => rest.push(a.clone()),
        }
    }
    if !on && (!peers.is_empty() || timeout_ms != probe::DEFAULT_TIMEOUT_MS) {
        bail!("--peer and --timeout-ms go with --probe");
    }
    Ok((on.then(|| ProbeNow { peers, timeout: Duration::from_millis(timeout_ms) }), rest))
}

fn probe_now(p: &ProbeNow, state_dir: &Path) -> Value {
    let peers = if p.peers.is_empty() {
        let cached = reach::load(state_dir).map(|v| v.peers).unwrap_or_default();
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
        "rdmaProbe": probed,
    })
}
