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
use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use meshaccel_node::bpf;
use meshaccel_node::conf::{check_pod_uid, PluginConf, PodIdentity, PodSettings};
use meshaccel_node::cri::Sandbox;
use meshaccel_node::feature::Pod;
use meshaccel_node::pins::AttachmentId;
use meshaccel_node::sockmap;
use slog::Logger;

/// The interface name runtimes give a pod's (only) CRI network.
pub const DEFAULT_IFNAME: &str = "eth0";

/// Where and how to attach: the meshaccel entry of the chained conflist, parsed as the
/// plugin parses it, so an adopted pod is indistinguishable from one the plugin set up.
#[derive(Clone, Debug)]
pub struct AdoptConfig {
    /// The conflist's `name`: GC only collects records of its own network.
    pub network: String,
    pub ifname: String,
    pub conf: PluginConf,
}

/// What adoption did with one sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Adopted {
        cgroup: PathBuf,
        cgroup_id: u64,
    },
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

/// Adopts every ready sandbox of `sandboxes` that has no attachment yet. Errors for one pod
/// are reported in its [`Outcome`] and do not stop the others; the call itself fails only
/// when the programs cannot be loaded.
pub fn adopt(sandboxes: &[Sandbox], cfg: &AdoptConfig, log: &Logger) -> Result<Vec<Adoption>> {
    bpf::ensure_loaded(&cfg.conf.pins())?;
    Ok(sandboxes
        .iter()
        .map(|sb| Adoption { sandbox_id: sb.id.clone(), pod: sb.pod(), outcome: adopt_one(sb, cfg, log) })
        .collect())
}

/// Lists the runtime's sandboxes over CRI and adopts them (see [`adopt`]).
///
/// A pod stopped while it was being adopted may have had its DELs before its record was
/// written, and nothing would remove it then; so each adopted sandbox is checked again, and
/// released if it is no longer ready (the runtime marks it so before the DEL).
pub fn adopt_running_pods(
    cri: &mut meshaccel_node::cri::Cri,
    cfg: &AdoptConfig,
    log: &Logger,
) -> Result<Vec<Adoption>> {
    let sandboxes = cri.sandboxes().context("list pod sandboxes")?;
    let mut adoptions = adopt(&sandboxes, cfg, log)?;
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
    let _ = sockmap::detach(&cfg.conf, id);
}

fn adopt_one(sb: &Sandbox, cfg: &AdoptConfig, log: &Logger) -> Outcome {
    if !sb.ready {
        return Outcome::NotReady;
    }
    if sb.host_network {
        return Outcome::HostNetwork;
    }
    // The plugin refuses a pod with a bad annotation value at ADD; adoption leaves it alone.
    let settings = match PodSettings::resolve(&cfg.conf, &sb.annotations) {
        Ok(s) => s,
        Err(why) => return Outcome::Failed(why.to_string()),
    };
    if !settings.sockmap {
        return Outcome::OptedOut;
    }
    // The UID names the cgroup directory: checked as the plugin checks K8S_POD_UID.
    let id = match check_pod_uid(&sb.uid)
        .map_err(|e| e.to_string())
        .and_then(|()| AttachmentId::new(&sb.id, &cfg.ifname).map_err(|e| e.to_string()))
    {
        Ok(id) => id,
        Err(why) => return Outcome::Failed(why),
    };
    match sockmap::is_attached(&cfg.conf, &id) {
        Ok(true) => return Outcome::AlreadyAttached,
        Ok(false) => {}
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    }
    let identity =
        PodIdentity { uid: Some(sb.uid.clone()), namespace: Some(sb.namespace.clone()), name: Some(sb.name.clone()) };
    let pod = Pod {
        conf: &cfg.conf,
        network: &cfg.network,
        attachment: &id,
        container_id: &sb.id,
        ifname: &cfg.ifname,
        netns: None,
        identity: &identity,
        settings,
    };
    // Leaves nothing half-done on error, as a failed ADD does.
    match sockmap::attach_recorded(&pod, log) {
        Ok(st) => Outcome::Adopted { cgroup: st.cgroup, cgroup_id: st.cgroup_id },
        Err(e) => Outcome::Failed(format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshaccel_node::conf::ANNOTATION_SOCKMAP;
    use serde_json::json;

    fn cfg(extra: serde_json::Value) -> AdoptConfig {
        let mut entry = json!({
            "type": "meshaccel",
            "bpffsRoot": "/nonexistent/bpffs",
            "cgroupRoot": "/nonexistent/cgroup",
            "stateDir": "/nonexistent/state",
        });
        entry.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let conf = PluginConf::from_entry(entry.as_object().unwrap()).unwrap();
        AdoptConfig { network: "net".into(), ifname: DEFAULT_IFNAME.into(), conf }
    }

    #[test]
    fn pods_that_must_not_be_touched_are_skipped_before_any_io() {
        let log = Logger::root(slog::Discard, slog::o!());
        let ready = Sandbox { id: "sb1".into(), uid: "0a-1b".into(), ready: true, ..Default::default() };
        let not_ready = Sandbox { ready: false, ..ready.clone() };
        let host = Sandbox { host_network: true, ..ready.clone() };
        let mut opted_out = ready.clone();
        opted_out.annotations.insert(ANNOTATION_SOCKMAP.into(), "false".into());
        let mut bad = ready.clone();
        bad.annotations.insert(ANNOTATION_SOCKMAP.into(), "maybe".into());
        let on = cfg(json!({}));
        assert_eq!(adopt_one(&not_ready, &on, &log), Outcome::NotReady);
        assert_eq!(adopt_one(&host, &on, &log), Outcome::HostNetwork);
        assert_eq!(adopt_one(&opted_out, &on, &log), Outcome::OptedOut);
        assert!(matches!(adopt_one(&bad, &on, &log), Outcome::Failed(w) if w.contains("maybe")));
        let off_by_default = cfg(json!({"sockmap": {"enabled": false}}));
        assert_eq!(adopt_one(&ready, &off_by_default, &log), Outcome::OptedOut);
        let mut opted_in = ready.clone();
        opted_in.annotations.insert(ANNOTATION_SOCKMAP.into(), "true".into());
        // Opted in, so it gets as far as looking for the pins, which do not exist here.
        assert!(matches!(adopt_one(&opted_in, &off_by_default, &log), Outcome::Failed(_)));
    }
}
