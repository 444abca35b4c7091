//! What `meshaccel doctor` and `meshaccel smc-stats` print: the kernel's view of SMC in
//! the caller's netns (run them under `ip netns exec` for a pod's view).
use std::path::Path;

use serde_json::{json, Value};

use super::{convert, fmodret, pnet, rdma, reach, smcgen, sysctl};

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

/// `meshaccel doctor`: can this node (and the caller's netns) do SMC-R, and how.
pub fn doctor(bpffs_root: &Path, state_dir: &Path) -> Value {
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
    let mode = if tcp2smc { "tcp2smc" } else if hook.is_ok() { "bpf" } else { "none" };
    let pins = fmodret::SmcPins::new(bpffs_root);
    json!({
        "ok": has_smc && active && mode != "none",
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
    })
}
