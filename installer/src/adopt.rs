//! Accelerating pods that were already running when meshaccel was installed.
//!
//! The CNI plugin only sees pods created after it joined the chain. At start-up the
//! installer lists the runtime's pod sandboxes and, for each ready one without an
//! attachment, does what ADD would have done: find the pod cgroup from its UID, honour the
//! `meshaccel.io/sockmap` annotation, attach the sock_ops program and write the same state
//! record. The record is keyed like ADD's (sandbox id + `eth0`), so the plugin's DEL at
//! StopPodSandbox/RemovePodSandbox and its GC clean adopted pods up like any other.
//!
//! Sockets that exist before adoption are not accelerated (a socket is only put in the
//! sockhash when it is established); the pod's new connections are.
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use meshaccel_common::PodConfig;

use crate::bpf;
use crate::cgroup;
use crate::cri::Sandbox;
use crate::pins::{AttachmentId, Pins};
use crate::state::{AttachmentState, StateDir};

/// The per-pod opt-out/opt-in annotation ("true"/"false"), as the plugin reads it.
pub const ANNOTATION_SOCKMAP: &str = "meshaccel.io/sockmap";
/// The interface name runtimes give a pod's (only) CRI network.
pub const DEFAULT_IFNAME: &str = "eth0";

/// Where and how to attach: the values of the meshaccel entry in the chained conflist, so
/// an adopted pod is indistinguishable from one the plugin set up.
#[derive(Clone, Debug)]
pub struct AdoptConfig {
    /// The conflist's `name`: GC only collects records of its own network.
    pub network: String,
    pub ifname: String,
    pub pins: Pins,
    /// `cgroupRoot`; `None` auto-detects the cgroup v2 mount like the plugin.
    pub cgroup_root: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// `sockmap.enabled`: the default for pods without the annotation.
    pub sockmap_default: bool,
    /// The network's settings (filter rules) written for every adopted pod, as ADD would.
    pub pod_config: PodConfig,
}

/// What adoption did with one sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Adopted { cgroup: PathBuf, cgroup_id: u64 },
    /// The plugin (or an earlier adoption) already attached it.
    AlreadyAttached,
    NotReady,
    HostNetwork,
    /// The annotation or the network default turns sockmap off.
    OptedOut,
    /// Left unaccelerated, with the reason; nothing of it remains.
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adoption {
    pub sandbox_id: String,
    /// `namespace/name`.
    pub pod: String,
    pub outcome: Outcome,
}

impl fmt::Display for Adoption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {:?}", self.pod, self.sandbox_id, self.outcome)
    }
}

/// The pod's choice: `Ok(None)` without the annotation, an error for a value other than
/// "true"/"false" (the plugin refuses such a pod at ADD; adoption leaves it alone).
fn sockmap_annotation(annotations: &BTreeMap<String, String>) -> Result<Option<bool>, String> {
    match annotations.get(ANNOTATION_SOCKMAP).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(format!("annotation {ANNOTATION_SOCKMAP}={other:?}: expected \"true\" or \"false\"")),
    }
}

/// Adopts every ready sandbox of `sandboxes` that has no attachment yet. Errors for one pod
/// are reported in its [`Outcome`] and do not stop the others; the call itself fails only
/// when the programs cannot be loaded.
pub fn adopt(sandboxes: &[Sandbox], cfg: &AdoptConfig) -> Result<Vec<Adoption>> {
    bpf::ensure_loaded(&cfg.pins)?;
    Ok(sandboxes
        .iter()
        .map(|sb| Adoption { sandbox_id: sb.id.clone(), pod: sb.pod(), outcome: adopt_one(sb, cfg) })
        .collect())
}

/// Lists the runtime's sandboxes over CRI and adopts them (see [`adopt`]).
///
/// A pod stopped while it was being adopted may have had its DELs before its record was
/// written, and nothing would remove it then; so each adopted sandbox is checked again, and
/// released if it is no longer ready (the runtime marks it so before the DEL).
#[cfg(feature = "cri")]
pub fn adopt_running_pods(cri: &mut crate::cri::Cri, cfg: &AdoptConfig) -> Result<Vec<Adoption>> {
    let sandboxes = cri.sandboxes().context("list pod sandboxes")?;
    let mut adoptions = adopt(&sandboxes, cfg)?;
    for a in adoptions.iter_mut().filter(|a| matches!(a.outcome, Outcome::Adopted { .. })) {
        // Unknown (the runtime did not answer): keep it; a later DEL still removes it.
        let ready = cri.sandbox_status(&a.sandbox_id).map_or(true, |s| s.is_some_and(|s| s.ready));
        if !ready {
            release(cfg, &AttachmentId::new(&a.sandbox_id, &cfg.ifname)?);
            a.outcome = Outcome::NotReady;
        }
    }
    Ok(adoptions)
}

/// Removes an attachment adoption made (the plugin's DEL does the same).
fn release(cfg: &AdoptConfig, id: &AttachmentId) {
    let _ = bpf::detach_pod(&cfg.pins, id);
    let _ = StateDir(&cfg.state_dir).remove(id);
}

fn adopt_one(sb: &Sandbox, cfg: &AdoptConfig) -> Outcome {
    if !sb.ready {
        return Outcome::NotReady;
    }
    if sb.host_network {
        return Outcome::HostNetwork;
    }
    let enabled = match sockmap_annotation(&sb.annotations) {
        Ok(choice) => choice.unwrap_or(cfg.sockmap_default),
        Err(why) => return Outcome::Failed(why),
    };
    if !enabled {
        return Outcome::OptedOut;
    }
    let id = match AttachmentId::new(&sb.id, &cfg.ifname) {
        Ok(id) => id,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    match attached(cfg, &id) {
        Ok(true) => return Outcome::AlreadyAttached,
        Ok(false) => {}
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    }
    match attach_recorded(sb, cfg, &id) {
        Ok(st) => Outcome::Adopted { cgroup: st.cgroup, cgroup_id: st.cgroup_id },
        Err(e) => {
            // Leave nothing half-done, as a failed ADD does.
            release(cfg, &id);
            Outcome::Failed(format!("{e:#}"))
        }
    }
}

/// Both halves of an attachment exist: the pinned link and the record.
fn attached(cfg: &AdoptConfig, id: &AttachmentId) -> Result<bool> {
    Ok(bpf::pod_link(&cfg.pins, id)?.is_some() && StateDir(&cfg.state_dir).load(id)?.is_some())
}

fn attach_recorded(sb: &Sandbox, cfg: &AdoptConfig, id: &AttachmentId) -> Result<AttachmentState> {
    let root = match &cfg.cgroup_root {
        Some(r) => r.clone(),
        None => cgroup::default_root().context("no cgroup v2 mount found")?,
    };
    let cgroup = cgroup::find_pod(&root, &sb.uid)
        .with_context(|| format!("no cgroup for pod {} under {}", sb.uid, root.display()))?;
    let cgroup_id = bpf::attach_pod(&cfg.pins, id, &cgroup, cfg.pod_config)?;
    let st = AttachmentState {
        network: cfg.network.clone(),
        container_id: sb.id.clone(),
        ifname: cfg.ifname.clone(),
        pod_uid: sb.uid.clone(),
        pod_namespace: Some(sb.namespace.clone()),
        pod_name: Some(sb.name.clone()),
        cgroup,
        cgroup_id,
        sockmap: true,
    };
    StateDir(&cfg.state_dir).save(id, &st).context("save attachment state")?;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_values() {
        let ann = |v: &str| BTreeMap::from([(ANNOTATION_SOCKMAP.to_string(), v.to_string())]);
        assert_eq!(sockmap_annotation(&BTreeMap::new()), Ok(None));
        assert_eq!(sockmap_annotation(&ann("true")), Ok(Some(true)));
        assert_eq!(sockmap_annotation(&ann("false")), Ok(Some(false)));
        assert!(sockmap_annotation(&ann("yes")).is_err());
    }

    fn cfg() -> AdoptConfig {
        AdoptConfig {
            network: "net".into(),
            ifname: DEFAULT_IFNAME.into(),
            pins: Pins::new("/nonexistent/bpffs"),
            cgroup_root: Some("/nonexistent/cgroup".into()),
            state_dir: "/nonexistent/state".into(),
            sockmap_default: true,
            pod_config: PodConfig::enabled(),
        }
    }

    #[test]
    fn pods_that_must_not_be_touched_are_skipped_before_any_io() {
        let ready = Sandbox { id: "sb1".into(), uid: "0a-1b".into(), ready: true, ..Default::default() };
        let not_ready = Sandbox { ready: false, ..ready.clone() };
        let host = Sandbox { host_network: true, ..ready.clone() };
        let mut opted_out = ready.clone();
        opted_out.annotations.insert(ANNOTATION_SOCKMAP.into(), "false".into());
        let mut bad = ready.clone();
        bad.annotations.insert(ANNOTATION_SOCKMAP.into(), "maybe".into());
        assert_eq!(adopt_one(&not_ready, &cfg()), Outcome::NotReady);
        assert_eq!(adopt_one(&host, &cfg()), Outcome::HostNetwork);
        assert_eq!(adopt_one(&opted_out, &cfg()), Outcome::OptedOut);
        assert!(matches!(adopt_one(&bad, &cfg()), Outcome::Failed(w) if w.contains("maybe")));
        let off_by_default = AdoptConfig { sockmap_default: false, ..cfg() };
        assert_eq!(adopt_one(&ready, &off_by_default), Outcome::OptedOut);
        let mut opted_in = ready.clone();
        opted_in.annotations.insert(ANNOTATION_SOCKMAP.into(), "true".into());
        // Opted in, so it gets as far as looking for the pins, which do not exist here.
        assert!(matches!(adopt_one(&opted_in, &off_by_default), Outcome::Failed(_)));
    }
}
