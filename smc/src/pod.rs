//! One pod's SMC: ADD's [`setup`] (in the pod's netns and the node's tables), DEL's
//! [`teardown`], CHECK's [`verify`], and what ADD did ([`SmcState`]) for the other two.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::ensure;
use serde::{Deserialize, Serialize};
use slog::{info, Logger};

use meshaccel_node::conf::SmcConf;
use meshaccel_node::feature::Pod;

use crate::convert::{self, Mode};
use crate::{fmodret, gate, netns, pnet, rdma, reach, smcgen, sysctl, ueid};

/// What ADD did, so DEL can undo it and CHECK verify it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SmcState {
    /// `tcp2smc` or `bpf`.
    pub mode: Mode,
    pub pnet_id: String,
    pub ifname: String,
    pub rdma_device: String,
    pub rdma_port: u8,
    pub netns: PathBuf,
    /// The pod netns' cookie, the key of the fmod_ret program's map.
    #[serde(default)]
    pub netns_cookie: u64,
    /// Old values of the sysctls ADD set (tcp2smc included), for DEL.
    #[serde(default)]
    pub saved_sysctls: BTreeMap<String, String>,
    /// The sysctls as configured, for CHECK.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
}

/// Why SMC was not set up.
#[derive(Debug, thiserror::Error)]
pub enum SmcError {
    /// Bad input (unknown device or sysctl, PNET conflict): a CNI error whatever the
    /// failure policy, with nothing left behind.
    #[error("{0}")]
    Config(String),
    /// The node cannot do it (no SMC, no RDMA device, unverified RDMA path, ...): the
    /// failure policy decides.
    #[error(transparent)]
    Unavailable(anyhow::Error),
}

fn unavailable(e: impl Into<anyhow::Error>) -> SmcError {
    SmcError::Unavailable(e.into())
}

/// ADD, for `pod` whose netns is `netns`. On error nothing is left (what was done is
/// undone here).
pub fn setup(pod: &Pod, netns: &Path, log: &Logger) -> Result<SmcState, SmcError> {
    let (conf, state_dir, bpffs_root) = (&pod.conf.smc, &pod.conf.state_dir, &pod.conf.bpffs_root);
    let sysctls = conf.sysctl_values().map_err(SmcError::Config)?;
    let mut nl = smcgen::SmcNl::open().map_err(unavailable)?; // no SMC in this kernel?
    let port = match rdma::pick(conf.rdma_device.as_deref()) {
        rdma::Pick::Found(p) => p,
        rdma::Pick::Unknown(why) => return Err(SmcError::Config(why)),
        rdma::Pick::Unavailable(why) => return Err(unavailable(anyhow::anyhow!(why))),
    };
    let pnet_id = conf.pnet_id.clone().unwrap_or_else(|| pnet::pnetid_from_device(&port.device));
    let mode = convert::resolve(conf.mode, netns).map_err(unavailable)?;
    info!(log, "SMC mode chosen"; "configured" => ?conf.mode, "mode" => ?mode, "rdmaDevice" => &port.device);
    if let Some(ueid) = &conf.ueid {
        ueid::ensure(state_dir, &mut nl, ueid).map_err(unavailable).map_err(|e| with_context(e, "add UEID"))?;
    }
    // From the pod's netns: the probe takes the path (eth0's GID) SMC would take.
    reach::gate(state_dir, bpffs_root, &port, &conf.probe, conf.reachability_ttl, netns, log).map_err(unavailable)?;
    link_device(&pnet_id, &port)?;

    let mut st = SmcState {
        mode,
        pnet_id,
        ifname: pod.ifname.to_string(),
        rdma_device: port.device.clone(),
        rdma_port: port.port,
        netns: netns.to_path_buf(),
        sysctls: sysctls.clone(),
        ..Default::default()
    };
    let in_pod = {
        let (id, ifname, mode) = (st.pnet_id.clone(), st.ifname.clone(), mode);
        netns::run_in(netns, move || in_pod_setup(&id, &ifname, mode, &sysctls))
    };
    match in_pod {
        Ok((saved, cookie)) => {
            st.saved_sysctls = saved;
            st.netns_cookie = cookie;
        }
        Err(e) => {
            // Unknown sysctls and interfaces are the conf's fault; everything else the node's.
            let msg = format!("{e:#}");
            return Err(if e.is::<InPodConfigError>() { SmcError::Config(msg) } else { unavailable(e) });
        }
    }
    if mode == Mode::Bpf {
        let pins = fmodret::SmcPins::new(bpffs_root);
        let selected = fmodret::ensure_loaded(&pins).and_then(|loaded| {
            if loaded {
                info!(log, "loaded and pinned the TCP→SMC program"; "pins" => %pins.dir().display());
            }
            fmodret::select(&pins, st.netns_cookie)
        });
        if let Err(e) = selected {
            let _ = teardown(bpffs_root, &st);
            return Err(unavailable(e));
        }
    }
    Ok(st)
}

fn with_context(e: SmcError, what: &'static str) -> SmcError {
    match e {
        SmcError::Unavailable(e) => SmcError::Unavailable(e.context(what)),
        c => c,
    }
}

/// The device port carries `pnet_id` in the (global) initial-netns table: added unless
/// present; another PNET ID already on it is a conflict the conf must resolve.
fn link_device(pnet_id: &str, port: &rdma::Port) -> Result<(), SmcError> {
    let mut table = pnet::PnetTable::open().map_err(unavailable)?;
    match table.add_ib(pnet_id, &port.device, port.port) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(libc::EEXIST) => match table.of_ib(&port.device, port.port).map_err(unavailable)? {
            Some(id) if id == pnet_id => Ok(()),
            Some(other) => Err(SmcError::Config(format!(
                "RDMA device {} port {} already has PNET ID {other}, not {pnet_id}",
                port.device, port.port
            ))),
            None => Err(SmcError::Config(format!(
                "RDMA device {} port {} has a PNET ID the table does not show (set by hardware?); set smc.pnetId to it",
                port.device, port.port
            ))),
        },
        Err(e) => Err(unavailable(e)),
    }
}

/// Marks errors inside the pod netns that are the conf's fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InPodConfigError(String);

/// Runs inside the pod netns: sysctls, tcp2smc, the PNET ETH entry; returns the saved
/// sysctls and the netns cookie. Undoes its own steps on failure.
fn in_pod_setup(
    pnet_id: &str,
    ifname: &str,
    mode: Mode,
    sysctls: &BTreeMap<String, String>,
) -> anyhow::Result<(BTreeMap<String, String>, u64)> {
    let have = sysctl::available()?;
    for key in sysctls.keys() {
        let name = sysctl::short_name(key).map_err(anyhow::Error::msg)?;
        if !have.iter().any(|h| h == name) {
            return Err(InPodConfigError(format!(
                "sysctl {key} does not exist on this kernel (it has: {})",
                have.join(", ")
            ))
            .into());
        }
    }
    let mut wanted = sysctls.clone();
    if mode == Mode::Tcp2smc {
        wanted.insert(convert::TCP2SMC.to_string(), "1".to_string());
    }
    let saved = sysctl::apply(&wanted)?;
    let rest = (|| {
        let mut table = pnet::PnetTable::open()?;
        match table.add_eth(pnet_id, ifname) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EEXIST) && table.of_eth(ifname)?.as_deref() == Some(pnet_id) => {}
            Err(e) if matches!(e.errno(), Some(libc::ENODEV) | Some(libc::EEXIST)) => {
                return Err(InPodConfigError(format!("PNET entry {pnet_id} → {ifname}: {e}")).into())
            }
            Err(e) => return Err(anyhow::Error::from(e).context(format!("PNET entry {pnet_id} → {ifname}"))),
        }
        let cookie = netns::current_cookie();
        if cookie.is_err() {
            let _ = table.del(pnet_id);
        }
        cookie
    })();
    match rest {
        Ok(cookie) => Ok((saved, cookie)),
        Err(e) => {
            let _ = sysctl::restore(&saved);
            Err(e)
        }
    }
}

/// DEL (and rollback): deselects the netns, then, if the netns still exists, removes the
/// pod's PNET entry and restores the sysctls. Idempotent. The device's PNET entry and the
/// UEID are node-level and stay (uninstall removes the UEID if meshaccel added it: [`ueid`]).
pub fn teardown(bpffs_root: &Path, st: &SmcState) -> anyhow::Result<()> {
    if st.netns_cookie != 0 {
        fmodret::deselect(&fmodret::SmcPins::new(bpffs_root), st.netns_cookie)?;
    }
    if st.netns.as_os_str().is_empty() || !st.netns.exists() {
        return Ok(()); // the netns and its per-netns state are gone
    }
    let (id, saved, cookie) = (st.pnet_id.clone(), st.saved_sysctls.clone(), st.netns_cookie);
    netns::run_in(&st.netns, move || {
        // A netns path now naming another netns (recreated) is not ours to change.
        if cookie != 0 && netns::current_cookie()? != cookie {
            return Ok(());
        }
        pnet::PnetTable::open()?.del(&id)?;
        sysctl::restore(&saved)
    })
}

/// CHECK: the live state is what ADD recorded and the conf still asks for. A pod the node's
/// gate suspended ([`gate`]) is in its designed state, not broken.
pub fn verify(state_dir: &Path, bpffs_root: &Path, conf: &SmcConf, st: &SmcState) -> anyhow::Result<()> {
    let wanted = conf.sysctl_values().map_err(anyhow::Error::msg)?;
    let suspended = gate::is_suspended(state_dir);
    ensure!(wanted == st.sysctls, "smc.sysctls changed since ADD: {:?} → {wanted:?}", st.sysctls);
    let (id, ifname, mode, cookie) = (st.pnet_id.clone(), st.ifname.clone(), st.mode, st.netns_cookie);
    let live_cookie = netns::run_in(&st.netns, move || {
        let got = pnet::PnetTable::open()?.of_eth(&ifname)?;
        ensure!(got.as_deref() == Some(id.as_str()), "PNET entry of {ifname} is {got:?}, want {id}");
        let drift = sysctl::drift(&wanted)?;
        ensure!(drift.is_empty(), "sysctls drifted: {}", drift.join("; "));
        if mode == Mode::Tcp2smc {
            let (v, want) = (sysctl::read(convert::TCP2SMC_NAME)?, if suspended { "0" } else { "1" });
            ensure!(v == want, "net.smc.tcp2smc is {v}, want {want} (SMC gate suspended: {suspended})");
        }
        netns::current_cookie()
    })?;
    ensure!(live_cookie == cookie, "netns {} is not the one ADD set up", st.netns.display());
    let dev = pnet::PnetTable::open()?.of_ib(&st.rdma_device, st.rdma_port)?;
    ensure!(
        dev.as_deref() == Some(st.pnet_id.as_str()),
        "RDMA device {} port {} has PNET ID {dev:?}, want {}",
        st.rdma_device,
        st.rdma_port,
        st.pnet_id
    );
    if mode == Mode::Bpf {
        let pins = fmodret::SmcPins::new(bpffs_root);
        ensure!(pins.is_loaded(), "TCP→SMC program is not pinned under {}", pins.dir().display());
        ensure!(fmodret::is_selected(&pins, cookie)?, "pod netns is not in the TCP→SMC map");
        let program = fmodret::is_suspended(&pins)?;
        ensure!(
            program == suspended,
            "the TCP→SMC program's suspend key is {program}, the node's SMC gate {suspended}"
        );
    }
    Ok(())
}
